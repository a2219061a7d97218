// Watch: key / prefix / range / from-key watchers, history, prev_kv, filters, cancel,
// compaction responses, progress notifications, slow consumers, paced catch-up, restore.
import t from 'tap';
import { KvStore } from '../../core/kv/store.js';
import { EventType, INVALID_WATCH_ID, WatchFilterType, type WatchResponse } from '../../core/kv/types.js';
import { WatchHub, type WatchHubOptions } from '../../core/kv/watch.js';
import { b, Node, s } from './helpers.js';

/** A hub whose deferred work runs only when the test says so. */
function setup(opts: WatchHubOptions = {}, node = Node.create()) {
  const tasks: Array<() => void> = [];
  const hub = new WatchHub(node.store, { schedule: (fn) => tasks.push(fn), ...opts });
  const runTasks = (): void => {
    for (let i = 0; i < 10_000 && tasks.length > 0; i++) tasks.shift()!();
  };
  return { n: node, hub, runTasks, tasks };
}

function drain(ws: { next(): WatchResponse | undefined }): WatchResponse[] {
  const out: WatchResponse[] = [];
  for (let r = ws.next(); r; r = ws.next()) out.push(r);
  return out;
}

/** "PUT k=v@rev" / "DELETE k@rev" for every event in the responses. */
function evs(resps: WatchResponse[]): string[] {
  return resps.flatMap((r) =>
    r.events.map((e) =>
      e.type === EventType.PUT ? `PUT ${s(e.kv.key)}=${s(e.kv.value)}@${e.kv.modRevision}` : `DELETE ${s(e.kv.key)}@${e.kv.modRevision}`,
    ),
  );
}

t.test('key, prefix, range and from-key watchers', async (t) => {
  const { n, hub } = setup();
  const ws = hub.openStream();
  const idKey = ws.create({ key: b('k') });
  const idPrefix = ws.create({ key: b('p/'), rangeEnd: b('p0') });
  const idRange = ws.create({ key: b('b'), rangeEnd: b('d') });
  const idFrom = ws.create({ key: b('x'), rangeEnd: b('\0') });
  const idAll = ws.create({ key: b(''), rangeEnd: b('\0') });
  t.same([idKey, idPrefix, idRange, idFrom, idAll], [0, 1, 2, 3, 4], 'auto IDs from 0');
  const created = drain(ws);
  t.equal(created.length, 5);
  t.ok(created.every((r) => r.created && !r.canceled && r.header.revision === 1));
  n.put('k', '1');
  n.put('kk', '1');
  n.put('p/a', '1');
  n.put('c', '1');
  n.put('d', '1');
  n.put('zz', '1');
  n.del('k');
  const out = drain(ws);
  const by = (id: number) => evs(out.filter((r) => r.watchId === id));
  t.same(by(idKey), ['PUT k=1@2', 'DELETE k@8']);
  t.same(by(idPrefix), ['PUT p/a=1@4']);
  t.same(by(idRange), ['PUT c=1@5']);
  t.same(by(idFrom), ['PUT zz=1@7']);
  t.equal(by(idAll).length, 7);
  const del = out
    .filter((r) => r.watchId === idKey)
    .flatMap((r) => r.events)
    .find((e) => e.type === EventType.DELETE)!;
  t.same({ c: del.kv.createRevision, v: del.kv.version, value: del.kv.value.byteLength }, { c: 0, v: 0, value: 0 });
  t.equal(hub.stats.slowUnsyncs, 0);
});

t.test('prev_kv and filters', async (t) => {
  const { n, hub } = setup();
  const ws = hub.openStream();
  const withPrev = ws.create({ key: b('k'), prevKv: true });
  const noPrev = ws.create({ key: b('k') });
  const noPut = ws.create({ key: b('k'), filters: [WatchFilterType.NOPUT] });
  const noDel = ws.create({ key: b('k'), filters: [WatchFilterType.NODELETE] });
  drain(ws);
  n.put('k', '1');
  n.put('k', '2');
  n.del('k');
  const out = drain(ws);
  const of = (id: number) => out.filter((r) => r.watchId === id).flatMap((r) => r.events);
  t.same(
    of(withPrev).map((e) => (e.prevKv ? s(e.prevKv.value) : null)),
    [null, '1', '2'],
  );
  t.ok(of(noPrev).every((e) => e.prevKv === undefined));
  t.same(of(noPut).map((e) => e.type), [EventType.DELETE]);
  t.same(of(noDel).map((e) => e.type), [EventType.PUT, EventType.PUT]);
});

t.test('start revision from history, then live, without gaps or duplicates', async (t) => {
  const { n, hub, runTasks } = setup();
  for (let i = 0; i < 5; i++) n.put('k', String(i)); // revs 2..6
  n.put('other', 'x'); // 7
  const ws = hub.openStream();
  ws.create({ key: b('k'), startRevision: 3, prevKv: true });
  ws.create({ key: b('a'), rangeEnd: b('z'), startRevision: 5 });
  runTasks();
  n.put('k', 'live'); // 8
  const out = drain(ws);
  t.same(evs(out.filter((r) => r.watchId === 0)), ['PUT k=1@3', 'PUT k=2@4', 'PUT k=3@5', 'PUT k=4@6', 'PUT k=live@8']);
  t.same(evs(out.filter((r) => r.watchId === 1)), ['PUT k=3@5', 'PUT k=4@6', 'PUT other=x@7', 'PUT k=live@8']);
  const first = out.find((r) => r.watchId === 0 && r.events.length > 0)!;
  t.equal(s(first.events[0]!.prevKv!.value), '0', 'prev_kv from history');
  // A future start revision waits for it.
  ws.create({ key: b('k'), startRevision: 10 });
  drain(ws);
  n.put('k', 'a'); // 9
  n.put('k', 'b'); // 10
  t.same(evs(drain(ws).filter((r) => r.watchId === 2)), ['PUT k=b@10']);
});

t.test('compacted start revision', async (t) => {
  const { n, hub } = setup();
  for (let i = 0; i < 5; i++) n.put('k', String(i));
  n.apply({ compaction: { revision: 4 } });
  const ws = hub.openStream();
  const id = ws.create({ key: b('k'), startRevision: 3 });
  const out = drain(ws);
  t.equal(out.length, 2);
  t.same({ created: out[0]!.created, id: out[0]!.watchId }, { created: true, id });
  t.same(
    { id: out[1]!.watchId, canceled: out[1]!.canceled, compactRevision: out[1]!.compactRevision, events: out[1]!.events },
    { id, canceled: true, compactRevision: 4, events: [] },
  );
  t.equal(ws.size, 0, 'the watcher is gone');
  // Exactly at the compaction revision is still allowed.
  ws.create({ key: b('k'), startRevision: 4 });
  t.same(evs(drain(ws)), ['PUT k=2@4', 'PUT k=3@5', 'PUT k=4@6']);
  // A negative start revision is below the compaction point (etcd 3.4.23 answers alike).
  const negId = ws.create({ key: b('k'), startRevision: -1 });
  const neg = drain(ws);
  t.same(
    neg.map((r) => ({ id: r.watchId, created: r.created, canceled: r.canceled, compactRevision: r.compactRevision, events: r.events.length })),
    [
      { id: negId, created: true, canceled: false, compactRevision: 0, events: 0 },
      { id: negId, created: false, canceled: true, compactRevision: 4, events: 0 },
    ],
  );
});

t.test('a negative start revision before any compaction watches from now, as etcd 3.4.23 does', async (t) => {
  const { n, hub } = setup();
  for (let i = 0; i < 3; i++) n.put('k', String(i));
  const ws = hub.openStream();
  ws.create({ key: b('k'), startRevision: -1 });
  const created = drain(ws);
  t.same(created.map((r) => [r.created, r.canceled, r.events.length]), [[true, false, 0]], 'created, no history replayed');
  n.put('k', 'new');
  t.same(evs(drain(ws)), ['PUT k=new@5'], 'then the events from now on');
});

t.test('a start revision below -1 before any compaction is canceled as compacted, as etcd 3.4.23 does', async (t) => {
  const { n, hub } = setup();
  n.put('k', 'v');
  const ws = hub.openStream();
  const id = ws.create({ key: b('k'), startRevision: -5 });
  const out = drain(ws);
  t.same(
    out.map((r) => ({ id: r.watchId, created: r.created, canceled: r.canceled, compactRevision: r.compactRevision, reason: r.cancelReason })),
    [
      { id, created: true, canceled: false, compactRevision: 0, reason: '' },
      { id, created: false, canceled: true, compactRevision: -1, reason: 'etcdserver: mvcc: required revision has been compacted' },
    ],
  );
});

t.test('failed creates, explicit IDs, cancel', async (t) => {
  const { n, hub } = setup();
  const ws = hub.openStream();
  t.equal(ws.create({ key: b('b'), rangeEnd: b('a') }), -1);
  let r = drain(ws)[0]!;
  t.same({ c: r.created, x: r.canceled, reason: r.cancelReason }, { c: true, x: true, reason: 'mvcc: watcher range is empty' });
  t.equal(ws.create({ key: b('k'), watchId: 7 }), 7);
  t.equal(ws.create({ key: b('k'), watchId: 7 }), -1);
  r = drain(ws)[1]!;
  t.equal(r.cancelReason, 'mvcc: duplicate watch ID provided on the WatchStream');
  t.equal(ws.create({ key: b('k') }), 0);
  drain(ws);
  n.put('k', '1');
  t.equal(ws.cancel(7), true);
  const out = drain(ws);
  t.same(out[0]!.watchId, 7, 'the cancel goes first');
  t.ok(out[0]!.canceled);
  t.same(evs(out), ['PUT k=1@2'], 'the cancelled watcher’s pending events are dropped');
  t.equal(ws.cancel(7), false, 'unknown watch: no response');
  t.same(drain(ws), []);
  n.put('k', '2');
  t.same(drain(ws).map((x) => x.watchId), [0]);
  ws.close();
  n.put('k', '3');
  t.same(drain(ws), []);
  t.equal(hub.watcherCount, 0);
});

t.test('progress notifications', async (t) => {
  const { n, hub, runTasks } = setup();
  const ws = hub.openStream();
  const id = ws.create({ key: b('k'), progressNotify: true });
  ws.create({ key: b('j') });
  drain(ws);
  n.put('x', '1');
  hub.progressTick();
  let out = drain(ws);
  t.same(out.map((r) => [r.watchId, r.header.revision, r.events.length]), [[id, 2, 0]], 'idle: progress at the current revision');
  n.put('k', '1');
  t.equal(drain(ws).length, 1);
  hub.progressTick();
  t.same(drain(ws), [], 'elided after an event');
  hub.progressTick();
  t.equal(drain(ws).length, 1);
  // Stream-wide progress request: watch ID -1, deferred while a watcher catches up.
  for (let i = 0; i < 20; i++) n.put('h', String(i));
  const ws2 = hub.openStream();
  ws2.create({ key: b('h'), startRevision: 2 });
  ws2.requestProgress();
  out = drain(ws2);
  runTasks();
  out = [...out, ...drain(ws2)];
  const progress = out.filter((r) => r.watchId === INVALID_WATCH_ID && !r.created);
  t.equal(progress.length, 1, 'one progress response');
  const p = out[out.length - 1]!;
  t.same([p.watchId, p.header.revision, p.events.length], [INVALID_WATCH_ID, n.store.revision, 0], 'last');
  t.equal(evs(out).length, 20, 'every event before the progress response');
  const empty = hub.openStream();
  empty.requestProgress();
  t.same(drain(empty), [], 'a stream without watchers gets nothing, as etcd');
});

t.test('no progress notification below the revision before a watcher\'s start', async (t) => {
  const { n, hub } = setup();
  const ws = hub.openStream();
  n.put('x', '1');
  const start = n.store.revision + 3; // resumed here by a client that has seen up to start - 1 elsewhere
  const id = ws.create({ key: b('k'), startRevision: start, progressNotify: true });
  drain(ws);
  hub.progressTick();
  t.same(drain(ws), [], `none at revision ${n.store.revision}`);
  n.put('x', '2');
  n.put('x', '3');
  hub.progressTick();
  t.same(drain(ws).map((r) => [r.watchId, r.header.revision]), [[id, start - 1]], 'one once the store has reached it');
});

t.test('a watcher whose buffer is full reads the rest from the log (etcd\'s unsynced watchers): nothing lost, nothing cancelled', async (t) => {
  const { n, hub, runTasks } = setup({ bufferEventsMax: 10 });
  const ws = hub.openStream();
  const slow = ws.create({ key: b('k') });
  const ws2 = hub.openStream();
  ws2.create({ key: b('k') });
  drain(ws);
  for (let i = 0; i < 10; i++) {
    n.put('k', String(i));
    drain(ws2);
  }
  t.equal(hub.stats.slowUnsyncs, 0, 'exactly at the limit: fine');
  n.put('k', 'overflow'); // revision 12
  t.same([hub.stats.slowUnsyncs, hub.unsyncedCount], [1, 1], 'one more: back to the log');
  t.equal(drain(ws2).length, 1, 'a fast consumer is unaffected');
  for (let i = 0; i < 25; i++) n.put('k', `later${i}`); // revisions 13..37, none buffered for it
  const got: string[] = [];
  for (let round = 0; round < 100 && (ws.hasPending || hub.unsyncedCount > 0); round++) {
    const out = drain(ws);
    t.notOk(out.some((r) => r.canceled), 'never cancelled');
    got.push(...evs(out));
    drain(ws2); // behind by 25 too: it reads from the log as well
    runTasks();
  }
  t.same(
    got,
    [...Array.from({ length: 10 }, (_, i) => `PUT k=${i}@${i + 2}`), 'PUT k=overflow@12', ...Array.from({ length: 25 }, (_, i) => `PUT k=later${i}@${i + 13}`)],
    'every event once, in order: the buffered ones, then the rest from the log',
  );
  t.same([hub.unsyncedCount, ws.size], [0, 1], 'synced again, still watching');
  n.put('k', 'live');
  t.same(evs(drain(ws)), ['PUT k=live@38'], 'and live again');
});

t.test('one apply bringing more than the buffer holds (a lease revoke of many keys, a large value with prev_kv) does not end a watch that reads', async (t) => {
  const { n, hub, runTasks } = setup({ bufferEventsMax: 16, bufferBytesMax: 64 * 1024 });
  const ws = hub.openStream();
  ws.create({ key: b('a/'), rangeEnd: b('a0'), prevKv: true });
  drain(ws);
  const lease = n.grant(60).ID;
  for (let i = 0; i < 40; i++) n.put(`a/${String(i).padStart(2, '0')}`, 'v', { lease });
  const big = 'x'.repeat(40 * 1024);
  n.put('a/big', big);
  const start = n.store.revision;
  drain(ws);
  n.apply({ leaseRevoke: { ID: lease } }); // 40 deletes at one revision
  n.put('a/big', big); // 80 KiB with its prev_kv
  n.put('a/big', big);
  const got: string[] = [];
  for (let round = 0; round < 100 && (ws.hasPending || hub.unsyncedCount > 0); round++) {
    const out = drain(ws);
    t.notOk(out.some((r) => r.canceled), 'never cancelled');
    got.push(...out.flatMap((r) => r.events.map((e) => `${e.type === EventType.PUT ? 'PUT' : 'DELETE'} ${s(e.kv.key)}@${e.kv.modRevision}${e.prevKv ? ' prev' : ''}`)));
    runTasks();
  }
  t.same(
    got,
    [...Array.from({ length: 40 }, (_, i) => `DELETE a/${String(i).padStart(2, '0')}@${start + 1} prev`), `PUT a/big@${start + 2} prev`, `PUT a/big@${start + 3} prev`],
    'the revoke\'s 40 deletes and both large puts, each with its prev_kv',
  );
  t.ok(hub.stats.slowUnsyncs >= 1, `read from the log (${hub.stats.slowUnsyncs} times)`);
});

t.test('a watcher behind a compaction while it reads from the log gets etcd\'s compaction response', async (t) => {
  const { n, hub, runTasks } = setup({ bufferEventsMax: 4 });
  const ws = hub.openStream();
  const id = ws.create({ key: b('k') });
  drain(ws);
  for (let i = 0; i < 10; i++) n.put('k', String(i)); // revisions 2..11; 2..5 buffered
  t.equal(hub.unsyncedCount, 1);
  n.apply({ compaction: { revision: 9 } });
  runTasks();
  const out = drain(ws);
  t.same(evs(out), ['PUT k=0@2', 'PUT k=1@3', 'PUT k=2@4', 'PUT k=3@5'], 'what it held, first');
  const last = out.at(-1)!;
  t.same([last.watchId, last.canceled, last.compactRevision], [id, true, 9], 'then compacted at 9');
});

t.test('catch-up is paced by the consumer and bounded', async (t) => {
  const { n, hub, runTasks, tasks } = setup({ bufferEventsMax: 50, syncRevisionsPerStep: 100 });
  for (let i = 0; i < 1000; i++) n.put(`k${i % 7}`, String(i)); // revisions 2..1001
  const ws = hub.openStream();
  ws.create({ key: b('k'), rangeEnd: b('l'), startRevision: 2 });
  runTasks();
  t.equal(tasks.length, 0);
  t.equal(hub.unsyncedCount, 1, 'waiting on its consumer, not on the scheduler');
  let got: string[] = [];
  let maxBatch = 0;
  // One response per round, so live writes interleave with the catch-up.
  for (let round = 0; round < 5000; round++) {
    const r = ws.next();
    if (r) {
      maxBatch = Math.max(maxBatch, r.events.length);
      got = got.concat(evs([r]));
    }
    if (round === 3) n.put('k1', 'live-during-catchup');
    if (!r) {
      runTasks();
      if (hub.unsyncedCount === 0 && !ws.hasPending) break;
    }
  }
  t.ok(maxBatch <= 50, 'no response exceeds the buffer');
  t.equal(got.length, 1001);
  const revs = got.map((e) => Number(e.split('@')[1]));
  t.same(revs, [...revs].sort((a, c) => a - c), 'in revision order');
  t.equal(new Set(revs).size, revs.length, 'no duplicates');
  t.equal(got[got.length - 1], 'PUT k1=live-during-catchup@1002');
  t.equal(hub.unsyncedCount, 0, 'synced at the end');
});

t.test('compaction while catching up', async (t) => {
  const { n, hub, runTasks } = setup({ bufferEventsMax: 5 });
  for (let i = 0; i < 30; i++) n.put('k', String(i));
  const ws = hub.openStream();
  const id = ws.create({ key: b('k'), startRevision: 2 });
  n.apply({ compaction: { revision: 20 } });
  runTasks();
  const out = drain(ws);
  t.equal(evs(out).length, 5, 'what was buffered is delivered');
  const last = out[out.length - 1]!;
  t.same([last.watchId, last.canceled, last.compactRevision], [id, true, 20]);
});

t.test('responses split at revision boundaries near the size target', async (t) => {
  const { n, hub } = setup({ responseBytesTarget: 1000 });
  const ws = hub.openStream();
  ws.create({ key: b('k') });
  drain(ws);
  for (let i = 0; i < 10; i++) n.put('k', 'v'.repeat(300));
  const out = drain(ws);
  t.ok(out.length >= 4, `${out.length} responses`);
  t.equal(evs(out).length, 10);
  t.ok(out.every((r) => r.header.revision >= r.events[r.events.length - 1]!.kv.modRevision));
});

t.test("a catch-up's responses carry the store's revision, as etcd's; a live watcher's, its last event's revision", async (t) => {
  const { n, hub, runTasks } = setup({ responseBytesTarget: 1000 });
  for (let i = 0; i < 10; i++) n.put('k', 'v'.repeat(300)); // revisions 2..11, three or four per response
  n.put('other', 'x'); // 12
  const ws = hub.openStream();
  const id = ws.create({ key: b('k'), startRevision: 2 });
  runTasks();
  const caughtUp = drain(ws).filter((r) => r.watchId === id && r.events.length > 0);
  t.ok(caughtUp.length >= 3, `${caughtUp.length} responses`);
  t.equal(evs(caughtUp).length, 10);
  t.same(caughtUp.map((r) => r.header.revision), caughtUp.map(() => 12), 'each at the store\'s revision, not at its last event\'s');

  for (let i = 0; i < 10; i++) n.put('k', 'v'.repeat(300)); // 13..22, buffered while synced
  n.put('other', 'y'); // 23: the store moves past the last one the watcher gets
  const live = drain(ws);
  t.ok(live.length >= 3, `${live.length} responses`);
  const lastOf = (r: WatchResponse): number => r.events[r.events.length - 1]!.kv.modRevision;
  t.same(live.map((r) => r.header.revision), live.map(lastOf), 'live: each at its last event, the last one too (22, not the store\'s 23)');
});

t.test('a catch-up paced by its consumer: each response at the store\'s revision when it is taken', async (t) => {
  const { n, hub, runTasks } = setup({ bufferEventsMax: 3 });
  for (let i = 0; i < 9; i++) n.put('k', String(i)); // 2..10
  const ws = hub.openStream();
  const id = ws.create({ key: b('k'), startRevision: 2 });
  ws.next(); // created
  const headers: number[] = [];
  for (let r = ws.next(); r; r = ws.next()) {
    t.ok(r.watchId === id && r.events.length > 0, 'events');
    headers.push(r.header.revision);
    n.put('other', 'x'); // the store moves on while the watcher catches up
    runTasks();
  }
  t.equal(headers.length, 3, 'three buffers of three');
  t.same(headers, [10, 11, 12]);
});

t.test('onReady fires once per drain cycle', async (t) => {
  const { n, hub } = setup();
  let signals = 0;
  const ws = hub.openStream(() => signals++);
  ws.create({ key: b('k') });
  n.put('k', '1');
  n.put('k', '2');
  t.equal(signals, 1);
  drain(ws);
  n.put('k', '3');
  t.equal(signals, 2);
});

t.test('restore: watchers continue from the new state', async (t) => {
  const src = Node.create();
  for (let i = 0; i < 6; i++) src.put('k', String(i)); // revisions 2..7
  const { n, hub, runTasks } = setup();
  n.put('k', '0'); // revision 2 here too
  const ws = hub.openStream();
  ws.create({ key: b('k') });
  drain(ws);
  const chunks: Uint8Array[] = [];
  for await (const c of src.store.snapshot()) chunks.push(c);
  await n.store.restore(chunks);
  runTasks();
  t.same(evs(drain(ws)), ['PUT k=1@3', 'PUT k=2@4', 'PUT k=3@5', 'PUT k=4@6', 'PUT k=5@7']);
  // Restoring a compacted image past the watcher's position: compaction response.
  src.put('k', 'x'); // 8
  src.put('k', 'y'); // 9
  src.apply({ compaction: { revision: 9 } });
  const chunks2: Uint8Array[] = [];
  for await (const c of src.store.snapshot()) chunks2.push(c);
  await n.store.restore(chunks2);
  runTasks();
  const out = drain(ws);
  t.equal(out[out.length - 1]!.compactRevision, 9);
});

t.test('a store without watchers builds no events', async (t) => {
  const store = new KvStore();
  const hub = new WatchHub(store);
  hub.close();
  store.apply({ put: { key: b('a'), value: b('1') } }, { index: 1, term: 1 });
  t.equal(hub.stats.events, 0);
});

t.test('a watcher that has not drained a one-event revision takes a many-event one after it', async (t) => {
  // A one-event revision hands every drained watcher the same (frozen) one-event buffer; the
  // next revision must copy it, not push into it, and other watchers must not see the push.
  const { n, hub } = setup();
  const ws = hub.openStream();
  const a = ws.create({ key: b('p/'), rangeEnd: b('p0') });
  const other = ws.create({ key: b('p/'), rangeEnd: b('p0') });
  drain(ws);
  n.put('p/a', '1');
  n.del('p/', 'p0'); // one revision, one event (p/a): the same buffer again
  n.put('p/b', '1');
  n.put('p/c', '1');
  const before = drain(ws);
  t.same(evs(before.filter((r) => r.watchId === a)), ['PUT p/a=1@2', 'DELETE p/a@3', 'PUT p/b=1@4', 'PUT p/c=1@5']);
  n.put('p/x', '1'); // one event to both, not drained
  n.del('p/', 'p0'); // a three-event revision: p/b, p/c and p/x
  const out = drain(ws);
  const expected = ['PUT p/x=1@6', 'DELETE p/b@7', 'DELETE p/c@7', 'DELETE p/x@7'];
  t.same(evs(out.filter((r) => r.watchId === a)), expected);
  t.same(evs(out.filter((r) => r.watchId === other)), expected, 'the other watcher got the same, once');
});

t.test('a watch from the compact revision sends what compaction keeps there, whatever its shape and whether compaction has run physically (etcd: no delete at that revision)', async (t) => {
  for (const pinned of [false, true]) {
    const { n, hub, runTasks } = setup();
    n.put('a/k', '1'); // 2
    n.put('a/j', '1'); // 3
    n.del('a/k'); // 4
    n.put('a/j', '2'); // 5
    // An open snapshot (or HashKV) holds physical compaction back: the tombstone at 4 stays in a/k's history.
    if (pinned) n.store.pin();
    n.apply({ compaction: { revision: 4 } });
    const seen = (req: { key: Uint8Array; rangeEnd?: Uint8Array }): string[] => {
      const ws = hub.openStream();
      ws.create({ ...req, startRevision: 4 });
      runTasks();
      const out = evs(drain(ws));
      ws.close();
      return out;
    };
    const label = pinned ? 'compaction held back' : 'compacted';
    t.same(seen({ key: b('a/k') }), [], `${label}: single key, no delete at 4`);
    t.same(seen({ key: b('a/'), rangeEnd: b('a0') }), ['PUT a/j=2@5'], `${label}: prefix, the same`);
    t.same(seen({ key: b('a/k'), rangeEnd: b('a/l') }), [], `${label}: range, the same`);
    if (pinned) n.store.unpin();
  }
});

t.test('a txn that puts and then deletes a key: both events, with etcd\'s prevKv (the key before the txn), caught up in small steps or synced', async (t) => {
  const putThenDelete = (k: string, v: string) => ({
    compare: [],
    success: [
      { requestTxn: { compare: [], success: [{ requestPut: { key: b(k), value: b(v) } }], failure: [] } },
      { requestTxn: { compare: [], success: [{ requestDeleteRange: { key: b(k) } }], failure: [] } },
    ],
    failure: [],
  });
  const withPrev = (resps: WatchResponse[]): string[] =>
    resps.flatMap((r) => r.events.map((e) => `${e.type === EventType.PUT ? 'PUT' : 'DELETE'}@${e.kv.modRevision} prev=${e.prevKv ? s(e.prevKv.value) : '-'}`));
  // Catch-up two revisions per step: it must not stop between the put and the delete of revision 3.
  const { n, hub, runTasks } = setup({ syncRevisionsPerStep: 2 });
  n.put('k', 'v0'); // 2
  n.txn(putThenDelete('k', 'v1')); // 3
  n.put('k', 'v2'); // 4
  for (const range of [false, true]) {
    const ws = hub.openStream();
    ws.create({ key: b('k'), ...(range ? { rangeEnd: b('l') } : {}), startRevision: 2, prevKv: true });
    runTasks();
    t.same(withPrev(drain(ws)), ['PUT@2 prev=-', 'PUT@3 prev=v0', 'DELETE@3 prev=v0', 'PUT@4 prev=-'], `${range ? 'range' : 'single key'}: caught up whole`);
    ws.close();
  }
  const ws = hub.openStream();
  ws.create({ key: b('k'), prevKv: true });
  runTasks();
  n.txn(putThenDelete('k', 'v3')); // 5
  runTasks();
  t.same(withPrev(drain(ws)).slice(-2), ['PUT@5 prev=v2', 'DELETE@5 prev=v2'], 'synced: the same prevKv');
});

t.test('no prevKv for an event at the compact revision (etcd reads it at a compacted revision), whether compaction has run physically or not', async (t) => {
  for (const pinned of [false, true]) {
    const { n, hub, runTasks } = setup();
    n.put('k', 'a'); // 2
    n.put('k', 'b'); // 3
    n.put('k', 'c'); // 4
    if (pinned) n.store.pin();
    n.apply({ compaction: { revision: 3 } });
    const ws = hub.openStream();
    ws.create({ key: b('k'), startRevision: 3, prevKv: true });
    runTasks();
    const got = drain(ws).flatMap((r) => r.events.map((e) => `${s(e.kv.value)} prev=${e.prevKv ? s(e.prevKv.value) : '-'}`));
    t.same(got, ['b prev=-', 'c prev=b'], pinned ? 'compaction held back' : 'compacted');
    if (pinned) n.store.unpin();
  }
});
