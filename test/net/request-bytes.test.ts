/**
 * The bound on request bytes held for unfinished gRPC messages (core/net/etcd/request-bytes.ts):
 * on both unary paths and on grpc-js's streams, a client that starts messages and never finishes
 * them gets its streams stopped, then reset, while the member's held bytes stay within the
 * bounds; streams that finish are all answered (no stream waits on another that waits on it);
 * room goes in arrival order (a large request is not passed for ever by small ones); and a real
 * member under the attack measured before the fix keeps its memory.
 */
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { deflateSync, gzipSync } from 'node:zlib';
import { connect as netConnect } from 'node:net';
import { connect, constants, type ClientHttp2Session, type ClientHttp2Stream, type ServerHttp2Stream } from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { EtcdGrpcServer, GRPC_OVERHEAD_BYTES } from '../../core/net/etcd/server.js';
import { RequestBytesBudget } from '../../core/net/etcd/request-bytes.js';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import { FakeEtcdBackend } from './fake-etcd-backend.js';
import { AgentCluster, scrapeMetrics } from '../helpers/agents.js';
import { until } from '../helpers/wait.js';

const MAX_REQUEST_BYTES = 1024 * 1024;
const MAX_MESSAGE_BYTES = MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES;
const PUT = '/etcdserverpb.KV/Put';
const WATCH = '/etcdserverpb.Watch/Watch';

const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true, oneofs: true });
const requestSerialize = (service: string, method: string): ((req: object) => Buffer) =>
  ((def[`etcdserverpb.${service}`] as protoLoader.ServiceDefinition)[method]! as protoLoader.MethodDefinition<object, object>).requestSerialize;
const encodePut = requestSerialize('KV', 'Put');

function frame(message: Buffer, announced = message.length): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(announced, 1);
  return Buffer.concat([prefix, message]);
}

/** A put of `valueBytes` as a gRPC frame. */
const putFrame = (key: string, valueBytes: number): Buffer => frame(encodePut({ key: Buffer.from(key), value: Buffer.alloc(valueBytes, 7) }));

interface Started {
  stream: ClientHttp2Stream;
  /** Sends the rest of the request and half-closes. */
  finish(): void;
  /** The grpc-status of its answer, or `rst <code>` for a reset stream. */
  outcome: Promise<string>;
}

/** A request stream that sends `sent` bytes of `body` and waits for finish(). */
function startRequest(session: ClientHttp2Session, path: string, body: Buffer, sent: number): Started {
  const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
  let status = '';
  const outcome = new Promise<string>((resolve) => {
    stream.on('response', (h) => (status = String(h['grpc-status'] ?? '')));
    stream.on('trailers', (h) => (status = String(h['grpc-status'] ?? '')));
    stream.on('error', () => undefined);
    stream.on('close', () => resolve(stream.rstCode !== undefined && stream.rstCode !== constants.NGHTTP2_NO_ERROR ? `rst ${stream.rstCode}` : status));
  });
  stream.resume();
  stream.write(body.subarray(0, sent));
  return { stream, outcome, finish: () => stream.end(body.subarray(sent)) };
}

const limits = {
  maxRequestBytes: MAX_REQUEST_BYTES,
  maxHeldRequestBytes: 2 * MAX_MESSAGE_BYTES,
  // At least the largest request: a JSON gateway body (~1.8 MiB here).
  maxHeldRequestBytesPerConnection: 2 * 2 ** 20,
  maxWaitingRequestStreams: 3,
};

/** A server with `limits` on the given path, and one HTTP/2 connection to it; both gone after the test. */
async function serverAndSession(t: Test, directUnary: boolean): Promise<{ session: ClientHttp2Session; budget: RequestBytesBudget }> {
  const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, limits, directUnary });
  const session = connect(`http://127.0.0.1:${server.port}`);
  t.teardown(async () => {
    session.destroy();
    await server.close();
  });
  return { session, budget: server.requestBytes! };
}

for (const directUnary of [true, false]) {
  t.test(`${directUnary ? 'direct path' : 'grpc-js path'}: unfinished messages are reserved whole, then wait, then are reset; all finished ones are answered`, async (t) => {
    const { session, budget } = await serverAndSession(t, directUnary);
    // 700 KiB puts: two fit the connection's bound (2 MiB), not three.
    const body = putFrame('k', 700 * 1024);
    const announced = body.length - 5;
    const started = Array.from({ length: 8 }, () => startRequest(session, PUT, body, 300 * 1024));
    await until('three reset, three waiting', () => budget.refusedStreams === 3 && budget.waitingStreams === 3, 5_000);
    t.equal(budget.heldBytes, 2 * announced, 'two messages reserved whole');
    const early = await Promise.all(started.map((s) => Promise.race([s.outcome, new Promise((r) => setTimeout(r, 100, 'open'))])));
    t.same(early.filter((o) => o !== 'open'), ['rst 11', 'rst 11', 'rst 11'], 'the three past the waiting bound reset with ENHANCE_YOUR_CALM (RESOURCE_EXHAUSTED)');
    for (const s of started) s.finish();
    const outcomes = await Promise.all(started.map((s) => s.outcome));
    t.same(outcomes.filter((o) => o === '0').length, 5, 'the five streams not reset are all answered OK, the waiting ones once room was returned');
    t.equal(budget.heldBytes, 0);
    t.equal(budget.waitingStreams, 0);
  });
}

t.test("grpc-js's streams are bounded too: an unfinished watch request holds its reservation", async (t) => {
  const { session, budget } = await serverAndSession(t, true);
  const createWatch = frame(requestSerialize('Watch', 'Watch')({ create_request: { key: Buffer.from('k') } }));
  // A watch stream: a whole create request, then a message announced at the receive limit, unfinished.
  const watch = startRequest(session, WATCH, Buffer.concat([createWatch, frame(Buffer.alloc(16), MAX_MESSAGE_BYTES)]), createWatch.length + 21);
  await until('budget.heldBytes === MAX_MESSAGE_BYTES', () => budget.heldBytes === MAX_MESSAGE_BYTES, 5_000);
  // The rest of the connection's bound is too little for a 600 KiB put: it waits.
  const put = startRequest(session, PUT, putFrame('p', 600 * 1024), 600);
  await until('the put waiting', () => budget.waitingStreams === 1, 5_000);
  watch.stream.close(); // the client gives up on the watch: its reservation goes, the put is read on
  put.finish();
  t.equal(await put.outcome, '0');
  await until('budget.heldBytes === 0', () => budget.heldBytes === 0, 5_000);
  t.equal(budget.heldBytes, 0, 'nothing held once both streams are gone');
  t.equal(budget.waitingStreams, 0, 'nothing waiting');
});

t.test("the member's bound across connections, and a closed connection's reservations returned", async (t) => {
  // Room for two messages of a megabyte, not three.
  const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, limits: { ...limits, maxHeldRequestBytes: 2.5 * 2 ** 20 } });
  const sessions = [0, 1, 2].map(() => connect(`http://127.0.0.1:${server.port}`));
  t.teardown(async () => {
    for (const s of sessions) s.destroy();
    await server.close();
  });
  const budget = server.requestBytes!;
  const body = putFrame('k', MAX_REQUEST_BYTES - 100);
  const announced = body.length - 5;
  const a = startRequest(sessions[0]!, PUT, body, 1000);
  const b = startRequest(sessions[1]!, PUT, body, 1000);
  await until('budget.heldBytes === 2 * announced', () => budget.heldBytes === 2 * announced, 5_000);
  const c = startRequest(sessions[2]!, PUT, body, 1000);
  await until('budget.waitingStreams === 1', () => budget.waitingStreams === 1, 5_000);
  t.equal(budget.heldBytes, 2 * announced, 'a third connection waits: the member holds two of these messages at most');
  sessions[0]!.destroy();
  await until('budget.waitingStreams === 0 && budget.heldBytes === 2 * announced', () => budget.waitingStreams === 0 && budget.heldBytes === 2 * announced, 5_000);
  t.equal(budget.waitingStreams, 0, "the closed connection's reservation went to the waiting stream");
  t.equal(budget.heldBytes, 2 * announced, 'which now holds it: two messages, as before');
  b.finish();
  c.finish();
  t.same(await Promise.all([b.outcome, c.outcome]), ['0', '0']);
  t.match(await a.outcome, /^(rst \d+|)$/, 'the closed connection took its stream with it');
  t.equal(budget.heldBytes, 0);
});

/** An HTTP/1 request to the JSON gateway that sends `sent` bytes of `body` and waits for finish(). */
function startGatewayRequest(port: number, body: Buffer, sent: number): { finish(): void; close(): void; status: Promise<string> } {
  const socket = netConnect(port, '127.0.0.1');
  socket.write(`POST /v3/kv/put HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`);
  socket.write(body.subarray(0, sent));
  let answer = '';
  const status = new Promise<string>((resolve) => {
    socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(/^HTTP\/1\.1 (\d+)/.exec(answer)?.[1] ?? 'closed'));
    socket.on('data', () => {
      if (/\r\n\r\n/.test(answer)) socket.end();
    });
  });
  return { finish: () => socket.write(body.subarray(sent)), close: () => socket.destroy(), status };
}

/** A put as the gateway's JSON, exactly `length` bytes long. */
function gatewayPutBody(length: number): Buffer {
  const head = `{"key":"${Buffer.from('g').toString('base64')}","value":"`;
  const value = 'A'.repeat(Math.floor((length - head.length - 2) / 4) * 4);
  const text = `${head}${value}"}`;
  return Buffer.from(text + ' '.repeat(length - text.length));
}

t.test("the JSON gateway's bodies share the bound: reserved by their length before they are read", async (t) => {
  const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, limits: { ...limits, maxHeldRequestBytes: 2.5 * 2 ** 20 } });
  t.teardown(() => server.close());
  const budget = server.requestBytes!;
  const body = gatewayPutBody(1_000_000);
  const [a, b] = [0, 1].map(() => startGatewayRequest(server.port, body, 1000));
  await until('two bodies reserved', () => budget.heldBytes === 2 * body.length);
  const waiting = [0, 1, 2].map(() => startGatewayRequest(server.port, body, 1000));
  await until('three waiting', () => budget.waitingStreams === 3);
  const refused = startGatewayRequest(server.port, body, 1000);
  t.equal(await refused.status, '429', 'past the waiting bound: RESOURCE_EXHAUSTED, the body not read');
  a!.close();
  await until('the closed connection\'s room taken by the first waiting', () => budget.waitingStreams === 2 && budget.heldBytes === 2 * body.length);
  for (const r of [b!, ...waiting]) r.finish();
  t.same(await Promise.all([b!, ...waiting].map((r) => r.status)), ['200', '200', '200', '200'], 'each finished body answered, the waiting ones as room came back');
  t.equal(budget.heldBytes, 0);
  t.equal(await a!.status, 'closed');
});

t.test('compressed requests are refused before they are read (etcd 3.4 installs no decompressor): a gzip bomb inflates nowhere', async (t) => {
  const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, limits });
  const session = connect(`http://127.0.0.1:${server.port}`);
  t.teardown(async () => {
    session.destroy();
    await server.close();
  });
  // A put of MAX_REQUEST_BYTES of zeros gzips to ~1 KiB: whole in its first DATA frame, so nothing
  // is reserved for it, and grpc-js would inflate it to ~1 MiB and hold that until the half-close.
  const put = encodePut({ key: Buffer.from('z'), value: Buffer.alloc(MAX_REQUEST_BYTES) });
  const compressed = (bomb: Buffer): Buffer => Buffer.concat([Buffer.from([1]), frame(bomb).subarray(1)]);
  const bombs = { gzip: compressed(gzipSync(put, { level: 9 })), deflate: compressed(deflateSync(put, { level: 9 })) };
  const before = process.memoryUsage().arrayBuffers;
  const answers = Array.from({ length: 60 }, (_, i) => {
    // Unary (both paths) and a stream method; never half-closed.
    const path = i % 3 === 0 ? WATCH : PUT;
    const encoding = i % 2 === 0 ? 'gzip' : 'deflate';
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', 'grpc-encoding': encoding });
    stream.on('error', () => undefined);
    stream.write(bombs[encoding]);
    return new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve('no answer'), 3_000);
      let accepted = '';
      stream.on('response', (h) => (accepted = String(h['grpc-accept-encoding'])));
      stream.on('trailers', (h) => {
        clearTimeout(timer);
        resolve(`${String(h['grpc-status'])} ${decodeURI(String(h['grpc-message']))} (accepts ${accepted})`);
      });
    });
  });
  const outcomes = await Promise.all(answers);
  const grown = (process.memoryUsage().arrayBuffers - before) / 2 ** 20;
  t.same(
    outcomes.filter((o) => !/^12 grpc: Decompressor is not installed for grpc-encoding "(gzip|deflate)" \(accepts identity\)$/.test(o)),
    [],
    'each answered UNIMPLEMENTED at once, with etcd\'s text and the encodings taken, though its client has not half-closed',
  );
  t.ok(grown < 20, `${grown.toFixed(0)} MiB of buffers grown for 60 messages that inflate to ${((60 * MAX_REQUEST_BYTES) / 2 ** 20).toFixed(0)} MiB`);
  t.equal(server.requestBytes!.heldBytes, 0);
});

for (const directUnary of [true, false]) {
  t.test(`${directUnary ? 'direct path' : 'grpc-js path'}: responses advertise only the encodings taken; a grpc-js client set to gzip is refused once, then sends uncompressed`, async (t) => {
    const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, limits, directUnary });
    t.teardown(() => server.close());
    const session = connect(`http://127.0.0.1:${server.port}`);
    t.teardown(() => session.destroy());
    // A put answered on this path: only identity is advertised.
    const stream = session.request({ ':method': 'POST', ':path': PUT, 'content-type': 'application/grpc', te: 'trailers' });
    stream.end(putFrame('a', 1));
    stream.resume();
    const headers = await new Promise<Record<string, unknown>>((resolve) => stream.once('response', resolve));
    t.equal(headers['grpc-accept-encoding'], 'identity', 'grpc-accept-encoding');
    const pkg = grpc.loadPackageDefinition(def) as unknown as { etcdserverpb: Record<string, grpc.ServiceClientConstructor> };
    const kv = new pkg.etcdserverpb.KV!(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure(), { 'grpc.default_compression_algorithm': 2 });
    const maintenance = new pkg.etcdserverpb.Maintenance!(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure(), { 'grpc.default_compression_algorithm': 2 });
    t.teardown(() => {
      kv.close();
      maintenance.close();
    });
    const call = (client: grpc.Client, method: string, request: object): Promise<string> =>
      new Promise((resolve) => (client as unknown as Record<string, (r: object, cb: (e: grpc.ServiceError | null) => void) => void>)[method]!(request, (e) => resolve(e === null ? 'OK' : `${e.code} ${e.details}`)));
    for (const [client, method, request] of [[kv, 'Put', { key: Buffer.from('k'), value: Buffer.from('v') }], [maintenance, 'Status', {}]] as const) {
      const first = await call(client, method, request);
      t.match(first, /^12 grpc: Decompressor is not installed for grpc-encoding "gzip"$/, `${method}: the first call, compressed, refused as etcd refuses it`);
      t.same([await call(client, method, request), await call(client, method, request)], ['OK', 'OK'], `${method}: the later ones sent uncompressed and answered (etcd 3.4 refuses them all)`);
    }
  });
}

/** A small seeded generator (mulberry32): the same workload for the same seed. */
function seeded(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('a mixed workload with random cancellations leaks no reservation, and every finished request is answered', async (t) => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const random = seeded(seed);
    // Puts on the direct path for odd seeds, on grpc-js's for even ones.
    const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, limits: { ...limits, maxWaitingRequestStreams: 6 }, directUnary: seed % 2 === 1 });
    const budget = server.requestBytes!;
    const sessions = [0, 1, 2].map(() => connect(`http://127.0.0.1:${server.port}`).on('error', () => undefined));
    const finished: Array<Promise<string>> = [];
    const all: Array<Promise<string>> = [];
    const createWatch = frame(requestSerialize('Watch', 'Watch')({ create_request: { key: Buffer.from('w') } }));
    const work = Array.from({ length: 60 }, async (_, i) => {
      await pause(random() * 300);
      const session = sessions[Math.floor(random() * sessions.length)]!;
      if (session.destroyed) return;
      const watch = random() < 0.25;
      // Puts from a few bytes to most of the receive limit (past one DATA frame, most of them);
      // a watch: a whole create request, then a message of up to 600 KiB.
      const message = putFrame(`k${i}`, Math.floor(random() ** 2 * 900 * 1024));
      const body = watch ? Buffer.concat([createWatch, message]) : message;
      const sent = Math.floor(random() * body.length);
      const r = startRequest(session, watch ? WATCH : PUT, body, sent);
      all.push(r.outcome);
      await pause(random() * 200);
      const action = random();
      if (action < 0.3) r.stream.close(constants.NGHTTP2_CANCEL);
      // Left unfinished a while (its room held, others waiting for it), then given up on.
      else if (action < 0.4) setTimeout(() => r.stream.close(constants.NGHTTP2_CANCEL), 300 + random() * 500);
      else if (watch) r.stream.write(body.subarray(sent)); // whole, the watch left open
      else {
        r.finish();
        finished.push(r.outcome);
      }
    });
    // JSON gateway puts on their own connections: finished, or closed part-way.
    const gateway = Array.from({ length: 12 }, async () => {
      await pause(random() * 300);
      const body = gatewayPutBody(Math.floor(random() * 1_000_000) + 100);
      const r = startGatewayRequest(server.port, body, Math.floor(random() * body.length));
      all.push(r.status);
      await pause(random() * 200);
      if (random() < 0.3) r.close();
      else {
        r.finish();
        finished.push(r.status.then((s) => (s === '200' || s === '429' ? '0' : s)));
      }
    });
    // One session goes away mid-way, with whatever it had started.
    const gone = pause(400).then(() => sessions[2]!.destroy());
    await Promise.all([...work, ...gateway, gone]);
    const outcomes = await Promise.race([Promise.all(finished), pause(10_000).then(() => 'stuck')]);
    t.not(outcomes, 'stuck', `seed ${seed}: every finished put settles`);
    if (Array.isArray(outcomes)) t.same(outcomes.filter((o) => o !== '0' && o !== 'rst 11' && o !== ''), [], `seed ${seed}: each answered OK, refused past the waiting bound, or gone with its session`);
    for (const s of sessions) s.destroy();
    await Promise.all(all);
    await until('nothing held or waiting', () => budget.heldBytes === 0 && budget.waitingStreams === 0, 5_000).catch(() => undefined);
    t.same({ held: budget.heldBytes, waiting: budget.waitingStreams }, { held: 0, waiting: 0 }, `seed ${seed}: every reservation returned once the streams are gone`);
    await server.close();
  }
});

/** A stand-in for a server stream: data events, pause/resume recorded, one connection. */
class FakeStream extends EventEmitter {
  readonly session = {};
  destroyed = false;
  paused = false;
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  close(): void {
    this.destroyed = true;
    this.emit('close');
  }
}

/**
 * Checks `holds` on 500 random cases (up to `maxMessages` message lengths, and where to cut
 * their stream into chunks): none fails (the message names a counterexample), and all 500 ran.
 */
function holds500(t: Test, what: string, maxMessages: number, holds: (lengths: number[], cuts: number[]) => boolean): void {
  const property = fc.property(
    fc.array(fc.integer({ min: 0, max: 3000 }), { minLength: 1, maxLength: maxMessages }),
    fc.array(fc.integer({ min: 1, max: 4000 }), { minLength: 1, maxLength: 20 }),
    holds,
  );
  const r = fc.check(property, { numRuns: 500 });
  t.notOk(r.failed, r.failed ? `${what}: fails for ${fc.stringify(r.counterexample)}` : what);
  t.equal(r.numRuns, 500, `${what}: all 500 ran`);
}

/** A stand-in stream watched by a budget too large to wait or refuse. */
function watchedAlone(singleRequest: boolean): { budget: RequestBytesBudget; stream: FakeStream } {
  const budget = new RequestBytesBudget({ memberBytes: 1 << 30, connectionBytes: 1 << 30, waitingStreams: 1 }, 1 << 20);
  const stream = new FakeStream();
  budget.watch(stream as unknown as ServerHttp2Stream, singleRequest);
  return { budget, stream };
}

/**
 * Messages of `lengths` bytes, framed, fed to `stream` in chunks cut at `cuts`; after each chunk,
 * `check` gets how far the stream has been read and where each body starts and ends.
 */
function feedInCuts(stream: FakeStream, lengths: number[], cuts: number[], check: (at: number, spans: Array<[number, number]>) => boolean): boolean {
  const bytes = Buffer.concat(lengths.map((n) => frame(Buffer.alloc(n))));
  const spans: Array<[number, number]> = [];
  for (let at = 0, i = 0; i < lengths.length; i++) {
    spans.push([at + 5, at + 5 + lengths[i]!]);
    at += 5 + lengths[i]!;
  }
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    const end = Math.min(bytes.length, at + cut);
    if (end <= at) continue;
    stream.emit('data', bytes.subarray(at, end));
    at = end;
    if (!check(at, spans)) return false;
  }
  return true;
}

t.test('property: a stream holds a reservation exactly while it is inside a message that went past its chunk', (t) => {
  holds500(t, '500 random message sequences cut into random chunks', 8, (lengths, cuts) => {
    const { budget, stream } = watchedAlone(false);
    // Inside a body that the last chunk did not finish: reserved (its announced length).
    const held = feedInCuts(stream, lengths, cuts, (at, spans) => {
      const inside = spans.find(([s, e]) => s <= at && at < e);
      return budget.heldBytes === (inside === undefined ? 0 : inside[1] - inside[0]);
    });
    if (!held) return false;
    stream.close();
    return budget.heldBytes === 0 && budget.waitingStreams === 0;
  });
  t.end();
});

t.test('property: a single request holds every message it has begun until the half-close', (t) => {
  holds500(t, '500 random single requests cut into random chunks', 4, (lengths, cuts) => {
    const { budget, stream } = watchedAlone(true);
    // Every message whose prefix has arrived: reserved (its announced length).
    const held = feedInCuts(stream, lengths, cuts, (at, spans) => budget.heldBytes === spans.filter(([s]) => s <= at).reduce((sum, [s, e]) => sum + e - s, 0));
    if (!held) return false;
    stream.emit('end');
    if (budget.heldBytes !== 0) return false;
    stream.close();
    return budget.heldBytes === 0;
  });
  t.end();
});

/** A reservation and whether it has been admitted yet (known once microtasks have run). */
interface Tracked {
  connection: object;
  bytes: number;
  admitted: boolean | undefined;
  release(): void;
}

function track(budget: RequestBytesBudget, connection: object, bytes: number): Tracked {
  const r = budget.reserve(connection, bytes);
  const tracked: Tracked = { connection, bytes, admitted: undefined, release: () => r.release() };
  void r.admitted.then((admitted) => (tracked.admitted ??= admitted));
  return tracked;
}

const settled = (): Promise<void> => new Promise((r) => setImmediate(r));

t.test('room goes in arrival order: a large request waiting for the member\'s room is not passed for ever by smaller ones', async (t) => {
  // The member holds 100 bytes, a connection 60.
  const budget = new RequestBytesBudget({ memberBytes: 100, connectionBytes: 60, waitingStreams: 50 }, 60);
  // Three small requests on their own connections hold 90; the large one needs 60.
  const smalls = [track(budget, {}, 30), track(budget, {}, 30), track(budget, {}, 30)];
  const large = track(budget, {}, 60);
  await settled();
  t.equal(large.admitted, undefined, 'the large request waits: 40 bytes of the member\'s room are left');
  // A run of small requests, each starting before the oldest one ends: before arrival order, a
  // new one fitting the room went ahead and the large one waited as long as the run went on.
  for (let i = 0; i < 10 && large.admitted === undefined; i++) {
    smalls.push(track(budget, {}, 30));
    smalls.shift()!.release();
    await settled();
  }
  t.equal(large.admitted, true, 'the large request is admitted once the requests ahead of it have ended');
  t.same(
    smalls.map((s) => s.admitted),
    [true, undefined, undefined],
    'the small ones that came after it wait behind it (one held from before)',
  );
  large.release();
  await settled();
  t.same(smalls.map((s) => s.admitted), [true, true, true], 'and go once it ends');
  for (const s of smalls) s.release();
  t.same({ held: budget.heldBytes, waiting: budget.waitingStreams }, { held: 0, waiting: 0 });
});

t.test("a request waiting for its connection's room holds back that connection's later ones, no other's", async (t) => {
  const budget = new RequestBytesBudget({ memberBytes: 100, connectionBytes: 60, waitingStreams: 50 }, 60);
  const [one, other] = [{}, {}];
  const first = track(budget, one, 50);
  const waiting = track(budget, one, 20); // 70 > 60 on its connection
  const elsewhere = track(budget, other, 20);
  const behind = track(budget, one, 5); // would fit its connection (55), but arrives after `waiting`
  await settled();
  t.same([first, waiting, elsewhere, behind].map((r) => r.admitted), [true, undefined, true, undefined], 'another connection goes ahead; the same connection keeps its order');
  first.release();
  await settled();
  t.same([waiting, behind].map((r) => r.admitted), [true, true], 'both go in order once the room is back');
  for (const r of [waiting, elsewhere, behind]) r.release();
  t.same({ held: budget.heldBytes, waiting: budget.waitingStreams }, { held: 0, waiting: 0 });
});

t.test('a stream\'s message that does not arrive whole waits its turn too; one whole in its chunk does not wait', async (t) => {
  const budget = new RequestBytesBudget({ memberBytes: 100, connectionBytes: 60, waitingStreams: 50 }, 60);
  const held = track(budget, {}, 60);
  const large = track(budget, {}, 60); // waits for the member's room
  const stream = new FakeStream();
  budget.watch(stream as unknown as ServerHttp2Stream, false);
  // A 30-byte message, its prefix and first 10 bytes: 30 would fit the member's room (40 left), but the large request came first.
  const message = frame(Buffer.alloc(30));
  stream.emit('data', message.subarray(0, 15));
  t.ok(stream.paused, 'the stream stops being read');
  t.equal(budget.waitingStreams, 2);
  // The same stream's message, had it come whole: handed on, nothing reserved or awaited.
  const whole = new FakeStream();
  budget.watch(whole as unknown as ServerHttp2Stream, false);
  whole.emit('data', message);
  t.notOk(whole.paused, 'a message whole in its chunk is not held back');
  held.release();
  await settled();
  t.equal(large.admitted, true, 'the large request goes first');
  t.notOk(stream.paused, 'then the stream (60 + 30 fit)');
  t.equal(budget.heldBytes, 90);
  stream.close();
  large.release();
  t.same({ held: budget.heldBytes, waiting: budget.waitingStreams }, { held: 0, waiting: 0 });
});

t.test('property: under random arrivals and releases the bounds hold, no request that could go waits, and each connection keeps its order', async (t) => {
  // Arrivals twice as often as releases, on three connections, so that both bounds are reached.
  const ops = fc.array(
    fc.oneof(
      { arbitrary: fc.record({ reserve: fc.integer({ min: 0, max: 2 }), bytes: fc.integer({ min: 1, max: 60 }) }), weight: 2 },
      { arbitrary: fc.record({ release: fc.nat() }), weight: 1 },
    ),
    { maxLength: 60 },
  );
  const property = fc.asyncProperty(ops, async (steps) => {
    const budget = new RequestBytesBudget({ memberBytes: 100, connectionBytes: 60, waitingStreams: 1000 }, 60);
    const connections = [{}, {}, {}];
    const live: Tracked[] = []; // in arrival order, released ones removed
    const heldOn = (c: object): number => live.filter((r) => r.admitted === true && r.connection === c).reduce((n, r) => n + r.bytes, 0);
    for (const step of steps) {
      const admittedBefore = new Set(live.filter((r) => r.admitted === true));
      let heldAt = budget.heldBytes; // what the member holds as this step's admissions happen, in arrival order
      if ('reserve' in step) live.push(track(budget, connections[step.reserve]!, step.bytes));
      else if (live.length > 0) {
        const gone = live.splice(step.release % live.length, 1)[0]!;
        if (gone.admitted === true) heldAt -= gone.bytes;
        gone.release();
      }
      await Promise.resolve();
      const held = live.filter((r) => r.admitted === true).reduce((n, r) => n + r.bytes, 0);
      if (held !== budget.heldBytes || held > 100 || connections.some((c) => heldOn(c) > 60)) return false;
      // Each admitted in this step went while no earlier one first in line on its connection lacked the member's room.
      const firstInLine = connections.map((c) => live.find((r) => r.admitted === undefined && r.connection === c));
      for (const [i, r] of live.entries()) {
        if (r.admitted !== true || admittedBefore.has(r)) continue;
        if (firstInLine.some((w) => w !== undefined && live.indexOf(w) < i && heldAt + w.bytes > 100)) return false;
        heldAt += r.bytes;
      }
      // Walk the waiting ones in arrival order as the rule says: none may have been able to go.
      const passedOver = new Set<object>();
      for (const r of live) {
        if (r.admitted === true) {
          if (passedOver.has(r.connection)) return false; // went ahead of an earlier one on its connection
          continue;
        }
        if (passedOver.has(r.connection)) continue;
        if (held + r.bytes > 100) break; // the member's room: everything later waits behind it
        if (heldOn(r.connection) + r.bytes <= 60) return false; // it fits and nothing is ahead of it
        passedOver.add(r.connection);
      }
    }
    for (const r of live) r.release();
    return budget.heldBytes === 0 && budget.waitingStreams === 0;
  });
  const r = await fc.check(property, { numRuns: 1000 });
  t.notOk(r.failed, r.failed ? `fails for ${fc.stringify(r.counterexample)}` : '1000 random sequences of arrivals and releases');
  t.equal(r.numRuns, 1000, 'all 1000 ran');
});

for (const directUnary of [true, false]) {
  t.test(`${directUnary ? 'direct path' : 'grpc-js path'}: puts whole but not half-closed are held until the half-close; past the bound, reset at once`, async (t) => {
    const { session, budget } = await serverAndSession(t, directUnary);
    const body = putFrame('w', 10 * 1024); // whole in one DATA frame
    const n = 300;
    const started = Array.from({ length: n }, () => startRequest(session, PUT, body, body.length));
    // The connection's bound (2 MiB) holds ~200 of them; the rest are reset as they arrive (or
    // wait, one that came in two DATA frames, until the waiting bound).
    const held = (): string => `${budget.heldBytes / (body.length - 5)} held, ${budget.refusedStreams} reset, ${budget.waitingStreams} waiting`;
    await until('every stream held or reset', () => budget.heldBytes / (body.length - 5) + budget.refusedStreams + budget.waitingStreams === n, 5_000).catch((e: Error) => t.fail(`${e.message}: ${held()}`));
    t.ok(budget.heldBytes <= 2 * 2 ** 20, `${budget.heldBytes} bytes held, within the connection's bound`);
    t.ok(budget.refusedStreams > 0, `${budget.refusedStreams} reset`);
    for (const s of started) s.finish();
    const outcomes = await Promise.all(started.map((s) => s.outcome));
    t.equal(outcomes.filter((o) => o === 'rst 11').length, budget.refusedStreams, 'the reset ones were told ENHANCE_YOUR_CALM (RESOURCE_EXHAUSTED)');
    t.equal(outcomes.filter((o) => o === '0').length, n - budget.refusedStreams, 'the held ones answered OK once half-closed');
    t.equal(budget.heldBytes, 0);
  });
}

/** Limits whose reservations must be whole within 400 ms, however large (MIN_REQUEST_BYTES_PER_SEC made moot). */
const quickDeadline = { ...limits, minRequestDeadlineMs: 400, minRequestBytesPerSec: 2 ** 40 };

for (const directUnary of [true, false]) {
  t.test(`${directUnary ? 'direct path' : 'grpc-js path'}: a reserved message that dribbles in past its deadline is reset and its room returned`, async (t) => {
    const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, limits: quickDeadline, directUnary });
    const session = connect(`http://127.0.0.1:${server.port}`);
    t.teardown(async () => {
      session.destroy();
      await server.close();
    });
    const budget = server.requestBytes!;
    const body = putFrame('slow', 700 * 1024);
    const slow = startRequest(session, PUT, body, 300 * 1024);
    await until('the slow put reserved', () => budget.heldBytes === body.length - 5, 5_000);
    // A byte every 100 ms: progress, but never the whole message.
    let at = 300 * 1024;
    const drip = setInterval(() => slow.stream.write(body.subarray(at, ++at)), 100);
    t.teardown(() => clearInterval(drip));
    const began = performance.now();
    t.equal(await slow.outcome, 'rst 11', 'reset with ENHANCE_YOUR_CALM (RESOURCE_EXHAUSTED)');
    clearInterval(drip);
    const after = performance.now() - began;
    t.ok(after < 2_000, `within the deadline's reach (${after.toFixed(0)} ms)`);
    t.equal(budget.tooSlowStreams, 1);
    await until('its room returned', () => budget.heldBytes === 0, 5_000);
    // One that arrives in time is answered; so is a whole unary put that half-closes at once.
    const prompt = startRequest(session, PUT, body, 300 * 1024);
    setTimeout(() => prompt.finish(), 100);
    t.equal(await prompt.outcome, '0', 'a message finished within the deadline is answered');
    t.equal(budget.tooSlowStreams, 1, 'and not counted');
  });
}

t.test('a gateway body dribbled in past its deadline loses its connection and returns its room', async (t) => {
  const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, limits: quickDeadline });
  t.teardown(() => server.close());
  const budget = server.requestBytes!;
  const body = gatewayPutBody(1_000_000);
  const slow = startGatewayRequest(server.port, body, 1000);
  await until('the body reserved', () => budget.heldBytes === body.length, 5_000);
  t.equal(await slow.status, 'closed', 'closed, no answer');
  t.equal(budget.tooSlowStreams, 1);
  await until('its room returned', () => budget.heldBytes === 0, 5_000);
  const prompt = startGatewayRequest(server.port, body, 1000);
  prompt.finish();
  t.equal(await prompt.status, '200', 'a body sent at once is answered');
});

t.test('a member under the attack measured before the bound: 400 unfinished 1.9 MiB puts on two connections', async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['a']);
  const agent = cluster.agents[0]!;
  const pid = agent.proc!.pid!;
  const rssMiB = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
  const before = rssMiB();
  const announced = 1900 * 1024;
  const body = Buffer.concat([frame(Buffer.alloc(0), announced), Buffer.alloc(announced - 10, 1)]);
  const sessions = [0, 1].map(() => connect(`http://127.0.0.1:${agent.ports.client}`).on('error', () => undefined));
  const started = sessions.flatMap((s) => Array.from({ length: 200 }, () => startRequest(s, PUT, body, body.length)));
  // Until the member's memory stops growing (two seconds alike), at most fifteen seconds.
  let last = 0;
  for (let i = 0, still = 0; i < 60 && still < 8; i++) {
    await new Promise((r) => setTimeout(r, 250));
    const now = rssMiB();
    still = Math.abs(now - last) < 1 ? still + 1 : 0;
    last = now;
  }
  const grown = rssMiB() - before;
  const resets = (await Promise.all(started.map((s) => Promise.race([s.outcome, new Promise((r) => setTimeout(r, 10, 'open'))])))).filter((o) => o === 'rst 11').length;
  t.ok(grown < 150, `the member's RSS grew ${grown.toFixed(0)} MiB for ${((400 * announced) / 2 ** 20).toFixed(0)} MiB of unfinished messages (before the bound: ~420 MiB and on)`);
  t.ok(resets > 0, `${resets} streams reset past the waiting bound`);
  const metrics = await scrapeMetrics(agent.ports.http);
  t.equal(metrics.get('picloud_client_request_streams_refused_total'), resets, '/metrics counts the refused streams');
  t.equal(metrics.get('picloud_client_request_streams_waiting'), 256, 'and the waiting ones (MAX_WAITING_REQUEST_STREAMS)');
  t.ok(metrics.get('picloud_client_request_bytes_held')! <= 64 * 2 ** 20, `and the bytes held (${metrics.get('picloud_client_request_bytes_held')})`);
  // The member serves on, and a put that arrives whole is not held up.
  const other = connect(`http://127.0.0.1:${agent.ports.client}`);
  t.teardown(() => other.destroy());
  const put = startRequest(other, PUT, putFrame('after', 10), 0);
  put.finish();
  t.equal(await put.outcome, '0', 'a put on a third connection is answered during the attack');
  for (const s of sessions) s.destroy();
});
