/**
 * Every gossip limit at its edge: the value itself is accepted, one more is refused (with a
 * typed error or a counted drop). Stream and socket limits are tested in transport.test.ts.
 */
import t from 'tap';
import { Encoder } from 'cbor-x';
import { BroadcastQueue } from '../../core/gossip/broadcast-queue.js';
import { checkMeta, decodePacket, decodeStreamFrame, encodeMeta } from '../../core/gossip/codec/index.js';
import { LOCAL_CONFIG, validateConfig } from '../../core/gossip/config.js';
import { ReplayCache } from '../../core/gossip/keyring/index.js';
import {
  MAX_BROADCAST_QUEUE,
  MAX_HOST_BYTES,
  MAX_INCARNATION,
  MAX_INCARNATION_STEP,
  MAX_MEMBERS,
  MAX_MESSAGES_PER_PACKET,
  MAX_META_BYTES,
  MAX_META_DEPTH,
  MAX_NAME_BYTES,
  MAX_REAPED_MEMBERS,
  MAX_RELAYS,
  MAX_STREAM_FRAME_BYTES,
  MAX_UDP_PACKET_BYTES,
  MIN_UDP_BUDGET_BYTES,
  REPLAY_CACHE_ENTRIES,
} from '../../core/gossip/limits.js';
import { GossipMachine } from '../../core/gossip/machine.js';
import { MsgType, type Meta, type PushPullEntry, type StateMsg } from '../../core/gossip/types.js';
import { Prng } from '../../core/sim/prng.js';

const enc = new Encoder({ useRecords: false, mapsAsObjects: true });

/** The error code fn throws with (or 'none'). */
function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'none';
  } catch (e) {
    return (e as { code?: string }).code ?? 'untyped';
  }
}

function machine(name = 'self', initialMembers?: PushPullEntry[]): GossipMachine {
  return new GossipMachine({ name, address: { host: '10.0.0.1', port: 7946 }, config: { ...LOCAL_CONFIG }, random: new Prng(1), nowMs: 0, initialMembers });
}

t.test('MAX_UDP_PACKET_BYTES', async (t) => {
  const atLimit = Buffer.alloc(MAX_UDP_PACKET_BYTES, 0x80);
  t.equal(codeOf(() => decodePacket(atLimit)), 'GOSSIP_DECODE_MALFORMED', 'at the limit it is decoded (and found malformed)');
  t.throws(() => decodePacket(Buffer.alloc(MAX_UDP_PACKET_BYTES + 1)), { code: 'GOSSIP_DECODE_OVERSIZED' });
});

t.test('MAX_MESSAGES_PER_PACKET', async (t) => {
  const acks = (n: number) => enc.encode(Array.from({ length: n }, (_, i) => [MsgType.Ack, i]));
  t.equal(decodePacket(acks(MAX_MESSAGES_PER_PACKET)).length, MAX_MESSAGES_PER_PACKET);
  t.throws(() => decodePacket(acks(MAX_MESSAGES_PER_PACKET + 1)), { code: 'GOSSIP_DECODE_OVERSIZED' });
});

t.test('MAX_NAME_BYTES and MAX_HOST_BYTES', async (t) => {
  const suspect = (name: string) => enc.encode([[MsgType.Suspect, name, 1, 'x']]);
  t.equal(decodePacket(suspect('n'.repeat(MAX_NAME_BYTES))).length, 1);
  t.throws(() => decodePacket(suspect('n'.repeat(MAX_NAME_BYTES + 1))), { code: 'GOSSIP_DECODE_MALFORMED' });
  t.throws(() => decodePacket(suspect('é'.repeat(MAX_NAME_BYTES / 2 + 1))), { code: 'GOSSIP_DECODE_MALFORMED' }, 'counted in UTF-8 bytes');
  const pingReq = (host: string) => enc.encode([[MsgType.PingReq, 1, 't', host, 1, false]]);
  // The longest host is an IPv6 address with a zone (hosts are IP addresses).
  const zoned = (bytes: number): string => 'fe80::1%' + 'e'.repeat(bytes - 8);
  t.equal(decodePacket(pingReq(zoned(MAX_HOST_BYTES))).length, 1);
  t.throws(() => decodePacket(pingReq(zoned(MAX_HOST_BYTES + 1))), { code: 'GOSSIP_DECODE_MALFORMED', message: /longer than/ });
  t.doesNotThrow(() => machine('n'.repeat(MAX_NAME_BYTES)));
  t.throws(() => machine('n'.repeat(MAX_NAME_BYTES + 1)), { code: 'GOSSIP_NAME_INVALID' });
});

t.test('MAX_META_BYTES', async (t) => {
  // {"v": "xxxx…"}: 1 (map) + 2 ("v") + string head + body.
  const metaOf = (total: number): Meta => {
    for (let body = total; body > 0; body--) {
      const m = { v: 'x'.repeat(body) };
      if (encodeMeta(m).length === total) return m;
    }
    throw new Error('unreachable');
  };
  t.equal(encodeMeta(metaOf(MAX_META_BYTES)).length, MAX_META_BYTES);
  t.doesNotThrow(() => checkMeta(metaOf(MAX_META_BYTES)));
  t.throws(() => checkMeta(metaOf(MAX_META_BYTES + 1)), { code: 'GOSSIP_DECODE_OVERSIZED' });
  t.throws(() => machine().updateMeta(metaOf(MAX_META_BYTES + 1), 0), { code: 'GOSSIP_META_TOO_LARGE' });
});

t.test('MAX_META_DEPTH', async (t) => {
  const nested = (levels: number): Meta => {
    let v: Meta = { leaf: 1 };
    for (let i = 1; i < levels; i++) v = { n: v };
    return v;
  };
  t.doesNotThrow(() => checkMeta(nested(MAX_META_DEPTH + 1)), 'the top map plus MAX_META_DEPTH nested levels');
  t.throws(() => checkMeta(nested(MAX_META_DEPTH + 2)), { code: 'GOSSIP_DECODE_MALFORMED' });
});

t.test('MAX_MEMBERS', async (t) => {
  const entries: PushPullEntry[] = [];
  for (let i = 0; i < MAX_MEMBERS; i++) {
    entries.push({ name: `m${i}`, incarnation: 0, host: `10.1.${i >> 8}.${i & 255}`, port: 7946, status: 'alive', meta: {}, protocol: 1 });
  }
  const m = machine('self', entries);
  t.equal(m.viewSummary().known, MAX_MEMBERS);
  m.step([{ t: MsgType.Alive, name: 'one-too-many', incarnation: 0, host: '10.2.0.1', port: 7946, meta: {}, protocol: 1 }], { host: '10.2.0.1', port: 7946 }, 1);
  t.equal(m.viewSummary().known, MAX_MEMBERS, 'the extra member is not tracked');
  t.equal(m.counters.memberLimitDrops, 1, 'and the drop is counted');
});

t.test('MAX_REAPED_MEMBERS: the last incarnations of that many reaped members are kept, the oldest forgotten past it', async (t) => {
  const n = MAX_REAPED_MEMBERS + 1;
  const entries: PushPullEntry[] = [];
  for (let i = 0; i < n; i++) {
    entries.push({ name: `r${i}`, incarnation: 3, host: `10.1.${i >> 8}.${i & 255}`, port: 7946, status: 'left', meta: {}, protocol: 1 });
  }
  const m = machine('self', entries);
  const later = LOCAL_CONFIG.leftMemberRetentionMs + 60_000;
  m.tick(later);
  t.equal(m.counters.membersReaped, n, 'all reaped');
  const from = { host: '10.2.0.1', port: 7946 };
  for (let i = 0; i < n; i++) m.step([{ t: MsgType.Alive, name: `r${i}`, incarnation: 3, host: entries[i]!.host, port: 7946, meta: {}, protocol: 1 }], from, later);
  t.equal(m.counters.reapedAlivesIgnored, MAX_REAPED_MEMBERS, 'a replay of each remembered one is ignored');
  t.equal(m.viewSummary().known, 1, 'the one forgotten is taken back');
});

t.test('MAX_INCARNATION on the wire', async (t) => {
  const suspect = (inc: number) => enc.encode([[MsgType.Suspect, 'n', inc, 'x']]);
  t.equal((decodePacket(suspect(MAX_INCARNATION))[0] as { incarnation: number }).incarnation, MAX_INCARNATION);
  t.throws(() => decodePacket(suspect(MAX_INCARNATION + 1)), { code: 'GOSSIP_DECODE_MALFORMED' });
  t.throws(() => decodePacket(suspect(-1)), { code: 'GOSSIP_DECODE_MALFORMED' });
  t.throws(() => decodePacket(suspect(1.5)), { code: 'GOSSIP_DECODE_MALFORMED' });
});

t.test('MAX_INCARNATION_STEP: a claim that far above the known incarnation is believed, one more is not', async (t) => {
  const base = 7;
  const from = { host: '10.0.0.9', port: 7946 };
  const peer: PushPullEntry = { name: 'p', incarnation: base, host: '10.0.0.2', port: 7946, status: 'alive', meta: {}, protocol: 1 };
  // About another member: suspect and dead (from a third node), and alive.
  for (const t0 of [MsgType.Suspect, MsgType.Dead] as const) {
    const m = machine('self', [peer]);
    m.step([{ t: t0, name: 'p', incarnation: base + MAX_INCARNATION_STEP + 1, from: 'x' }], from, 1);
    t.same([m.member('p')!.status, m.counters.implausibleIncarnations], ['alive', 1], `${MsgType[t0]} one beyond the step is ignored and counted`);
    m.step([{ t: t0, name: 'p', incarnation: base + MAX_INCARNATION_STEP, from: 'x' }], from, 2);
    t.same([m.member('p')!.status, m.member('p')!.incarnation], ['suspect', base + MAX_INCARNATION_STEP], `${MsgType[t0]} at the step is believed`);
  }
  const m = machine('self', [peer]);
  const alive = (inc: number) => ({ t: MsgType.Alive as const, name: 'p', incarnation: inc, host: '10.0.0.2', port: 7946, meta: { v: inc }, protocol: 1 });
  m.step([alive(base + MAX_INCARNATION_STEP + 1)], from, 1);
  t.same([m.member('p')!.incarnation, m.counters.implausibleIncarnations], [base, 1], 'alive one beyond the step is ignored');
  m.step([alive(base + MAX_INCARNATION_STEP)], from, 2);
  t.equal(m.member('p')!.incarnation, base + MAX_INCARNATION_STEP, 'alive at the step is believed');
  // About ourselves: refuted only within the step, so a claim cannot push us past MAX_INCARNATION.
  const self = new GossipMachine({ name: 'self', address: { host: '10.0.0.1', port: 7946 }, incarnation: base, config: { ...LOCAL_CONFIG }, random: new Prng(1), nowMs: 0, initialMembers: [peer] });
  self.step([{ t: MsgType.Suspect, name: 'self', incarnation: base + MAX_INCARNATION_STEP + 1, from: 'x' }], from, 1);
  t.same([self.incarnation, self.counters.refutations], [base, 0], 'a claim about us beyond the step is not refuted');
  self.step([{ t: MsgType.Suspect, name: 'self', incarnation: base + MAX_INCARNATION_STEP, from: 'x' }], from, 2);
  t.same([self.incarnation, self.counters.refutations], [base + MAX_INCARNATION_STEP + 1, 1], 'a claim at the step is refuted above it');
  const top = new GossipMachine({ name: 'self', address: { host: '10.0.0.1', port: 7946 }, incarnation: MAX_INCARNATION - 1, config: { ...LOCAL_CONFIG }, random: new Prng(1), nowMs: 0, initialMembers: [peer] });
  top.step([{ t: MsgType.Suspect, name: 'self', incarnation: MAX_INCARNATION, from: 'x' }], from, 1);
  t.equal(top.incarnation, MAX_INCARNATION, 'a refutation never goes past MAX_INCARNATION (it would no longer decode)');
});

t.test('one raise per member per packet', async (t) => {
  const from = { host: '10.0.0.9', port: 7946 };
  const alive = (name: string, inc: number) => ({ t: MsgType.Alive as const, name, incarnation: inc, host: '10.0.0.2', port: 7946, meta: {}, protocol: 1 });
  // 256 alives about one member in one packet, each a step above the last: one step in all.
  const n = machine('self', [{ name: 'p', incarnation: 1, host: '10.0.0.2', port: 7946, status: 'alive', meta: {}, protocol: 1 }]);
  n.step(Array.from({ length: 256 }, (_, i) => alive('p', 1 + (i + 1) * MAX_INCARNATION_STEP)), from, 1);
  t.equal(n.member('p')!.incarnation, 1 + MAX_INCARNATION_STEP, 'raised by one step for the packet, not 256');
  n.step([alive('p', 1 + 2 * MAX_INCARNATION_STEP)], from, 2);
  t.equal(n.member('p')!.incarnation, 1 + 2 * MAX_INCARNATION_STEP, 'the next packet may raise it a step more');
});

t.test('MAX_BROADCAST_QUEUE', async (t) => {
  const q = new BroadcastQueue();
  for (let i = 0; i < MAX_BROADCAST_QUEUE; i++) q.push({ t: MsgType.Suspect, name: `n${i}`, incarnation: 0, from: 'x' });
  t.equal(q.length, MAX_BROADCAST_QUEUE);
  t.equal(q.dropped, 0);
  q.push({ t: MsgType.Suspect, name: 'extra', incarnation: 0, from: 'x' });
  const keep = MAX_BROADCAST_QUEUE - MAX_BROADCAST_QUEUE / 8;
  t.equal(q.length, keep, 'past it: pruned an eighth below, so the next pushes do not prune each time');
  t.equal(q.dropped, MAX_BROADCAST_QUEUE + 1 - keep, 'the difference was dropped');
  const out: StateMsg[] = [];
  q.take(1 << 20, 1 << 20, 100, out);
  t.ok(out.some((m) => m.name === 'extra'), 'the newest was kept');
  // A push-pull's worth of new names: pruned a few times, not at every push.
  const dropped = q.dropped;
  for (let i = 0; i < 10_000; i++) q.push({ t: MsgType.Suspect, name: `m${i}`, incarnation: 0, from: 'x' });
  t.ok(q.length <= MAX_BROADCAST_QUEUE && q.dropped - dropped >= 10_000 - MAX_BROADCAST_QUEUE, `${q.length} queued, ${q.dropped - dropped} dropped`);
});

t.test('MAX_RELAYS', async (t) => {
  const m = machine();
  const from = { host: '10.0.0.2', port: 7946 };
  for (let i = 0; i < MAX_RELAYS + 1; i++) {
    m.step([{ t: MsgType.PingReq, seq: i, target: `t${i}`, host: '10.0.0.3', port: 7946, nack: true }], from, 1);
  }
  t.equal(m.counters.relays, MAX_RELAYS);
  t.equal(m.counters.relaysRefused, 1);
});

t.test('MAX_STREAM_FRAME_BYTES', async (t) => {
  t.throws(() => decodeStreamFrame(Buffer.alloc(MAX_STREAM_FRAME_BYTES + 1)), { code: 'GOSSIP_DECODE_OVERSIZED' });
  t.equal(codeOf(() => decodeStreamFrame(Buffer.alloc(MAX_STREAM_FRAME_BYTES))), 'GOSSIP_DECODE_MALFORMED', 'at the limit it is decoded (and found malformed)');
});

t.test('REPLAY_CACHE_ENTRIES', async (t) => {
  const c = new ReplayCache();
  const nonce = (i: number) => {
    const b = Buffer.alloc(12);
    b.writeUInt32BE(i, 0);
    return b;
  };
  for (let i = 0; i < REPLAY_CACHE_ENTRIES; i++) c.admit(nonce(i));
  t.equal(c.size, REPLAY_CACHE_ENTRIES);
  t.notOk(c.admit(nonce(0)), 'the oldest is still remembered at the limit');
  t.ok(c.admit(nonce(REPLAY_CACHE_ENTRIES)));
  t.ok(c.admit(nonce(0)), 'one more and the oldest is forgotten');
});

t.test('MIN_UDP_BUDGET_BYTES .. MAX_UDP_PACKET_BYTES for the sending budget', async (t) => {
  t.doesNotThrow(() => validateConfig({ ...LOCAL_CONFIG, udpBudgetBytes: MIN_UDP_BUDGET_BYTES }));
  t.throws(() => validateConfig({ ...LOCAL_CONFIG, udpBudgetBytes: MIN_UDP_BUDGET_BYTES - 1 }), { code: 'GOSSIP_CONFIG_INVALID' });
  t.doesNotThrow(() => validateConfig({ ...LOCAL_CONFIG, udpBudgetBytes: MAX_UDP_PACKET_BYTES }));
  t.throws(() => validateConfig({ ...LOCAL_CONFIG, udpBudgetBytes: MAX_UDP_PACKET_BYTES + 1 }), { code: 'GOSSIP_CONFIG_INVALID' });
  t.throws(() => validateConfig({ ...LOCAL_CONFIG, probeTimeoutMs: LOCAL_CONFIG.probeIntervalMs }), { code: 'GOSSIP_CONFIG_INVALID' });
});
