// The ordered key map and the interval tree, each against a naive model.
import t from 'tap';
import fc from 'fast-check';
import { IntervalTree } from '../../core/kv/interval-tree.js';
import { SortedKeyMap } from '../../core/kv/sorted-map.js';

const k = fc.string({ unit: fc.constantFrom('a', 'b', 'c', '\x00', '\xff'), minLength: 1, maxLength: 4 });

t.test('SortedKeyMap behaves like a sorted Map', async (t) => {
  const op = fc.oneof(
    fc.record({ set: k, v: fc.nat() }),
    fc.record({ del: k }),
    fc.record({ scanFrom: fc.string({ maxLength: 3 }), after: fc.boolean(), end: fc.oneof(fc.constant(''), k), stopAt: fc.nat(20) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
      const m = new SortedKeyMap<number>();
      const ref = new Map<string, number>();
      for (const o of ops) {
        if ('set' in o) {
          m.set(o.set, o.v);
          ref.set(o.set, o.v);
        } else if ('del' in o) {
          if (m.delete(o.del) !== ref.delete(o.del)) throw new Error('delete result');
        } else {
          const want = [...ref.keys()]
            .sort()
            .filter((x) => (o.after ? x > o.scanFrom : x >= o.scanFrom) && (o.end === '' || x < o.end))
            .slice(0, o.stopAt + 1);
          const got: string[] = [];
          m.scan(o.scanFrom, o.after, o.end, (key, v) => {
            if (ref.get(key) !== v) throw new Error('value');
            got.push(key);
            return got.length <= o.stopAt;
          });
          if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`scan ${JSON.stringify(got)} != ${JSON.stringify(want)}`);
        }
        if (m.size !== ref.size) throw new Error('size');
      }
      if (JSON.stringify([...m.keys()]) !== JSON.stringify([...ref.keys()].sort())) throw new Error('order');
      for (const [key, v] of ref) if (m.get(key) !== v) throw new Error('get');
    }),
    { numRuns: 300, seed: 11 },
  );
  // Many keys: chunks split and merge.
  const m = new SortedKeyMap<number>();
  for (let i = 0; i < 20_000; i++) m.set(String((i * 7919) % 20_000).padStart(6, '0'), i);
  t.equal(m.size, 20_000);
  for (let i = 0; i < 20_000; i += 2) m.delete(String(i).padStart(6, '0'));
  const keys = [...m.keys()];
  t.equal(keys.length, 10_000);
  t.ok(keys.every((x, i) => i === 0 || keys[i - 1]! < x));
  const built = SortedKeyMap.fromSorted(['a', 'b', 'c'], [1, 2, 3]);
  t.equal(built.get('b'), 2);
});

t.test('IntervalTree stabbing matches a linear scan', async (t) => {
  const op = fc.oneof(
    fc.record({ add: k, end: fc.oneof(fc.constant(''), k), v: fc.nat() }),
    fc.record({ remove: fc.nat() }),
    fc.record({ stab: k }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
      const tree = new IntervalTree<number>();
      const ref = new Map<string, [string, string, number]>();
      for (const o of ops) {
        if ('add' in o) {
          tree.set(o.add, o.end, o.v);
          ref.set(`${o.add}|${o.end}`, [o.add, o.end, o.v]);
        } else if ('remove' in o) {
          const entries = [...ref.values()];
          if (entries.length === 0) continue;
          const [s, e] = entries[o.remove % entries.length]!;
          if (!tree.delete(s, e)) throw new Error('delete');
          ref.delete(`${s}|${e}`);
        } else {
          const want = [...ref.values()]
            .filter(([s, e]) => o.stab >= s && (e === '' || o.stab < e))
            .map((x) => x[2])
            .sort((a, c) => a - c);
          const got: number[] = [];
          tree.stab(o.stab, (v) => got.push(v));
          got.sort((a, c) => a - c);
          if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`stab ${o.stab}: ${got} != ${want}`);
        }
        if (tree.size !== ref.size) throw new Error('size');
      }
    }),
    { numRuns: 300, seed: 12 },
  );
  const tree = new IntervalTree<number>();
  for (let i = 0; i < 10_000; i++) tree.set(String(i).padStart(5, '0'), String(i + 10).padStart(5, '0'), i);
  t.ok(tree.height <= 20, `height ${tree.height} for 10,000 intervals`);
  let hits = 0;
  tree.stab('05000', () => hits++);
  t.equal(hits, 10);
});
