/**
 * The client port over TLS (core/net/etcd/client-tls.ts): the npm etcd3 client and raw TLS
 * connections against the etcd front end with the in-memory fake backend; a certificate is
 * required with --client-cert-auth, and plain text, no certificate or a stranger's is refused.
 */
import t from 'tap';
import fc from 'fast-check';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http2 from 'node:http2';
import { request, type RequestOptions } from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import { Etcd3 } from 'etcd3';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import { ClientTlsFiles, certificateUser, checkClientTls, checkMemberCanVerify, serverTlsOptions, chooseProtocol, clientAddress, clientUrl, dialTarget, type ClientTls } from '../../core/net/etcd/client-tls.js';
import { FakeEtcdBackend } from './fake-etcd-backend.js';
import { REWRITTEN_CERT_USER_HEADER } from '../../core/net/etcd/client-port-listener.js';
import { hasOpenssl, makeTestCerts } from '../helpers/certs.js';

t.test('member record addresses: https:// over TLS, plain host:port otherwise', async (t) => {
  t.equal(clientAddress('10.0.0.5:2379', false), '10.0.0.5:2379');
  t.equal(clientAddress('10.0.0.5:2379', true), 'https://10.0.0.5:2379');
  t.equal(clientUrl('10.0.0.5:2379'), 'http://10.0.0.5:2379', 'a record from before TLS is plain');
  t.equal(clientUrl('https://[::1]:2379'), 'https://[::1]:2379');
  t.same(dialTarget('https://[::1]:2379'), { hostPort: '[::1]:2379', tls: true });
  t.same(dialTarget('10.0.0.5:2379'), { hostPort: '10.0.0.5:2379', tls: false });
});

t.test('certificateUser: the subject\'s one common name', async (t) => {
  t.equal(certificateUser({ subject: { CN: 'alice' } }), 'alice');
  t.equal(certificateUser({ subject: { CN: ['alice', 'root'] } }), undefined, 'several: ambiguous, nobody');
  t.equal(certificateUser({ subject: { CN: '' } }), undefined);
  t.equal(certificateUser({ subject: {} }), undefined);
  t.equal(certificateUser(undefined), undefined);
});

t.test('ALPN: HTTP/1.1 when offered (the JSON gateway), h2 for gRPC clients, nothing else', async (t) => {
  t.equal(chooseProtocol({ protocols: ['h2'] }), 'h2');
  t.equal(chooseProtocol({ protocols: ['h2', 'http/1.1'] }), 'http/1.1');
  t.equal(chooseProtocol({ protocols: ['http/1.1'] }), 'http/1.1');
  t.equal(chooseProtocol({ protocols: ['spdy/3'] }), undefined);
});

if (!hasOpenssl()) {
  t.test('client port over TLS', { skip: 'openssl not installed (apt-get install openssl)' }, async () => undefined);
} else {
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  const pem = (f: string): Buffer => readFileSync(f);
  /** 'server': a server certificate only; 'ca': and --trusted-ca-file (client certificates required, as etcd does); 'auth': and --client-cert-auth. */
  const serverTls = (mode: 'server' | 'ca' | 'auth'): ClientTls => ({ cert: pem(certs.serverCert), key: pem(certs.serverKey), ...(mode === 'server' ? {} : { ca: pem(certs.caCert) }), clientCertAuth: mode === 'auth' });

  t.test('checkClientTls refuses a key that is not the certificate\'s', async (t) => {
    t.doesNotThrow(() => checkClientTls(serverTls('ca')));
    t.throws(() => checkClientTls({ ...serverTls('ca'), key: pem(certs.clientKey) }), /--key-file is not the key of --cert-file's certificate/);
  });

  /** One TLS connection's fate: 'open' once the server has sent something back, else why not. */
  function tlsAttempt(port: number, opts: { cert?: string; key?: string; ALPNProtocols?: string[] }): Promise<{ alpn: string | false; authorized: boolean; error?: string }> {
    return new Promise((resolve) => {
      const s = tlsConnect({ host: '127.0.0.1', port, ca: pem(certs.caCert), cert: opts.cert && pem(opts.cert), key: opts.key && pem(opts.key), ALPNProtocols: opts.ALPNProtocols }, () => {
        // TLS 1.3: a refused client certificate shows only when the server's alert arrives.
        s.write('GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      });
      let body = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => (body += d));
      s.on('error', (e: Error & { code?: string }) => resolve({ alpn: s.alpnProtocol ?? false, authorized: false, error: e.code ?? e.message }));
      s.on('end', () => resolve({ alpn: s.alpnProtocol ?? false, authorized: /etcdserver/.test(body) }));
    });
  }

  t.test('server TLS: etcd3 with the CA works; a plain client and a client without the CA do not', async (t) => {
    const backend = new FakeEtcdBackend();
    const server = await EtcdGrpcServer.start({ backend, port: 0, tls: serverTls('server') });
    const secure = new Etcd3({ hosts: `https://127.0.0.1:${server.port}`, credentials: { rootCertificate: pem(certs.caCert) } });
    const plain = new Etcd3({ hosts: `127.0.0.1:${server.port}`, dialTimeout: 1_000 });
    const untrusting = new Etcd3({ hosts: `https://127.0.0.1:${server.port}`, dialTimeout: 1_000 });
    t.teardown(async () => {
      secure.close();
      plain.close();
      untrusting.close();
      await server.close(200);
    });
    await secure.put('k').value('v');
    t.equal(await secure.get('k').string(), 'v');
    const watcher = await secure.watch().key('w').create();
    const seen = new Promise<string>((resolve) => watcher.on('put', (kv) => resolve(kv.value.toString())));
    await secure.put('w').value('event');
    t.equal(await seen, 'event', 'a watch over TLS');
    await watcher.cancel();
    await t.rejects(plain.get('k').string(), 'a plain-text client gets nothing');
    await t.rejects(untrusting.get('k').string(), 'a client that does not trust the CA refuses the server');
    t.equal(await secure.getAll().count(), 2, 'only the secure client wrote');
  });

  /** An HTTPS request (a POST when it has a body) and the whole answer; `withCert`: with the client certificate of CN root. */
  const httpsText = (port: number, path: string, o: { alpn: string[]; withCert?: boolean; body?: string }): Promise<string> =>
    new Promise((resolve, reject) => {
      const client = o.withCert === true ? { cert: pem(certs.clientCert), key: pem(certs.clientKey) } : {};
      const opts: RequestOptions & { ALPNProtocols: string[] } = { host: '127.0.0.1', port, path, method: o.body === undefined ? 'GET' : 'POST', ca: pem(certs.caCert), ...client, ALPNProtocols: o.alpn };
      const req = request(opts, (res) => {
        let b = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (b += d));
        res.on('end', () => resolve(b));
      });
      req.on('error', reject);
      req.end(o.body);
    });

  t.test('the JSON gateway over HTTPS: curl-like clients offer HTTP/1.1 and reach it', async (t) => {
    const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, tls: serverTls('server') });
    t.teardown(() => server.close(200));
    const body = await httpsText(server.port, '/version', { alpn: ['h2', 'http/1.1'] });
    t.match(JSON.parse(body), { etcdserver: /\d/ });
  });

  t.test('--client-cert-auth: only a certificate the trusted CA signed gets in', async (t) => {
    const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, tls: serverTls('auth') });
    t.teardown(() => server.close(200));
    const withCert = await tlsAttempt(server.port, { cert: certs.clientCert, key: certs.clientKey, ALPNProtocols: ['http/1.1'] });
    t.same(withCert, { alpn: 'http/1.1', authorized: true }, 'signed by the trusted CA: served');
    const noCert = await tlsAttempt(server.port, { ALPNProtocols: ['http/1.1'] });
    t.equal(noCert.authorized, false, `no certificate: nothing served (${noCert.error ?? 'closed'})`);
    const stranger = await tlsAttempt(server.port, { cert: certs.strangerCert, key: certs.strangerKey, ALPNProtocols: ['http/1.1'] });
    t.equal(stranger.authorized, false, `another CA's certificate: nothing served (${stranger.error ?? 'closed'})`);

    const client = new Etcd3({
      hosts: `https://127.0.0.1:${server.port}`,
      credentials: { rootCertificate: pem(certs.caCert), certChain: pem(certs.clientCert), privateKey: pem(certs.clientKey) },
    });
    const anonymous = new Etcd3({ hosts: `https://127.0.0.1:${server.port}`, credentials: { rootCertificate: pem(certs.caCert) }, dialTimeout: 1_000 });
    t.teardown(() => {
      client.close();
      anonymous.close();
    });
    await client.put('mtls').value('yes');
    t.equal(await client.get('mtls').string(), 'yes', 'etcd3 with a client certificate');
    await t.rejects(anonymous.get('mtls').string(), 'etcd3 without one');
  });

  /** A Range of "x" over a new HTTP/2 connection (with the client certificate of CN root): its grpc-status. */
  const rangeOver = (port: number, headers: Record<string, string>): Promise<number> =>
    new Promise((resolve, reject) => {
      const session = http2.connect(`https://127.0.0.1:${port}`, { ca: pem(certs.caCert), cert: pem(certs.clientCert), key: pem(certs.clientKey) });
      const req = session.request({ ':method': 'POST', ':path': '/etcdserverpb.KV/Range', 'content-type': 'application/grpc', te: 'trailers', ...headers });
      const done = (status: number): void => {
        session.close();
        resolve(status);
      };
      // A refusal comes as headers alone (trailers-only), an answer with trailers.
      req.on('response', (h) => h['grpc-status'] !== undefined && done(Number(h['grpc-status'])));
      req.on('trailers', (tr) => done(Number(tr['grpc-status'])));
      req.on('error', reject);
      req.resume();
      // RangeRequest { key: "x" } behind gRPC's 5-byte prefix.
      req.end(Buffer.from([0, 0, 0, 0, 3, 0x0a, 0x01, 0x78]));
    });

  t.test('a verified client certificate names the caller (certUser); no header can claim one', async (t) => {
    const backend = new FakeEtcdBackend();
    const server = await EtcdGrpcServer.start({ backend, port: 0, tls: serverTls('auth') });
    const mtls = { rootCertificate: pem(certs.caCert), certChain: pem(certs.clientCert), privateKey: pem(certs.clientKey) };
    // etcd3 sends only its own metadata; a raw grpc-js client sends a claim of its own.
    const client = new Etcd3({ hosts: `https://127.0.0.1:${server.port}`, credentials: mtls });
    t.teardown(async () => {
      client.close();
      await server.close(200);
    });
    await client.get('x').string();
    t.equal(backend.lastRangeCertUser, 'root', 'gRPC: the certificate\'s common name');
    backend.lastRangeCertUser = undefined;

    backend.lastRangeCertUser = undefined;
    t.equal(await rangeOver(server.port, { [REWRITTEN_CERT_USER_HEADER]: 'mallory' }), 0);
    t.equal(backend.lastRangeCertUser, 'root', 'a connection grpc-js sees: the certificate, not the header');
    backend.lastRangeCertUser = undefined;
    // A URL as the first request's authority makes the client port rewrite the connection.
    t.equal(await rangeOver(server.port, { ':authority': `https://127.0.0.1:${server.port}`, [REWRITTEN_CERT_USER_HEADER]: 'mallory' }), 0);
    t.equal(backend.lastRangeCertUser, 'root', 'a rewritten connection: the certificate, the client\'s header dropped');

    const gatewayBody = await httpsText(server.port, '/v3/kv/range', { alpn: ['http/1.1'], withCert: true, body: JSON.stringify({ key: Buffer.from('x').toString('base64') }) });
    t.match(JSON.parse(gatewayBody), { header: {} }, gatewayBody);
    t.equal(backend.lastRangeCertUser, 'root', 'the JSON gateway: the certificate');
    const firstLine = await new Promise<string>((resolve, reject) => {
      const opts: RequestOptions & { ALPNProtocols: string[] } = { host: '127.0.0.1', port: server.port, path: '/v3/watch', method: 'POST', ca: pem(certs.caCert), cert: pem(certs.clientCert), key: pem(certs.clientKey), ALPNProtocols: ['http/1.1'] };
      const req = request(opts, (res) => {
        res.setEncoding('utf8');
        res.once('data', (d: string) => {
          resolve(d);
          req.destroy();
        });
      });
      req.on('error', reject);
      req.end(JSON.stringify({ create_request: { key: Buffer.from('w').toString('base64') } }));
    });
    t.match(firstLine, /"created":true/);
    t.equal(backend.lastWatchCertUser, 'root', 'a JSON gateway stream (/v3/watch): the certificate');
  });

  t.test('--trusted-ca-file without --client-cert-auth: certificates required (as etcd), but they name nobody; nor does a header', async (t) => {
    const backend = new FakeEtcdBackend();
    const server = await EtcdGrpcServer.start({ backend, port: 0, tls: serverTls('ca') });
    t.equal((await tlsAttempt(server.port, { ALPNProtocols: ['http/1.1'] })).authorized, false, 'no certificate: nothing served');
    t.equal((await tlsAttempt(server.port, { cert: certs.strangerCert, key: certs.strangerKey, ALPNProtocols: ['http/1.1'] })).authorized, false, 'another CA\'s: nothing served');
    const client = new Etcd3({ hosts: `https://127.0.0.1:${server.port}`, credentials: { rootCertificate: pem(certs.caCert), certChain: pem(certs.clientCert), privateKey: pem(certs.clientKey) } });
    t.teardown(async () => {
      client.close();
      await server.close(200);
    });
    await client.get('x').string();
    t.equal(backend.lastRangeCertUser, undefined, 'a verified certificate names nobody without --client-cert-auth (gRPC)');
    await httpsText(server.port, '/v3/kv/range', { alpn: ['http/1.1'], withCert: true, body: JSON.stringify({ key: Buffer.from('x').toString('base64') }) });
    t.equal(backend.lastRangeCertUser, undefined, 'nor through the JSON gateway');
    t.equal(await rangeOver(server.port, { [REWRITTEN_CERT_USER_HEADER]: 'root' }), 0);
    t.equal(backend.lastRangeCertUser, undefined, 'a header claiming a user, on a connection grpc-js sees');
    t.equal(await rangeOver(server.port, { ':authority': `https://127.0.0.1:${server.port}`, [REWRITTEN_CERT_USER_HEADER]: 'root' }), 0);
    t.equal(backend.lastRangeCertUser, undefined, 'the same on a rewritten connection');
  });

  t.test("a call whose client drops its connection mid-call: the headers a rewritten connection carries name nobody (its peer reads \"unknown\" then too)", async (t) => {
    const alice = certs.clientFor('alice');
    for (const directUnary of [true, false]) {
      const backend = new FakeEtcdBackend();
      const server = await EtcdGrpcServer.start({ backend, port: 0, tls: serverTls('auth'), directUnary });
      t.teardown(() => server.close(200));
      // As the auth backend does for admin calls: the caller is looked at after a barrier.
      let entered!: () => void;
      const called = new Promise<void>((r) => (entered = r));
      const seen = new Promise<{ certUser?: string; peer: string }>((resolve) => {
        backend.range = async (_r, ctx) => {
          entered();
          await new Promise((r) => setTimeout(r, 100));
          resolve({ certUser: ctx!.certUser, peer: ctx!.peer });
          return new Promise(() => undefined);
        };
      });
      const session = http2.connect(`https://127.0.0.1:${server.port}`, { ca: pem(certs.caCert), cert: pem(alice.cert), key: pem(alice.key) });
      session.on('error', () => undefined);
      // The names the rewriter's headers are known by outside (a client cannot know them otherwise).
      const req = session.request({ ':method': 'POST', ':path': '/etcdserverpb.KV/Range', 'content-type': 'application/grpc', te: 'trailers', 'x-picloud-cert-user': 'root', 'x-picloud-peer': '203.0.113.9:1' });
      req.on('error', () => undefined);
      req.end(Buffer.from([0, 0, 0, 0, 3, 0x0a, 0x01, 0x78]));
      await called;
      session.destroy();
      const { certUser, peer } = await seen;
      t.not(certUser, 'root', `${directUnary ? 'direct' : 'grpc-js'}: not the user the header claims`);
      t.not(peer, '203.0.113.9:1', `${directUnary ? 'direct' : 'grpc-js'}: not the peer the header claims`);
    }
  });

  t.test('certificate files read again when they change: the next connection gets the new ones', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'picloud-tls-files-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const files = { cert: join(dir, 'member.crt'), key: join(dir, 'member.key') };
    copyFileSync(certs.serverCert, files.cert);
    copyFileSync(certs.serverKey, files.key);
    const renewed = certs.renewedServer();
    const outcomes: string[] = [];
    const source = new ClientTlsFiles({ cert: pem(files.cert), key: pem(files.key), clientCertAuth: false, files }, (o) => outcomes.push(o.ok ? 'ok' : o.reason), 0);
    const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, tls: source });
    t.teardown(() => server.close(200));
    const servedSerial = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const s = tlsConnect({ host: '127.0.0.1', port: server.port, ca: pem(certs.caCert), ALPNProtocols: ['h2'] }, () => {
          resolve(s.getPeerCertificate().serialNumber);
          s.destroy();
        });
        s.on('error', reject);
      });
    const serialOf = (f: string): string => new X509Certificate(pem(f)).serialNumber;
    t.equal(await servedSerial(), serialOf(certs.serverCert), 'the certificate read at start');
    copyFileSync(renewed.cert, files.cert);
    copyFileSync(renewed.key, files.key);
    t.equal(await servedSerial(), serialOf(renewed.cert), 'renewed on disk: served from the next connection');
    t.same(outcomes, ['ok']);
    copyFileSync(certs.serverCert, files.cert); // its key not yet written beside it
    t.equal(await servedSerial(), serialOf(renewed.cert), 'a certificate without its key: the pair in use stays');
    t.match(outcomes[1], /--key-file is not the key of --cert-file's certificate/);
    copyFileSync(certs.serverKey, files.key);
    t.equal(await servedSerial(), serialOf(certs.serverCert), 'its key written: taken');
    t.same(outcomes.slice(2), ['ok']);

    const slow = new ClientTlsFiles({ cert: pem(files.cert), key: pem(files.key), clientCertAuth: false, files }, undefined, 60_000);
    const first = slow.current();
    t.equal(slow.current(), first, 'the same object while nothing changed');
    copyFileSync(renewed.cert, files.cert);
    copyFileSync(renewed.key, files.key);
    t.equal(slow.current(), first, 'looked at no more than once per checkMs');

    // Renewed after the config read the files but before the agent took their first stamp: the
    // bytes read at start are not what is on disk, and the stamp would not show a change.
    const stale = { cert: pem(files.cert), key: pem(files.key) };
    copyFileSync(certs.serverCert, files.cert);
    copyFileSync(certs.serverKey, files.key);
    const late: string[] = [];
    const between = new ClientTlsFiles({ ...stale, clientCertAuth: false, files }, (o) => late.push(o.ok ? 'ok' : o.reason), 60_000);
    t.ok(between.current().cert.equals(pem(certs.serverCert)), 'a renewal between the config read and the first stamp is taken');
    t.same(late, ['ok']);
    const unchanged: string[] = [];
    new ClientTlsFiles({ cert: pem(files.cert), key: pem(files.key), clientCertAuth: false, files }, (o) => unchanged.push(o.ok ? 'ok' : o.reason), 60_000);
    t.same(unchanged, [], 'files unchanged since the config read: nothing reported');
  });

  t.test('a connection that never finishes its handshake is closed: at the timeout, and with the listener', async (t) => {
    const { SortingListener } = await import('../../core/net/etcd/client-port-listener.js');
    const { connect } = await import('node:net');
    const timeouts = { settingsAckMs: 1_000, firstRequestMs: 1_000 };
    const listener = await SortingListener.listen('127.0.0.1', 0, { injectConnection: () => undefined }, timeouts, undefined, undefined, () => serverTlsOptions(serverTls('server'), 1_000));
    t.teardown(() => listener.close());
    const silent = (): Promise<{ closedAfterMs: Promise<number> }> =>
      new Promise((resolve) => {
        const started = performance.now();
        const s = connect(listener.port, '127.0.0.1', () => resolve({ closedAfterMs: new Promise((r) => s.once('close', () => r(performance.now() - started))) }));
        s.on('error', () => undefined);
        s.resume();
      });
    const within = (p: Promise<number>, ms: number): Promise<number> => Promise.race([p, new Promise<number>((r) => setTimeout(() => r(Infinity), ms))]);
    const a = await silent();
    const waited = await within(a.closedAfterMs, 4_000);
    t.ok(waited >= 900 && waited < 4_000, `closed by the handshake timeout (1,000 ms) after ${waited.toFixed(0)} ms`);
    const b = await silent();
    await new Promise((r) => setTimeout(r, 50));
    const closedAt = performance.now();
    listener.close();
    const closed = await within(b.closedAfterMs.then(() => performance.now() - closedAt), 2_000);
    t.ok(closed < 500, `closed with the listener (${closed.toFixed(0)} ms after close(), not at the timeout)`);
  });

  t.test('checkMemberCanVerify: would another member verify this one\'s certificate?', async (t) => {
    const caSigned = { cert: pem(certs.serverCert), key: pem(certs.serverKey), clientCertAuth: false };
    t.equal(checkMemberCanVerify({ ...caSigned, ca: pem(certs.caCert) }, '127.0.0.1'), undefined, 'signed by the trusted CA, names the address');
    t.match(checkMemberCanVerify(caSigned, '127.0.0.1'), /no system CA issued it: give --trusted-ca-file/, 'a private CA, no --trusted-ca-file');
    t.match(checkMemberCanVerify({ ...caSigned, ca: pem(certs.caCert) }, '10.1.2.3'), /does not name 10\.1\.2\.3/, 'another address');
    t.equal(checkMemberCanVerify({ ...caSigned, ca: pem(certs.caCert) }, 'localhost'), undefined, 'a DNS name it holds');
    const bundle = Buffer.concat([pem(certs.serverCert), pem(certs.caCert)]);
    t.equal(checkMemberCanVerify({ ...caSigned, cert: bundle }, '127.0.0.1'), undefined, 'its CA in the --cert-file bundle');
    const self = certs.selfSignedServer();
    t.equal(checkMemberCanVerify({ cert: pem(self.cert), key: pem(self.key), clientCertAuth: false }, '127.0.0.1'), undefined, 'self-signed: members sharing it trust it');
    t.match(checkMemberCanVerify({ ...caSigned, ca: pem(self.cert) }, '127.0.0.1'), /the --trusted-ca-file did not issue it/);
  });

  t.test('garbage on the TLS port closes that connection; the port keeps serving', async (t) => {
    const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, tls: serverTls('server') });
    const client = new Etcd3({ hosts: `https://127.0.0.1:${server.port}`, credentials: { rootCertificate: pem(certs.caCert) } });
    t.teardown(async () => {
      client.close();
      await server.close(200);
    });
    const { connect } = await import('node:net');
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 4096 }), async (bytes) => {
        await new Promise<void>((resolve) => {
          const s = connect(server.port, '127.0.0.1', () => s.end(Buffer.from(bytes)));
          s.on('error', () => resolve());
          s.on('close', () => resolve());
          s.resume();
        });
      }),
      { numRuns: 40 },
    );
    await client.put('after').value('garbage');
    t.equal(await client.get('after').string(), 'garbage');
  });
}
