/**
 * GossipNode on real UDP/TCP sockets (127.0.0.1, LOCAL_CONFIG timing): membership end to end,
 * then everything that must be dropped and counted rather than crash the node — wrong key,
 * replays, random / truncated / oversized datagrams and stream frames (fuzzed with fast-check) —
 * the inbound-stream limit, cluster-wide key rotation and the event-consumer limit.
 */
import t from 'tap';
import fc from 'fast-check';
import { connect } from 'node:net';
import { encodePacket, encodeStreamFrame } from '../../core/gossip/codec/index.js';
import { LOCAL_CONFIG, detectionBoundMs } from '../../core/gossip/config.js';
import { Keyring, generateKey } from '../../core/gossip/keyring/index.js';
import { MAX_EVENT_BUFFER, MAX_INBOUND_STREAMS, MAX_STREAM_FRAME_BYTES, MAX_UDP_PACKET_BYTES } from '../../core/gossip/limits.js';
import { MsgType, type MemberEvent } from '../../core/gossip/types.js';
import { GossipNode } from '../../core/net/gossip-node.js';
import { collect, sendUdp } from './sockets.js';
import { MAX_PENDING_INBOUND_FRAME_BYTES, MAX_PENDING_INBOUND_FRAME_BYTES_PER_ADDRESS, MAX_UNAUTHENTICATED_CONNECTIONS } from '../../core/net/gossip-transport.js';
import { JOIN_STREAM_MAGIC, JoinServer, MAX_PEEKING_PER_ADDRESS, joinCluster, peekJoinMagic } from '../../core/net/join.js';
import { derivePeerKey, generateToken, parseToken } from '../../core/net/token.js';

const HOST = '127.0.0.1';
const SECRET = 'transport-test-secret';

async function startNode(name: string, secret = SECRET): Promise<GossipNode> {
  return GossipNode.start({ name, bindHost: HOST, bindPort: 0, keyring: Keyring.fromSecret(secret), config: { ...LOCAL_CONFIG }, meta: { role: 'worker' } });
}

async function waitFor(what: string, pred: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}


/** Opens a TCP connection, writes bytes, and resolves when the server closes it (or after 2 s). */
async function tcpExchange(port: number, bytes: Uint8Array, endAfterWrite = true): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = connect({ host: HOST, port }, () => {
      s.write(bytes);
      if (endAfterWrite) s.end();
    });
    const timer = setTimeout(() => s.destroy(), 2_000);
    s.on('data', (c) => chunks.push(c));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
  });
}

function frameOf(sealed: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(sealed.length, 0);
  return Buffer.concat([head, sealed]);
}

t.test('membership over real sockets: join, crash, leave, metadata', async (t) => {
  const nodes = await Promise.all(['a', 'b', 'c', 'd'].map((n) => startNode(n)));
  t.teardown(() => Promise.all(nodes.map((n) => n.stop())));
  const seen = collect(nodes[0]!);
  for (const n of nodes.slice(1)) t.equal(await n.join([{ host: HOST, port: nodes[0]!.port }]), 1);
  await waitFor('convergence', () => nodes.every((n) => n.members().filter((m) => m.status === 'alive').length === 4)).catch(() => undefined);
  t.same(nodes.map((n) => n.members().filter((m) => m.status === 'alive').length), [4, 4, 4, 4], 'all four see four alive members');

  nodes[3]!.updateMeta({ role: 'manager' });
  await waitFor('metadata', () => nodes.every((n) => n.members().find((m) => m.name === 'd')!.meta.role === 'manager'));
  t.ok(seen.some((e) => e.type === 'update' && e.member.name === 'd'), 'update event');

  const crashAt = Date.now();
  await nodes[2]!.stop(); // no leave: looks like a crash
  await waitFor('failure detection', () => seen.some((e) => e.type === 'fail' && e.member.name === 'c'), detectionBoundMs(LOCAL_CONFIG, 4) + 3_000);
  t.ok(Date.now() - crashAt <= detectionBoundMs(LOCAL_CONFIG, 4) + 1_000, `c reported failed after ${Date.now() - crashAt} ms`);

  await nodes[1]!.leave();
  await nodes[1]!.stop();
  await waitFor('leave', () => seen.some((e) => e.type === 'leave' && e.member.name === 'b'));
  t.notOk(seen.some((e) => e.type === 'fail' && e.member.name === 'b'), 'b left, it did not fail');
  t.match(seen[0]!.at, /^\d{4}-\d\d-\d\dT/, 'events carry wall-clock time');
});

t.test('a node without the key cannot join; its packets are dropped and counted', async (t) => {
  const a = await startNode('a');
  const evil = await startNode('evil', 'another secret');
  t.teardown(() => Promise.all([a.stop(), evil.stop()]));
  await t.rejects(evil.join([{ host: HOST, port: a.port }]), { code: 'GOSSIP_JOIN_FAILED' });
  t.ok(a.metrics().authFailures >= 1, 'the forged stream was counted');
  const forged = Keyring.fromSecret('another secret').seal(encodePacket([{ t: MsgType.Alive, name: 'evil', incarnation: 9, host: HOST, port: evil.port, meta: {}, protocol: 1 }]), 'udp');
  const before = a.metrics().authFailures;
  await sendUdp(a.port, forged);
  await waitFor('auth failure counted', () => a.metrics().authFailures > before);
  t.equal(a.members().length, 1, 'nothing was injected');
});

t.test('fuzz: datagrams — random, oversized, replayed, sealed garbage — are dropped and counted', async (t) => {
  const a = await startNode('a');
  const b = await startNode('b');
  t.teardown(() => Promise.all([a.stop(), b.stop()]));
  await b.join([{ host: HOST, port: a.port }]);
  const ring = Keyring.fromSecret(SECRET);
  const samples = fc.sample(fc.uint8Array({ minLength: 0, maxLength: 1500 }), 150);
  for (const s of samples) await sendUdp(a.port, s);
  const nonEmpty = samples.filter((s) => s.length > 0).length;
  await waitFor('random datagrams counted', () => a.metrics().authFailures >= nonEmpty).catch(() => undefined);
  t.ok(a.metrics().authFailures >= nonEmpty, `${nonEmpty} non-empty random datagrams dropped as unauthenticated (authFailures ${a.metrics().authFailures})`);

  await sendUdp(a.port, Buffer.alloc(MAX_UDP_PACKET_BYTES + 1));
  await waitFor('oversized counted', () => a.metrics().oversized >= 1);

  const junk = fc.sample(fc.uint8Array({ minLength: 1, maxLength: 300 }), 50);
  for (const j of junk) await sendUdp(a.port, ring.seal(j, 'udp'));
  await waitFor('sealed junk counted as malformed', () => a.metrics().malformed >= 45);
  t.ok(a.metrics().malformed >= 45, `${a.metrics().malformed} authenticated-but-malformed datagrams dropped`);

  const ping = ring.seal(encodePacket([{ t: MsgType.Ping, seq: 77, target: 'a' }]), 'udp');
  const acksBefore = a.metrics().packetsOut;
  await sendUdp(a.port, ping);
  await sendUdp(a.port, ping);
  await waitFor('replay counted', () => a.metrics().replayed >= 1);
  t.ok(a.metrics().packetsOut > acksBefore, 'the first copy was answered');
  t.equal(a.metrics().replayed, 1, 'the second copy was dropped as a replay');

  await new Promise((r) => setTimeout(r, 500));
  t.same(a.members().map((m) => `${m.name}:${m.status}`).sort(), ['a:alive', 'b:alive'], 'the node kept working');
});

t.test('fuzz: stream frames — random, truncated, oversized, wrong key, replayed, sealed garbage', async (t) => {
  const a = await startNode('a');
  t.teardown(() => a.stop());
  const ring = Keyring.fromSecret(SECRET);
  for (const bytes of fc.sample(fc.uint8Array({ minLength: 1, maxLength: 600 }), 40)) await tcpExchange(a.port, bytes);
  const huge = Buffer.alloc(4);
  huge.writeUInt32BE(MAX_STREAM_FRAME_BYTES + 1, 0);
  await tcpExchange(a.port, huge);
  await waitFor('oversized frame counted', () => a.metrics().oversized >= 1);

  const pushPull = encodeStreamFrame({ t: MsgType.PushPull, join: true, from: 'x', states: [{ name: 'x', incarnation: 0, host: HOST, port: 9, status: 'alive', meta: {}, protocol: 1 }] });
  const valid = frameOf(ring.seal(pushPull, 'tcp'));
  await tcpExchange(a.port, valid.subarray(0, valid.length - 5)); // truncated, then closed
  await tcpExchange(a.port, frameOf(Keyring.fromSecret('wrong').seal(pushPull, 'tcp')));
  const authBefore = a.metrics().authFailures;
  await tcpExchange(a.port, frameOf(ring.seal(pushPull, 'udp'))); // a UDP-sealed payload on TCP
  t.ok(a.metrics().authFailures > authBefore, 'kind confusion is an authentication failure');
  const first = await tcpExchange(a.port, valid);
  t.ok(first.length > 0, 'the valid frame got a reply');
  const second = await tcpExchange(a.port, valid);
  t.equal(second.length, 0, 'the replayed frame got none');
  t.equal(a.metrics().replayed, 1);
  for (const j of fc.sample(fc.uint8Array({ minLength: 1, maxLength: 200 }), 20)) await tcpExchange(a.port, frameOf(ring.seal(j, 'tcp')));
  await waitFor('malformed frames counted', () => a.metrics().malformed >= 18);

  const b = await startNode('b');
  t.teardown(() => b.stop());
  t.equal(await b.join([{ host: HOST, port: a.port }]), 1, 'a still serves real push-pulls');
});

t.test('MAX_INBOUND_STREAMS: past it the oldest silent connections are closed, then service resumes', async (t) => {
  const a = await startNode('a');
  t.teardown(() => a.stop());
  const idle = await Promise.all(
    Array.from({ length: MAX_INBOUND_STREAMS + 3 }, () => new Promise<ReturnType<typeof connect>>((r) => {
      const s = connect({ host: HOST, port: a.port }, () => r(s));
      s.on('error', () => {});
    })),
  );
  await waitFor('refusals counted', () => a.metrics().streamsRefused >= 3);
  t.equal(a.metrics().streamsRefused, 3, 'exactly as many as went past the limit (the oldest, never having authenticated)');
  await waitFor('the oldest three closed', () => idle.slice(0, 3).every((s) => s.closed));
  t.notOk(idle.slice(3).some((s) => s.closed), 'the newer ones kept');
  for (const s of idle) s.destroy();
  await new Promise((r) => setTimeout(r, 100));
  const b = await startNode('b');
  t.teardown(() => b.stop());
  t.equal(await b.join([{ host: HOST, port: a.port }]), 1);
});

t.test('frames being read share one byte budget, counted as their bytes arrive, a whole frame at most from one address', async (t) => {
  const a = await startNode('a');
  t.teardown(() => a.stop());
  /** A connection from `localAddress` announcing a maximal frame and sending `body` bytes of it. */
  const announce = (localAddress: string, body: number): Promise<{ s: ReturnType<typeof connect>; closed: Promise<void> }> =>
    new Promise((resolve) => {
      const s = connect({ host: HOST, port: a.port, localAddress }, () => {
        const head = Buffer.alloc(4 + body);
        head.writeUInt32BE(MAX_STREAM_FRAME_BYTES, 0);
        s.write(head);
        resolve({ s, closed: new Promise((r) => s.once('close', () => r())) });
      });
      s.on('error', () => {});
    });
  // Two silent connections announcing whole frames hold nothing: a join is served beside them.
  const silent = [await announce('127.0.0.2', 0), await announce('127.0.0.2', 0)];
  await new Promise((r) => setTimeout(r, 100));
  const b = await startNode('b');
  t.teardown(() => b.stop());
  t.equal(await b.join([{ host: HOST, port: a.port }]), 1, 'joined while two 8 MiB frames are announced (refused before: the budget was taken by announcements)');
  // Bytes really sent count: one address holds at most a whole frame's worth.
  const before = a.metrics().streamsRefused;
  const heavy = await announce('127.0.0.3', 5 << 20);
  await new Promise((r) => setTimeout(r, 300));
  const second = await announce('127.0.0.3', 4 << 20);
  await second.closed;
  t.equal(a.metrics().streamsRefused, before + 1, `a second frame from the same address past ${MAX_PENDING_INBOUND_FRAME_BYTES_PER_ADDRESS} bytes is refused`);
  const c = await startNode('c');
  t.teardown(() => c.stop());
  t.equal(await c.join([{ host: HOST, port: a.port }]), 1, 'and others are still served');
  for (const x of [...silent, heavy]) x.s.destroy();
  await Promise.all([...silent, heavy].map((x) => x.closed));
  t.ok(MAX_PENDING_INBOUND_FRAME_BYTES >= 2 * MAX_PENDING_INBOUND_FRAME_BYTES_PER_ADDRESS, 'one address never takes the whole budget');
});

t.test('a connection that never sends its first 4 bytes is closed (peekJoinMagic)', async (t) => {
  const { createServer } = await import('node:net');
  const routed: boolean[] = [];
  const server = createServer((sock) => {
    sock.on('error', () => undefined);
    peekJoinMagic(sock, (isJoin) => routed.push(isJoin), 300);
  });
  await new Promise<void>((r) => server.listen(0, HOST, () => r()));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const started = Date.now();
  const silentClosed = await new Promise<boolean>((resolve) => {
    const s = connect({ host: HOST, port }, () => s.write('P')); // one byte, then silence
    s.on('error', () => {});
    const giveUp = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 3_000);
    s.once('close', () => {
      clearTimeout(giveUp);
      resolve(true);
    });
  });
  const took = Date.now() - started;
  t.ok(silentClosed && took >= 250, `closed by the listener after ${took} ms`);
  t.same(routed, [], 'never routed');
  let closed = false;
  const joiner = await new Promise<ReturnType<typeof connect>>((resolve) => {
    const s = connect({ host: HOST, port }, () => s.write(JOIN_STREAM_MAGIC));
    s.on('error', () => {});
    s.once('close', () => (closed = true));
    const check = setInterval(() => {
      if (routed.length === 1) {
        clearInterval(check);
        resolve(s);
      }
    }, 10);
  });
  t.same(routed, [true], 'the magic in time: routed as a join');
  await new Promise((r) => setTimeout(r, 500));
  t.notOk(closed, 'and not closed by the deadline after');
  joiner.destroy();
});

t.test('silent connections from one address hold at most MAX_PEEKING_PER_ADDRESS slots: a join from elsewhere still gets in', async (t) => {
  // Found by a crash hunt: 64 silent connections from one host, re-opened every 5 s, took every
  // slot of the gossip port (the per-address bound applied only after the first 4 bytes).
  const node = await startNode('peek-victim');
  t.teardown(() => node.stop());
  const joins: string[] = [];
  node.setJoinHandler((sock) => {
    joins.push(sock.remoteAddress ?? '');
    sock.destroy();
  });
  const port = node.port;
  const silent: Array<ReturnType<typeof connect>> = [];
  let silentClosed = 0;
  for (let i = 0; i < 64; i++) {
    const s = connect({ host: HOST, port, localAddress: '127.0.0.2' });
    s.on('error', () => {});
    s.once('close', () => silentClosed++);
    silent.push(s);
  }
  t.teardown(() => silent.forEach((s) => s.destroy()));
  await waitFor('the connections beyond the bound closed', () => silentClosed >= 64 - MAX_PEEKING_PER_ADDRESS);
  await new Promise((r) => setTimeout(r, 200));
  t.equal(silentClosed, 64 - MAX_PEEKING_PER_ADDRESS, `${MAX_PEEKING_PER_ADDRESS} silent connections kept waiting, the rest closed`);
  const joiner = connect({ host: HOST, port, localAddress: '127.0.0.3' }, () => joiner.write(JOIN_STREAM_MAGIC));
  joiner.on('error', () => {});
  t.teardown(() => joiner.destroy());
  await waitFor('the join routed', () => joins.length === 1, 3_000);
  t.same(joins, ['127.0.0.3'], 'a join from another address is routed while the silent ones wait');
});

t.test('silent and stalled connections from many addresses cannot keep a join out: the oldest unauthenticated one is closed', async (t) => {
  // Found by a review: 80 silent connections from 80 addresses (each under the per-address
  // bound) took every slot of the port while they lasted, and every join failed.
  const node = await startNode('many-addresses');
  t.teardown(() => node.stop());
  const peerKey = derivePeerKey(parseToken(generateToken()).secret);
  const joins = JoinServer.detached({ peerKey, onJoin: async () => ({ memberId: 7, members: [] }) });
  t.teardown(() => joins.close());
  node.setJoinHandler((sock, onAuthenticated) => joins.handleConnection(sock, onAuthenticated));
  const port = node.port;
  const attackers: Array<ReturnType<typeof connect>> = [];
  t.teardown(() => attackers.forEach((s) => s.destroy()));
  const open = (i: number, first?: Buffer): void => {
    const s = connect({ host: HOST, port, localAddress: `127.0.${1 + (i >> 8)}.${2 + (i & 255)}` }, () => first && s.write(first));
    s.on('error', () => {});
    attackers.push(s);
  };
  for (let i = 0; i < 40; i++) open(i); // silent
  for (let i = 40; i < 80; i++) open(i, JOIN_STREAM_MAGIC); // a join that never sends its hello
  await new Promise((r) => setTimeout(r, 300));
  const r = await joinCluster({ address: `${HOST}:${port}`, peerKey, request: { name: 'pi2', peerAddr: '127.0.0.1:12380', clientAddr: '127.0.0.1:12379' }, timeoutMs: 3_000 });
  t.equal(r.memberId, 7, 'a join gets in and is answered while they wait');
  t.ok(attackers.filter((s) => s.destroyed).length >= 80 - MAX_UNAUTHENTICATED_CONNECTIONS, 'the oldest unauthenticated connections were closed');
});

t.test('cluster-wide key rotation without downtime', async (t) => {
  const nodes = await Promise.all(['a', 'b', 'c'].map((n) => startNode(n)));
  t.teardown(() => Promise.all(nodes.map((n) => n.stop())));
  for (const n of nodes.slice(1)) await n.join([{ host: HOST, port: nodes[0]!.port }]);
  await waitFor('convergence', () => nodes.every((n) => n.members().filter((m) => m.status === 'alive').length === 3));
  const seen = collect(nodes[1]!);
  const oldKey = (await nodes[0]!.keyringOp('list', '')).keys![0]!.key;
  const next = generateKey();
  const inst = await nodes[0]!.keyringOp('install', next);
  t.same([inst.ok, inst.members, inst.errors], [3, 3, []], 'installed everywhere');
  const use = await nodes[2]!.keyringOp('use', next);
  t.same([use.ok, use.errors], [3, []], 'primary everywhere');
  const rm = await nodes[1]!.keyringOp('remove', oldKey);
  t.same([rm.ok, rm.errors], [3, []], 'old key removed everywhere');
  const list = await nodes[0]!.keyringOp('list', '');
  t.same(list.keys, [{ key: next, members: 3, primaryOn: 3 }]);
  const bad = await nodes[0]!.keyringOp('remove', next);
  t.equal(bad.errors.length, 3, 'nobody removes its primary');
  t.equal(bad.errors[0]!.code, 'GOSSIP_KEY_IS_PRIMARY');
  await new Promise((r) => setTimeout(r, 1_500));
  t.notOk(seen.some((e) => e.type === 'fail'), 'no failure during the rotation');
  const stale = await startNode('stale'); // only knows the old (derived) key
  t.teardown(() => stale.stop());
  await t.rejects(stale.join([{ host: HOST, port: nodes[0]!.port }]), { code: 'GOSSIP_JOIN_FAILED' });
});

t.test('MAX_EVENT_BUFFER: a consumer that falls behind is cancelled with a clear reason', async (t) => {
  const a = await startNode('a');
  t.teardown(() => a.stop());
  const it = a.events();
  const ev: MemberEvent = { type: 'join', member: { name: 'x', host: HOST, port: 1, status: 'alive', incarnation: 0, meta: {}, statusChangedMs: 0 }, atMs: 0 };
  const publish = (a as unknown as { publish(e: MemberEvent[]): void }).publish.bind(a);
  publish(new Array(MAX_EVENT_BUFFER).fill(ev));
  t.equal((await it.next()).value!.member.name, 'x', 'MAX_EVENT_BUFFER buffered events are fine');
  publish(new Array(2).fill(ev));
  await t.rejects(async () => {
    for (;;) await it.next();
  }, { code: 'GOSSIP_WATCH_OVERFLOW' });
});

t.test('a keyring or incarnation that cannot be saved (a full disk) is reported, never thrown from the packet path', async (t) => {
  const full = (): never => {
    throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
  };
  const mk = (name: string): Promise<GossipNode> =>
    GossipNode.start({ name, bindHost: HOST, bindPort: 0, keyring: Keyring.fromSecret(SECRET), config: { ...LOCAL_CONFIG }, meta: { role: 'worker' }, onKeyringChange: full, onIncarnationChange: full });
  const a = await mk('a');
  const b = await mk('b');
  t.teardown(() => Promise.all([a.stop(), b.stop()]));
  await b.join([{ host: HOST, port: a.port }]);
  await waitFor('convergence', () => [a, b].every((n) => n.members().filter((m) => m.status === 'alive').length === 2));
  const inst = await a.keyringOp('install', generateKey());
  t.equal(inst.ok, 0, 'not counted as done on either node');
  t.same(inst.errors.map((e) => e.code).sort(), ['GOSSIP_KEYRING_NOT_SAVED', 'GOSSIP_KEYRING_NOT_SAVED'], 'each says its change was not saved');
  t.match(inst.errors.find((e) => e.node === 'a')?.message, /could not be saved \(ENOSPC/, 'and why');
  // A refutation raises the incarnation (its save fails): gossip carries on.
  await a.updateMeta({ role: 'worker', zone: 'x' });
  await new Promise((r) => setTimeout(r, 300));
  t.ok(a.members().every((m) => m.status === 'alive') && b.members().every((m) => m.status === 'alive'), 'both nodes still run and see each other alive');
});
