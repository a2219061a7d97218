/**
 * Unary calls answered on their HTTP/2 streams (core/net/etcd/direct-unary.ts) against the same
 * server answering through grpc-js (`directUnary: false`): for each request, well-formed or not,
 * the raw HTTP/2 answers (response headers but the date, body, trailers) must be equal, and the
 * direct server must have taken the calls it should (and no others) on its own path.
 */
import t from 'tap';
import fc from 'fast-check';
import { connect, constants, type ClientHttp2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { EventEmitter } from 'node:events';
import { gzipSync } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { EtcdGrpcServer, GRPC_OVERHEAD_BYTES } from '../../core/net/etcd/server.js';
import { DirectCall } from '../../core/net/etcd/direct-unary.js';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import { FakeEtcdBackend } from './fake-etcd-backend.js';

const MAX_REQUEST_BYTES = 4096;
const MAX_MESSAGE_BYTES = MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES;
const backend = new FakeEtcdBackend();
const onInternalError = (e: unknown, m: string): void => void t.fail(`internal error in ${m}: ${String(e)}`);
const limits = { maxRequestBytes: MAX_REQUEST_BYTES };
const direct = await EtcdGrpcServer.start({ backend, port: 0, limits, onInternalError });
const viaGrpcJs = await EtcdGrpcServer.start({ backend, port: 0, limits, onInternalError, directUnary: false });
const sessions = [connect(`http://127.0.0.1:${direct.port}`), connect(`http://127.0.0.1:${viaGrpcJs.port}`)] as const;
t.teardown(async () => {
  for (const s of sessions) s.close();
  await direct.close();
  await viaGrpcJs.close();
});

const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true, oneofs: true });
const methodDef = (service: string, method: string): protoLoader.MethodDefinition<object, object> =>
  (def[`etcdserverpb.${service}`] as protoLoader.ServiceDefinition)[method]! as protoLoader.MethodDefinition<object, object>;
const encode = (service: string, method: string, req: object): Buffer => methodDef(service, method).requestSerialize(req);

function frame(message: Buffer, compressed = 0, announced = message.length): Buffer {
  const prefix = Buffer.alloc(5);
  prefix[0] = compressed;
  prefix.writeUInt32BE(announced, 1);
  return Buffer.concat([prefix, message]);
}

interface RawAnswer {
  headers: Record<string, unknown>;
  body: string;
  trailers: Record<string, unknown>;
}

/** Headers as a plain object (Node adds a symbol), without the date, which differs by the second. */
function plain(h: IncomingHttpHeaders): Record<string, unknown> {
  return Object.fromEntries(Object.entries(h).filter(([name]) => name !== 'date'));
}

/** One request on a raw HTTP/2 stream; `body` chunks are written in order, then the stream ends. */
/**
 * One request on a raw HTTP/2 stream. `paced`: each chunk is written once the one before has left
 * (and a turn has passed), so the server reads them as separate DATA frames, as a slow client's.
 */
function raw(session: ClientHttp2Session, path: string, body: Buffer[], extra: Record<string, string> = {}, halfCloseFirst = true, paced = false): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...extra });
    const answer: RawAnswer = { headers: {}, body: '', trailers: {} };
    const chunks: Buffer[] = [];
    req.on('response', (h) => {
      answer.headers = plain(h);
      if (!halfCloseFirst) req.end();
    });
    req.on('trailers', (h) => (answer.trailers = plain(h)));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', reject);
    req.on('close', () => resolve({ ...answer, body: Buffer.concat(chunks).toString('hex') }));
    req.setTimeout(5_000, () => reject(new Error(`no answer to ${path}`)));
    if (!paced) {
      for (const b of body) req.write(b);
      if (halfCloseFirst) req.end();
      return;
    }
    const next = (i: number): void => {
      if (req.closed || req.destroyed) return;
      if (i < body.length) req.write(body[i]!, () => setImmediate(next, i + 1));
      else if (halfCloseFirst) req.end();
    };
    next(0);
  });
}

/** The same request to both servers: the answers, and how many calls each took directly. */
async function both(path: string, body: Buffer[], extra?: Record<string, string>, halfCloseFirst = true, paced = false): Promise<{ direct: RawAnswer; grpcJs: RawAnswer; taken: [number, number] }> {
  const before = [direct.directCalls, viaGrpcJs.directCalls];
  const [a, b] = await Promise.all(sessions.map((s) => raw(s, path, body, extra, halfCloseFirst, paced)));
  return { direct: a!, grpcJs: b!, taken: [direct.directCalls - before[0]!, viaGrpcJs.directCalls - before[1]!] };
}

const PUT = '/etcdserverpb.KV/Put';
const RANGE = '/etcdserverpb.KV/Range';

t.test('a put and a range: the same answer, taken on the direct path', async (t) => {
  const put = await both(PUT, [frame(encode('KV', 'Put', { key: Buffer.from('k'), value: Buffer.from('v') }))]);
  t.same(put.direct.trailers, { 'grpc-status': '0', 'grpc-message': 'OK' });
  t.equal(put.direct.headers[':status'], 200);
  // The backend is shared, so the second put made a new revision: compare all but the body.
  t.same({ ...put.direct, body: '' }, { ...put.grpcJs, body: '' });
  t.same(put.taken, [1, 0], 'only the direct server took it directly');
  const range = await both(RANGE, [frame(encode('KV', 'Range', { key: Buffer.from('k') }))]);
  t.same(range.direct, range.grpcJs);
  t.match(range.direct.body, Buffer.from('v').toString('hex'));
  t.same(range.taken, [1, 0]);
});

t.test('errors a client can cause: the same status and text on both paths', async (t) => {
  const cases: Array<[string, string, Buffer[], Record<string, string>?]> = [
    ['an etcd error from the backend', RANGE, [frame(encode('KV', 'Range', { key: Buffer.from('k'), revision: 10_000 }))]],
    ['an unknown lease', '/etcdserverpb.Lease/LeaseRevoke', [frame(encode('Lease', 'LeaseRevoke', { ID: 77 }))]],
    ['a message that does not decode', PUT, [frame(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]))]],
    ['a length over the receive limit', PUT, [frame(Buffer.alloc(8), 0, MAX_MESSAGE_BYTES + 1)]],
    ['over the limit in a second message', PUT, [frame(encode('KV', 'Put', { key: Buffer.from('k') })), frame(Buffer.alloc(8), 0, MAX_MESSAGE_BYTES + 1)]],
    ['etcd\'s request limit (under the receive limit)', PUT, [frame(encode('KV', 'Put', { key: Buffer.from('k'), value: Buffer.alloc(MAX_REQUEST_BYTES) }))]],
    ['no message', PUT, []],
    ['a truncated message', PUT, [frame(Buffer.alloc(3), 0, 10)]],
    ['two messages', PUT, [frame(encode('KV', 'Put', { key: Buffer.from('k') })), frame(encode('KV', 'Put', { key: Buffer.from('k') }))]],
    ['two messages in pieces', PUT, [frame(encode('KV', 'Put', { key: Buffer.from('k') })).subarray(0, 3), Buffer.concat([frame(encode('KV', 'Put', { key: Buffer.from('k') })).subarray(3), frame(Buffer.alloc(0))])]],
    ['an undecodable message, then a good one', PUT, [frame(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])), frame(encode('KV', 'Put', { key: Buffer.from('k') }))]],
    ['a good message, then an undecodable one', PUT, [frame(encode('KV', 'Put', { key: Buffer.from('k') })), frame(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]))]],
    ['a third message over the limit, in one chunk with the first two', PUT, [Buffer.concat([frame(encode('KV', 'Put', { key: Buffer.from('k') })), frame(Buffer.alloc(0)), frame(Buffer.alloc(0), 0, MAX_MESSAGE_BYTES + 1)])]],
    ['a bad grpc-timeout', PUT, [frame(encode('KV', 'Put', { key: Buffer.from('k') }))], { 'grpc-timeout': 'soon' }],
    ['an unknown method', '/etcdserverpb.KV/Nothing', [frame(Buffer.alloc(0))]],
    ['a content type that is not gRPC', PUT, [frame(Buffer.alloc(0))], { 'content-type': 'text/plain' }],
  ];
  for (const [name, path, body, extra] of cases) {
    const r = await both(path, body, extra);
    t.same(r.direct, r.grpcJs, name);
    t.not(r.direct.headers['grpc-status'] ?? r.direct.trailers['grpc-status'] ?? r.direct.headers[':status'], '0', `${name}: refused`);
  }
  // The texts a client sees, pinned (grpc-js's own, which the direct path repeats).
  const tooLarge = await both(PUT, [frame(Buffer.alloc(8), 0, MAX_MESSAGE_BYTES + 1)]);
  t.equal(tooLarge.direct.headers['grpc-message'], encodeURI(`Received message larger than max (${MAX_MESSAGE_BYTES + 1} vs ${MAX_MESSAGE_BYTES})`));
  t.equal(tooLarge.direct.headers['grpc-status'], String(grpc.status.RESOURCE_EXHAUSTED));
  // grpc-js decodes a message once whole: one that does not decode is refused before the half-close.
  const early = await both(PUT, [frame(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]))], {}, false);
  t.same(early.direct, early.grpcJs);
  t.equal(early.direct.headers['grpc-message'], 'Error%20deserializing%20request');
  const none = await both(PUT, []);
  t.equal(none.direct.headers['grpc-status'], String(grpc.status.UNIMPLEMENTED));
});

t.test('a deadline that passes while the backend works: DEADLINE_EXCEEDED from the server on both paths', async (t) => {
  const put = backend.put.bind(backend);
  backend.put = () => new Promise(() => undefined);
  t.teardown(() => void (backend.put = put));
  const r = await both(PUT, [frame(encode('KV', 'Put', { key: Buffer.from('slow') }))], { 'grpc-timeout': '150m' });
  t.same(r.direct, r.grpcJs);
  t.equal(r.direct.headers['grpc-status'], String(grpc.status.DEADLINE_EXCEEDED));
  t.equal(r.direct.headers['grpc-message'], 'Deadline%20exceeded');
});

t.test('deadlines past 2^31 ms (30 days, 99,999,999 hours) are deadlines to come, on both paths (the second server is grpc-js\'s)', async (t) => {
  // The backend takes a while, as a quorum read does: a deadline taken as passed would fire first.
  const range = backend.range.bind(backend);
  backend.range = async (r, ctx) => (await new Promise((resolve) => setTimeout(resolve, 50)), range(r, ctx));
  t.teardown(() => void (backend.range = range));
  for (const timeout of ['2592000S', '99999999H', '596H']) {
    const r = await both(RANGE, [frame(encode('KV', 'Range', { key: Buffer.from('k') }))], { 'grpc-timeout': timeout });
    t.same(r.direct, r.grpcJs, `${timeout}: the same answer`);
    t.equal(r.direct.trailers['grpc-status'], '0', `${timeout}: answered OK, not DEADLINE_EXCEEDED at once`);
  }
});

t.test("a compressed request is refused before either path takes it (the same refusal on both servers), as etcd 3.4 refuses it (request-encoding.ts)", async (t) => {
  const message = gzipSync(encode('KV', 'Put', { key: Buffer.from('gz'), value: Buffer.from('zipped') }));
  const r = await both(PUT, [frame(message, 1)], { 'grpc-encoding': 'gzip' });
  t.same(r.taken, [0, 0], 'not taken directly');
  t.same(r.direct, r.grpcJs);
  t.equal(r.direct.headers['grpc-accept-encoding'], 'identity', 'the encodings taken, in headers apart from the trailers');
  t.equal(r.direct.trailers['grpc-status'], String(grpc.status.UNIMPLEMENTED));
  t.equal(decodeURI(String(r.direct.trailers['grpc-message'])), 'grpc: Decompressor is not installed for grpc-encoding "gzip"');
});

t.test('a call the client cancels before its answer: dropped, and the server goes on serving', async (t) => {
  let release!: () => void;
  const put = backend.put.bind(backend);
  backend.put = (req) => new Promise((resolve) => (release = () => resolve(put(req))));
  t.teardown(() => void (backend.put = put));
  const req = sessions[0].request({ ':method': 'POST', ':path': PUT, 'content-type': 'application/grpc', te: 'trailers' });
  req.on('error', () => undefined);
  req.end(frame(encode('KV', 'Put', { key: Buffer.from('gone'), value: Buffer.from('x') })));
  await new Promise((r) => setTimeout(r, 100));
  req.close(constants.NGHTTP2_CANCEL);
  await new Promise((r) => req.on('close', r));
  release();
  backend.put = put;
  const range = await both(RANGE, [frame(encode('KV', 'Range', { key: Buffer.from('gone') }))]);
  t.same(range.direct.trailers, { 'grpc-status': '0', 'grpc-message': 'OK' });
  t.match(range.direct.body, Buffer.from('x').toString('hex'), 'the put itself was applied (cancelling does not undo a write)');
});

t.test('a grpc-js client: metadata reaches the call context, and a real round trip works', async (t) => {
  const pb = (grpc.loadPackageDefinition(def) as any).etcdserverpb;
  const kv = new pb.KV(`127.0.0.1:${direct.port}`, grpc.credentials.createInsecure());
  t.teardown(() => kv.close());
  const call = (method: string, req: object, md = new grpc.Metadata()): Promise<any> =>
    new Promise((resolve, reject) => kv[method](req, md, { deadline: Date.now() + 5_000 }, (e: Error | null, r: unknown) => (e ? reject(e) : resolve(r))));
  const before = direct.directCalls;
  await call('Put', { key: Buffer.from('md'), value: Buffer.from('1') });
  const md = new grpc.Metadata();
  md.set('hasleader', 'true');
  backend.hasLeader = () => false;
  t.teardown(() => void delete (backend as { hasLeader?: unknown }).hasLeader);
  await t.rejects(call('Range', { key: Buffer.from('md') }, md), { code: grpc.status.UNAVAILABLE, details: 'etcdserver: no leader' }, 'hasleader read from the headers');
  const r = await call('Range', { key: Buffer.from('md') });
  t.equal(Buffer.from(r.kvs[0].value).toString(), '1');
  t.equal(direct.directCalls - before, 3);
});

/** A stand-in for a server HTTP/2 stream: what DirectCall uses of one, and what it answered. */
class FakeStream extends EventEmitter {
  destroyed = false;
  closed = false;
  session = undefined;
  answer: Record<string, unknown> | undefined;
  sent: Buffer | undefined;
  respond(headers: Record<string, unknown>): void {
    this.answer = headers;
  }
  end(frame?: Buffer): void {
    this.sent = frame;
  }
}

t.test('a message sent in many small pieces: each byte is copied a bounded number of times, not once per piece', async (t) => {
  const message = encode('KV', 'Put', { key: Buffer.from('k'), value: Buffer.alloc(MAX_REQUEST_BYTES - 64, 1) });
  // The message, then the start of a second one the client never finishes (grpc-js ignores it).
  const body = Buffer.concat([frame(message), frame(Buffer.alloc(MAX_REQUEST_BYTES - 5), 0, MAX_MESSAGE_BYTES)]);
  for (const piece of [1, 7, 100]) {
    const stream = new FakeStream();
    let seen: Buffer | undefined;
    const method = { decode: (m: Buffer) => ((seen = Buffer.from(m)), {}), run: async () => Buffer.alloc(0) };
    const call = new DirectCall(stream as unknown as ServerHttp2Stream, { ':path': PUT }, method, MAX_MESSAGE_BYTES);
    call.start();
    // Counted: what is allocated (or concatenated) while the pieces come in.
    let allocated = 0;
    const { allocUnsafe, concat } = Buffer;
    Buffer.allocUnsafe = (n: number) => ((allocated += n), allocUnsafe(n));
    Buffer.concat = (list: readonly Uint8Array[], n?: number) => {
      const out = concat(list, n);
      allocated += out.length;
      return out;
    };
    try {
      for (let at = 0; at < body.length; at += piece) stream.emit('data', body.subarray(at, at + piece));
    } finally {
      Buffer.allocUnsafe = allocUnsafe;
      Buffer.concat = concat;
    }
    t.ok(allocated <= 8 * body.length, `pieces of ${piece} bytes: ${allocated} bytes allocated for a ${message.length}-byte message`);
    t.equal(stream.answer, undefined, 'no answer before the half-close');
    stream.emit('end');
    await new Promise((r) => setImmediate(r));
    t.same(seen, message, 'the method got the message');
    t.equal(stream.answer?.[':status'], 200);
  }
  // On the wire, as grpc-js: the unfinished second message is ignored at the half-close.
  const r = await both(PUT, [body]);
  t.same({ ...r.direct, body: '' }, { ...r.grpcJs, body: '' });
  t.same(r.direct.trailers, { 'grpc-status': '0', 'grpc-message': 'OK' });
});

t.test('metadata as grpc-js reads it: a value with a byte gRPC does not allow in text metadata is dropped, the others kept in order', async (t) => {
  const range = backend.range.bind(backend);
  const seen: Array<[string | undefined, boolean]> = [];
  backend.range = (r, ctx) => (seen.push([ctx?.token, ctx?.requireLeader === true]), range(r, ctx));
  t.teardown(() => void (backend.range = range));
  const body = [frame(encode('KV', 'Range', { key: Buffer.from('k') }))];
  for (const token of ['to\tk', 'tok\u00e9', 'tok']) {
    seen.length = 0;
    // One after the other: seen[0] is the direct path's, seen[1] grpc-js's.
    const answers = [await raw(sessions[0], RANGE, body, { token, hasleader: 'true' }), await raw(sessions[1], RANGE, body, { token, hasleader: 'true' })];
    t.same(answers[0], answers[1]);
    t.same(seen[0], seen[1], `token ${JSON.stringify(token)}: the same on both paths`);
  }
  t.same(seen[0], ['tok', true]);
  // grpc-timeout too: one grpc-js drops is no deadline, not an invalid one.
  const r = await both(RANGE, body, { 'grpc-timeout': 'so\ton' });
  t.same(r.direct, r.grpcJs);
  t.same(r.direct.trailers, { 'grpc-status': '0', 'grpc-message': 'OK' });
});

t.test('fuzz: random request streams, cut into random DATA frames, get the same answer on both paths', async (t) => {
  const range = encode('KV', 'Range', { key: Buffer.from('k') });
  // A message: a valid request, random bytes (which may or may not decode), or one announcing a
  // length other than it carries (cut short, or over the receive limit).
  const message = fc.oneof(
    fc.constant(frame(range)),
    fc.uint8Array({ maxLength: 24 }).map((b) => frame(Buffer.from(b))),
    fc.tuple(fc.uint8Array({ maxLength: 8 }), fc.integer({ min: 1, max: 64 })).map(([b, extra]) => frame(Buffer.from(b), 0, b.length + extra)),
    fc.constant(frame(Buffer.alloc(4), 0, MAX_MESSAGE_BYTES + 1)),
  );
  const request = fc.tuple(fc.array(message, { maxLength: 4 }), fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 6 }));
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(request, async ([messages, cuts]) => {
      const stream = Buffer.concat(messages);
      const chunks: Buffer[] = [];
      for (let at = 0, i = 0; at < stream.length; i++) {
        const size = cuts[i % cuts.length]!;
        chunks.push(stream.subarray(at, at + size));
        at += size;
      }
      const r = await both(RANGE, chunks, undefined, true, true);
      runs++;
      return JSON.stringify(r.direct) === JSON.stringify(r.grpcJs);
    }),
    { numRuns: 60 },
  );
  t.equal(runs, 60, 'every generated request stream was answered by both servers and compared');
});

t.test('a stream reset in the read that opened it is not answered, and the server serves on (both paths)', async (t) => {
  const cases: Array<[string, Record<string, string>]> = [
    ['a compressed put', { ':path': '/etcdserverpb.KV/Put', 'grpc-encoding': 'gzip' }],
    ['an unknown method', { ':path': '/nope.Nope/Nope' }],
    ['a put', { ':path': '/etcdserverpb.KV/Put' }],
    ['a watch', { ':path': '/etcdserverpb.Watch/Watch' }],
  ];
  for (const server of [direct, viaGrpcJs]) {
    for (const [what, headers] of cases) {
      const session = connect(`http://127.0.0.1:${server.port}`);
      session.on('error', () => undefined);
      await new Promise((resolve) => session.once('connect', resolve));
      // HEADERS and RST_STREAM leave in one write: node:http2 emits the stream a tick after its
      // headers, by when the reset has closed it.
      const stream = session.request({ ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers', ...headers }, { endStream: true });
      stream.on('error', () => undefined);
      stream.close(constants.NGHTTP2_NO_ERROR);
      await new Promise((resolve) => stream.once('close', resolve));
      await new Promise((resolve) => setTimeout(resolve, 20));
      session.close();
      const after = await raw(sessions[server === direct ? 0 : 1], PUT, [frame(encode('KV', 'Put', { key: Buffer.from('after') }))]);
      t.equal(after.trailers['grpc-status'], '0', `${server === direct ? 'direct' : 'grpc-js'} server, ${what} reset at once: a put after it is answered`);
    }
  }
});

t.test('fuzz: clients that reset, cancel or leave their streams at random points never stop either server', async (t) => {
  const paths = ['/etcdserverpb.KV/Put', '/etcdserverpb.KV/Range', '/etcdserverpb.Watch/Watch', '/etcdserverpb.Lease/LeaseKeepAlive', '/etcdserverpb.Maintenance/Status', '/nope.Nope/Nope'];
  const put = frame(encode('KV', 'Put', { key: Buffer.from('f'), value: Buffer.from('v') }));
  const stream = fc.record({
    path: fc.constantFrom(...paths),
    extra: fc.constantFrom<Record<string, string>>({}, { 'grpc-encoding': 'gzip' }, { 'grpc-encoding': 'identity' }, { 'content-type': 'application/json' }, { 'grpc-timeout': '1m' }),
    body: fc.oneof(fc.constant(put), fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b))),
    // What the client does: reset in the tick it opened the stream, after some of its body, once
    // answered, or never (it half-closes and waits); or the whole session goes at that point.
    reset: fc.constantFrom('at once', 'mid-body', 'after answer', 'never', 'session at once', 'session mid-body'),
    code: fc.constantFrom(constants.NGHTTP2_NO_ERROR, constants.NGHTTP2_CANCEL, constants.NGHTTP2_PROTOCOL_ERROR, constants.NGHTTP2_REFUSED_STREAM),
  });
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(0, 1), fc.array(stream, { minLength: 1, maxLength: 5 }), async (which, streams) => {
      const server = which === 0 ? direct : viaGrpcJs;
      const session = connect(`http://127.0.0.1:${server.port}`);
      session.on('error', () => undefined);
      await new Promise((resolve) => session.once('connect', resolve));
      const closed = streams.map((s) => {
        if (session.destroyed) return Promise.resolve(); // an earlier stream took the session with it
        const req = session.request({ ':method': 'POST', ':path': s.path, 'content-type': 'application/grpc', te: 'trailers', ...s.extra });
        req.on('error', () => undefined);
        req.resume();
        const gone = new Promise((resolve) => req.once('close', resolve));
        if (s.reset === 'at once') req.close(s.code);
        else if (s.reset === 'session at once') session.destroy();
        else {
          req.write(s.body.subarray(0, s.body.length >> 1));
          if (s.reset === 'mid-body') setImmediate(() => req.close(s.code));
          else if (s.reset === 'session mid-body') setImmediate(() => session.destroy());
          else {
            req.end(s.body.subarray(s.body.length >> 1));
            if (s.reset === 'after answer') req.once('response', () => req.close(s.code));
          }
        }
        // A stream left open (a watch, a keep-alive) is closed with its session below.
        return Promise.race([gone, new Promise((resolve) => setTimeout(resolve, 300))]);
      });
      await Promise.all(closed);
      session.destroy();
      const after = await raw(sessions[which]!, PUT, [put]);
      runs++;
      return after.trailers['grpc-status'] === '0';
    }),
    { numRuns: 80 },
  );
  t.equal(runs, 80, 'after each of 80 random clients, both servers still answer a put (and report no internal error)');
});
