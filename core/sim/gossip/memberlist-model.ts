/**
 * What hashicorp/memberlist's DefaultLANConfig gives for a cluster of n members, computed from
 * its parameters (ProbeInterval 1 s, ProbeTimeout 500 ms, IndirectChecks 3, SuspicionMult 4,
 * SuspicionMaxTimeoutMult 6, RetransmitMult 4, GossipInterval 200 ms, GossipNodes 3,
 * PushPullInterval 30 s scaled by pushPullScale). These are the targets picloud's measured
 * detection time and bandwidth must meet. The derivation, step by step:
 *
 * Detection (crash → every live member reports it failed):
 *  1. first probe of the crashed node: each of the n−1 others probes it once per round-robin
 *     pass at a uniformly random point, so the first probe is the minimum of n−1 uniforms on
 *     [0, (n−1)·PI] ≈ exponential with mean PI: median ln 2·PI, p99 ln 100·PI;
 *  2. that probe fails only at its deadline: + PI;
 *  3. Lifeguard suspicion: min = SuspicionMult·max(1, log10 n)·PI once k = SuspicionMult−2
 *     confirmations arrived (other probers fail too within a few PI, long before min elapses
 *     for n ≥ 10), else it starts from max = SuspicionMaxTimeoutMult·min;
 *  4. dissemination of the suspicion (timers start when it arrives) / of the verdict: push
 *     gossip with fanout GossipNodes every GossipInterval reaches all n members in about
 *     log_{1+f}(n) + ln(n)/f rounds (Pittel), f = GossipNodes·(1 − loss).
 *  So median ≈ ln2·PI + PI + min + T_dissem and p99 ≈ ln100·PI + PI + min + T_dissem.
 *
 * Bandwidth (bytes sent per member per second, application payload after encryption, as the
 * simulator counts them; IP/UDP/TCP headers excluded on both sides). Message counts come from the
 * parameters; each message is costed at memberlist's own wire size (msgpack with field names,
 * LZW when it helps, AES-GCM; memberlist-wire.ts) — and, as a stricter second bound, at the
 * smaller of memberlist's and picloud's sizes, where only the message counts differ:
 *  - probing: one ping sent and one ack sent per PI (each member is probed once per PI on average);
 *  - indirect probing when the direct probe fails (probability q = 1 − (1−loss)²): IndirectChecks
 *    ping-reqs, and as helper the same number of relayed pings, acks and forwarded acks/nacks,
 *    plus a TCP ping in each direction;
 *  - dissemination: every state change is retransmitted λ = RetransmitMult·ceil(log10(n+1))
 *    times by every member, each transmission costing the message plus, when it does not share
 *    a packet, a packet's overhead;
 *  - probing of each crashed member until it is declared dead (~one failing probe per interval
 *    cluster-wide: a ping with the suspicion, k ping-reqs, k relayed pings, k nacks);
 *  - push-pull: a full state (n entries) sent twice per member per scaled interval (once as
 *    initiator, once as responder), and twice per join, compressed as each side compresses it.
 *  State changes per second come from the scenario (crashes, joins, metadata changes) plus
 *  memberlist's own false suspicions under loss: a probe of a live member leads to suspicion
 *  when the direct ping, all k indirect paths and the TCP ping fail:
 *  p_fs = q · (1 − (1−loss)⁴)^k · (1 − (1−loss)²); each costs a suspect and a refutation.
 */
import { MEMBERLIST_LAN_CONFIG, pushPullIntervalFor, retransmitLimit, suspicionTimeouts, type GossipConfig } from '../../gossip/config.js';
import { encodeMeta, encodeStreamFrame, messageSize } from '../../gossip/codec/index.js';
import { SEAL_OVERHEAD_BYTES, STREAM_FRAME_HEADER_BYTES } from '../../gossip/limits.js';
import { MsgType, type Message, type Meta, type PushPullEntry } from '../../gossip/types.js';
import {
  memberlistAck,
  memberlistAlive,
  memberlistDead,
  memberlistIndirectPing,
  memberlistPacketSize,
  memberlistPing,
  memberlistPushPullSize,
  memberlistSuspect,
  MEMBERLIST_ENCRYPT_OVERHEAD,
  type MemberlistSample,
} from './memberlist-wire.js';

export interface ModelScenario {
  n: number;
  lossRate: number;
  /** Cluster-wide rates of real state changes, per second. */
  crashesPerSec: number;
  joinsPerSec: number;
  updatesPerSec: number;
  /** Graceful leaves per second (0 if absent). */
  leavesPerSec?: number;
  /** Typical metadata, for message sizes. */
  meta: Meta;
}

export interface ModelResult {
  detectionMedianMs: number;
  detectionP99Ms: number;
  /** Lower bound of detection: no dissemination delay at all. */
  detectionFloorMs: number;
  disseminationMs: number;
  joinAllKnowMs: number;
  falseSuspicionsPerSec: number;
  /** memberlist's bytes per member per second on its own wire format. */
  bytesPerNodePerSec: number;
  breakdown: { probe: number; indirect: number; crashProbing: number; gossip: number; pushPull: number };
  /** The same message counts, each message costed at the smaller of the two formats. */
  bytesPerNodePerSecSameSizes: number;
  breakdownSameSizes: { probe: number; indirect: number; crashProbing: number; gossip: number; pushPull: number };
  /** One push-pull message (sealed, framed, compressed): memberlist's, and the smaller of the two. */
  pushPullBytes: { memberlist: number; smaller: number };
}

/** Rounds for push gossip with fanout f to reach all n members (Pittel's estimate). */
export function gossipRounds(n: number, fanout: number): number {
  if (n <= 1 || fanout <= 0) return 0;
  return Math.log(n) / Math.log(1 + fanout) + Math.log(n) / fanout;
}

interface Sizes {
  ping: number;
  ack: number;
  nack: number;
  pingReq: number;
  alive: number;
  suspect: number;
  dead: number;
  /** Seal and framing of a packet that carries only gossip. */
  packetOverhead: number;
  pushPull: number;
}

/**
 * Message sizes (sealed, for whole packets; in-packet for state messages). 'memberlist': its own
 * wire format (msgpack with field names, LZW when it helps, 2-byte lengths in compound packets).
 * 'smaller': for each message the smaller of memberlist's and picloud's — only message counts
 * then differ between the two systems.
 */
function sizesFor(mode: 'memberlist' | 'smaller', n: number, meta: Meta): Sizes {
  const name = 'node-' + String(n - 1);
  const host = '10.0.255.255';
  const sample: MemberlistSample = { name, host, meta: encodeMeta(meta) };
  const seq = 0x7fff_ffff;
  const ourOverhead = SEAL_OVERHEAD_BYTES + 1;
  const ours = (m: Message): number => messageSize(m) + ourOverhead;
  // memberlist state messages share compound packets, which LZW may shrink: measure on a
  // typical mix and apply the ratio.
  const mix = [memberlistAlive(sample, 1), memberlistAlive(sample, 2), memberlistSuspect(sample, 1), memberlistSuspect(sample, 2), memberlistDead(sample, 1)];
  const rawMix = mix.reduce((sum, m) => sum + m.length + 2, 0);
  const ratio = Math.min(1, (memberlistPacketSize(mix) - MEMBERLIST_ENCRYPT_OVERHEAD - 2) / rawMix);
  const ml: Sizes = {
    ping: memberlistPacketSize([memberlistPing(sample, seq)]),
    ack: memberlistPacketSize([memberlistAck(seq)]),
    nack: memberlistPacketSize([memberlistAck(seq)]),
    pingReq: memberlistPacketSize([memberlistIndirectPing(sample, seq)]),
    alive: (memberlistAlive(sample, 1).length + 2) * ratio,
    suspect: (memberlistSuspect(sample, 1).length + 2) * ratio,
    dead: (memberlistDead(sample, 1).length + 2) * ratio,
    packetOverhead: MEMBERLIST_ENCRYPT_OVERHEAD + 2,
    pushPull: 0,
  };
  const samples: MemberlistSample[] = [];
  const states: PushPullEntry[] = [];
  for (let i = 0; i < n; i++) {
    const nm = `node-${i}`;
    const h = `10.0.${(i >> 8) & 255}.${i & 255}`;
    const m = { ...meta, boot: 1 + (i % 3) };
    samples.push({ name: nm, host: h, meta: encodeMeta(m) });
    states.push({ name: nm, incarnation: 1, host: h, port: 7946, status: 'alive', meta: m, protocol: 1 });
  }
  ml.pushPull = memberlistPushPullSize(samples);
  if (mode === 'memberlist') return ml;
  const ourPushPull = encodeStreamFrame({ t: MsgType.PushPull, join: false, from: name, states }).length + SEAL_OVERHEAD_BYTES + STREAM_FRAME_HEADER_BYTES;
  return {
    ping: Math.min(ml.ping, ours({ t: MsgType.Ping, seq, target: name })),
    ack: Math.min(ml.ack, ours({ t: MsgType.Ack, seq })),
    nack: Math.min(ml.nack, ours({ t: MsgType.Nack, seq })),
    pingReq: Math.min(ml.pingReq, ours({ t: MsgType.PingReq, seq, target: name, host, port: 7946, nack: true })),
    alive: Math.min(ml.alive, messageSize({ t: MsgType.Alive, name, incarnation: 1, host, port: 7946, meta, protocol: 1 })),
    suspect: Math.min(ml.suspect, messageSize({ t: MsgType.Suspect, name, incarnation: 1, from: name })),
    dead: Math.min(ml.dead, messageSize({ t: MsgType.Dead, name, incarnation: 1, from: name })),
    packetOverhead: Math.min(ml.packetOverhead, ourOverhead),
    pushPull: Math.min(ml.pushPull, ourPushPull),
  };
}

export function memberlistModel(s: ModelScenario, c: GossipConfig = MEMBERLIST_LAN_CONFIG): ModelResult {
  const { n, lossRate: p } = s;
  const PI = c.probeIntervalMs;

  // Detection.
  const { minMs } = suspicionTimeouts(c, n);
  const fanout = c.gossipNodes * (1 - p);
  const disseminationMs = gossipRounds(n, fanout) * c.gossipIntervalMs;
  const detectionFloorMs = Math.LN2 * PI + PI + minMs;
  const detectionMedianMs = detectionFloorMs + disseminationMs;
  const detectionP99Ms = Math.log(100) * PI + PI + minMs + disseminationMs;

  // Message counts.
  const q = 1 - (1 - p) ** 2;
  const k = c.indirectChecks;
  const perSec = 1000 / PI;
  const pathFail = 1 - (1 - p) ** 4;
  const tcpFail = c.tcpFallbackProbe ? 1 - (1 - p) ** 2 : 1;
  const falseSuspicionsPerSec = n * q * pathFail ** k * tcpFail * perSec;
  const lambda = retransmitLimit(c, n);
  const kConfirm = Math.max(0, c.suspicionMult - 2);
  const leaves = s.leavesPerSec ?? 0;
  // A false suspicion: a suspect and a refuting alive. A crash: the suspicion, its k
  // confirmations (each re-gossiped) and the death notice. A join or update: one alive.
  const changesPerSec = falseSuspicionsPerSec * 2 + s.crashesPerSec * (2 + kConfirm) + s.joinsPerSec + s.updatesPerSec + leaves;
  const probesPerCrash = (detectionFloorMs - Math.LN2 * PI) / PI;

  const bytes = (z: Sizes): ModelResult['breakdown'] => {
    const probe = (z.ping + z.ack) * perSec;
    const tcpPing = 2 * (16 + SEAL_OVERHEAD_BYTES + STREAM_FRAME_HEADER_BYTES);
    const indirect = q * (k * (z.pingReq + (1 - p) * z.ping + (1 - p) ** 2 * z.ack + (1 - p) * z.ack) + (c.tcpFallbackProbe ? tcpPing : 0)) * perSec;
    // A crashed member is still probed until it is declared dead — about once per probe
    // interval cluster-wide — and each such probe fails completely: the ping (carrying the
    // suspicion once there is one), k ping-reqs, k relayed pings and k nacks (the TCP
    // fallback's SYN goes unanswered and carries no payload).
    const crashProbing = (s.crashesPerSec * probesPerCrash * (z.ping + z.suspect + k * (z.pingReq + z.ping + z.nack))) / n;
    const perChange =
      falseSuspicionsPerSec * (z.suspect + z.alive) + s.crashesPerSec * ((1 + kConfirm) * z.suspect + z.dead) + (s.joinsPerSec + s.updatesPerSec) * z.alive + leaves * z.dead;
    const transmissionsPerNodePerSec = changesPerSec * lambda;
    const gossipPacketsPerSec = Math.min(transmissionsPerNodePerSec, (c.gossipNodes * 1000) / c.gossipIntervalMs);
    // Capped by what fits: GossipNodes packets per GossipInterval plus piggybacking on probes.
    const packetsPerSec = (c.gossipNodes * 1000) / c.gossipIntervalMs + 2 * perSec;
    const gossip = Math.min(perChange * lambda + gossipPacketsPerSec * z.packetOverhead, packetsPerSec * c.udpBudgetBytes);
    // Periodic anti-entropy, plus the full-state exchange of every join.
    const pushPull = (2 * z.pushPull) / (pushPullIntervalFor(c, n) / 1000) + (s.joinsPerSec * 2 * z.pushPull) / n;
    return { probe, indirect, crashProbing, gossip, pushPull };
  };
  const sum = (b: ModelResult['breakdown']): number => b.probe + b.indirect + b.crashProbing + b.gossip + b.pushPull;
  const wire = sizesFor('memberlist', n, s.meta);
  const smaller = sizesFor('smaller', n, s.meta);
  const breakdown = bytes(wire);
  const sameSizes = bytes(smaller);
  return {
    detectionMedianMs,
    detectionP99Ms,
    detectionFloorMs,
    disseminationMs,
    joinAllKnowMs: disseminationMs,
    falseSuspicionsPerSec,
    bytesPerNodePerSec: sum(breakdown),
    breakdown,
    bytesPerNodePerSecSameSizes: sum(sameSizes),
    breakdownSameSizes: sameSizes,
    pushPullBytes: { memberlist: wire.pushPull, smaller: smaller.pushPull },
  };
}
