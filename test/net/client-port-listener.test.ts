import t, { type Test } from 'tap';
import fc from 'fast-check';
import http2 from 'node:http2';
import { connect } from 'node:net';
import { AuthorityRewriter, DEFAULT_SORTING_TIMEOUTS, REWRITTEN_PEER_HEADER, SortingListener, authorityOfUrl, http1Start } from '../../core/net/etcd/client-port-listener.js';
import { http2Frame } from '../helpers/h2-frame.js';

t.test('authorityOfUrl: host:port of a URL, nothing for a plain authority', async (t) => {
  t.equal(authorityOfUrl('http://127.0.0.1:2379'), '127.0.0.1:2379');
  t.equal(authorityOfUrl('https://[::1]:2379/v3'), '[::1]:2379');
  t.equal(authorityOfUrl('unix://sock'), 'sock');
  t.equal(authorityOfUrl('127.0.0.1:2379'), undefined);
  t.equal(authorityOfUrl('localhost'), undefined);
});

t.test('http1Start: a request line, not yet known, or not HTTP/1', async (t) => {
  t.equal(http1Start(Buffer.from('GET /health HTTP/1.1')), 'yes');
  t.equal(http1Start(Buffer.from('POST ')), 'yes');
  t.equal(http1Start(Buffer.from('PO')), 'maybe');
  t.equal(http1Start(Buffer.from('')), 'maybe');
  t.equal(http1Start(Buffer.from('get / HTTP/1.1')), 'no');
  t.equal(http1Start(Buffer.from('ABCDEFGHI')), 'no');
  t.equal(http1Start(Buffer.from([0x16, 0x03, 0x01])), 'no', 'a TLS ClientHello');
});

/** An HTTP/2 server behind a SortingListener, answering each request with the authority it saw (or another header). */
async function echoAuthorityServer(t: Test, timeouts = DEFAULT_SORTING_TIMEOUTS, header = ':authority'): Promise<number> {
  const h2 = http2.createServer();
  h2.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200 });
    stream.end(String(headers[header]));
  });
  const listener = await SortingListener.listen('127.0.0.1', 0, { injectConnection: (c) => h2.emit('connection', c) }, timeouts);
  t.teardown(() => listener.close());
  return listener.port;
}

async function get(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': '/', ...headers });
    let body = '';
    let status = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => resolve({ status, body }));
    req.on('error', reject);
    req.end();
  });
}

t.test('a URL authority reaches HTTP/2 as host:port, for every request of the connection', async (t) => {
  const port = await echoAuthorityServer(t);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  const url = `http://127.0.0.1:${port}`;
  t.same(await get(session, { ':authority': url }), { status: 200, body: `127.0.0.1:${port}` });
  // The client's HPACK table now indexes the URL: the next blocks refer to it.
  t.same(await get(session, { ':authority': url, 'x-big': 'b'.repeat(40_000) }), { status: 200, body: `127.0.0.1:${port}` }, 'a block cut into CONTINUATION frames');
  const parallel = await Promise.all([1, 2, 3].map(() => get(session, { ':authority': url })));
  t.same(parallel.map((r) => r.body), Array(3).fill(`127.0.0.1:${port}`));
});

t.test("a rewritten connection's requests carry the client's address, never the client's own claim to one", async (t) => {
  const port = await echoAuthorityServer(t, DEFAULT_SORTING_TIMEOUTS, REWRITTEN_PEER_HEADER);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  await new Promise((r) => session.once('connect', r));
  const me = `127.0.0.1:${session.socket.localPort}`;
  const url = `http://127.0.0.1:${port}`;
  t.same(await get(session, { ':authority': url }), { status: 200, body: me });
  t.same(await get(session, { ':authority': url, [REWRITTEN_PEER_HEADER]: '203.0.113.9:1' }), { status: 200, body: me }, 'a copy the client sends is dropped');
  const plain = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => plain.close());
  t.same(await get(plain, {}), { status: 200, body: 'undefined' }, 'a connection that is not rewritten gets none (grpc-js sees its socket)');
});

t.test("a client that sends its whole first window of DATA before our SETTINGS arrive is served, not closed", async (t) => {
  // An echo of the body's length, behind the sorter.
  const h2 = http2.createServer();
  h2.on('stream', (stream) => {
    let n = 0;
    stream.on('data', (d: Buffer) => (n += d.length));
    stream.on('end', () => {
      stream.respond({ ':status': 200 });
      stream.end(String(n));
    });
  });
  const listener = await SortingListener.listen('127.0.0.1', 0, { injectConnection: (c) => h2.emit('connection', c) }, DEFAULT_SORTING_TIMEOUTS);
  t.teardown(() => listener.close());
  for (const authority of [undefined, `http://127.0.0.1:${listener.port}`]) {
    const session = http2.connect(`http://127.0.0.1:${listener.port}`);
    t.teardown(() => session.destroy());
    // Eight streams of 100 KB each, written at once: Node sends 65,535 bytes of DATA (the
    // default connection window) with the headers, before the server's SETTINGS come back.
    const answers = await Promise.all(
      Array.from({ length: 8 }, () =>
        new Promise<string>((resolve, reject) => {
          const req = session.request({ ':method': 'POST', ':path': '/', ...(authority === undefined ? {} : { ':authority': authority }) });
          let body = '';
          req.setEncoding('utf8');
          req.on('data', (d: string) => (body += d));
          req.on('end', () => resolve(body));
          req.on('error', reject);
          req.end(Buffer.alloc(100_000));
        }),
      ),
    );
    t.same(answers, Array(8).fill('100000'), authority === undefined ? 'a plain authority' : 'a URL authority (rewritten)');
  }
});

t.test('a plain authority passes through untouched', async (t) => {
  const port = await echoAuthorityServer(t);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  t.same(await get(session, {}), { status: 200, body: `127.0.0.1:${port}` });
  t.same(await get(session, { ':authority': 'example.org:80' }), { status: 200, body: 'example.org:80' });
});

t.test('a connection that sends garbage or nothing is dropped and the listener keeps serving', async (t) => {
  const port = await echoAuthorityServer(t);
  const sendAndWaitClose = (bytes: Buffer) =>
    new Promise<void>((resolve) => {
      const s = connect(port, '127.0.0.1', () => s.end(bytes));
      s.on('error', () => undefined);
      s.on('data', () => undefined);
      s.on('close', () => resolve());
    });
  await sendAndWaitClose(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await sendAndWaitClose(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.alloc(100, 0xff)]));
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  t.same(await get(session, { ':authority': 'http://h:1' }), { status: 200, body: 'h:1' });
});

t.test('an idle client goes to HTTP/2 after a while, or at once when it pings; one that never acknowledges our SETTINGS is dropped', async (t) => {
  const port = await echoAuthorityServer(t, { settingsAckMs: 300, firstRequestMs: 100 });
  const idle = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => idle.close());
  await new Promise((r) => setTimeout(r, 400));
  t.same(await get(idle, {}), { status: 200, body: `127.0.0.1:${port}` }, 'a request after the idle hand-over');
  const pinging = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => pinging.close());
  await new Promise<void>((resolve, reject) => pinging.once('connect', () => pinging.ping((err) => (err ? reject(err) : resolve()))));
  t.same(await get(pinging, {}), { status: 200, body: `127.0.0.1:${port}` }, 'a request after a ping');
  const started = Date.now();
  await new Promise<void>((resolve) => {
    const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    const s = connect(port, '127.0.0.1', () => s.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), settings])));
    s.on('error', () => undefined);
    s.on('data', () => undefined);
    s.on('close', () => resolve());
  });
  t.ok(Date.now() - started >= 250, 'a client that never acknowledges is dropped at the timeout');
});

const frame = http2Frame;

t.test('the rewriter refuses an HPACK bomb and a CONTINUATION flood instead of growing without bound', async (t) => {
  // One 4,000-byte entry put in the table, then referenced 1,000 times by a one-byte index:
  // a 5 KB block that decodes to 4 MB.
  const value = Buffer.alloc(4000, 0x61);
  // Literal with incremental indexing, new name "x" (0x40 0x01 0x78), value length 4000 as a
  // 7-bit-prefix integer: 127 (0x7f), then 3873 = 33 + 30·128 in two groups (0xa1 0x1e).
  const literal = Buffer.concat([Buffer.from([0x40, 0x01, 0x78, 0x7f, 0xa1, 0x1e]), value]);
  const bomb = Buffer.concat([literal, Buffer.alloc(1000, 0x80 | 62)]);
  t.throws(() => new AuthorityRewriter().push(frame(1, 0x4, 1, bomb)), /header list larger than/);
  // A header block that never ends: empty CONTINUATION frames, 9 bytes each on the wire.
  const flood = Buffer.concat([frame(1, 0, 1, Buffer.alloc(0)), ...Array.from({ length: 10_000 }, () => frame(9, 0, 1, Buffer.alloc(0)))]);
  t.throws(() => new AuthorityRewriter().push(flood), /header block larger than/);
});

t.test('fuzz: the rewriter answers any byte stream with frames or an Error, never anything else', async (t) => {
  const randomFrame = fc.record({
    type: fc.integer({ min: 0, max: 10 }),
    flags: fc.integer({ min: 0, max: 255 }),
    stream: fc.integer({ min: 0, max: 5 }),
    payload: fc.uint8Array({ maxLength: 64 }),
  }).map(({ type, flags, stream, payload }) => frame(type, flags, stream, Buffer.from(payload)));
  const input = fc.oneof(fc.array(randomFrame, { maxLength: 8 }).map((fs) => Buffer.concat(fs)), fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)));
  t.doesNotThrow(() => fc.assert(
    fc.property(input, fc.integer({ min: 1, max: 50 }), (bytes, cut) => {
      const r = new AuthorityRewriter();
      try {
        for (let at = 0; at < bytes.length; at += cut) for (const piece of r.push(bytes.subarray(at, at + cut))) if (!Buffer.isBuffer(piece)) return false;
        return true;
      } catch (e) {
        return e instanceof Error;
      }
    }),
    { numRuns: 2_000 },
  ));
});

t.test('fuzz: random frames after the preface never take the listener down', async (t) => {
  const port = await echoAuthorityServer(t);
  const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 400 }), async (junk) => {
      await new Promise<void>((resolve) => {
        const s = connect(port, '127.0.0.1', () => s.end(Buffer.concat([preface, junk])));
        s.on('error', () => undefined);
        s.on('data', () => undefined);
        s.on('close', () => resolve());
        setTimeout(() => s.destroy(), 2_000).unref();
      });
    }),
    { numRuns: 40 },
  );
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  t.same(await get(session, { ':authority': 'http://h:2' }), { status: 200, body: 'h:2' }, 'still serving after 40 hostile connections');
});
