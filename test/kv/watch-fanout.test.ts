// 10,000 watchers on one node: events reach exactly the watchers they match, and the hub
// only visits those (indexes, not a scan of every watcher per event).
import t from 'tap';
import { Prng } from '../../core/sim/prng.js';
import { MAX_WATCHERS_PER_STREAM } from '../../core/kv/limits.js';
import type { WatchResponse } from '../../core/kv/types.js';
import { WatchHub } from '../../core/kv/watch.js';
import { b, Node, s } from './helpers.js';

const WATCHERS = 10_000;
const STREAMS = 10;
const PUTS = 2_000;

interface Spec {
  start: string;
  end: string | undefined; // undefined: single key; '': to the end
}

const key = (i: number): string => `key/${String(i).padStart(5, '0')}`;

t.test('10,000 watchers: exact delivery without scanning', async (t) => {
  const n = Node.create();
  const hub = new WatchHub(n.store, { schedule: () => {} });
  const rng = new Prng(7);
  const specs: Spec[] = [];
  for (let i = 0; i < WATCHERS; i++) {
    if (i % 10 < 7) specs.push({ start: key(rng.int(20_000)), end: undefined }); // single keys
    else if (i % 10 < 9) {
      const p = key(rng.int(20_000)).slice(0, 8); // prefixes like "key/0123"
      specs.push({ start: p, end: p.slice(0, -1) + String.fromCharCode(p.charCodeAt(p.length - 1) + 1) });
    } else {
      const a = rng.int(20_000);
      specs.push({ start: key(a), end: rng.int(10) === 0 ? '' : key(a + 1 + rng.int(50)) });
    }
  }
  const streams = Array.from({ length: STREAMS }, () => hub.openStream());
  const ids: Array<[number, number]> = [];
  specs.forEach((sp, i) => {
    const ws = streams[i % STREAMS]!;
    const rangeEnd = sp.end === undefined ? undefined : sp.end === '' ? b('\0') : b(sp.end);
    ids.push([i % STREAMS, ws.create({ key: b(sp.start), ...(rangeEnd ? { rangeEnd } : {}) })]);
  });
  t.equal(hub.watcherCount, WATCHERS);
  for (const ws of streams) while (ws.next());

  const putKeys: string[] = [];
  const started = performance.now();
  for (let i = 0; i < PUTS; i++) {
    const k = key(rng.int(20_000));
    putKeys.push(k);
    n.put(k, 'v');
  }
  const applyMs = performance.now() - started;

  // What a naive matcher would deliver.
  const expected = new Map<string, number>(); // "stream:id" -> events
  let pairs = 0;
  specs.forEach((sp, i) => {
    let c = 0;
    for (const k of putKeys) {
      const hit = sp.end === undefined ? k === sp.start : k >= sp.start && (sp.end === '' || k < sp.end);
      if (hit) c++;
    }
    pairs += c;
    if (c > 0) expected.set(`${ids[i]![0]}:${ids[i]![1]}`, c);
  });

  const got = new Map<string, number>();
  let responses = 0;
  streams.forEach((ws, si) => {
    for (let r: WatchResponse | undefined = ws.next(); r; r = ws.next()) {
      responses++;
      const k = `${si}:${r.watchId}`;
      got.set(k, (got.get(k) ?? 0) + r.events.length);
    }
  });
  t.same([...got].sort(), [...expected].sort(), 'every watcher got exactly its events');
  t.equal(hub.stats.watchersMatched, pairs, 'the hub visited only matching watchers');
  t.ok(pairs < (PUTS * WATCHERS) / 100, `${pairs} matches vs ${PUTS * WATCHERS} watcher×event pairs`);
  t.equal(hub.stats.slowUnsyncs, 0);
  t.comment(`${PUTS} puts with ${WATCHERS} watchers: ${applyMs.toFixed(0)} ms (${((applyMs / PUTS) * 1000).toFixed(0)} µs/put), ${pairs} deliveries, ${responses} responses`);
  t.ok(applyMs < 10_000, 'well within time');
});

t.test('10,000 watchers on one key', async (t) => {
  const n = Node.create();
  const hub = new WatchHub(n.store, { schedule: () => {} });
  const streams = Array.from({ length: Math.ceil(WATCHERS / MAX_WATCHERS_PER_STREAM) }, () => hub.openStream());
  for (let i = 0; i < WATCHERS; i++) streams[i % streams.length]!.create({ key: b('hot'), prevKv: i % 2 === 0 });
  for (const ws of streams) while (ws.next());
  const started = performance.now();
  for (let i = 0; i < 10; i++) n.put('hot', String(i));
  const ms = performance.now() - started;
  let events = 0;
  let withPrev = 0;
  let lastNot9 = 0;
  for (const ws of streams) {
    for (let r = ws.next(); r; r = ws.next()) {
      events += r.events.length;
      withPrev += r.events.filter((e) => e.prevKv !== undefined).length;
      if (s(r.events[r.events.length - 1]!.kv.value) !== '9') lastNot9++;
    }
  }
  t.equal(lastNot9, 0, 'every watcher ends at the last value');
  t.equal(events, 10 * WATCHERS);
  t.equal(withPrev, (9 * WATCHERS) / 2, 'prev_kv only where asked (first put has none)');
  t.comment(`10 puts fanned out to ${WATCHERS} watchers: ${ms.toFixed(1)} ms`);
});
