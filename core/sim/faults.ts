/**
 * The fault plan of one seed: how lossy, duplicating and slow the network is, how often
 * partitions form (and which shape: split, isolated node, one-way cut, bridge), how often
 * nodes crash and for how long, and how often the disk stalls. Intensities are drawn per
 * seed, so different seeds stress different mixes. Pure: the cluster executes the plan.
 */
import type { DiskProfile } from './disk.js';
import { STEADY_DISK } from './disk.js';
import type { NetworkProfile } from './network.js';
import { RELIABLE_NETWORK } from './network.js';
import type { FaultMode } from './options.js';
import type { Prng } from './prng.js';

export interface FaultPlan {
  network: NetworkProfile;
  disk: DiskProfile;
  /** Mean time between partitions forming (0: never); each lasts up to partitionMaxMs. */
  partitionMeanIntervalMs: number;
  partitionMaxMs: number;
  /** Mean time between crashes (0: never); a crashed node stays down up to downMaxMs. */
  crashMeanIntervalMs: number;
  downMaxMs: number;
  /** Probability that a crash picks a node with an fsync in flight (the dangerous moment). */
  crashDuringFsyncBias: number;
  /** Probability that a crash picks the current leader. */
  crashLeaderBias: number;
  /** Probability that a leader crashes right after committing entries of earlier terms (1/50 of it for other commits). */
  crashOnCommitProbability: number;
  /** Probability that a new leader crashes within a few ms of winning, before its entries replicate. */
  crashOnElectionProbability: number;
  /** Mean time between runs of the Figure-8 scenario (0: never); see cluster.ts startFigure8. */
  figure8MeanIntervalMs: number;
}

export const NO_FAULTS: FaultPlan = {
  network: RELIABLE_NETWORK,
  disk: STEADY_DISK,
  partitionMeanIntervalMs: 0,
  partitionMaxMs: 0,
  crashMeanIntervalMs: 0,
  downMaxMs: 0,
  crashDuringFsyncBias: 0,
  crashLeaderBias: 0,
  crashOnCommitProbability: 0,
  crashOnElectionProbability: 0,
  figure8MeanIntervalMs: 0,
};

export function planFaults(mode: FaultMode, prng: Prng): FaultPlan {
  // Draw every value whatever the mode, so a mode change does not shift the other draws.
  const network: NetworkProfile = {
    lossProbability: prng.pick([0, 0.01, 0.05, 0.15]),
    duplicateProbability: prng.pick([0, 0.02, 0.1]),
    minDelayMs: 1,
    maxDelayMs: prng.pick([3, 8, 20]),
    spikeProbability: prng.pick([0, 0.01, 0.05]),
    spikeMaxDelayMs: prng.pick([50, 200, 1000]),
  };
  const disk: DiskProfile = {
    fsyncMinMs: 1,
    fsyncMaxMs: prng.pick([4, 8, 20]),
    stallProbability: prng.pick([0, 0.005, 0.02]),
    stallMaxMs: prng.pick([100, 400, 1500]),
  };
  const partitionMeanIntervalMs = prng.pick([1000, 3000, 8000]);
  const partitionMaxMs = prng.pick([300, 1500, 5000]);
  const crashMeanIntervalMs = prng.pick([700, 2000, 6000]);
  const downMaxMs = prng.pick([100, 1000, 4000]);
  const crashDuringFsyncBias = prng.pick([0, 0.3, 0.7]);
  const crashLeaderBias = prng.pick([0, 0.3, 0.6]);
  const crashOnCommitProbability = prng.pick([0, 0.1, 0.3]);
  const crashOnElectionProbability = prng.pick([0, 0.05, 0.2]);
  const figure8MeanIntervalMs = prng.pick([0, 4000, 10000]);
  const net = mode === 'all' || mode === 'net';
  const crash = mode === 'all' || mode === 'crash';
  return {
    network: net ? network : { ...RELIABLE_NETWORK, maxDelayMs: network.maxDelayMs },
    disk: crash ? disk : { ...STEADY_DISK, fsyncMaxMs: disk.fsyncMaxMs },
    partitionMeanIntervalMs: net ? partitionMeanIntervalMs : 0,
    partitionMaxMs,
    crashMeanIntervalMs: crash ? crashMeanIntervalMs : 0,
    downMaxMs,
    crashDuringFsyncBias,
    crashLeaderBias,
    crashOnCommitProbability: crash ? crashOnCommitProbability : 0,
    crashOnElectionProbability: crash ? crashOnElectionProbability : 0,
    figure8MeanIntervalMs: crash && net ? figure8MeanIntervalMs : 0,
  };
}

export type PartitionShape =
  | { kind: 'split'; groups: number[][] }
  | { kind: 'isolate'; node: number; rest: number[] }
  | { kind: 'one-way'; senders: number[]; receivers: number[] }
  /** Two sides that cannot talk, and one node that talks to both (the leader-in-the-middle case). */
  | { kind: 'bridge'; left: number[]; bridge: number; right: number[] };

/** Probability that a partition is built around the current leader (the classic nemesis). */
export const TARGET_LEADER_PROBABILITY = 0.5;

/**
 * A random partition of `ids` (at least two ids). Half the time, when a leader is known, the
 * leader is cut off: isolated, or on the minority side of a split — the case where a deposed
 * leader keeps acting on stale authority.
 */
export function pickPartition(ids: readonly number[], prng: Prng, leader?: number): PartitionShape {
  const shuffled = prng.shuffle(ids.slice());
  if (leader !== undefined && ids.includes(leader) && prng.chance(TARGET_LEADER_PROBABILITY)) {
    const others = shuffled.filter((id) => id !== leader);
    const minorityExtra = prng.int(Math.max(1, Math.floor((ids.length - 1) / 2)));
    if (minorityExtra === 0) return { kind: 'isolate', node: leader, rest: others };
    return { kind: 'split', groups: [[leader, ...others.slice(0, minorityExtra)], others.slice(minorityExtra)] };
  }
  const r = prng.int(4);
  if (r === 0) {
    const cut = 1 + prng.int(shuffled.length - 1);
    return { kind: 'split', groups: [shuffled.slice(0, cut), shuffled.slice(cut)] };
  }
  if (r === 1) return { kind: 'isolate', node: shuffled[0]!, rest: shuffled.slice(1) };
  if (r === 2 || shuffled.length < 3) {
    const cut = 1 + prng.int(shuffled.length - 1);
    return { kind: 'one-way', senders: shuffled.slice(0, cut), receivers: shuffled.slice(cut) };
  }
  const cut = 1 + prng.int(shuffled.length - 2);
  return { kind: 'bridge', bridge: shuffled[0]!, left: shuffled.slice(1, cut + 1), right: shuffled.slice(cut + 1) };
}

export function describePartition(p: PartitionShape): string {
  const g = (ids: number[]): string => `{${ids.join(',')}}`;
  switch (p.kind) {
    case 'split':
      return `partition ${p.groups.map(g).join(' | ')}`;
    case 'isolate':
      return `isolate node ${p.node}`;
    case 'one-way':
      return `one-way cut ${g(p.senders)} -/-> ${g(p.receivers)}`;
    case 'bridge':
      return `partition ${g(p.left)} | ${g(p.right)} bridged by node ${p.bridge}`;
  }
}
