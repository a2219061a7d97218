// Every limit at its edge: the limit itself passes, one more fails with the named error.
import t from 'tap';
import { decodeKvRequest, encodeKvRequest } from '../../core/kv/codec.js';
import {
  MAX_KEY_BYTES,
  MAX_RANGE_RESPONSE_BYTES,
  MAX_REQUEST_BYTES,
  MAX_TXN_DEPTH,
  MAX_TXN_OPS,
  MAX_WATCHERS_PER_STREAM,
  SNAPSHOT_FRAME_BYTES_MAX,
  WATCH_BUFFER_BYTES_MAX,
  WATCH_BUFFER_EVENTS_MAX,
  KV_OVERHEAD_BYTES,
} from '../../core/kv/limits.js';
import { KvStore } from '../../core/kv/store.js';
import type { RequestOp, TxnRequest } from '../../core/kv/types.js';
import { WatchHub } from '../../core/kv/watch.js';
import { b, Node } from './helpers.js';

t.test('request size: 1.5 MiB, as etcd', async (t) => {
  t.equal(MAX_REQUEST_BYTES, 1572864);
  const sized = (n: number) => ({ put: { key: b('k'), value: Buffer.alloc(n, 0x61) } });
  const overhead = encodeKvRequest(sized(100_000)).length - 100_000;
  const atLimit = encodeKvRequest(sized(MAX_REQUEST_BYTES - overhead));
  t.equal(atLimit.length, MAX_REQUEST_BYTES, 'exactly at the limit encodes');
  t.throws(() => encodeKvRequest(sized(MAX_REQUEST_BYTES - overhead + 1)), { code: 'REQUEST_TOO_LARGE' });
  const store = new KvStore();
  const r = store.apply(decodeKvRequest(atLimit), { index: 1, term: 1 });
  t.ok('put' in r, 'and applies');
  t.throws(() => decodeKvRequest(Buffer.concat([atLimit, Buffer.from([0])])), { code: 'REQUEST_TOO_LARGE' });
});

t.test('key size', async (t) => {
  const n = Node.create();
  const key = 'k'.repeat(MAX_KEY_BYTES);
  n.put(key, 'v');
  t.equal(n.range(key).kvs.length, 1);
  const e = n.err({ put: { key: b(key + 'k'), value: b('v') } });
  t.equal(e.code, 'KEY_TOO_LARGE');
  t.equal(e.grpcCode, 3);
  t.equal(n.err({ range: { key: b('a'), rangeEnd: b('z'.repeat(MAX_KEY_BYTES + 1)) } }).code, 'KEY_TOO_LARGE');
  t.equal(n.err({ deleteRange: { key: b(key + 'k') } }).code, 'KEY_TOO_LARGE');
  t.equal(n.err({ txn: { compare: [{ key: b(key + 'k') }] } }).code, 'KEY_TOO_LARGE');
});

t.test('txn ops: 128, as etcd', async (t) => {
  t.equal(MAX_TXN_OPS, 128);
  const n = Node.create();
  const ops = (k: number): RequestOp[] => Array.from({ length: k }, (_, i) => ({ requestRange: { key: b(`k${i}`) } }));
  t.ok('txn' in n.apply({ txn: { success: ops(MAX_TXN_OPS), failure: ops(MAX_TXN_OPS) } }));
  t.equal(n.err({ txn: { failure: ops(MAX_TXN_OPS + 1) } }).code, 'TOO_MANY_OPS');
});

t.test('txn depth', async (t) => {
  const nest = (depth: number): TxnRequest => {
    let x: TxnRequest = { success: [{ requestPut: { key: b('deep'), value: b('v') } }] };
    for (let i = 1; i < depth; i++) x = { success: [{ requestTxn: x }] };
    return x;
  };
  const n = Node.create();
  t.ok('txn' in n.apply({ txn: nest(MAX_TXN_DEPTH) }));
  t.equal(n.range('deep').kvs.length, 1);
  t.equal(n.err({ txn: nest(MAX_TXN_DEPTH + 1) }).code, 'TXN_TOO_DEEP');
});

t.test('watchers per stream', async (t) => {
  const n = Node.create();
  const hub = new WatchHub(n.store, { schedule: () => {} });
  const ws = hub.openStream();
  for (let i = 0; i < MAX_WATCHERS_PER_STREAM; i++) ws.create({ key: b(`k${i}`) });
  t.equal(ws.size, MAX_WATCHERS_PER_STREAM);
  t.equal(ws.create({ key: b('one-more') }), -1);
  let last;
  for (let r = ws.next(); r; r = ws.next()) last = r;
  t.same([last!.created, last!.canceled], [true, true]);
  t.match(last!.cancelReason, /too many watchers/);
  t.equal(hub.openStream().create({ key: b('x') }), 0, 'another stream has its own budget');
});

t.test('per-watcher buffer: events', async (t) => {
  const n = Node.create();
  const hub = new WatchHub(n.store, { schedule: () => {} });
  const ws = hub.openStream();
  ws.create({ key: b('k') });
  ws.next();
  for (let i = 0; i < WATCH_BUFFER_EVENTS_MAX; i++) n.put('k', '');
  t.same([hub.stats.slowUnsyncs, hub.unsyncedCount], [0, 0], `${WATCH_BUFFER_EVENTS_MAX} buffered events are fine`);
  n.put('k', '');
  t.same([hub.stats.slowUnsyncs, hub.unsyncedCount], [1, 1], 'one more: the watcher reads the rest from the log');
});

t.test('per-watcher buffer: bytes', async (t) => {
  const n = Node.create();
  const hub = new WatchHub(n.store, { schedule: () => {} });
  const ws = hub.openStream();
  ws.create({ key: b('k') });
  ws.next();
  const events = 64;
  const value = 'v'.repeat(WATCH_BUFFER_BYTES_MAX / events - 1 - KV_OVERHEAD_BYTES);
  for (let i = 0; i < events; i++) n.put('k', value);
  t.same([hub.stats.slowUnsyncs, hub.unsyncedCount], [0, 0], 'exactly the byte limit is fine');
  n.put('k', '');
  t.same([hub.stats.slowUnsyncs, hub.unsyncedCount], [1, 1], 'one byte more: from the log');
});

t.test('unary range response', async (t) => {
  const n = Node.create();
  const per = 1024 * 1024;
  const count = MAX_RANGE_RESPONSE_BYTES / per;
  for (let i = 0; i < count; i++) n.put(`r${String(i).padStart(2, '0')}`, 'x'.repeat(per - 3 - KV_OVERHEAD_BYTES));
  t.equal(n.range('r', 's').kvs.length, count, 'exactly at the cap');
  n.put('r99', '');
  t.equal(n.err({ range: { key: b('r'), rangeEnd: b('s') } }).code, 'RANGE_TOO_LARGE');
});

t.test('snapshot frame size', async (t) => {
  const frame = (len: number): Buffer => {
    const h = Buffer.alloc(4);
    h.writeUInt32BE(len);
    return h;
  };
  await t.rejects(new KvStore().restore([frame(SNAPSHOT_FRAME_BYTES_MAX + 1)]), { code: 'SNAPSHOT_CORRUPT', detail: /frame of/ });
  await t.rejects(new KvStore().restore([frame(SNAPSHOT_FRAME_BYTES_MAX)]), { code: 'SNAPSHOT_CORRUPT', detail: /truncated/ });
});

t.test('watch key size', async (t) => {
  const n = Node.create();
  const hub = new WatchHub(n.store, { schedule: () => {} });
  const ws = hub.openStream();
  t.equal(ws.create({ key: b('k'.repeat(MAX_KEY_BYTES)) }), 0);
  t.equal(ws.create({ key: b('k'.repeat(MAX_KEY_BYTES + 1)) }), -1);
  t.equal(ws.create({ key: b('a'), rangeEnd: b('z'.repeat(MAX_KEY_BYTES + 1)) }), -1);
  const reasons = [];
  for (let r = ws.next(); r; r = ws.next()) if (r.canceled) reasons.push(r.cancelReason);
  t.equal(reasons.length, 2);
  t.match(reasons[0], /key is too large/);
});
