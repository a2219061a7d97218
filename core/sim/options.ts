/**
 * The simulator's options, their defaults, and the bug-catalogue hook. Every option that is
 * `'seeded'` is chosen per seed from the seed's PRNG (swarm testing: each seed runs a
 * different mix of features and fault intensities), so one command line covers many
 * configurations and a seed still replays exactly.
 */
import type { RaftClass } from '../raft/index.js';
import { SimError } from './errors.js';

export type FaultMode = 'all' | 'none' | 'net' | 'crash';
export const FAULT_MODES: readonly FaultMode[] = ['all', 'none', 'net', 'crash'];

/**
 * A deliberately wrong variant of Raft or of the embedding (core/sim/bugs.ts holds the
 * catalogue): the simulator must catch every one of them.
 */
export interface BugVariant {
  name: string;
  description: string;
  /** Raft subclass used by every node. */
  raftClass?: RaftClass;
  /** The driver sends a Ready's messages before its fsync completes, so a crash can lose acknowledged state. */
  sendBeforeFsync?: boolean;
  /** Options that give the bug room to show; merged over the caller's and validated. */
  options?: Partial<SimOptions> | Record<string, unknown>;
}

export interface SimOptions {
  /** Founding voters. Membership runs add one more node (id nodes + 1) and remove a founder. */
  nodes: number;
  /** Length of the run in base ticks. */
  ticks: number;
  /** The base tick interval; each node's own interval drifts from it by up to clockDriftFraction. */
  tickIntervalMs: number;
  clockDriftFraction: number;
  faults: FaultMode;
  electionTicks: number;
  heartbeatTicks: number;
  checkQuorum: boolean | 'seeded';
  preVote: boolean | 'seeded';
  /** Probability that a seed runs the membership scenario (add learner, promote, remove voter). */
  membershipProbability: number;
  /** Application snapshot every this many applied entries. */
  snapshotEveryEntries: number | 'seeded';
  snapshotChunkBytes: number | 'seeded';
  /** Entries kept in the log behind an application snapshot. */
  keepEntriesAfterSnapshot: number | 'seeded';
  /** Raft's AppendEntries size limit (1: one entry per message). */
  maxSizePerMsgBytes: number | 'seeded';
  /** Mean interval of the Figure-8 nemesis in 'all' mode (0: off). */
  figure8MeanIntervalMs: number | 'seeded';
  clients: number;
  keys: number;
  /** A client waits up to this long between operations. */
  clientThinkMsMax: number;
  /** A client gives up on one attempt after this long and retries elsewhere. */
  requestTimeoutMs: number;
  /** A client gives up on an operation after this long: its outcome is then indeterminate. */
  opDeadlineMs: number;
  /** The last quietTicks of the run have no faults: liveness is checked there. */
  quietTicks: number;
  /**
   * The quiet period opens with this many ticks in which clients start and send nothing. At
   * their end a leader that has led for at least half of them must know that every live member
   * holds its whole log, and have committed it: with no write to carry them, only heartbeats
   * make good the acknowledgements lost before the faults stopped (in half the seeds with
   * network faults, a nemesis drops every message to the leader for its last ticks). A seed
   * whose faults can leave more running than this (a disk stall, a delayed message, plus a
   * catch-up) skips it, as short runs do.
   */
  livenessIdleTicks: number;
  /** After faults stop, a leader with a live quorum must exist within this many ticks. */
  livenessLeaderTicks: number;
  /** After faults stop, every client must complete an operation within this many ticks. */
  livenessClientTicks: number;
  /**
   * Convergence: every live member must have applied, within this many ticks, everything the
   * leader had committed at the client deadline (a follower stuck behind is a liveness bug too).
   */
  livenessConvergeTicks: number;
  /** Step budget per key for the linearizability search; past it the verdict is 'unknown'. */
  linearizabilityStepBudget: number;
  /** Notable events kept for the trace printed with a violation. */
  traceRingEvents: number;
  bug?: BugVariant;
}

export const MAX_NODES = 64;
export const MAX_CLIENTS = 64;
/** Client endpoints on the simulated network start here (node ids stay below). */
export const CLIENT_ENDPOINT_BASE = 1000;

export const DEFAULT_SIM_OPTIONS: SimOptions = {
  nodes: 5,
  ticks: 10_000,
  tickIntervalMs: 10,
  clockDriftFraction: 0.1,
  faults: 'all',
  electionTicks: 10,
  heartbeatTicks: 1,
  checkQuorum: 'seeded',
  preVote: 'seeded',
  membershipProbability: 0.5,
  snapshotEveryEntries: 'seeded',
  snapshotChunkBytes: 'seeded',
  keepEntriesAfterSnapshot: 'seeded',
  maxSizePerMsgBytes: 'seeded',
  figure8MeanIntervalMs: 'seeded',
  clients: 4,
  keys: 3,
  clientThinkMsMax: 120,
  requestTimeoutMs: 300,
  opDeadlineMs: 2000,
  quietTicks: 1500,
  livenessIdleTicks: 400,
  livenessLeaderTicks: 300,
  livenessClientTicks: 1000,
  livenessConvergeTicks: 400,
  linearizabilityStepBudget: 1_000_000,
  traceRingEvents: 400,
};

/** Defaults, then the caller's options, then the bug's (a bug knows what it needs to show). */
export function resolveOptions(options: Partial<SimOptions> = {}): SimOptions {
  const bug = options.bug;
  const o: SimOptions = { ...DEFAULT_SIM_OPTIONS, ...stripUndefined(options), ...(stripUndefined(bug?.options ?? {}) as Partial<SimOptions>) };
  o.bug = bug;
  // A run shorter than twice the default quiet period keeps half of it quiet.
  if (options.quietTicks === undefined && (bug?.options as Partial<SimOptions> | undefined)?.quietTicks === undefined) {
    o.quietTicks = Math.min(DEFAULT_SIM_OPTIONS.quietTicks, Math.floor(o.ticks / 2));
  }
  // The idle start takes at most a fifth of the quiet period, whose other checks come after it.
  if (options.livenessIdleTicks === undefined && (bug?.options as Partial<SimOptions> | undefined)?.livenessIdleTicks === undefined) {
    o.livenessIdleTicks = Math.min(DEFAULT_SIM_OPTIONS.livenessIdleTicks, Math.floor(o.quietTicks / 5));
  }
  const intIn = (name: keyof SimOptions, lo: number, hi: number): void => {
    const v = o[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw new SimError('SIM_BAD_OPTION', `${name} must be an integer in [${lo}, ${hi}], got ${String(v)}`);
  };
  intIn('nodes', 1, MAX_NODES - 1);
  intIn('ticks', 1, 10_000_000);
  intIn('tickIntervalMs', 1, 10_000);
  intIn('clients', 0, MAX_CLIENTS);
  intIn('keys', 1, 1000);
  intIn('electionTicks', 2, 10_000);
  intIn('heartbeatTicks', 1, 10_000);
  intIn('quietTicks', 0, o.ticks);
  intIn('livenessIdleTicks', 0, o.quietTicks);
  // The clients' deadline comes after the idle start and an operation that waited it out.
  if (o.livenessIdleTicks + Math.ceil(o.opDeadlineMs / o.tickIntervalMs) > o.livenessClientTicks) {
    throw new SimError('SIM_BAD_OPTION', 'livenessIdleTicks plus an operation deadline must fit in livenessClientTicks');
  }
  if (!FAULT_MODES.includes(o.faults)) throw new SimError('SIM_BAD_OPTION', `faults must be one of ${FAULT_MODES.join('|')}`);
  if (!(o.clockDriftFraction >= 0 && o.clockDriftFraction < 0.5)) throw new SimError('SIM_BAD_OPTION', 'clockDriftFraction must be in [0, 0.5)');
  if (!(o.membershipProbability >= 0 && o.membershipProbability <= 1)) throw new SimError('SIM_BAD_OPTION', 'membershipProbability must be in [0, 1]');
  return o;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
