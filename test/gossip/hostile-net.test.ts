/**
 * An attacker on real UDP/TCP sockets (127.0.0.1, LOCAL_CONFIG timing) against GossipNodes:
 * a sender without the key that trickles stream bytes to hold the inbound slots, and a key
 * holder that replays captured packets, impersonates a member, announces that a live member
 * left, or pushes incarnations towards their limit. Everything that transport.test.ts already
 * covers (random, forged, truncated, oversized, replayed datagrams and frames) is not repeated.
 */
import t from 'tap';
import { connect, type Socket } from 'node:net';
import { encodePacket, encodeStreamFrame } from '../../core/gossip/codec/index.js';
import { LOCAL_CONFIG } from '../../core/gossip/config.js';
import { Keyring, generateKey, listedKey } from '../../core/gossip/keyring/index.js';
import { checkingAuthority, signingAuthority } from '../../core/gossip/keyring/authority.js';
import { MAX_INBOUND_STREAMS, MAX_INBOUND_STREAMS_PER_ADDRESS, MAX_KEYRING_VERSION_STEP } from '../../core/gossip/limits.js';
import { MsgType, type KeyringOpMsg, type Message } from '../../core/gossip/types.js';
import { GossipNode } from '../../core/net/gossip-node.js';
import { collect, sendUdp } from './sockets.js';

const HOST = '127.0.0.1';
const SECRET = 'hostile-net-test-secret';

async function startNode(name: string, ring = Keyring.fromSecret(SECRET)): Promise<GossipNode> {
  return GossipNode.start({ name, bindHost: HOST, bindPort: 0, keyring: ring, config: { ...LOCAL_CONFIG }, meta: { role: 'worker' } });
}

async function waitFor(what: string, pred: () => boolean, timeoutMs = 8_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));


function sealPacket(ring: Keyring, msgs: Message[]): Buffer {
  return ring.seal(encodePacket(msgs), 'udp');
}

function frameOf(sealed: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(sealed.length, 0);
  return Buffer.concat([head, sealed]);
}

/** Sends one sealed stream request and resolves with the raw reply bytes (empty if none). */
async function tcpRequest(port: number, frame: Buffer): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = connect({ host: HOST, port }, () => s.write(frame));
    const timer = setTimeout(() => s.destroy(), 3_000);
    s.on('data', (c) => chunks.push(c));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
  });
}

/** Nodes `names` (with `rings[i]` as their keyrings where given), joined through the first and all alive. */
async function cluster(names: string[], rings: Keyring[] = []): Promise<GossipNode[]> {
  const nodes: GossipNode[] = [];
  for (const [i, n] of names.entries()) nodes.push(await startNode(n, rings[i]));
  for (const n of nodes.slice(1)) await n.join([{ host: HOST, port: nodes[0]!.port }]);
  await waitFor('convergence', () => nodes.every((n) => n.members().filter((m) => m.status === 'alive').length === names.length));
  return nodes;
}

const statusOf = (n: GossipNode, name: string): string | undefined => n.members().find((m) => m.name === name)?.status;

t.test('a sender without the key cannot hold the inbound stream slots by trickling bytes (slowloris)', async (t) => {
  const a = await startNode('a');
  t.teardown(() => a.stop());
  // Each connection announces a 1,000-byte frame and then sends one byte every 300 ms: never
  // idle long enough for an idle timeout, never finished.
  const trickle: Array<{ s: Socket; closed: boolean; timer?: NodeJS.Timeout }> = [];
  for (let i = 0; i < MAX_INBOUND_STREAMS; i++) {
    const entry: { s: Socket; closed: boolean; timer?: NodeJS.Timeout } = { s: connect({ host: HOST, port: a.port }), closed: false };
    entry.s.on('error', () => {});
    entry.s.on('close', () => {
      entry.closed = true;
      clearInterval(entry.timer);
    });
    entry.s.on('connect', () => {
      const head = Buffer.alloc(4);
      head.writeUInt32BE(1_000, 0);
      entry.s.write(head);
      entry.timer = setInterval(() => entry.s.write(Buffer.from([0])), 300);
    });
    trickle.push(entry);
  }
  t.teardown(() => {
    for (const e of trickle) {
      clearInterval(e.timer);
      e.s.destroy();
    }
  });
  await waitFor('every slot taken', () => a.metrics().streamsIn >= MAX_INBOUND_STREAMS);
  // Within the request deadline (tcpTimeoutMs) plus slack, the server closes every one of them.
  await waitFor('trickling connections closed', () => trickle.every((e) => e.closed), LOCAL_CONFIG.tcpTimeoutMs + 3_000).catch(() => undefined);
  t.equal(trickle.filter((e) => e.closed).length, MAX_INBOUND_STREAMS, 'the server closed every trickling connection');
  const b = await startNode('b');
  t.teardown(() => b.stop());
  t.equal(await b.join([{ host: HOST, port: a.port }]).catch((e: Error) => e.message), 1, 'a real join is served again');
});

t.test('MAX_INBOUND_STREAMS_PER_ADDRESS: one host cannot take every inbound stream slot', async (t) => {
  // A long deadline, so without the per-address limit the slots stay taken while b joins.
  const a = await GossipNode.start({ name: 'a', bindHost: HOST, bindPort: 0, keyring: Keyring.fromSecret(SECRET), config: { ...LOCAL_CONFIG, tcpTimeoutMs: 10_000 } });
  t.teardown(() => a.stop());
  const held: Socket[] = [];
  t.teardown(() => {
    for (const s of held) s.destroy();
  });
  await Promise.all(Array.from({ length: MAX_INBOUND_STREAMS }, () => new Promise<void>((resolve) => {
    const s = connect({ host: HOST, port: a.port, localAddress: '127.0.0.2' }, () => resolve());
    s.on('error', () => resolve());
    held.push(s);
  })));
  await waitFor('every connection accepted or refused', () => a.metrics().streamsIn + a.metrics().streamsRefused >= MAX_INBOUND_STREAMS);
  t.equal(a.metrics().streamsIn, MAX_INBOUND_STREAMS_PER_ADDRESS, 'the limit from 127.0.0.2 is served');
  t.equal(a.metrics().streamsRefused, MAX_INBOUND_STREAMS - MAX_INBOUND_STREAMS_PER_ADDRESS, 'the rest is refused');
  const b = await startNode('b');
  t.teardown(() => b.stop());
  t.equal(await b.join([{ host: HOST, port: a.port }]).catch((e: Error) => e.message), 1, 'another node joins meanwhile');
});

t.test('a key holder cannot evict a member for good by claiming the largest incarnation', async (t) => {
  const nodes = await cluster(['a', 'b', 'c']);
  t.teardown(() => Promise.all(nodes.map((n) => n.stop())));
  const [a, b, c] = nodes as [GossipNode, GossipNode, GossipNode];
  const seen = collect(a);
  const ring = Keyring.fromSecret(SECRET);
  // 0xffffffff was the largest incarnation the decoders accepted: c's refutation went above it,
  // every packet carrying it was dropped as malformed, and c stayed failed (even after a restart,
  // as the incarnation is persisted).
  for (const claim of [0xffff_ffff, Number.MAX_SAFE_INTEGER]) {
    await sendUdp(a.port, sealPacket(ring, [{ t: MsgType.Suspect, name: 'c', incarnation: claim, from: 'evil' }]));
    await sendUdp(c.port, sealPacket(ring, [{ t: MsgType.Dead, name: 'c', incarnation: claim, from: 'evil' }]));
    await sendUdp(b.port, sealPacket(ring, [{ t: MsgType.Alive, name: 'c', incarnation: claim, host: HOST, port: c.port, meta: { role: 'worker' }, protocol: 1 }]));
  }
  await sleep(2_500); // longer than LOCAL_CONFIG's suspicion timeout for 3 members
  t.ok(c.incarnation < 1_000, `c's incarnation stays small (${c.incarnation})`);
  for (const n of nodes) t.equal(statusOf(n, 'c'), 'alive', `${n.name} sees c alive`);
  t.notOk(seen.some((e) => e.member.name === 'c' && (e.type === 'fail' || e.type === 'leave')), 'a never reported c failed or left');
  t.ok(a.metrics().implausibleIncarnations >= 1 && b.metrics().implausibleIncarnations >= 1 && c.metrics().implausibleIncarnations >= 1, 'the claims were counted');
});

/** A keyring that records every sealed datagram and frame it produces: the bytes on the wire. */
class TappedKeyring extends Keyring {
  readonly sealed: Array<{ kind: 'udp' | 'tcp'; plain: Buffer; bytes: Buffer }> = [];
  override seal(plaintext: Uint8Array, kind: 'udp' | 'tcp'): Buffer {
    const bytes = super.seal(plaintext, kind);
    this.sealed.push({ kind, plain: Buffer.from(plaintext), bytes });
    return bytes;
  }
}

t.test('replays: a captured suspicion or death after the refutation, and a captured join of a member that left, change nothing', async (t) => {
  const tap = new TappedKeyring(Buffer.from(Keyring.fromSecret(SECRET).primaryKey(), 'base64'));
  const a = await startNode('a', tap);
  const b = await startNode('b');
  const c = await startNode('c');
  t.teardown(() => Promise.all([a, b, c].map((n) => n.stop())));
  await b.join([{ host: HOST, port: a.port }]);
  await waitFor('a, b', () => [a, b].every((n) => n.members().filter((m) => m.status === 'alive').length === 2));
  const ring = Keyring.fromSecret(SECRET);
  // A key holder makes a suspect b at its current incarnation; a gossips the suspicion (captured
  // on a's keyring) and b refutes it.
  const inc = b.incarnation;
  tap.sealed.length = 0;
  await sendUdp(a.port, sealPacket(ring, [{ t: MsgType.Suspect, name: 'b', incarnation: inc, from: 'evil' }]));
  await waitFor('b refuted', () => b.incarnation > inc && statusOf(a, 'b') === 'alive');
  const captured = tap.sealed.filter((s) => s.kind === 'udp' && s.plain.includes(Buffer.from('evil'))).map((s) => s.bytes);
  t.ok(captured.length > 0, `captured ${captured.length} of a's packets carrying the suspicion`);
  // c joins now: it has never seen these nonces, so only incarnations protect it.
  await c.join([{ host: HOST, port: a.port }]);
  await waitFor('three alive', () => [a, b, c].every((n) => n.members().filter((m) => m.status === 'alive').length === 3));
  const seenByC = collect(c);
  const incB = b.incarnation;
  const dead = sealPacket(ring, [{ t: MsgType.Dead, name: 'b', incarnation: inc, from: 'evil' }]);
  for (let round = 0; round < 3; round++) {
    for (const bytes of [...captured, dead]) for (const n of [a, b, c]) await sendUdp(n.port, bytes);
    await sleep(200);
  }
  await sleep(500);
  for (const n of [a, b, c]) t.equal(statusOf(n, 'b'), 'alive', `${n.name} still sees b alive`);
  t.equal(b.incarnation, incB, 'b had nothing to refute: the replays were stale');
  t.ok(a.metrics().replayed >= captured.length, `a dropped its own packets as replays (${a.metrics().replayed})`);
  t.ok(c.metrics().staleMessages >= 1, `c, which never saw them, ignored them as stale (${c.metrics().staleMessages})`);
  t.notOk(seenByC.some((e) => e.member.name === 'b'), 'c emitted no event about b');

  // b leaves; its join push-pull (captured from the wire: b's first frame to a) is replayed to c.
  const tapB = new TappedKeyring(Buffer.from(ring.primaryKey(), 'base64'));
  const d = await startNode('d', tapB);
  t.teardown(() => d.stop());
  await d.join([{ host: HOST, port: a.port }]);
  await waitFor('d seen by c', () => statusOf(c, 'd') === 'alive');
  const joinFrame = tapB.sealed.find((s) => s.kind === 'tcp')!.bytes;
  const aliveAnnouncements = tapB.sealed.filter((s) => s.kind === 'udp').map((s) => s.bytes);
  await d.leave();
  await d.stop();
  await waitFor('d left everywhere', () => [a, b, c].every((n) => statusOf(n, 'd') === 'left'));
  const eventsBefore = seenByC.length;
  const reply = await tcpRequest(c.port, frameOf(joinFrame));
  t.ok(reply.length > 0, 'c answered the replayed join (it never saw that nonce)');
  for (const bytes of aliveAnnouncements) for (const n of [a, b, c]) await sendUdp(n.port, bytes);
  await sleep(500);
  for (const n of [a, b, c]) t.equal(statusOf(n, 'd'), 'left', `${n.name} still has d as left`);
  t.same(seenByC.slice(eventsBefore).filter((e) => e.member.name === 'd').map((e) => e.type), [], 'c emitted no event about d: it was not re-added');
});

t.test('impersonation by a key holder: a name from another address, a false leave, a join under a live name', async (t) => {
  const warnings: string[] = [];
  const nodes: GossipNode[] = [];
  for (const name of ['a', 'b', 'c']) {
    nodes.push(await GossipNode.start({
      name, bindHost: HOST, bindPort: 0, keyring: Keyring.fromSecret(SECRET), config: { ...LOCAL_CONFIG }, meta: { role: 'worker' },
      logger: { info: () => {}, warn: (...args: unknown[]) => warnings.push(`${name}: ${args.join(' ')}`) },
    }));
  }
  for (const n of nodes.slice(1)) await n.join([{ host: HOST, port: nodes[0]!.port }]);
  await waitFor('convergence', () => nodes.every((n) => n.members().filter((m) => m.status === 'alive').length === 3));
  t.teardown(() => Promise.all(nodes.map((n) => n.stop())));
  const [a, b, c] = nodes as [GossipNode, GossipNode, GossipNode];
  const ring = Keyring.fromSecret(SECRET);
  const seen = collect(a);
  // c's name from another address, at a higher incarnation, to a and b: not taken over.
  const claim = sealPacket(ring, [{ t: MsgType.Alive, name: 'c', incarnation: c.incarnation + 5, host: '127.0.0.9', port: 4242, meta: { role: 'evil' }, protocol: 1 }]);
  await sendUdp(a.port, claim);
  await sendUdp(b.port, claim);
  await waitFor('conflicts counted', () => a.metrics().nameConflicts >= 1 && b.metrics().nameConflicts >= 1);
  for (const n of [a, b]) {
    const m = n.members().find((x) => x.name === 'c')!;
    t.same([m.host, m.port, m.meta.role, m.status], [HOST, c.port, 'worker', 'alive'], `${n.name} keeps c at its own address`);
  }
  t.ok(warnings.some((w) => /^a: gossip: name conflict: 127\.0\.0\.9:4242 claims the name c, held by a live member at 127\.0\.0\.1:\d+/.test(w)), `not silent: a warns (${warnings.join(' | ')})`);
  // The same claim sent to c itself: c refutes, and the refutation wins everywhere.
  const incC = c.incarnation;
  await sendUdp(c.port, sealPacket(ring, [{ t: MsgType.Alive, name: 'c', incarnation: incC, host: '127.0.0.9', port: 4242, meta: {}, protocol: 1 }]));
  await waitFor('c refuted the impostor', () => c.incarnation > incC && [a, b].every((n) => n.members().find((x) => x.name === 'c')!.incarnation === c.incarnation));

  // "b left", forged by a key holder: a believes it for a moment, b refutes and is back.
  const incB = b.incarnation;
  await sendUdp(a.port, sealPacket(ring, [{ t: MsgType.Dead, name: 'b', incarnation: incB, from: 'b' }]));
  await waitFor('b back with a new incarnation', () => b.incarnation > incB && nodes.every((n) => statusOf(n, 'b') === 'alive'));
  t.ok(b.incarnation > incB && nodes.every((n) => statusOf(n, 'b') === 'alive'), `b refuted the forged leave (incarnation ${incB} → ${b.incarnation}); a saw ${seen.filter((e) => e.member.name === 'b').map((e) => e.type).join(', ')}`);

  // A key holder joining under a live member's name from another address is refused.
  const impostor = await startNode('b');
  t.teardown(() => impostor.stop());
  await t.rejects(impostor.join([{ host: HOST, port: a.port }]), { code: 'GOSSIP_NAME_CONFLICT' });
  await sleep(300);
  for (const n of nodes) t.equal(n.members().find((x) => x.name === 'b')!.port, b.port, `${n.name} still has the real b`);
});

t.test('metadata: bad encodings from a key holder are dropped and counted, oversized updates refused, good updates spread', async (t) => {
  const nodes = await cluster(['a', 'b']);
  t.teardown(() => Promise.all(nodes.map((n) => n.stop())));
  const [a, b] = nodes as [GossipNode, GossipNode];
  const ring = Keyring.fromSecret(SECRET);
  const { Encoder } = await import('cbor-x');
  const enc = new Encoder({ useRecords: false, mapsAsObjects: true });
  const alive = (meta: unknown) => [MsgType.Alive, 'meta-evil', 1, HOST, 4242, meta, 1];
  const deep: Record<string, unknown> = {};
  let at = deep;
  for (let i = 0; i < 40; i++) at = (at.x = {}) as Record<string, unknown>;
  const bad: unknown[] = [
    { role: 'r'.repeat(600) }, // over MAX_META_BYTES
    { n: Number.NaN },
    { when: new Date(0) }, // a CBOR tag
    { big: 2n ** 70n }, // a bignum tag
    { bin: new Uint8Array(4) },
    { u: undefined },
    deep,
    'not a map',
    [1, 2, 3],
    new Map<unknown, unknown>([[[1, 2], 'array key']]),
  ];
  const before = a.metrics().malformed;
  for (const meta of bad) await sendUdp(a.port, ring.seal(enc.encode([alive(meta)]), 'udp'));
  // The same through a push-pull (TCP): refused whole, no reply.
  const reply = await tcpRequest(a.port, frameOf(ring.seal(Buffer.concat([Buffer.from([0]), enc.encode([MsgType.PushPull, false, 'meta-evil', [['meta-evil', 1, HOST, 4242, 0, { n: Number.NaN }, 1]]])]), 'tcp')));
  t.equal(reply.length, 0, 'no reply to a push-pull with bad metadata');
  await waitFor('drops counted', () => a.metrics().malformed - before >= bad.length + 1).catch(() => undefined);
  t.equal(a.metrics().malformed - before, bad.length + 1, 'every bad encoding was counted as malformed');
  t.equal(a.members().find((m) => m.name === 'meta-evil'), undefined, 'nothing was added');
  t.equal(({} as Record<string, unknown>).x, undefined, 'Object.prototype untouched');

  t.throws(() => b.updateMeta({ role: 'r'.repeat(600) }), { code: 'GOSSIP_META_TOO_LARGE' });
  t.throws(() => b.updateMeta({ n: Number.NaN } as never), { code: 'GOSSIP_META_INVALID' });
  b.updateMeta({ role: 'worker', tags: { zone: 'z1' } });
  await waitFor('update seen by a', () => (a.members().find((m) => m.name === 'b')!.meta.tags as { zone?: string } | undefined)?.zone === 'z1');
  t.equal((a.members().find((m) => m.name === 'b')!.meta.tags as { zone?: string } | undefined)?.zone, 'z1', 'a good update reached a');
  t.equal(statusOf(a, 'b'), 'alive', 'and a still serves');
});

t.test('a captured keyring change replayed after a later rotation is refused as stale', async (t) => {
  const tap = new TappedKeyring(Buffer.from(Keyring.fromSecret(SECRET).primaryKey(), 'base64'));
  const rings = [tap, Keyring.fromSecret(SECRET), Keyring.fromSecret(SECRET)];
  const nodes = await cluster(['a', 'b', 'c'], rings);
  t.teardown(() => Promise.all(nodes.map((n) => n.stop())));
  const [a, b, c] = nodes as [GossipNode, GossipNode, GossipNode];
  const k1 = generateKey();
  const k2 = generateKey();
  t.equal((await a.keyringOp('install', k1)).ok, 3);
  tap.sealed.length = 0;
  t.equal((await a.keyringOp('use', k1)).ok, 3, 'k1 in use everywhere');
  // The recorder keeps a's frames carrying the op: one per member, each under its own nonce.
  const captured = tap.sealed.filter((s) => s.kind === 'tcp' && s.plain.includes(Buffer.from(k1))).map((s) => s.bytes);
  t.equal(captured.length, 2, 'captured the op sent to b and to c');
  // The operator rotates again, but has not removed k1 yet.
  t.equal((await a.keyringOp('install', k2)).ok, 3);
  t.equal((await a.keyringOp('use', k2)).ok, 3, 'k2 in use everywhere');
  // Each captured frame to every member: b never saw the copy sent to c, nor c b's.
  for (const frame of captured) for (const n of nodes) await tcpRequest(n.port, frameOf(frame));
  for (const [i, n] of nodes.entries()) t.equal(rings[i]!.primaryKey(), k2, `${n.name} still seals with k2`);
  t.ok(b.metrics().keyringStale + c.metrics().keyringStale >= 2, `b and c refused the other's copy as stale (${b.metrics().keyringStale}, ${c.metrics().keyringStale})`);
  // A key holder's change at the largest version is not taken (every later one would be stale).
  const versionB = rings[1]!.version;
  const farAhead = tap.seal(encodeStreamFrame({ t: MsgType.KeyringOp, op: 'use', key: k1, version: Number.MAX_SAFE_INTEGER }), 'tcp');
  await tcpRequest(b.port, frameOf(farAhead));
  t.same([rings[1]!.primaryKey(), rings[1]!.version], [k2, versionB], 'b ignored a change at version 2^53-1');
  // b restarts from its saved keyring: a fresh replay cache, the version kept with the keys.
  const savedB = JSON.stringify(rings[1]!.toJSON());
  await b.stop();
  const ringB2 = Keyring.fromJSON(JSON.parse(savedB));
  const b2 = await startNode('b', ringB2);
  t.teardown(() => b2.stop());
  for (const frame of captured) await tcpRequest(b2.port, frameOf(frame));
  t.equal(ringB2.primaryKey(), k2, 'restarted b still seals with k2');
  t.equal(b2.metrics().keyringStale, 2, 'both copies refused as stale, its own among them');
  const rm = await a.keyringOp('remove', k1);
  // (the stopped b may still be listed alive and fail to answer)
  t.same(rm.errors.filter((e) => e.node !== 'b'), [], 'k1 removed on a and c (a member that had gone back to k1 could not remove its primary)');
  for (const r of [rings[0]!, rings[2]!]) t.notOk(r.list().includes(k1), 'k1 is gone');
});

t.test('with a keyring authority, only a manager\'s signed changes are taken from others: a worker token holder can change its own keyring, not the cluster\'s', async (t) => {
  const manager = signingAuthority(Buffer.alloc(32, 1));
  const rings = [Keyring.fromSecret(SECRET), Keyring.fromSecret(SECRET), Keyring.fromSecret(SECRET)];
  const authorities = [manager, checkingAuthority(manager.publicKey), checkingAuthority(manager.publicKey)];
  const nodes: GossipNode[] = [];
  for (const [i, n] of ['m', 'w', 'c'].entries()) nodes.push(await GossipNode.start({ name: n, bindHost: HOST, bindPort: 0, keyring: rings[i]!, keyringAuthority: authorities[i], config: { ...LOCAL_CONFIG }, meta: { role: 'worker' } }));
  t.teardown(() => Promise.all(nodes.map((n) => n.stop())));
  const [m, w, c] = nodes as [GossipNode, GossipNode, GossipNode];
  for (const n of [w, c]) await n.join([{ host: HOST, port: m.port }]);
  await waitFor('three alive', () => nodes.every((n) => n.members().filter((x) => x.status === 'alive').length === 3));
  const k1 = generateKey();
  const install = await m.keyringOp('install', k1);
  t.same([install.ok, install.errors], [3, []], "the manager's signed install is taken by all three");
  const k2 = generateKey();
  await t.rejects(w.keyringOp('install', k2), { code: 'GOSSIP_KEYRING_UNSIGNED', message: /made on a manager: this node holds a worker token/ }, 'a worker cannot send a change to the cluster');
  t.equal((await w.keyringOp('install', k2, { local: true })).ok, 1, 'but may change its own keyring (--local)');
  const versions = rings.map((r) => r.version);
  // A key holder sends changes by hand: unsigned, signed by another key, and a signed change
  // with its op altered. None is taken; the version does not move.
  const holder = Keyring.fromSecret(SECRET);
  const other = signingAuthority(Buffer.alloc(32, 2));
  const version = Math.max(...versions) + 1;
  const mSigned = manager.sign!({ op: 'use', key: k1, version });
  const forged: Array<[string, KeyringOpMsg]> = [
    ['unsigned', { t: MsgType.KeyringOp, op: 'install', key: k2, version }],
    ['signed by another key', { t: MsgType.KeyringOp, op: 'install', key: k2, version, sig: other.sign!({ op: 'install', key: k2, version }) }],
    ["the manager's signature of another change", { t: MsgType.KeyringOp, op: 'remove', key: k1, version, sig: mSigned }],
    ['a signature of the wrong length', { t: MsgType.KeyringOp, op: 'install', key: k2, version, sig: 'A'.repeat(88 - 4) + '====' }],
  ];
  for (const [what, msg] of forged) {
    for (const n of [m, c]) await tcpRequest(n.port, frameOf(holder.seal(encodeStreamFrame(msg), 'tcp')));
    t.same([rings[0]!.list(), rings[2]!.list()].map((l) => l.includes(k2) || !l.includes(k1)), [false, false], `${what}: not taken`);
  }
  t.same([rings[0]!.version, rings[2]!.version], [versions[0], versions[2]], 'their keyring versions did not move');
  t.same([m.metrics().keyringUnsigned, c.metrics().keyringUnsigned], [forged.length, forged.length], 'each refusal counted');
  for (const n of [m, c]) await tcpRequest(n.port, frameOf(holder.seal(encodeStreamFrame({ t: MsgType.KeyringOp, op: 'use', key: k1, version, sig: mSigned }), 'tcp')));
  t.same([rings[0]!.primaryKey(), rings[2]!.primaryKey()], [k1, k1], "the manager's own signed change, sent by the same hand, is taken");
  const list = await w.keyringOp('list', '');
  t.equal(list.ok, 3, 'a worker still lists the keys (reading needs no signature)');
  t.ok(list.keys!.some((k) => k.key === k1 && k.members === 3), 'a key it holds is shown as itself');
  // ...but never reads a key it does not hold: one installed to retire a leaked worker token.
  const retiring = generateKey();
  t.equal((await m.keyringOp('install', retiring, { local: true })).ok, 1);
  const after = await w.keyringOp('list', '');
  t.notOk(JSON.stringify(after).includes(retiring), 'the new key is not sent to the worker');
  t.ok(after.keys!.some((k) => k.key === listedKey(retiring) && k.members === 1), 'it is listed by its fingerprint');
  // A key holder answering a manager's change as stale at an inflated version moves that
  // manager's versions far up (bounded per round, not in all): its signed changes from there on
  // must still be taken by members that never saw the inflation.
  const farAhead = rings[2]!.version + MAX_KEYRING_VERSION_STEP * 3;
  const k3 = generateKey();
  await tcpRequest(c.port, frameOf(holder.seal(encodeStreamFrame({ t: MsgType.KeyringOp, op: 'install', key: k3, version: farAhead, sig: manager.sign!({ op: 'install', key: k3, version: farAhead }) }), 'tcp')));
  t.same([rings[2]!.version, rings[2]!.list().includes(k3)], [farAhead, true], "a manager's signed change far above a member's version is taken (an unsigned one is not: the MAX_KEYRING_VERSION_STEP test)");
});

t.test('a keyring change from a member that missed one is retried above the newer version, not lost', async (t) => {
  const rings = [Keyring.fromSecret(SECRET), Keyring.fromSecret(SECRET), Keyring.fromSecret(SECRET)];
  const nodes = await cluster(['a', 'b', 'c'], rings);
  t.teardown(() => Promise.all(nodes.map((n) => n.stop())));
  const [a, b, c] = nodes as [GossipNode, GossipNode, GossipNode];
  const k1 = generateKey();
  const k2 = generateKey();
  t.equal((await b.keyringOp('install', k1)).ok, 3);
  // a takes a change of its own (the operator on that board, --local): it is now ahead of c.
  t.equal((await a.keyringOp('install', k2, { local: true })).ok, 1);
  t.same(rings.map((r) => r.version), [2, 1, 1]);
  const use = await c.keyringOp('use', k1);
  t.same([use.ok, use.errors], [3, []], 'applied on all three: refused by a once as stale, then retried above');
  t.equal(a.metrics().keyringStale, 1);
  for (const [i, r] of rings.entries()) t.equal(r.primaryKey(), k1, `${nodes[i]!.name} seals with k1`);
  t.same(rings.map((r) => r.version), [3, 2, 2], 'a at the retried version; b took the first try; c (the origin) at the highest version reported to it');
});

t.test('MAX_KEYRING_VERSION_STEP: a keyring change that far above the member\'s version is taken, one more is not', async (t) => {
  const ring = Keyring.fromSecret(SECRET);
  const a = await startNode('a', ring);
  t.teardown(() => a.stop());
  const sender = Keyring.fromSecret(SECRET);
  const send = (version: number): Promise<Buffer> =>
    tcpRequest(a.port, frameOf(sender.seal(encodeStreamFrame({ t: MsgType.KeyringOp, op: 'install', key: generateKey(), version }), 'tcp')));
  await send(MAX_KEYRING_VERSION_STEP + 1);
  t.same([ring.version, ring.list().length], [0, 1], 'one beyond the step: not taken');
  await send(MAX_KEYRING_VERSION_STEP);
  t.same([ring.version, ring.list().length], [MAX_KEYRING_VERSION_STEP, 2], 'at the step: taken');
});

t.test('keyring changes begun at once on two members are both applied on every member', async (t) => {
  const rings = [Keyring.fromSecret(SECRET), Keyring.fromSecret(SECRET), Keyring.fromSecret(SECRET)];
  const nodes = [await startNode('a', rings[0]), await startNode('b', rings[1]), await startNode('c', rings[2])];
  t.teardown(() => Promise.all(nodes.map((n) => n.stop())));
  const [a, b, c] = nodes as [GossipNode, GossipNode, GossipNode];
  for (const n of [b, c]) await n.join([{ host: HOST, port: a.port }]);
  await waitFor('three alive', () => nodes.every((n) => n.members().filter((m) => m.status === 'alive').length === 3));
  const k1 = generateKey();
  const k2 = generateKey();
  // Two operators (or two scripts) at once: a installs k1, b installs k2.
  const [onA, onB] = await Promise.all([a.keyringOp('install', k1), b.keyringOp('install', k2)]);
  t.same([onA.ok, onA.errors], [3, []], `a's install applied on all three (${JSON.stringify(onA.errors)})`);
  t.same([onB.ok, onB.errors], [3, []], `b's install applied on all three (${JSON.stringify(onB.errors)})`);
  for (const [i, r] of rings.entries()) t.ok(r.list().includes(k1) && r.list().includes(k2), `${nodes[i]!.name} has both keys (versions ${rings.map((x) => x.version).join(',')})`);
  // Then either key can become the primary everywhere.
  const use = await c.keyringOp('use', k2);
  t.same([use.ok, use.errors], [3, []], `c's use of k2 applied on all three (${JSON.stringify(use.errors)})`);
});

t.test('keyring changes begun at once on three members are all applied on every member', async (t) => {
  const rings = [0, 1, 2, 3].map(() => Keyring.fromSecret(SECRET));
  const nodes = await Promise.all(['a', 'b', 'c', 'd'].map((n, i) => startNode(n, rings[i])));
  t.teardown(() => Promise.all(nodes.map((n) => n.stop())));
  for (const n of nodes.slice(1)) await n.join([{ host: HOST, port: nodes[0]!.port }]);
  await waitFor('four alive', () => nodes.every((n) => n.members().filter((m) => m.status === 'alive').length === 4));
  const keys = [generateKey(), generateKey(), generateKey()];
  const results = await Promise.all(keys.map((k, i) => nodes[i]!.keyringOp('install', k)));
  for (const [i, r] of results.entries()) t.same([r.ok, r.errors], [4, []], `${nodes[i]!.name}'s install applied on all four (${JSON.stringify(r.errors)})`);
  for (const [i, r] of rings.entries()) t.ok(keys.every((k) => r.list().includes(k)), `${nodes[i]!.name} has the three keys (versions ${rings.map((x) => x.version).join(',')})`);
});

t.test('a member that joins after keyring changes learns their version: a replayed older change (a removed key back) is refused', async (t) => {
  const k0 = Keyring.fromSecret(SECRET).primaryKey();
  const tap = new TappedKeyring(Buffer.from(k0, 'base64'));
  const rings = [tap, Keyring.fromSecret(SECRET)];
  const nodes = await cluster(['a', 'b'], rings);
  t.teardown(() => Promise.all(nodes.map((n) => n.stop())));
  const [a] = nodes as [GossipNode, GossipNode];
  const k1 = generateKey();
  const capturedOp = (op: string): Buffer => {
    const frames = tap.sealed.filter((s) => s.kind === 'tcp' && s.plain.includes(Buffer.from(op)) && s.plain.includes(Buffer.from(k1)));
    t.equal(frames.length, 1, `captured a's ${op} of k1 to b`);
    return frames[0]!.bytes;
  };
  // Recorded: install k1 (version 1, sealed with k0) and use k1 (version 2, sealed with k1).
  t.equal((await a.keyringOp('install', k1)).ok, 2);
  const install = capturedOp('install');
  tap.sealed.length = 0;
  t.equal((await a.keyringOp('use', k1)).ok, 2);
  const use = capturedOp('use');
  // k1 leaked: the operator goes back to k0 and removes k1 (versions 3 and 4).
  t.equal((await a.keyringOp('use', k0)).ok, 2);
  t.equal((await a.keyringOp('remove', k1)).ok, 2);
  t.same(rings.map((r) => [r.list(), r.version]), [[[k0], 4], [[k0], 4]], 'a and b hold k0 only, at version 4');
  // j joins now, with the token's key (version 0 on a fresh data dir, or one saved before versions).
  const ringJ = Keyring.fromSecret(SECRET);
  const j = await startNode('j', ringJ);
  t.teardown(() => j.stop());
  await j.join([{ host: HOST, port: a.port }]);
  t.equal(ringJ.version, 4, 'j took the cluster\'s keyring version from the join answer');
  // The recorder replays the install and then the use to j (new to its replay cache).
  await tcpRequest(j.port, frameOf(install));
  await tcpRequest(j.port, frameOf(use));
  t.same([ringJ.list(), ringJ.primaryKey()], [[k0], k0], 'the leaked key is not back on j, nor its primary');
  t.equal(j.metrics().keyringStale, 1, 'the install was refused as stale (the use, sealed with k1, could not even be opened)');
  // And j still talks to the cluster (had it taken the use, it would seal with k1, opened by nobody).
  j.updateMeta({ role: 'worker', zone: 'z9' });
  await waitFor("a sees j's update", () => a.members().find((m) => m.name === 'j')?.meta.zone === 'z9', 3_000);
});

t.test('a join answer more than MAX_KEYRING_VERSION_STEP above the joiner\'s keyring version is not taken', async (t) => {
  const ringS = Keyring.fromSecret(SECRET);
  ringS.version = MAX_KEYRING_VERSION_STEP + 1;
  const s = await startNode('s', ringS);
  const ringJ = Keyring.fromSecret(SECRET);
  const warnings: string[] = [];
  const j = await GossipNode.start({
    name: 'j', bindHost: HOST, bindPort: 0, keyring: ringJ, config: { ...LOCAL_CONFIG },
    logger: { info: () => {}, warn: (...m) => warnings.push(m.join(' ')) },
  });
  t.teardown(() => Promise.all([s.stop(), j.stop()]));
  await j.join([{ host: HOST, port: s.port }]);
  t.equal(ringJ.version, 0, 'not taken');
  t.match(warnings, [/s answered our join at keyring version 65537, too far above ours \(0\)/]);
  // At the step it is.
  ringS.version = MAX_KEYRING_VERSION_STEP;
  const s2 = await startNode('s2', ringS);
  t.teardown(() => s2.stop());
  await j.join([{ host: HOST, port: s2.port }]);
  t.equal(ringJ.version, MAX_KEYRING_VERSION_STEP, 'taken');
});
