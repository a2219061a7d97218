/**
 * Gossip simulation scenarios: a converged cluster of n nodes on a lossy network, then a
 * measured period with periodic crashes (and restarts), joins of new nodes, metadata changes,
 * graceful leaves and optionally a partition. Used by the tests (small n) and bench/gossip.ts
 * (100 / 1,000 / 5,000 nodes). Returns raw measurements; checkers.ts turns them into verdicts.
 */
import { detectionBoundMs, type GossipConfig } from '../../gossip/config.js';
import type { GossipCounters } from '../../gossip/machine.js';
import type { Meta } from '../../gossip/types.js';
import { SimCluster, type NetworkModel } from './cluster.js';
import { MembershipTracker, type FalseDeath, type PartitionStats, type SpreadStats } from './trackers.js';

export interface GossipScenario {
  name: string;
  nodes: number;
  seed: number;
  config: GossipConfig;
  net: NetworkModel;
  /** Unmeasured settling time before the measured period. */
  warmupMs: number;
  /** Measured virtual time. */
  durationMs: number;
  /** Crash a random node this often (0 = never) … */
  crashEveryMs?: number;
  /** … and restart it this much later (0 = never). */
  restartAfterMs?: number;
  /** A brand-new node joins this often. */
  joinEveryMs?: number;
  /** A random node changes its metadata this often. */
  metaEveryMs?: number;
  /** A random node leaves gracefully this often (it stops 5 s later). */
  leaveEveryMs?: number;
  /** Split off `fraction` of the nodes at warmup + atMs for durationMs. */
  partition?: { atMs: number; durationMs: number; fraction: number };
  /** Stop early (and report it) when the run takes longer than this in wall-clock time. */
  wallBudgetMs?: number;
}

export interface ScenarioResult {
  name: string;
  nodes: number;
  seed: number;
  lossRate: number;
  virtualMs: number;
  wallMs: number;
  completed: boolean;
  crash: SpreadStats;
  join: SpreadStats;
  update: SpreadStats;
  leave: SpreadStats;
  falseDeaths: FalseDeath[];
  leftReportedFailed: number;
  partitions: PartitionStats[];
  bytesPerNodePerSec: number;
  /** The same, split by what the bytes carried. */
  bandwidthBreakdown: Record<string, number>;
  maxNodeBytesPerSec: number;
  packetsPerNodePerSec: number;
  counters: GossipCounters;
  /** The configured detection bound for this n (config.detectionBoundMs). */
  detectionBoundMs: number;
  /** Rates of real state changes during the measured period, per second (for the model). */
  rates: { crashesPerSec: number; joinsPerSec: number; updatesPerSec: number; leavesPerSec: number };
  heapUsedMb: number;
}

export function nodeMeta(i: number, boot = 1): Meta {
  return {
    role: i < 3 ? 'manager' : 'worker',
    zone: `rack-${i % 4}`,
    version: '0.1.0',
    ports: { http: 7480, client: 2379 },
    boot,
  };
}

export function runScenario(s: GossipScenario): ScenarioResult {
  const wallStart = Date.now();
  const cluster = new SimCluster(s.config, s.net, s.seed);
  const bound = detectionBoundMs(s.config, s.nodes);
  const tracker = new MembershipTracker(cluster, bound);
  cluster.setObserver(tracker);
  cluster.bootstrap(s.nodes, (i) => nodeMeta(i));
  const rng = cluster.random().fork();
  const start = s.warmupMs;
  const end = s.warmupMs + s.durationMs;
  const busy = new Set<number>(); // nodes crashed, restarting or leaving: not picked again
  let crashes = 0;
  let joins = 0;
  let updates = 0;
  let leaves = 0;

  const pickUp = (): number | undefined => {
    for (let tries = 0; tries < 100; tries++) {
      const i = rng.int(cluster.nodes.length);
      if (cluster.isUp(i) && !busy.has(i) && !cluster.nodes[i]!.machine!.hasLeft) return i;
    }
    return undefined;
  };

  const every = (periodMs: number | undefined, fn: () => void): void => {
    if (!periodMs || periodMs <= 0) return;
    const first = start + rng.int(periodMs);
    for (let t = first; t < end; t += periodMs) cluster.at(t, fn);
  };

  every(s.crashEveryMs, () => {
    const i = pickUp();
    if (i === undefined) return;
    busy.add(i);
    cluster.crash(i);
    tracker.noteCrash(i);
    crashes++;
    if (s.restartAfterMs && s.restartAfterMs > 0) {
      cluster.at(cluster.now + s.restartAfterMs, () => {
        const node = cluster.nodes[i]!;
        cluster.restart(i, nodeMeta(i, node.bootCount + 1));
        tracker.noteJoin(i, node.machine!.incarnation);
        joins++;
        busy.delete(i);
      });
    }
  });
  every(s.joinEveryMs, () => {
    const i = cluster.joinNew((j) => nodeMeta(j));
    tracker.noteJoin(i, 0);
    joins++;
  });
  every(s.metaEveryMs, () => {
    const i = pickUp();
    if (i === undefined) return;
    const node = cluster.nodes[i]!;
    const meta = { ...nodeMeta(i, node.bootCount), tags: { rev: updates + 1 } };
    const inc = cluster.updateMeta(i, meta);
    tracker.noteUpdate(i, inc);
    updates++;
  });
  every(s.leaveEveryMs, () => {
    const i = pickUp();
    if (i === undefined) return;
    busy.add(i);
    cluster.leave(i);
    tracker.noteLeave(i);
    leaves++;
    cluster.at(cluster.now + 5_000, () => {
      cluster.crash(i);
      tracker.noteStopped(i);
    });
  });
  if (s.partition) {
    const p = s.partition;
    const at = start + p.atMs;
    cluster.at(at, () => {
      const side = new Set<number>();
      const want = Math.round(cluster.nodes.length * p.fraction);
      for (let i = 0; i < cluster.nodes.length && side.size < want; i++) side.add(i);
      cluster.partition(side);
      tracker.notePartition(side, p.durationMs);
    });
    cluster.at(at + p.durationMs, () => {
      cluster.heal();
      tracker.watchConvergence(end);
    });
  }

  let completed = cluster.run(start, s.wallBudgetMs);
  cluster.resetByteCounters();
  if (completed) completed = cluster.run(end, s.wallBudgetMs === undefined ? undefined : s.wallBudgetMs - (Date.now() - wallStart));
  const virtualMs = Math.max(0, cluster.now - start);

  const counters = cluster.totalCounters()!;
  let maxNode = 0;
  let packets = 0;
  for (const n of cluster.nodes) {
    maxNode = Math.max(maxNode, n.udpBytesSent + n.tcpBytesSent);
    packets += n.packetsSent;
  }
  const perSec = (x: number): number => (virtualMs > 0 ? (x * 1000) / virtualMs : 0);
  return {
    name: s.name,
    nodes: s.nodes,
    seed: s.seed,
    lossRate: s.net.lossRate,
    virtualMs,
    wallMs: Date.now() - wallStart,
    completed,
    crash: tracker.stats('crash', cluster.now),
    join: tracker.stats('join', cluster.now),
    update: tracker.stats('update', cluster.now),
    leave: tracker.stats('leave', cluster.now),
    falseDeaths: tracker.falseDeaths,
    leftReportedFailed: tracker.leftReportedFailed,
    partitions: tracker.partitionStats,
    bytesPerNodePerSec: cluster.bytesPerNodePerSec(),
    bandwidthBreakdown: cluster.breakdownPerNodePerSec(),
    maxNodeBytesPerSec: perSec(maxNode),
    packetsPerNodePerSec: perSec(packets) / Math.max(1, cluster.liveNodes()),
    counters,
    detectionBoundMs: bound,
    rates: { crashesPerSec: perSec(crashes), joinsPerSec: perSec(joins), updatesPerSec: perSec(updates), leavesPerSec: perSec(leaves) },
    heapUsedMb: Math.round(process.memoryUsage().heapUsed / 1048576),
  };
}
