/**
 * The etcd front end's limits and hostile input, driven with a raw gRPC client: request size,
 * txn ops and depth, watchers per connection, the watch send buffer, garbage messages.
 */
import http2 from 'node:http2';
import t, { type Test } from 'tap';
import fc from 'fast-check';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import { REWRITTEN_PEER_HEADER } from '../../core/net/etcd/client-port-listener.js';
import { EtcdGrpcServer, GRPC_OVERHEAD_BYTES, MAX_PENDING_KEEPALIVES, MAX_REQUEST_BYTES, MAX_WATCHERS_PER_CONNECTION, NO_LEADER_CHECKS, NO_LEADER_CHECK_MS } from '../../core/net/etcd/server.js';
import { MAX_TXN_DEPTH, MAX_TXN_OPS } from '../../core/net/etcd/convert.js';
import { MAX_TXN_DEPTH as KV_MAX_TXN_DEPTH } from '../../core/kv/limits.js';
import { FakeEtcdBackend } from './fake-etcd-backend.js';

type Obj = Record<string, unknown>;
type Unary = (req: Obj, cb: (err: grpc.ServiceError | null, resp: Obj) => void) => void;
type ClientOf = grpc.Client & Record<string, Unary> & { Watch: (md?: grpc.Metadata) => grpc.ClientDuplexStream<Obj, Obj>; LeaseKeepAlive: () => grpc.ClientDuplexStream<Obj, Obj> };

const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
const pkg = (grpc.loadPackageDefinition(def) as unknown as { etcdserverpb: Record<string, new (addr: string, creds: grpc.ChannelCredentials, opts?: object) => ClientOf> }).etcdserverpb;
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => (target.startsWith('/') ? target : `${ETCD_PROTO_DIR}/${target}`);
root.loadSync(ETCD_RPC_PROTO);
const PutRequest = root.lookupType('etcdserverpb.PutRequest');
const LeaseKeepAliveRequest = root.lookupType('etcdserverpb.LeaseKeepAliveRequest');
const LeaseKeepAliveResponse = root.lookupType('etcdserverpb.LeaseKeepAliveResponse');
const WatchRequest = root.lookupType('etcdserverpb.WatchRequest');

const backend = new FakeEtcdBackend();
const server = await EtcdGrpcServer.start({
  backend,
  port: 0,
  limits: { maxWatchersPerConnection: 3, maxWatchStreamBufferBytes: 256 * 1024 },
});
const addr = `127.0.0.1:${server.port}`;
const clientOpts = { 'grpc.max_send_message_length': 64 * 1024 * 1024, 'grpc.max_receive_message_length': 64 * 1024 * 1024 };
const kv = new pkg.KV!(addr, grpc.credentials.createInsecure(), clientOpts);
const watchClient = new pkg.Watch!(addr, grpc.credentials.createInsecure(), clientOpts);
const lease = new pkg.Lease!(addr, grpc.credentials.createInsecure(), clientOpts);
t.teardown(async () => {
  kv.close();
  watchClient.close();
  lease.close();
  await server.close(500);
});

/** Waits for `ended`, at most `ms` (the timer is cleared, so it does not hold the process open). */
async function endedWithin(ended: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([ended, new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

function call(c: ClientOf, method: string, req: Obj): Promise<{ err: grpc.ServiceError | null; resp: Obj }> {
  return new Promise((resolve) => c[method]!(req, (err, resp) => resolve({ err, resp })));
}

t.test('request size: exactly MAX_REQUEST_BYTES passes, one byte more is etcd\'s error', async (t) => {
  const key = Buffer.from('big');
  const sizeFor = (n: number): number => PutRequest.encode({ key, value: Buffer.alloc(n) }).finish().length;
  let n = MAX_REQUEST_BYTES - 16;
  while (sizeFor(n) < MAX_REQUEST_BYTES) n++;
  t.equal(sizeFor(n), MAX_REQUEST_BYTES);
  const ok = await call(kv, 'Put', { key, value: Buffer.alloc(n) });
  t.equal(ok.err, null, 'at the limit: accepted');
  const over = await call(kv, 'Put', { key, value: Buffer.alloc(n + 1) });
  t.equal(over.err?.code, grpc.status.INVALID_ARGUMENT);
  t.equal(over.err?.details, 'etcdserver: request is too large');
  const way = await call(kv, 'Put', { key, value: Buffer.alloc(MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES + 1) });
  t.equal(way.err?.code, grpc.status.RESOURCE_EXHAUSTED, 'beyond gRPC\'s own limit: refused before decoding');
  t.equal((await call(kv, 'Range', { key: Buffer.from('a') })).err, null, 'still serving');
});

t.test('etcd\'s request checks', async (t) => {
  const e = async (method: string, req: Obj): Promise<string | undefined> => (await call(kv, method, req)).err?.details;
  t.equal(await e('Put', { key: Buffer.alloc(0), value: Buffer.from('v') }), 'etcdserver: key is not provided');
  t.equal(await e('Range', { key: Buffer.alloc(0) }), 'etcdserver: key is not provided');
  t.equal(await e('DeleteRange', { key: Buffer.alloc(0) }), 'etcdserver: key is not provided');
  t.equal(await e('Put', { key: Buffer.from('k'), value: Buffer.from('v'), ignoreValue: true }), 'etcdserver: value is provided');
  t.equal(await e('Put', { key: Buffer.from('k'), lease: '5', ignoreLease: true }), 'etcdserver: lease is provided');
  const put = (i: number): Obj => ({ requestPut: { key: Buffer.from(`t${i}`), value: Buffer.from('v') } });
  t.equal(await e('Txn', { success: Array.from({ length: MAX_TXN_OPS }, (_, i) => put(i)) }), undefined, `${MAX_TXN_OPS} ops: ok`);
  t.equal(await e('Txn', { success: Array.from({ length: MAX_TXN_OPS + 1 }, (_, i) => put(i)) }), 'etcdserver: too many operations in txn request');
  t.equal(await e('Txn', { compare: Array.from({ length: MAX_TXN_OPS + 1 }, () => ({ key: Buffer.from('k') })) }), 'etcdserver: too many operations in txn request');
  const nest = (d: number): Obj => (d === 0 ? put(0) : { requestTxn: { success: [nest(d - 1)] } });
  // The port's bound is the state machine's (core/kv/limits.ts), not a tighter one of its own.
  t.equal(MAX_TXN_DEPTH, KV_MAX_TXN_DEPTH, "the client port's txn nesting bound is the store's");
  t.equal(await e('Txn', { success: [nest(MAX_TXN_DEPTH)] }), undefined, `nesting ${MAX_TXN_DEPTH}: ok`);
  t.match(await e('Txn', { success: [nest(MAX_TXN_DEPTH + 1)] }), /txn nested deeper than/);
  const r = await call(kv, 'Range', { key: Buffer.from('t'), rangeEnd: Buffer.from('u'), countOnly: true });
  t.equal(r.resp.count, String(MAX_TXN_OPS), 'count_only answers a count (t0..t127)');
  t.same(r.resp.kvs, []);
  const sorted = await call(kv, 'Range', { key: Buffer.from('t'), rangeEnd: Buffer.from('u'), sortOrder: 'DESCEND', limit: '2' });
  t.same((sorted.resp.kvs as { key: Buffer }[]).map((x) => x.key.toString()), ['t99', 't98']);
  t.equal(sorted.resp.more, true);
  const badSort = await call(kv, 'Range', { key: Buffer.from('a'), sortOrder: 9 });
  t.same([badSort.err?.code, badSort.err?.details], [grpc.status.INVALID_ARGUMENT, 'etcdserver: invalid sort option'], "an unknown sort order: etcd's error, which clientv3 matches by its text");
  t.equal((await call(kv, 'Range', { key: Buffer.from('a'), sortTarget: 7 })).err?.details, 'etcdserver: invalid sort option', 'an unknown sort target too');
  t.equal((await call(kv, 'Range', { key: Buffer.alloc(0), sortOrder: 9 })).err?.details, 'etcdserver: key is not provided', 'the key is checked first, as etcd checks it');
});

t.test('lease ids: beyond [-(2^53-2), 2^53-1] refused on grant; unknown ids get TTL 0 on the keep-alive stream', async (t) => {
  const big = await call(lease, 'LeaseGrant', { TTL: '10', ID: '9007199254740993' });
  t.equal(big.err?.code, grpc.status.INVALID_ARGUMENT);
  // -(2^53-1) stands for every ID a number cannot hold (UNREPRESENTABLE_ID): never granted.
  for (const id of ['-9007199254740991', '-9007199254740993', '-9223372036854775808']) {
    t.equal((await call(lease, 'LeaseGrant', { TTL: '10', ID: id })).err?.code, grpc.status.INVALID_ARGUMENT, `${id} refused`);
  }
  const g = await call(lease, 'LeaseGrant', { TTL: '10', ID: '9007199254740991' });
  t.equal(g.resp.ID, '9007199254740991', '2^53-1 round-trips exactly');
  const low = await call(lease, 'LeaseGrant', { TTL: '10', ID: '-9007199254740990' });
  t.equal(low.resp.ID, '-9007199254740990', 'a negative ID (etcd grants them), the lowest, round-trips exactly');
  const lowTtl = await call(lease, 'LeaseTimeToLive', { ID: '-9007199254740990' });
  t.equal(lowTtl.resp.grantedTTL, '10', 'and is found again');
  const unrepresentable = await call(lease, 'LeaseTimeToLive', { ID: '-9223372036854775807' });
  t.equal(unrepresentable.resp.TTL, '-1', 'an ID below -(2^53-1) does not alias the lowest lease');
  const stream = lease.LeaseKeepAlive();
  const got: Obj[] = [];
  stream.on('data', (d: Obj) => got.push(d));
  stream.write({ ID: '9007199254740991' });
  stream.write({ ID: '77' });
  stream.write({ ID: '9223372036854775807' });
  const deadline = Date.now() + 3_000;
  while (got.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.same(got.map((x) => [x.ID, x.TTL]), [['9007199254740991', '10'], ['77', '0'], ['9223372036854775807', '0']], 'an id beyond 2^53 does not alias 2^53-1');
  stream.end();
});

t.test('keep-alive requests sent before the client half-closes are all answered, then the stream ends', async (t) => {
  const g = await call(lease, 'LeaseGrant', { TTL: '20' });
  // Each keep-alive takes a while (the real one goes to the leader): the half-close arrives first.
  backend.keepAliveDelayMs = 20;
  t.teardown(() => void (backend.keepAliveDelayMs = 0));
  const stream = lease.LeaseKeepAlive();
  const got: Obj[] = [];
  stream.on('data', (d: Obj) => got.push(d));
  const ended = new Promise<void>((resolve) => stream.on('end', resolve));
  stream.write({ ID: g.resp.ID });
  stream.write({ ID: '78' });
  stream.write({ ID: g.resp.ID });
  stream.end();
  await endedWithin(ended, 3_000);
  t.same(got.map((x) => [x.ID, x.TTL]), [[g.resp.ID, '20'], ['78', '0'], [g.resp.ID, '20']], 'etcd answers every request it read before EOF');
});

t.test('a burst of keep-alives beyond MAX_PENDING_KEEPALIVES on one stream: every one answered, none dropped', async (t) => {
  // A client holding thousands of leases renews them all on one stream at once (etcd's
  // clientv3 does, every TTL/3). The burst is sent as one HTTP/2 write (grpc-js's own client
  // would send one message per write): the server must stop reading (HTTP/2 flow control holds
  // the client back) rather than drop what it cannot queue.
  const g = await call(lease, 'LeaseGrant', { TTL: '30' });
  backend.keepAliveDelayMs = 5;
  t.teardown(() => void (backend.keepAliveDelayMs = 0));
  const n = MAX_PENDING_KEEPALIVES * 4;
  const one = LeaseKeepAliveRequest.encode({ ID: Number(g.resp.ID) }).finish();
  const framed = Buffer.alloc(5 + one.length);
  framed.writeUInt32BE(one.length, 1);
  framed.set(one, 5);
  const session = http2.connect(`http://${addr}`);
  t.teardown(() => session.close());
  const req = session.request({ ':method': 'POST', ':path': '/etcdserverpb.Lease/LeaseKeepAlive', 'content-type': 'application/grpc', te: 'trailers' });
  let buf = Buffer.alloc(0);
  let answered = 0;
  let renewed = 0;
  req.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
      const len = buf.readUInt32BE(1);
      const r = LeaseKeepAliveResponse.decode(buf.subarray(5, 5 + len)) as unknown as { ID: unknown; TTL: unknown };
      buf = buf.subarray(5 + len);
      answered++;
      if (String(r.ID) === g.resp.ID && String(r.TTL) === '30') renewed++;
    }
  });
  const ended = new Promise<void>((resolve) => req.on('end', resolve));
  req.end(Buffer.concat(Array.from({ length: n }, () => framed)));
  await endedWithin(ended, 20_000);
  t.equal(answered, n, `all ${n} keep-alives answered`);
  t.equal(renewed, n, 'each one a renewal of the lease');
});

t.test('a keep-alive client that never reads its answers stops being read, as etcd stops in Send: the member does not hold answers without end', async (t) => {
  const g = await call(lease, 'LeaseGrant', { TTL: '30' });
  const keepAlive = backend.leaseKeepAlive.bind(backend);
  let renewals = 0;
  backend.leaseKeepAlive = (...args: Parameters<typeof keepAlive>) => {
    renewals++;
    return keepAlive(...args);
  };
  t.teardown(() => void (backend.leaseKeepAlive = keepAlive));
  const n = 100_000;
  sendUnread(t, '/etcdserverpb.Lease/LeaseKeepAlive', LeaseKeepAliveRequest.encode({ ID: Number(g.resp.ID) }).finish(), n);
  await untilSteady(() => renewals);
  t.ok(renewals < n / 10, `${renewals} of ${n} keep-alives read, each answer held for a client that takes none`);
});

t.test('a watch client that sends requests and never reads the replies stops being read, as etcd blocks on its control channel', async (t) => {
  const progress = backend.watchProgress.bind(backend);
  let asked = 0;
  backend.watchProgress = () => {
    asked++;
    return progress();
  };
  t.teardown(() => void (backend.watchProgress = progress));
  // 7 bytes each on the wire, a reply held for each: 150,000 grew a member by ~85 MB before.
  const n = 100_000;
  const { session, req } = sendUnread(t, '/etcdserverpb.Watch/Watch', WatchRequest.encode({ progressRequest: {} }).finish(), n);
  await untilSteady(() => asked);
  t.ok(asked > 0 && asked < n / 10, `${asked} of ${n} progress requests read, each reply held for a client that takes none`);
  // The client starts reading: the rest of its requests are read and answered.
  let replies = 0;
  req.on('data', (d: Buffer) => (replies += d.length));
  session.settings({ initialWindowSize: 1 << 20 });
  for (let i = 0; i < 100 && asked < n; i++) await new Promise((r) => setTimeout(r, 100));
  t.equal(asked, n, 'every request read once the replies are taken');
  t.ok(replies > 0, `${replies} bytes of replies received`);
});

/**
 * `n` copies of one request on a stream of `path`, from a client that takes no answer: it gives
 * the server no flow-control window for them.
 */
function sendUnread(t: Test, path: string, message: Uint8Array, n: number): { session: http2.ClientHttp2Session; req: http2.ClientHttp2Stream } {
  const framed = Buffer.alloc(5 + message.length);
  framed.writeUInt32BE(message.length, 1);
  framed.set(message, 5);
  const session = http2.connect(`http://${addr}`, { settings: { initialWindowSize: 0 } });
  t.teardown(() => session.destroy());
  const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
  req.on('error', () => undefined);
  req.write(Buffer.concat(Array.from({ length: n }, () => framed)));
  return { session, req };
}

/** Until `count()` stops moving (half a second without a change), at most 25 seconds. */
async function untilSteady(count: () => number): Promise<void> {
  for (let last = -1, i = 0; i < 50 && count() !== last; i++) {
    last = count();
    await new Promise((r) => setTimeout(r, 500));
  }
}

function watchStream(): { s: grpc.ClientDuplexStream<Obj, Obj>; got: Obj[]; until: (f: (got: Obj[]) => boolean) => Promise<void> } {
  const s = watchClient.Watch();
  const got: Obj[] = [];
  s.on('data', (d: Obj) => got.push(d));
  s.on('error', () => undefined);
  return {
    s,
    got,
    until: async (f) => {
      const deadline = Date.now() + 5_000;
      while (!f(got)) {
        if (Date.now() > deadline) throw new Error(`watch responses: ${JSON.stringify(got)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
}

t.test('an unknown watch filter is ignored, as etcd ignores it; the known ones still apply', async (t) => {
  const watch = backend.watch.bind(backend);
  const asked: unknown[] = [];
  backend.watch = (...args: Parameters<typeof watch>) => {
    asked.push(args[0].filters);
    return watch(...args);
  };
  t.teardown(() => void (backend.watch = watch));
  const c = watchStream();
  c.s.write({ createRequest: { key: Buffer.from('filtered'), filters: [5, 'NODELETE'] } });
  await c.until((g) => g.length >= 1);
  t.same([c.got[0]!.created, c.got[0]!.canceled], [true, false], 'created');
  t.same(asked, [['NODELETE']], 'with the filter it knows');
  c.s.cancel();
  await new Promise((r) => setTimeout(r, 100));
});

t.test("a watch whose keys cannot be watched is refused in one response, without taking an ID (etcd's watch_id -1)", async (t) => {
  const c = watchStream();
  c.s.write({ createRequest: { key: Buffer.from('b'), rangeEnd: Buffer.from('a') } });
  c.s.write({ createRequest: { key: Buffer.from('c') } });
  await c.until((g) => g.length >= 2);
  t.same(
    c.got.map((r) => [r.watchId, r.created, r.canceled, r.cancelReason]),
    [['-1', true, true, 'mvcc: watcher range is empty'], ['0', true, false, '']],
    'refused as etcd refuses it; the next watch gets the first ID',
  );
  c.s.cancel();
  await new Promise((r) => setTimeout(r, 100));
});

t.test('watch protocol: ids, duplicate id, cancel, progress, watchers-per-connection limit', async (t) => {
  const a = watchStream();
  a.s.write({ createRequest: { key: Buffer.from('x') } });
  a.s.write({ createRequest: { key: Buffer.from('y'), watchId: '42' } });
  a.s.write({ createRequest: { key: Buffer.from('z'), watchId: '42' } });
  await a.until((g) => g.length >= 3);
  t.same(a.got.map((r) => [r.watchId, r.created, r.canceled]), [['0', true, false], ['42', true, false], ['-1', true, true]]);
  t.equal(a.got[2]!.cancelReason, 'mvcc: duplicate watch ID provided on the WatchStream');
  // Two watchers on this connection; a second stream on the same connection shares the limit (3).
  const b = watchStream();
  b.s.write({ createRequest: { key: Buffer.from('p') } });
  b.s.write({ createRequest: { key: Buffer.from('q') } });
  await b.until((g) => g.length >= 2);
  t.same(b.got.map((r) => [r.created, r.canceled]), [[true, false], [true, true]]);
  t.match(b.got[1]!.cancelReason, /too many watchers on this connection \(limit 3\)/);
  t.equal(server.watcherCount, 3);
  a.s.write({ cancelRequest: { watchId: '42' } });
  await a.until((g) => g.length >= 4);
  t.same([a.got[3]!.watchId, a.got[3]!.canceled], ['42', true]);
  t.equal(server.watcherCount, 2);
  a.s.write({ progressRequest: {} });
  await a.until((g) => g.length >= 5);
  t.equal(a.got[4]!.watchId, '-1', 'progress response is for the whole stream');
  t.equal(a.got[4]!.header && (a.got[4]!.header as Obj).revision, String(backend.rev));
  a.s.cancel();
  b.s.cancel();
  await new Promise((r) => setTimeout(r, 100));
  t.equal(server.watcherCount, 0, 'cancelling streams frees their watchers');
  t.equal(backend.watcherCount, 0);
  t.ok(MAX_WATCHERS_PER_CONNECTION >= 10_000);
});

t.test("connections with a URL authority (grpc-go's, rewritten) each have their own watcher limit; a client cannot claim another's address", async (t) => {
  // grpc-go sends the endpoint URL as :authority; such a connection reaches grpc-js through a
  // JS stream without an address, and every one of them once counted as the same peer.
  const urlClient = (): ClientOf =>
    new pkg.Watch!(addr, grpc.credentials.createInsecure(), { ...clientOpts, 'grpc.default_authority': `http://${addr}`, 'grpc.use_local_subchannel_pool': 1 });
  const clients = [urlClient(), urlClient()];
  t.teardown(() => clients.forEach((c) => c.close()));
  const spoofed = new grpc.Metadata();
  spoofed.set(REWRITTEN_PEER_HEADER, '203.0.113.9:1');
  const answers: Obj[][] = [];
  const streams = clients.map((c, i) => {
    const s = c.Watch(spoofed);
    const got: Obj[] = (answers[i] = []);
    s.on('data', (d: Obj) => got.push(d));
    s.on('error', () => undefined);
    return s;
  });
  for (const s of streams) for (const k of ['u1', 'u2', 'u3']) s.write({ createRequest: { key: Buffer.from(k) } });
  for (let i = 0; i < 500 && answers.some((a) => a.length < 3); i++) await new Promise((r) => setTimeout(r, 10));
  t.same(answers.map((a) => a.map((r) => [r.created, r.canceled])), [Array(3).fill([true, false]), Array(3).fill([true, false])], 'three watchers on each connection');
  streams[0]!.write({ createRequest: { key: Buffer.from('u4') } });
  for (let i = 0; i < 500 && answers[0]!.length < 4; i++) await new Promise((r) => setTimeout(r, 10));
  t.match(answers[0]![3], { canceled: true, cancelReason: /too many watchers on this connection \(limit 3\)/ }, 'a fourth is refused on its connection');
  for (const s of streams) s.cancel();
  for (let i = 0; i < 100 && server.watcherCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(server.watcherCount, 0);
});

t.test('a client that half-closes its watch stream still gets events, as from etcd, until it cancels', async (t) => {
  const w = watchStream();
  w.s.write({ createRequest: { key: Buffer.from('half') } });
  w.s.end();
  await w.until((g) => g.length >= 1);
  const kv = { key: Buffer.from('half'), createRevision: 1, modRevision: 7, version: 1, value: Buffer.from('v'), lease: 0 };
  backend.blast([{ type: 'PUT', kv }]);
  await w.until((g) => g.some((r) => (r.events as unknown[] | undefined)?.length));
  t.equal(server.watcherCount, 1, 'the watcher outlives the half-close');
  w.s.cancel();
  for (let i = 0; i < 100 && server.watcherCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(server.watcherCount, 0, 'and goes when the client cancels');
});

t.test('a fan-out written in one turn (eager sends) arrives complete and in order for every watcher', async (t) => {
  const w = watchStream();
  for (let i = 0; i < 3; i++) w.s.write({ createRequest: { key: Buffer.from('fan') } });
  await w.until((g) => g.filter((r) => r.created === true).length >= 3);
  const BLASTS = 300;
  for (let i = 1; i <= BLASTS; i++) {
    const kvi = { key: Buffer.from('fan'), createRevision: 1, modRevision: i, version: i, value: Buffer.from(`v${i}`), lease: 0 };
    backend.blast([{ type: 'PUT', kv: kvi }]);
  }
  await w.until((g) => g.filter((r) => (r.events as unknown[] | undefined)?.length).length >= 3 * BLASTS);
  const revs = new Map<string, number[]>();
  for (const r of w.got) {
    for (const e of (r.events ?? []) as Obj[]) {
      const id = String(r.watchId);
      revs.set(id, [...(revs.get(id) ?? []), Number((e.kv as Obj).modRevision)]);
    }
  }
  const expected = Array.from({ length: BLASTS }, (_, i) => i + 1);
  t.equal(revs.size, 3);
  for (const [id, list] of revs) t.same(list, expected, `watcher ${id}: every event, in order`);
  w.s.cancel();
  await new Promise((r) => setTimeout(r, 100));
});

t.test('a watch consumer that stops reading is cancelled with a reason, not buffered forever', async (t) => {
  const w = watchStream();
  w.s.write({ createRequest: { key: Buffer.from('slow') } });
  await w.until((g) => g.length >= 1);
  w.s.pause();
  const value = Buffer.alloc(32 * 1024, 0x61);
  const ev = { type: 'PUT' as const, kv: { key: Buffer.from('slow'), createRevision: 1, modRevision: 1, version: 1, value, lease: 0 } };
  for (let i = 0; i < 400 && backend.watcherCount > 0; i++) {
    backend.blast([ev]);
    await new Promise((r) => setImmediate(r));
  }
  t.equal(backend.watcherCount, 0, 'the slow watcher was cancelled at the send-buffer limit');
  w.s.resume();
  await w.until((g) => g.some((r) => r.canceled === true));
  const cancel = w.got.find((r) => r.canceled === true)!;
  t.match(cancel.cancelReason, /send buffer full \(client too slow\)/);
  w.s.cancel();
});

t.test('one revision larger than the whole send buffer reaches a client that reads: not taken for a slow one', async (t) => {
  const w = watchStream();
  w.s.write({ createRequest: { key: Buffer.from('big'), prevKv: true } });
  await w.until((g) => g.length >= 1);
  // 16 events of 32 KiB each, with their previous values: 1 MiB in one response, 4x the buffer.
  const value = Buffer.alloc(32 * 1024, 0x62);
  const events = Array.from({ length: 16 }, (_, i) => ({
    type: 'DELETE' as const,
    kv: { key: Buffer.from(`big${i}`), createRevision: 0, modRevision: 7, version: 0, value: Buffer.alloc(0), lease: 0 },
    prevKv: { key: Buffer.from(`big${i}`), createRevision: 2, modRevision: 2, version: 1, value, lease: 0 },
  }));
  backend.blast(events);
  await w.until((g) => g.some((r) => ((r.events as unknown[] | undefined)?.length ?? 0) > 0 || r.canceled === true));
  t.notOk(w.got.some((r) => r.canceled === true), 'not cancelled');
  t.equal(w.got.reduce((n, r) => n + ((r.events as unknown[] | undefined)?.length ?? 0), 0), 16, 'the whole revision arrived');
  w.s.cancel();
});

t.test("fragment=true: a revision too large for one message arrives in pieces, as etcd's sendFragments sends it", async (t) => {
  // A client with grpc-js's default 4 MiB receive limit, as the reviewer's: five deletes of 1 MB
  // values with prev_kv are 5 MB in one response.
  const small = new pkg.Watch!(addr, grpc.credentials.createInsecure());
  t.teardown(() => small.close());
  type Opened = { got: Obj[]; error: Promise<grpc.ServiceError>; failed?: grpc.ServiceError; s: grpc.ClientDuplexStream<Obj, Obj> };
  const open = (c: ClientOf, create: Obj): Opened => {
    const s = c.Watch();
    const got: Obj[] = [];
    s.on('data', (d: Obj) => got.push(d));
    const w: Opened = { got, s, error: new Promise((resolve) => s.on('error', (e: grpc.ServiceError) => resolve((w.failed = e)))) };
    s.write({ createRequest: { key: Buffer.from('frag'), rangeEnd: Buffer.from('frah'), prevKv: true, ...create } });
    return w;
  };
  const fragmented = open(small, { fragment: true });
  const whole = open(small, {});
  const wholeBig = open(watchClient, {});
  const evs = (r: Obj): Obj[] => (r.events as Obj[] | undefined) ?? [];
  const until = async (f: () => boolean): Promise<void> => {
    for (const deadline = Date.now() + 10_000; !f(); await new Promise((r) => setTimeout(r, 10))) {
      if (Date.now() > deadline) throw new Error('timed out');
    }
  };
  await until(() => [fragmented, whole, wholeBig].every((w) => w.got.length >= 1));
  const events = Array.from({ length: 5 }, (_, i) => ({
    type: 'DELETE' as const,
    kv: { key: Buffer.from(`frag${i}`), createRevision: 0, modRevision: 9, version: 0, value: Buffer.alloc(0), lease: 0 },
    prevKv: { key: Buffer.from(`frag${i}`), createRevision: 2 + i, modRevision: 2 + i, version: 1, value: Buffer.alloc(1_000_000, 0x66), lease: 0 },
  }));
  backend.blast(events);
  const count = (got: Obj[]): number => got.reduce((n, r) => n + evs(r).length, 0);
  await until(() => (count(fragmented.got) >= 5 || fragmented.failed !== undefined) && count(wholeBig.got) >= 5);
  t.equal(fragmented.failed?.code, undefined, 'the stream that asked for fragments is not failed by its client');
  const pieces = fragmented.got.filter((r) => evs(r).length > 0);
  t.same(pieces.map((r) => evs(r).length), [2, 2, 1], "etcd 3.4's split of this revision");
  t.same(pieces.map((r) => r.fragment), [true, true, false], 'all but the last marked fragment');
  t.same(pieces.flatMap((r) => evs(r).map((e) => String((e.kv as Obj).key))), events.map((e) => String(e.kv.key)), 'together: the revision\'s events, in order');
  t.ok(pieces.every((r) => evs(r).every((e) => (e.prevKv as Obj).value instanceof Buffer && ((e.prevKv as Obj).value as Buffer).length === 1_000_000)), 'with their prev_kv');
  t.ok(pieces.every((r) => (r.header as Obj).revision === (pieces[0]!.header as Obj).revision && r.watchId === pieces[0]!.watchId), 'one header and watch id');
  const WatchResponse = root.lookupType('etcdserverpb.WatchResponse');
  for (const r of pieces) t.ok(WatchResponse.encode(WatchResponse.fromObject(r)).finish().length < MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES, 'each below the max request bytes plus gRPC overhead');
  t.notOk(fragmented.got.some((r) => r.canceled === true), 'fragments of one response, 20 times the send buffer, are not taken for a slow client');
  // Without fragment: today's single response (as etcd sends it), which the default client refuses.
  t.same(wholeBig.got.filter((r) => evs(r).length > 0).map((r) => [evs(r).length, r.fragment]), [[5, false]], 'without fragment: one response');
  t.equal((await whole.error).code, grpc.status.RESOURCE_EXHAUSTED, 'which a client with the default receive limit cannot take');
  for (const w of [fragmented, wholeBig]) w.s.cancel();
});

t.test("watch streams that require a leader (etcd's hasleader metadata): refused, then ended, with NO_LEADER", async (t) => {
  const md = new grpc.Metadata();
  md.set('hasleader', 'true');
  const ended = (s: grpc.ClientDuplexStream<Obj, Obj>): Promise<grpc.ServiceError | undefined> =>
    new Promise((resolve) => {
      s.on('error', (e: grpc.ServiceError) => resolve(e));
      s.on('end', () => resolve(undefined));
    });
  t.teardown(() => void (backend.leaderKnown = true));

  backend.leaderKnown = false;
  const refused = watchClient.Watch(md);
  refused.on('data', () => undefined);
  const err = await ended(refused);
  t.equal(err?.code, grpc.status.UNAVAILABLE);
  t.equal(err?.details, 'etcdserver: no leader', "refused at once with etcd's error");
  const plain = watchStream();
  plain.s.write({ createRequest: { key: Buffer.from('nl') } });
  await plain.until((g) => g.some((r) => r.created === true || r.canceled === true));
  const created = plain.got.find((r) => r.created === true);
  t.ok(created !== undefined && created.canceled !== true, 'a stream without hasleader is served without a leader: its watch is created, not cancelled');

  backend.leaderKnown = true;
  const got: Obj[] = [];
  const held = watchClient.Watch(md);
  held.on('data', (d: Obj) => got.push(d));
  const heldEnd = ended(held);
  held.write({ createRequest: { key: Buffer.from('nl') } });
  for (let i = 0; i < 200 && !got.some((r) => r.created === true); i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(got.some((r) => r.created === true), 'with a leader: served');
  const lostAt = Date.now();
  backend.leaderKnown = false;
  const heldErr = await heldEnd;
  const after = Date.now() - lostAt;
  t.equal(heldErr?.details, 'etcdserver: no leader', `ended with NO_LEADER ${after} ms after the leader was lost`);
  t.ok(after >= (NO_LEADER_CHECKS - 1) * NO_LEADER_CHECK_MS && after < (NO_LEADER_CHECKS + 2) * NO_LEADER_CHECK_MS, 'after a few checks, not at the first');
  plain.s.write({ progressRequest: {} });
  const n = plain.got.length;
  await plain.until((g) => g.length > n);
  const progress = plain.got[n]!;
  t.ok(progress.canceled !== true && (progress.events as unknown[] | undefined)?.length === 0 && progress.header !== undefined, 'the stream without hasleader is still open: it answers a progress request');
  plain.s.cancel();
});

t.test("a unary call that requires a leader (hasleader metadata) is refused at once while there is none, as etcd's interceptor refuses it", async (t) => {
  const md = new grpc.Metadata();
  md.set('hasleader', 'true');
  t.teardown(() => void (backend.leaderKnown = true));
  const put = (meta: grpc.Metadata): Promise<grpc.ServiceError | undefined> =>
    new Promise((resolve) => (kv.Put as unknown as (r: Obj, m: grpc.Metadata, cb: (e: grpc.ServiceError | null) => void) => void)({ key: Buffer.from('hl'), value: Buffer.from('v') }, meta, (e) => resolve(e ?? undefined)));
  backend.leaderKnown = false;
  const refused = await put(md);
  t.match(refused, { code: grpc.status.UNAVAILABLE, details: 'etcdserver: no leader' }, 'with hasleader: NO_LEADER');
  t.equal(await put(new grpc.Metadata()), undefined, 'without it: served (the member decides how to wait)');
  backend.leaderKnown = true;
  t.equal(await put(md), undefined, 'with a leader: served');
});

t.test('fuzz: garbage request bytes on every method get an error status; the server keeps serving', async (t) => {
  const raw = new grpc.Client(addr, grpc.credentials.createInsecure());
  t.teardown(() => raw.close());
  const methods = [
    '/etcdserverpb.KV/Range',
    '/etcdserverpb.KV/Put',
    '/etcdserverpb.KV/Txn',
    '/etcdserverpb.Lease/LeaseGrant',
    '/etcdserverpb.Cluster/MemberAdd',
    '/etcdserverpb.Maintenance/Alarm',
    '/etcdserverpb.Auth/Authenticate',
    '/etcdserverpb.Auth/UserAdd',
    '/etcdserverpb.Auth/RoleGrantPermission',
    '/etcdserverpb.Auth/RoleRevokePermission',
  ];
  const send = (method: string, body: Buffer): Promise<grpc.status> =>
    new Promise((resolve) =>
      raw.makeUnaryRequest(method, (b: Buffer) => b, (b: Buffer) => b, body, (err) => resolve(err ? err.code : grpc.status.OK)),
    );
  let errors = 0;
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...methods), fc.uint8Array({ minLength: 1, maxLength: 200 }), async (m, b) => {
      const code = await send(m, Buffer.from(b));
      if (code !== grpc.status.OK) errors++;
      return true; // any status is fine; what matters is that the server survives (checked below)
    }),
    { numRuns: 150 },
  );
  t.ok(errors > 0, `${errors} garbage requests refused`);
  // A txn nested thousands deep: the decoder's recursion must not take the server down.
  let deep: Buffer = Buffer.from(PutRequest.encode({ key: Buffer.from('k') }).finish());
  const field = (no: number, payload: Buffer): Buffer<ArrayBufferLike> => Buffer.concat([Buffer.from([(no << 3) | 2]), Buffer.from(protobuf.Writer.create().uint32(payload.length).finish()), payload]);
  deep = field(2, deep); // RequestOp.request_put
  for (let i = 0; i < 3000; i++) deep = field(4, field(2, deep)); // RequestOp.request_txn { success: [...] }
  const code = await send('/etcdserverpb.KV/Txn', field(2, deep));
  t.not(code, grpc.status.OK, `deeply nested txn refused (status ${grpc.status[code]})`);
  t.equal((await call(kv, 'Put', { key: Buffer.from('alive'), value: Buffer.from('yes') })).err, null, 'still serving');
});
