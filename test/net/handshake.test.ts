import t from 'tap';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { createServer, connect, type Socket } from 'node:net';
import { encodeFrame } from '../../core/net/frame.js';
import {
  HANDSHAKE_VERSION,
  serverHandshake,
  MAX_ADVERTISED_ADDRESS_CHARS,
  MAX_HANDSHAKE_FRAME_BYTES,
  NONCE_BYTES,
  Purpose,
  clientProof,
  decodeClientFinish,
  decodeClientHello,
  decodeServerHello,
  encodeClientFinish,
  encodeClientHello,
  encodeServerHello,
  serverProof,
  sessionKeys,
  transcriptHash,
} from '../../core/net/handshake.js';
import { open, seal } from '../../core/net/secure-channel.js';
import { NetError } from '../../core/net/errors.js';

const key = randomBytes(32);

t.test('handshake messages round-trip and proofs bind both nonces and the role', async (t) => {
  const hello = { version: HANDSHAKE_VERSION, clientNonce: randomBytes(NONCE_BYTES), purpose: Purpose.Raft, nodeId: 2 ** 53 - 1, advertise: 'pi-07.local:2380', instanceId: 2 ** 48 - 1, uptimeMs: 2 ** 40 };
  const helloBytes = encodeClientHello(hello);
  t.same(decodeClientHello(helloBytes), { ...hello, clientNonce: Buffer.from(hello.clientNonce) });
  const serverNonce = randomBytes(NONCE_BYTES);
  const tr = transcriptHash(helloBytes, HANDSHAKE_VERSION, serverNonce, 2 ** 53 - 2);
  const sp = serverProof(key, tr);
  const sh = decodeServerHello(encodeServerHello({ version: 1, serverNonce, serverProof: sp, nodeId: 2 ** 53 - 2 }));
  t.same(sh.serverProof, sp);
  t.equal(sh.nodeId, 2 ** 53 - 2, 'the server names its node id');
  t.not(serverProof(key, transcriptHash(helloBytes, HANDSHAKE_VERSION, serverNonce, 7)).toString('hex'), sp.toString('hex'), 'the server\'s node id is bound into the proof');
  const cp = clientProof(key, tr);
  t.same(decodeClientFinish(encodeClientFinish(cp)), cp);
  t.not(sp.toString('hex'), cp.toString('hex'), 'a server proof cannot be reflected as a client proof');
  const tr2 = transcriptHash(helloBytes, HANDSHAKE_VERSION, randomBytes(NONCE_BYTES));
  t.not(clientProof(key, tr2).toString('hex'), cp.toString('hex'), 'a fresh server nonce changes the proof (replay fails)');
  t.not(clientProof(randomBytes(32), tr).toString('hex'), cp.toString('hex'), 'another key, another proof');
  const c = sessionKeys(key, tr, 'client');
  const s = sessionKeys(key, tr, 'server');
  t.same(c.sendKey, s.recvKey);
  t.same(c.recvKey, s.sendKey);
  t.not(c.sendKey.toString('hex'), c.recvKey.toString('hex'), 'one key per direction');
});

t.test('sealed frames: counter-bound, tamper-evident', async (t) => {
  const k = randomBytes(32);
  const sealed = seal(k, 0n, Buffer.from('hello'));
  t.equal(open(k, 0n, sealed).toString(), 'hello');
  t.throws(() => open(k, 1n, sealed), { code: 'ERR_AUTH_FAILED' }, 'replayed at another position');
  const bad = Buffer.from(sealed);
  bad[0]! ^= 1;
  t.throws(() => open(k, 0n, bad), { code: 'ERR_AUTH_FAILED' }, 'flipped bit');
  t.throws(() => open(k, 0n, sealed.subarray(0, 10)), { code: 'ERR_AUTH_FAILED' }, 'shorter than the tag');
  t.throws(() => open(randomBytes(32), 0n, sealed), { code: 'ERR_AUTH_FAILED' }, 'wrong key');
});

t.test('hostile handshake fields are refused', async (t) => {
  const enc = (o: Partial<Parameters<typeof encodeClientHello>[0]>): Uint8Array =>
    encodeClientHello({ version: 1, clientNonce: randomBytes(NONCE_BYTES), purpose: Purpose.Raft, nodeId: 1, advertise: '', instanceId: 0, uptimeMs: 0, ...o });
  t.throws(() => decodeClientHello(enc({ clientNonce: randomBytes(31) })), { code: 'ERR_INVALID_MESSAGE' });
  t.throws(() => decodeClientHello(enc({ purpose: 9 as Purpose })), { code: 'ERR_INVALID_MESSAGE' });
  t.throws(() => decodeClientHello(enc({ purpose: 0 as Purpose })), { code: 'ERR_INVALID_MESSAGE' });
  t.throws(() => decodeClientHello(enc({ advertise: 'no-port' })), { code: 'ERR_INVALID_MESSAGE' }, 'an advertised address without a port');
  t.throws(() => decodeClientHello(enc({ advertise: `${'h'.repeat(MAX_ADVERTISED_ADDRESS_CHARS)}:1` })), { code: 'ERR_INVALID_MESSAGE' }, 'an advertised address too long');
  const longest = enc({ advertise: `${'h'.repeat(MAX_ADVERTISED_ADDRESS_CHARS - 5)}:2380`, nodeId: 2 ** 53 - 1, instanceId: 2 ** 53 - 1, uptimeMs: 2 ** 53 - 1 });
  t.ok(longest.length <= MAX_HANDSHAKE_FRAME_BYTES, `the longest hello (${longest.length} bytes) fits a handshake frame`);
  t.equal(decodeClientHello(longest).advertise.length, MAX_ADVERTISED_ADDRESS_CHARS);
  t.equal(decodeClientHello(enc({ advertise: '[fd00::7]:2380' })).advertise, '[fd00::7]:2380');
  const older = decodeClientHello(enc({}));
  t.same([older.instanceId, older.uptimeMs], [0, 0], 'a hello without an instance id (an older dialer) reads as 0: not said');
  t.throws(() => decodeClientHello(enc({ instanceId: 2 ** 60 })), { code: 'ERR_INVALID_MESSAGE' }, 'an instance id above 2^53');
  t.throws(() => decodeServerHello(encodeServerHello({ version: 1, serverNonce: randomBytes(32), serverProof: randomBytes(16), nodeId: 0 })), { code: 'ERR_INVALID_MESSAGE' });
  t.throws(() => decodeClientFinish(new Uint8Array(0)), { code: 'ERR_INVALID_MESSAGE' });
});

function onlyNetErrors(f: () => unknown): boolean {
  try {
    f();
    return true;
  } catch (err) {
    return err instanceof NetError && (err.code === 'ERR_DECODE' || err.code === 'ERR_INVALID_MESSAGE');
  }
}

t.test('fuzz: handshake decoders throw only NetError', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (b) =>
      onlyNetErrors(() => decodeClientHello(b)) && onlyNetErrors(() => decodeServerHello(b)) && onlyNetErrors(() => decodeClientFinish(b)),
    ),
    { numRuns: 2000 },
  );
  const valid = Buffer.from(encodeClientHello({ version: 1, clientNonce: randomBytes(32), purpose: Purpose.Raft, nodeId: 7, advertise: '10.0.0.7:2380', instanceId: 12345, uptimeMs: 60_000 }));
  fc.assert(
    fc.property(fc.nat(), fc.nat(255), (pos, val) => {
      const b = Buffer.from(valid);
      b[pos % b.length] = val;
      return onlyNetErrors(() => decodeClientHello(b)) && onlyNetErrors(() => decodeClientHello(b.subarray(0, pos % b.length)));
    }),
    { numRuns: 1000 },
  );
});

t.test('a peer speaking another handshake version is told so, not that its token is wrong', async (t) => {
  let serverErr: unknown;
  const server = createServer((sock: Socket) => {
    serverHandshake(sock, { peerKey: key, purposes: [Purpose.Raft], nodeId: 5 }).then(
      () => undefined,
      (e: unknown) => (serverErr = e),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const sock = connect(port, '127.0.0.1');
  let answer = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => (answer = Buffer.concat([answer, d])));
  const closed = new Promise((r) => sock.on('close', r));
  sock.on('error', () => undefined);
  await new Promise((r) => sock.on('connect', r));
  // Version 1 (no advertised address, no server node id): what a member from before the
  // address-change handling sends. Written as a literal, so the test fails on version-1 code.
  const V1 = 1;
  const old = encodeClientHello({ version: V1, clientNonce: randomBytes(NONCE_BYTES), purpose: Purpose.Raft, nodeId: 3, advertise: '', instanceId: 0, uptimeMs: 0 });
  sock.write(encodeFrame(old));
  await closed;
  t.equal((serverErr as NetError | undefined)?.code, 'ERR_VERSION', 'the server refuses the version');
  t.match(answer.toString('latin1'), new RegExp(`handshake version ${V1} not supported; this node speaks ${HANDSHAKE_VERSION}`), 'and tells the client why');
});
