// Go-style durations (etcd's flags): examples, bad input, and sums of random parts.
import t from 'tap';
import fc from 'fast-check';
import { parseDurationMs } from '../../core/kv/duration.js';

t.test('Go durations as etcd takes them', async (t) => {
  t.equal(parseDurationMs('10m'), 600_000);
  t.equal(parseDurationMs('1m30s'), 90_000);
  t.equal(parseDurationMs('1.5s'), 1_500);
  t.equal(parseDurationMs('500ms'), 500);
  t.equal(parseDurationMs('2h45m'), 9_900_000);
  t.equal(parseDurationMs('1500us'), 1.5);
  t.equal(parseDurationMs(' 5s '), 5_000, 'surrounding space ignored');
  t.equal(parseDurationMs('0'), 0, 'a bare 0 is allowed, as in Go');
  for (const bad of ['', '5', '1d', 's', '5 s', '-5s', '1m30', 'm5', '5sx', '1e3s', '1..5s']) t.equal(parseDurationMs(bad), undefined, `"${bad}" refused`);
});

t.test('a sequence of parts parses to the sum of the parts', async (t) => {
  const units = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
  t.doesNotThrow(() => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(10_000), fc.constantFrom(...(Object.keys(units) as Array<keyof typeof units>))), { minLength: 1, maxLength: 5 }), (parts) => {
        const text = parts.map(([n, u]) => `${n}${u}`).join('');
        return parseDurationMs(text) === parts.reduce((sum, [n, u]) => sum + n * units[u], 0);
      }),
    );
    // Any text: undefined or a finite non-negative number, never a throw.
    fc.assert(fc.property(fc.string(), (s) => {
      const ms = parseDurationMs(s);
      return ms === undefined || (Number.isFinite(ms) && ms >= 0);
    }));
  }, 'sums of random parts, and any text parsed without a throw to undefined or a finite non-negative number');
});
