/**
 * Gossip configuration: every knob of the SWIM + Lifeguard machine, with the defaults for a
 * LAN of Raspberry Pis next to hashicorp/memberlist's DefaultLANConfig (for comparison and
 * for the benchmark), a fast profile for loopback tests, and the formulas that scale
 * timeouts and retransmits with the cluster size. This module has no I/O.
 */
import { GossipError } from './errors.js';
import { MAX_UDP_PACKET_BYTES, MIN_UDP_BUDGET_BYTES } from './limits.js';

export interface GossipConfig {
  /** Time between probes of one member (SWIM's protocol period). */
  probeIntervalMs: number;
  /** Wait for the direct ack before asking others (ping-req). Scaled by local health. */
  probeTimeoutMs: number;
  /** Members asked to probe indirectly when the direct ping goes unanswered (SWIM's k). */
  indirectChecks: number;
  /** Also try a ping over TCP when UDP fails (catches UDP-only filtering). */
  tcpFallbackProbe: boolean;
  /** Suspicion lasts suspicionMult × log10(n) × probeInterval at least (memberlist's formula). */
  suspicionMult: number;
  /** ... and starts at this multiple of the minimum, shrinking with confirmations (Lifeguard). */
  suspicionMaxTimeoutMult: number;
  /** Lifeguard local health: timeouts and the probe interval stretch up to this factor. */
  awarenessMaxMultiplier: number;
  /** Each broadcast is retransmitted retransmitMult × ceil(log10(n+1)) times by every node. */
  retransmitMult: number;
  /** Period of the gossip loop that spreads queued broadcasts beyond probe traffic. */
  gossipIntervalMs: number;
  /** Random members sent a gossip packet per gossip period (only when something is queued). */
  gossipNodes: number;
  /** Keep gossiping to a member this long after it was declared dead or left. */
  gossipToTheDeadMs: number;
  /** Full-state push-pull period with one random member; scaled up with n beyond 32 members. */
  pushPullIntervalMs: number;
  /** Period of a push-pull attempt with one random failed member, so partitions heal (Serf's reconnect). */
  reconnectIntervalMs: number;
  /** Failed members are kept (listed, reconnect attempted) this long, then forgotten (all but
   * their last incarnation, which keeps replays of their alive messages out: machine.ts). */
  deadMemberRetentionMs: number;
  /** Members that left are kept this long (so a late probe does not resurrect them), then
   * forgotten the same way. */
  leftMemberRetentionMs: number;
  /** Deadline for a TCP exchange (push-pull, join). */
  tcpTimeoutMs: number;
  /** Budget for one UDP datagram including the seal (encryption) overhead. */
  udpBudgetBytes: number;
  /** Lifeguard buddy system, eagerly: send our suspicion straight to the suspect when it starts. */
  tellSuspectDirectly: boolean;
  /**
   * Before its own suspicion timer declares a member dead, a node pings the suspect directly
   * this many times (half a probe timeout or more apart, ending one probe timeout before the
   * deadline), carrying the suspicion. A live suspect answers with its current alive message,
   * which clears the suspicion; a dead one does not, and the deadline is not moved. This
   * protects members that missed every copy of a refutation. 0 disables (memberlist).
   */
  suspicionChecks: number;
  /** Fault injection for the simulator's checker tests only; never set in production. */
  faults?: GossipFaults;
}

export interface GossipFaults {
  /** A node never refutes suspicion about itself. */
  noRefutation?: boolean;
  /** Suspicion timers never fire, so nobody is ever declared dead. */
  suspicionNeverExpires?: boolean;
}

/**
 * hashicorp/memberlist DefaultLANConfig (config.go), the system Consul and Serf run on.
 * Reproduced for comparison (bench/gossip.ts runs the same machine with these values). Fields
 * memberlist does not have are set to what memberlist does implicitly.
 */
export const MEMBERLIST_LAN_CONFIG: Readonly<GossipConfig> = Object.freeze({
  probeIntervalMs: 1_000,
  probeTimeoutMs: 500,
  indirectChecks: 3,
  tcpFallbackProbe: true,
  suspicionMult: 4,
  suspicionMaxTimeoutMult: 6,
  awarenessMaxMultiplier: 8,
  retransmitMult: 4,
  gossipIntervalMs: 200,
  gossipNodes: 3,
  gossipToTheDeadMs: 30_000,
  pushPullIntervalMs: 30_000,
  reconnectIntervalMs: 0, // memberlist itself never reconnects (Serf adds it on top)
  deadMemberRetentionMs: 30_000, // memberlist drops dead nodes after GossipToTheDeadTime
  leftMemberRetentionMs: 30_000,
  tcpTimeoutMs: 10_000,
  udpBudgetBytes: 1_400,
  tellSuspectDirectly: false, // memberlist's buddy system waits for the next probe of the suspect
  suspicionChecks: 0,
});

/**
 * picloud's defaults for a LAN of Raspberry Pis. Same timing as memberlist (a wired Pi LAN
 * answers in well under a millisecond, but a Pi's event loop can stall for hundreds of ms on an
 * SD-card fsync or a GC, so 500 ms probe timeouts stay), with these differences:
 * - suspicionMult 3 (memberlist 4): the shortest suspicion is 3·log10(n) probe intervals (9 s
 *   at n = 1,000 instead of 12 s), reached after one independent confirmation (k = 1). A real
 *   crash is confirmed within a couple of seconds by the next members that probe it, so
 *   failures are declared ~3 s sooner. A false suspicion of a live node is almost never
 *   confirmed, so its timer stays near the maximum (6× the minimum) — the live node has ~50 s
 *   to refute, and with the direct telling and checks below it does so within a round trip.
 * - indirectChecks 4 (memberlist 3): on a lossy Wi-Fi link each extra helper cuts the chance
 *   of a false suspicion ~3×; it costs four small packets only when a direct probe failed.
 *   Fewer false suspicions also mean less gossip, so bandwidth goes down, not up.
 * - tellSuspectDirectly: the suspect hears of its suspicion at once instead of at its next
 *   probe, so it refutes a second or more earlier; fewer members ever act on a stale suspicion.
 * - suspicionChecks 5: a member that missed every copy of a refutation (with λ = 8 transmissions
 *   per node at n ≈ 100 and 10% loss that is ~1 in 1,300 members per refutation; after a healed
 *   partition, when every member doubts a third of the others at once and refutations queue up
 *   behind each other, far more) checks with the suspect itself before declaring it dead; a
 *   live suspect answers with its newer incarnation. All five round trips lost: 1 in 3·10⁸ at
 *   1% loss, 1 in 4,000 at 10% (and only for a member that already missed the refutation).
 * - reconnectIntervalMs 30 s: like Serf, retry a failed member now and then, so two halves of a
 *   healed partition find each other again (bare memberlist never does).
 * - dead members are listed for 24 h (Serf's reconnect_timeout), left ones for 1 h.
 */
export const PICLOUD_LAN_CONFIG: Readonly<GossipConfig> = Object.freeze({
  probeIntervalMs: 1_000,
  probeTimeoutMs: 500,
  indirectChecks: 4,
  tcpFallbackProbe: true,
  suspicionMult: 3,
  suspicionMaxTimeoutMult: 6,
  awarenessMaxMultiplier: 8,
  retransmitMult: 4,
  gossipIntervalMs: 200,
  gossipNodes: 3,
  gossipToTheDeadMs: 30_000,
  pushPullIntervalMs: 30_000,
  reconnectIntervalMs: 30_000,
  deadMemberRetentionMs: 24 * 3_600_000,
  leftMemberRetentionMs: 3_600_000,
  tcpTimeoutMs: 10_000,
  udpBudgetBytes: 1_400,
  tellSuspectDirectly: true,
  suspicionChecks: 5,
});

/**
 * Fast timing for many nodes on one machine's loopback (tests, `--dev`), in the spirit of
 * memberlist's DefaultLocalConfig: failures are noticed in about two seconds.
 */
export const LOCAL_CONFIG: Readonly<GossipConfig> = Object.freeze({
  ...PICLOUD_LAN_CONFIG,
  probeIntervalMs: 200,
  probeTimeoutMs: 100,
  indirectChecks: 2,
  suspicionMult: 3,
  gossipIntervalMs: 50,
  gossipToTheDeadMs: 5_000,
  pushPullIntervalMs: 5_000,
  reconnectIntervalMs: 2_000,
  tcpTimeoutMs: 2_000,
});

export type GossipProfile = 'lan' | 'local' | 'memberlist';

export function profileConfig(profile: GossipProfile): GossipConfig {
  switch (profile) {
    case 'lan':
      return { ...PICLOUD_LAN_CONFIG };
    case 'local':
      return { ...LOCAL_CONFIG };
    case 'memberlist':
      return { ...MEMBERLIST_LAN_CONFIG };
  }
}

/** Checks a config and returns it; throws GOSSIP_CONFIG_INVALID naming the bad field. */
export function validateConfig(c: GossipConfig): GossipConfig {
  const positive: Array<keyof GossipConfig> = [
    'probeIntervalMs', 'probeTimeoutMs', 'suspicionMult', 'suspicionMaxTimeoutMult',
    'awarenessMaxMultiplier', 'retransmitMult', 'gossipIntervalMs', 'pushPullIntervalMs', 'tcpTimeoutMs',
  ];
  for (const k of positive) {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) bad(k, 'must be a positive number');
  }
  const nonNegative: Array<keyof GossipConfig> = [
    'indirectChecks', 'gossipNodes', 'suspicionChecks', 'gossipToTheDeadMs', 'reconnectIntervalMs', 'deadMemberRetentionMs', 'leftMemberRetentionMs',
  ];
  for (const k of nonNegative) {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) bad(k, 'must be a non-negative number');
  }
  if (c.probeTimeoutMs >= c.probeIntervalMs) bad('probeTimeoutMs', 'must be below probeIntervalMs');
  if (c.suspicionMaxTimeoutMult < 1) bad('suspicionMaxTimeoutMult', 'must be at least 1');
  if (!Number.isInteger(c.indirectChecks) || c.indirectChecks > 16) bad('indirectChecks', 'must be an integer in 0..16');
  if (!Number.isInteger(c.gossipNodes) || c.gossipNodes > 16) bad('gossipNodes', 'must be an integer in 0..16');
  if (!Number.isInteger(c.suspicionChecks) || c.suspicionChecks > 8) bad('suspicionChecks', 'must be an integer in 0..8');
  if (!Number.isInteger(c.udpBudgetBytes) || c.udpBudgetBytes < MIN_UDP_BUDGET_BYTES || c.udpBudgetBytes > MAX_UDP_PACKET_BYTES) {
    bad('udpBudgetBytes', `must be an integer in ${MIN_UDP_BUDGET_BYTES}..${MAX_UDP_PACKET_BYTES}`);
  }
  return c;
}

function bad(field: string, why: string): never {
  throw new GossipError('GOSSIP_CONFIG_INVALID', `gossip config: ${field} ${why}`);
}

/** Lifeguard suspicion bounds for a cluster of n members (memberlist's suspicionTimeout). */
export function suspicionTimeouts(c: GossipConfig, n: number): { minMs: number; maxMs: number; k: number } {
  const nodeScale = Math.max(1, Math.log10(Math.max(1, n)));
  const minMs = c.suspicionMult * nodeScale * c.probeIntervalMs;
  const maxMs = c.suspicionMaxTimeoutMult * minMs;
  // k confirmations are expected; with fewer than k other members to confirm, expect none.
  let k = c.suspicionMult - 2;
  if (n - 2 < k) k = 0;
  return { minMs, maxMs, k: Math.max(0, k) };
}

/**
 * Lifeguard's dynamic suspicion timeout after `confirmations` independent suspicions: starts
 * at max and falls logarithmically to min once k confirmations arrived.
 */
export function suspicionTimeoutMs(minMs: number, maxMs: number, k: number, confirmations: number): number {
  if (k < 1) return minMs;
  const frac = Math.log(confirmations + 1) / Math.log(k + 1);
  return Math.max(minMs, Math.floor(maxMs - frac * (maxMs - minMs)));
}

/** Transmissions of each broadcast by each node: retransmitMult × ceil(log10(n+1)). */
export function retransmitLimit(c: GossipConfig, n: number): number {
  return c.retransmitMult * Math.max(1, Math.ceil(Math.log10(n + 1)));
}

/** Push-pull period for n members: memberlist's pushPullScale (×1 up to 32, then +1 per doubling). */
export function pushPullIntervalFor(c: GossipConfig, n: number): number {
  const threshold = 32;
  if (n <= threshold) return c.pushPullIntervalMs;
  const mult = Math.ceil(Math.log2(n) - Math.log2(threshold)) + 1;
  return mult * c.pushPullIntervalMs;
}

/**
 * A generous bound on the time from a crash until every live member has declared it failed:
 * the first probe of it (7 probe intervals covers all but ~0.1% of cases), that probe, the
 * longest (unconfirmed) suspicion, and dissemination slack of ten gossip periods plus one probe
 * interval. Used by the real-process test and by the simulator's "detected at all" checker.
 */
export function detectionBoundMs(c: GossipConfig, n: number): number {
  const { maxMs } = suspicionTimeouts(c, n);
  return 9 * c.probeIntervalMs + maxMs + 10 * c.gossipIntervalMs;
}
