/**
 * A unary answer's trailers leave in the same socket write as its HEADERS and DATA
 * (core/net/etcd/http2-trailers.ts). Counted as this process's write syscalls (/proc/self/io
 * syscw) per call, client and server together: the client's request is one write, so one answer
 * in one write makes two per call, node:http2's own way three. Other writes only add to the count
 * (assertions come after a batch, but V8's platform tasks wake Node's threads through an eventfd
 * now and then: up to ~0.6 more per call seen), so the fewest of a few batches is taken. Each test
 * runs the public way too and requires it to fail the check, so the check can fail.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { connect, createServer, type ClientHttp2Session, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { UnaryTrailers, trailersStats } from '../../core/net/etcd/http2-trailers.js';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import { FakeEtcdBackend } from './fake-etcd-backend.js';

const CALLS = 50;
const TRAILERS = { 'grpc-status': 0, 'grpc-message': 'OK' };
/** The trailers as the client reads them. */
const OK_SEEN = JSON.stringify({ 'grpc-status': '0', 'grpc-message': 'OK' });

function writeSyscalls(): number {
  return Number(/syscw:\s+(\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))?.[1]);
}

interface Answer {
  status: number | undefined;
  body: Buffer;
  /** The trailers, or the headers of a trailers-only answer. */
  trailers: Record<string, unknown>;
}

function call(session: ClientHttp2Session, path: string, body: Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
    let status: number | undefined;
    let trailers: Record<string, unknown> = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => {
      status = Number(h[':status']);
      if (h['grpc-status'] !== undefined) trailers = Object.fromEntries(Object.entries(h));
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('trailers', (h) => (trailers = Object.fromEntries(Object.entries(h))));
    stream.on('close', () => resolve({ status, body: Buffer.concat(chunks), trailers }));
    stream.on('error', reject);
    stream.end(body);
  });
}

const BATCHES = 4;

/** BATCHES batches of `n` calls one after another; their answers and the fewest write syscalls per call of a batch. */
async function counted(session: ClientHttp2Session, path: string, body: Buffer, n = CALLS): Promise<{ answers: Answer[]; writesPerCall: number }> {
  await call(session, path, body); // the connection's settings exchange is not counted
  const answers: Answer[] = [];
  let fewest = Infinity;
  for (let b = 0; b < BATCHES; b++) {
    const before = writeSyscalls();
    for (let i = 0; i < n; i++) answers.push(await call(session, path, body));
    fewest = Math.min(fewest, (writeSyscalls() - before) / n);
  }
  return { answers, writesPerCall: fewest };
}

async function bareServer(trailers: UnaryTrailers): Promise<{ server: Http2Server; session: ClientHttp2Session }> {
  const server = createServer();
  server.on('stream', (stream) => {
    stream.resume();
    stream.on('end', () => trailers.respond(stream, { ':status': 200, 'content-type': 'application/grpc' }, Buffer.from('answer')));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, session: connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`) };
}

t.test('HEADERS, DATA and trailers in one write; node:http2 alone takes a second one', async (t) => {
  for (const inline of [true, false]) {
    const { server, session } = await bareServer(new UnaryTrailers(TRAILERS, { inline }));
    const before = { ...trailersStats };
    const { answers, writesPerCall } = await counted(session, '/x', Buffer.from('q'));
    session.close();
    await new Promise((r) => server.close(r));
    const whole = answers.filter((a) => a.status === 200 && a.body.toString() === 'answer' && JSON.stringify(a.trailers) === OK_SEEN);
    t.equal(whole.length, answers.length, 'every answer whole: status, body and trailers');
    if (inline) {
      t.equal(trailersStats.inline - before.inline, BATCHES * CALLS + 1, 'every answer took the one-write path');
      t.equal(Math.round(writesPerCall), 2, `one write per answer (${writesPerCall} per call)`);
    } else {
      t.equal(trailersStats.deferred - before.deferred, BATCHES * CALLS + 1);
      t.equal(Math.round(writesPerCall), 3, `node:http2's way: two writes per answer (${writesPerCall} per call)`);
    }
  }
});

t.test('streams answered in one write all close, on both sides, many at once', async (t) => {
  // 'finish' comes only from a stream not yet destroyed when its writes complete: one destroyed
  // before makes Node build an error for nobody (see destroyOnceWritten). With the stream's own
  // destroy put back (node:http2's way), none finishes first: the check can fail.
  for (const heldBack of [true, false]) {
    const { server, session } = await bareServer(new UnaryTrailers(TRAILERS));
    let closed = 0;
    let finishedFirst = 0;
    server.on('stream', (s) => {
      let finished = false;
      s.on('finish', () => (finished = true));
      s.on('close', () => {
        closed++;
        if (finished) finishedFirst++;
      });
      // Runs after bareServer's 'end' listener, which answered.
      if (!heldBack) s.on('end', () => delete (s as { destroy?: unknown }).destroy);
    });
    const answers = await Promise.all(Array.from({ length: CALLS }, () => call(session, '/x', Buffer.from('q'))));
    await new Promise((r) => setTimeout(r, 20));
    t.equal(closed, CALLS, 'every server stream closed');
    t.ok(answers.every((a) => a.trailers['grpc-status'] === '0'), 'every client stream ended with its trailers');
    if (heldBack) t.equal(finishedFirst, CALLS, "every server stream's write completed before it was destroyed");
    else t.equal(finishedFirst, 0, "node:http2's destroy: every server stream destroyed with its write in flight");
    session.close();
    await new Promise((r) => server.close(r));
  }
});

t.test("the etcd server's unary answers: one write each", async (t) => {
  const backend = new FakeEtcdBackend();
  const server = await EtcdGrpcServer.start({ backend, port: 0, onInternalError: (e) => void t.fail(String(e)) });
  const session = connect(`http://127.0.0.1:${server.port}`);
  t.teardown(async () => {
    session.close();
    await server.close();
  });
  // A RangeRequest for key "k" (field 1, length 1) behind the gRPC message prefix.
  const rangeK = Buffer.from([0, 0, 0, 0, 3, 0x0a, 0x01, 0x6b]);
  const { answers, writesPerCall } = await counted(session, '/etcdserverpb.KV/Range', rangeK);
  t.equal(answers.filter((a) => JSON.stringify(a.trailers) === OK_SEEN).length, answers.length, 'every answer ended with the OK trailers');
  t.equal(Math.round(writesPerCall), 2, `one write per answer (${writesPerCall} per call)`);
});

t.test('trailers the native form cannot carry as node:http2 would are refused when prepared', async (t) => {
  t.throws(() => new UnaryTrailers({ ':status': 200 }), TypeError, 'a pseudo-header');
  t.throws(() => new UnaryTrailers({ 'Grpc-Status': 0 }), TypeError, 'an uppercase name');
  t.throws(() => new UnaryTrailers({ 'grpc-message': 'a\0b' }), TypeError, 'a NUL in a value');
  t.doesNotThrow(() => new UnaryTrailers({ 'grpc-status': 13, 'grpc-message': 'internal%20error' }));
});
