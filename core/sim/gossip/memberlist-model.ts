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
 * simulator counts them; IP/UDP/TCP headers excluded on both sides). Every message is costed at
 * the smaller of memberlist's real wire size (msgpack with field names, LZW when it helps, AES-GCM;
 * memberlist-wire.ts) and picloud's, so the model errs in memberlist's favour:
 *  - probing: one ping sent and one ack sent per PI (each member is probed once per PI on average);
 *  - indirect probing when the direct probe fails (probability q = 1 − (1−loss)²): IndirectChecks
 *    ping-reqs, and as helper the same number of relayed pings, acks and forwarded acks/nacks,
 *    plus a TCP ping in each direction;
 *  - dissemination: every state change is retransmitted λ = RetransmitMult·ceil(log10(n+1))
 *    times by every member, each transmission costing the message plus, when it does not share
 *    a packet, a packet's overhead;
 *  - push-pull: a full state (n entries) sent twice per member per scaled interval (once as
 *    initiator, once as responder), compressed as each side compresses it.
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
  type MemberlistSample,
} from './memberlist-wire.js';

export interface ModelScenario {
  n: number;
  lossRate: number;
  /** Cluster-wide rates of real state changes, per second. */
  crashesPerSec: number;
  joinsPerSec: number;
  updatesPerSec: number;
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
  bytesPerNodePerSec: number;
  breakdown: { probe: number; indirect: number; gossip: number; pushPull: number };
  /** One push-pull message as each system would send it (sealed, framed, compressed). */
  pushPullBytes: { memberlist: number; picloud: number };
}

/** Rounds for push gossip with fanout f to reach all n members (Pittel's estimate). */
export function gossipRounds(n: number, fanout: number): number {
  if (n <= 1 || fanout <= 0) return 0;
  return Math.log(n) / Math.log(1 + fanout) + Math.log(n) / fanout;
}

export function memberlistModel(s: ModelScenario, c: GossipConfig = MEMBERLIST_LAN_CONFIG): ModelResult {
  const { n, lossRate: p } = s;
  const PI = c.probeIntervalMs;
  const name = 'node-' + String(n - 1);
  const host = '10.0.255.255';
  const sample: MemberlistSample = { name, host, meta: encodeMeta(s.meta) };
  const packetOverhead = SEAL_OVERHEAD_BYTES + 1;
  const seq = 0x7fff_ffff;
  const ours = (m: Message): number => messageSize(m) + packetOverhead;
  const ping = Math.min(ours({ t: MsgType.Ping, seq, target: name, source: name }), memberlistPacketSize([memberlistPing(sample, seq)]));
  const ack = Math.min(ours({ t: MsgType.Ack, seq }), memberlistPacketSize([memberlistAck(seq)]));
  const pingReq = Math.min(
    ours({ t: MsgType.PingReq, seq, target: name, host, port: 7946, nack: true }),
    memberlistPacketSize([memberlistIndirectPing(sample, seq)]),
  );
  // A state message inside a shared packet: its own bytes (memberlist adds a 2-byte length).
  const alive = Math.min(
    messageSize({ t: MsgType.Alive, name, incarnation: 1, host, port: 7946, meta: s.meta, protocol: 1 }),
    memberlistAlive(sample, 1).length + 2,
  );
  const suspect = Math.min(messageSize({ t: MsgType.Suspect, name, incarnation: 1, from: name }), memberlistSuspect(sample, 1).length + 2);
  const dead = Math.min(messageSize({ t: MsgType.Dead, name, incarnation: 1, from: name }), memberlistDead(sample, 1).length + 2);

  // Detection.
  const { minMs } = suspicionTimeouts(c, n);
  const fanout = c.gossipNodes * (1 - p);
  const disseminationMs = gossipRounds(n, fanout) * c.gossipIntervalMs;
  const detectionFloorMs = Math.LN2 * PI + PI + minMs;
  const detectionMedianMs = detectionFloorMs + disseminationMs;
  const detectionP99Ms = Math.log(100) * PI + PI + minMs + disseminationMs;

  // Probing and indirect probing.
  const q = 1 - (1 - p) ** 2;
  const k = c.indirectChecks;
  const perSec = 1000 / PI;
  const probe = (ping + ack) * perSec;
  const tcpPing = 2 * (16 + SEAL_OVERHEAD_BYTES + STREAM_FRAME_HEADER_BYTES);
  const indirect = q * (k * (pingReq + (1 - p) * ping + (1 - p) ** 2 * ack + (1 - p) * ack) + (c.tcpFallbackProbe ? tcpPing : 0)) * perSec;

  // False suspicions and dissemination.
  const pathFail = 1 - (1 - p) ** 4;
  const tcpFail = c.tcpFallbackProbe ? 1 - (1 - p) ** 2 : 1;
  const falseSuspicionsPerSec = n * q * pathFail ** k * tcpFail * perSec;
  const lambda = retransmitLimit(c, n);
  const kConfirm = Math.max(0, c.suspicionMult - 2);
  // A false suspicion: a suspect and a refuting alive. A crash: the suspicion, its k
  // confirmations (each re-gossiped) and the death notice. A join or update: one alive.
  const bytesPerNodePerChange =
    falseSuspicionsPerSec * (suspect + alive) + s.crashesPerSec * ((1 + kConfirm) * suspect + dead) + (s.joinsPerSec + s.updatesPerSec) * alive;
  const changesPerSec = falseSuspicionsPerSec * 2 + s.crashesPerSec * (2 + kConfirm) + s.joinsPerSec + s.updatesPerSec;
  const transmissionsPerNodePerSec = changesPerSec * lambda;
  const gossipPacketsPerSec = Math.min(transmissionsPerNodePerSec, (c.gossipNodes * 1000) / c.gossipIntervalMs);
  // Capped by what fits: GossipNodes packets per GossipInterval plus piggybacking on probes.
  const packetsPerSec = (c.gossipNodes * 1000) / c.gossipIntervalMs + 2 * perSec;
  const gossip = Math.min(bytesPerNodePerChange * lambda + gossipPacketsPerSec * packetOverhead, packetsPerSec * c.udpBudgetBytes);

  // Push-pull: the smaller of memberlist's LZW'd msgpack and picloud's deflated CBOR.
  const samples: MemberlistSample[] = [];
  const states: PushPullEntry[] = [];
  for (let i = 0; i < n; i++) {
    const nm = `node-${i}`;
    const h = `10.0.${(i >> 8) & 255}.${i & 255}`;
    const meta = { ...s.meta, boot: 1 + (i % 3) };
    samples.push({ name: nm, host: h, meta: encodeMeta(meta) });
    states.push({ name: nm, incarnation: 1, host: h, port: 7946, status: 'alive', meta, protocol: 1 });
  }
  const ourPushPull = encodeStreamFrame({ t: MsgType.PushPull, join: false, from: name, states }).length + SEAL_OVERHEAD_BYTES + STREAM_FRAME_HEADER_BYTES;
  const pushPullBytes = Math.min(ourPushPull, memberlistPushPullSize(samples));
  const pushPull = (2 * pushPullBytes) / (pushPullIntervalFor(c, n) / 1000);

  return {
    detectionMedianMs,
    detectionP99Ms,
    detectionFloorMs,
    disseminationMs,
    joinAllKnowMs: disseminationMs,
    falseSuspicionsPerSec,
    bytesPerNodePerSec: probe + indirect + gossip + pushPull,
    breakdown: { probe, indirect, gossip, pushPull },
    pushPullBytes: { memberlist: memberlistPushPullSize(samples), picloud: ourPushPull },
  };
}
