/**
 * runSeed: one deterministic run of a Raft cluster. Builds N nodes of the real RawNode, the
 * simulated network and disks, the clients, the fault schedule and (in some seeds) the
 * membership operator, all from one seed; runs virtual time to the end; then judges the run:
 * Raft safety (online, safety.ts), linearizability of the client history, and liveness once
 * the faults stop. Everything observable depends only on the seed and the options.
 *
 * Not responsible for printing or for running many seeds (cli.ts, bench).
 */
import { ConfChangeType, MessageType, Role, type ConfChange, type Message, type NodeId } from '../raft/index.js';
import { SimClient, type ClientRequest, type ClientResponse } from './client.js';
import { cloneMessage } from './clone.js';
import { STEADY_DISK } from './disk.js';
import { EventQueue } from './events.js';
import { describePartition, pickPartition, planFaults, type FaultPlan } from './faults.js';
import { HistoryRecorder, type HistoryOp } from './history.js';
import { checkLinearizability, type LinVerdict } from './linearizability.js';
import { RELIABLE_NETWORK, SimNetwork } from './network.js';
import { SimNode, type NodeEnv, type NodeSettings } from './node.js';
import { CLIENT_ENDPOINT_BASE, DEFAULT_SIM_OPTIONS, resolveOptions, type SimOptions } from './options.js';
import { Prng } from './prng.js';
import { RaftSafetyChecker, type Violation } from './safety.js';
import { Trace, type TraceEvent } from './trace.js';

/** Lines of trace printed with a violation. */
export const TRACE_LINES_ON_VIOLATION = 20;
/** Election timeouts allowed for a restarted or lagging member to catch up in the idle start. */
export const IDLE_CATCH_UP_ELECTIONS = 10;
/** The idle check judges what the leader held this many ticks before the idle start ends. */
export const IDLE_CHECK_GRACE_TICKS = 20;
/** Ticks the lost-acks nemesis leaves between its cut and a fast-clocked leader's quorum check. */
export const LOST_ACKS_NEMESIS_SPARE_TICKS = 2;
/** How often the membership operator and the liveness checker look at the cluster. */
export const OPERATOR_INTERVAL_MS = 100;
/**
 * Peer messages per second of virtual time beyond which the run is a message storm (a
 * feedback loop in flow control, amplified by duplication). A healthy 5-node cluster sends
 * a few thousand; stopping here reports the storm instead of exhausting memory.
 */
export const MAX_PEER_MESSAGES_PER_VIRTUAL_SECOND = 50_000;

export interface SeedStats {
  virtualMs: number;
  events: number;
  messagesSent: number;
  messagesDelivered: number;
  messagesLost: number;
  messagesCut: number;
  messagesDuplicated: number;
  peakMessagesPerSecond: number;
  leaderTerms: number;
  maxTerm: number;
  maxCommitIndex: number;
  crashes: number;
  writesLostOnCrash: number;
  partitions: number;
  fsyncs: number;
  snapshotsTaken: number;
  snapshotsInstalled: number;
  membershipStage: string;
  clientOk: number;
  clientFail: number;
  clientIndeterminate: number;
  linearizabilitySteps: number;
}

/** The per-seed choices (swarm testing), reported so a failure says what ran. */
export interface SeedConfig {
  nodes: number;
  faults: SimOptions['faults'];
  settings: NodeSettings;
  membership: boolean;
  plan: FaultPlan;
  bug: string | undefined;
}

export interface SeedResult {
  seed: number;
  /** No violation. A linearizability verdict of 'unknown' is not one here; the CLI (what CI runs) counts it as a failure. */
  ok: boolean;
  violations: Violation[];
  linearizability: LinVerdict;
  traceHash: string;
  /** The one command that replays this seed. */
  replay: string;
  /** The first violation and the last relevant events before it. */
  trace: string[];
  stats: SeedStats;
  config: SeedConfig;
  history: HistoryOp[];
}

const TYPE_CODE = new Map<string, number>(Object.values(MessageType).map((t, i) => [t, i + 1]));
const LEADER_ONLY = new Set<string>([MessageType.App, MessageType.Heartbeat, MessageType.Snap, MessageType.TimeoutNow]);

export function replayCommand(seed: number, o: SimOptions): string {
  let cmd = `npm run sim -- --seed ${seed} --nodes ${o.nodes} --faults ${o.faults}`;
  if (o.ticks !== DEFAULT_SIM_OPTIONS.ticks) cmd += ` --ticks ${o.ticks}`;
  if (o.bug !== undefined) cmd += ` --inject-bug ${o.bug.name}`;
  return cmd;
}

function seeded(v: number | 'seeded', drawn: number): number {
  return v === 'seeded' ? drawn : v;
}

export function runSeed(seed: number, options: Partial<SimOptions> = {}): SeedResult {
  return new ClusterRun(seed, resolveOptions(options)).run();
}

interface IdleMark {
  leader: SimNode;
  term: number;
  last: number;
}

type Stage = 'none' | 'waiting' | 'add-learner' | 'promote' | 'remove' | 'retire' | 'done';

class ClusterRun {
  private readonly queue = new EventQueue();
  private readonly trace: Trace;
  private readonly safety = new RaftSafetyChecker();
  private readonly history = new HistoryRecorder();
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly clients: SimClient[] = [];
  private readonly peerNet: SimNetwork<Message>;
  private readonly clientNet: SimNetwork<ClientRequest | ClientResponse>;
  private readonly config: SeedConfig;
  private readonly faultPrng: Prng;
  private readonly opPrng: Prng;
  private readonly nemesisPrng: Prng;
  /** Ticks of the quiet period's idle start (0: none; see idleTicks()). */
  private readonly idleTicks: number;
  private readonly endMs: number;
  private readonly quietStartMs: number;
  private readId = 0;
  private partitionActive = false;
  private partitions = 0;
  private faultsStopped = false;
  private stage: Stage = 'none';
  private stageSinceMs = 0;
  private nextProposeAtMs = 0;
  private spare: NodeId = 0;
  private victim: NodeId = 0;
  private leaderEstablishedMs = -1;
  /** When each node last became leader. */
  private readonly leaderSinceMs = new Map<NodeId, number>();
  private livenessDone = false;
  /** Figure-8 scenario: nodes whose next win is crashed at once, and who crashes on its next earlier-term commit. */
  private crashNextWinAmong: NodeId[] = [];
  private crashOnOldCommitUntilMs = -1;
  private figure8Minority: NodeId[] = [];
  private stormWindowSec = -1;
  private stormCount = 0;
  private peakMessagesPerSecond = 0;

  constructor(
    readonly seed: number,
    readonly o: SimOptions,
  ) {
    const master = new Prng(seed);
    const cfgPrng = master.fork();
    const netPrng = master.fork();
    const clientNetPrng = master.fork();
    this.faultPrng = master.fork();
    this.opPrng = master.fork();
    const nodePrngs = master.fork();
    const clientPrngs = master.fork();
    const planPrng = master.fork();
    // Forked last, so the streams above (and every earlier seed's faults) are what they were.
    this.nemesisPrng = master.fork();
    this.trace = new Trace(o.traceRingEvents);
    this.endMs = o.ticks * o.tickIntervalMs;
    this.quietStartMs = (o.ticks - o.quietTicks) * o.tickIntervalMs;

    // Per-seed choices: every draw is made whatever the options, so the streams stay aligned.
    const cq = cfgPrng.chance(0.5);
    const pv = cfgPrng.chance(0.5);
    const membership = cfgPrng.next() < o.membershipProbability;
    const every = cfgPrng.pick([10, 30, 100, 300]);
    const chunk = cfgPrng.pick([64, 700, 1 << 20]);
    const settings: NodeSettings = {
      electionTicks: o.electionTicks,
      heartbeatTicks: o.heartbeatTicks,
      checkQuorum: o.checkQuorum === 'seeded' ? cq : o.checkQuorum,
      preVote: o.preVote === 'seeded' ? pv : o.preVote,
      snapshotEveryEntries: o.snapshotEveryEntries === 'seeded' ? every : o.snapshotEveryEntries,
      snapshotChunkBytes: o.snapshotChunkBytes === 'seeded' ? chunk : o.snapshotChunkBytes,
      keepEntriesAfterSnapshot: seeded(o.keepEntriesAfterSnapshot, cfgPrng.pick([0, 3, 50])),
      maxSizePerMsgBytes: seeded(o.maxSizePerMsgBytes, cfgPrng.pick([1, 200, 4096, 1 << 20])),
      maxInflightMsgs: cfgPrng.pick([2, 16, 256]),
    };
    const plan = planFaults(o.faults, planPrng);
    if (o.figure8MeanIntervalMs !== 'seeded' && plan.figure8MeanIntervalMs !== 0) plan.figure8MeanIntervalMs = o.figure8MeanIntervalMs;
    if (o.figure8MeanIntervalMs !== 'seeded' && o.faults === 'all') plan.figure8MeanIntervalMs = o.figure8MeanIntervalMs;
    this.config = { nodes: o.nodes, faults: o.faults, settings, membership, plan, bug: o.bug?.name };
    this.idleTicks = ClusterRun.idleTicks(o, plan);

    this.peerNet = new SimNetwork<Message>(this.queue, netPrng, plan.network, cloneMessage, (to, m) => {
      const n = this.nodes.get(to);
      if (n !== undefined && n.up) n.deliver(m);
    });
    this.clientNet = new SimNetwork<ClientRequest | ClientResponse>(this.queue, clientNetPrng, plan.network, (m) => ({ ...m }), (to, m) => {
      if (to >= CLIENT_ENDPOINT_BASE) this.clients[to - CLIENT_ENDPOINT_BASE]?.onResponse(m as ClientResponse);
      else {
        const n = this.nodes.get(to);
        if (n !== undefined && n.up) n.onClientRequest(m as ClientRequest);
      }
    });

    const env: NodeEnv = {
      queue: this.queue,
      settings,
      safety: this.safety,
      trace: this.trace,
      raftClass: o.bug?.raftClass,
      sendBeforeFsync: o.bug?.sendBeforeFsync === true,
      sendPeer: (from, m) => this.sendPeer(from, m),
      replyClient: (from, to, resp) => this.clientNet.send(from, to, resp),
      nextReadId: () => ++this.readId,
      violation: (v) => this.safety.report(v),
      onLeader: (n, term) => this.onLeader(n, term),
      onConfApplied: (n, cc, index) => this.onConfApplied(n, cc, index),
      onLeaderCommit: (n, from, to) => this.onLeaderCommit(n, from, to),
    };
    const total = o.nodes + (membership ? 1 : 0);
    for (let id = 1; id <= total; id++) {
      const p = nodePrngs.fork();
      const drift = 1 + (p.next() * 2 - 1) * o.clockDriftFraction;
      this.nodes.set(id, new SimNode(id, env, p, { ...plan.disk }, o.tickIntervalMs * drift));
    }
    for (let c = 0; c < o.clients; c++) {
      this.clients.push(
        new SimClient(
          CLIENT_ENDPOINT_BASE + c,
          {
            queue: this.queue,
            history: this.history,
            trace: this.trace,
            send: (from, to, req) => this.clientNet.send(from, to, req),
            targets: () => this.targets(),
          },
          clientPrngs.fork(),
          { keys: o.keys, thinkMsMax: o.clientThinkMsMax, requestTimeoutMs: o.requestTimeoutMs, opDeadlineMs: o.opDeadlineMs },
        ),
      );
    }
    if (membership) {
      this.spare = total;
      this.stage = 'waiting';
    }
  }

  run(): SeedResult {
    const founders = [...this.nodes.keys()].filter((id) => id <= this.o.nodes);
    let events = 0;
    try {
      for (const id of founders) this.nodes.get(id)!.startFounding(founders);
      for (const c of this.clients) c.start();
      this.scheduleFaults();
      if (this.stage === 'waiting') {
        const span = Math.max(1, this.quietStartMs);
        this.queue.at(Math.floor(span * (0.1 + 0.3 * this.opPrng.next())), () => this.setStage('add-learner'));
        this.queue.after(OPERATOR_INTERVAL_MS, () => this.operatorTick());
      }
      // Shorter than the quorum check of a leader whose clock runs fast, so it stays leader.
      const deafTicks = Math.floor(this.o.electionTicks * (1 - this.o.clockDriftFraction)) - LOST_ACKS_NEMESIS_SPARE_TICKS;
      const deafMs = deafTicks * this.o.tickIntervalMs;
      if (this.idleTicks > 0 && deafTicks >= 1 && this.config.plan.partitionMeanIntervalMs > 0 && this.quietStartMs > deafMs && this.nemesisPrng.chance(0.5)) {
        this.queue.at(this.quietStartMs - deafMs, () => this.deafenLeader());
      }
      this.queue.at(Math.min(this.quietStartMs, this.endMs), () => this.stopFaults());
      while (this.queue.runNext(this.endMs)) {
        events++;
        if (this.safety.violations.length > 0) break; // the first violation is the story
      }
    } catch (e) {
      const err = e as Error;
      this.safety.report({
        invariant: 'exception',
        message: `${err.name}: ${err.message}`,
        atMs: this.queue.nowMs,
        nodes: [],
        detail: (err.stack ?? '').split('\n').slice(1, 6),
      });
    }
    for (const c of this.clients) c.stopped = true;
    // The final states of the live nodes, compared with every state seen at the same index.
    if (this.safety.violations.length === 0) for (const n of this.nodes.values()) if (n.up) n.reportState();

    let lin: LinVerdict = 'ok';
    let linSteps = 0;
    if (this.safety.violations.length === 0) {
      const r = checkLinearizability(this.history.ops, { stepBudget: this.o.linearizabilityStepBudget });
      lin = r.verdict;
      linSteps = r.steps;
      for (const k of r.keys) {
        if (k.verdict !== 'violation') continue;
        this.safety.report({
          invariant: 'linearizability',
          message: `the history of key ${k.key} (${k.ops} ops) is not linearizable`,
          atMs: this.queue.nowMs,
          nodes: [],
          key: k.key,
          detail: k.detail,
        });
      }
    }
    const violations = this.safety.violations;
    return {
      seed: this.seed,
      ok: violations.length === 0,
      violations,
      linearizability: lin,
      traceHash: (this.trace.hash >>> 0).toString(16).padStart(8, '0'),
      replay: replayCommand(this.seed, this.o),
      trace: violations.length > 0 ? this.explain(violations[0]!) : [],
      stats: this.stats(events, linSteps),
      config: this.config,
      history: this.history.ops,
    };
  }

  // ---------------------------------------------------------------------------------------
  // Network

  private sendPeer(from: SimNode, m: Message): void {
    const now = this.queue.nowMs;
    const sec = Math.floor(now / 1000);
    if (sec !== this.stormWindowSec) {
      this.stormWindowSec = sec;
      this.stormCount = 0;
    }
    if (++this.stormCount > this.peakMessagesPerSecond) this.peakMessagesPerSecond = this.stormCount;
    if (this.stormCount === MAX_PEER_MESSAGES_PER_VIRTUAL_SECOND) {
      this.safety.report({
        invariant: 'message-storm',
        message: `${this.stormCount} peer messages within one second of virtual time (the last: ${m.type} ${m.from}→${m.to} index ${m.index})`,
        atMs: now,
        nodes: [m.from, m.to],
      });
    }
    this.trace.fold(now, m.from * 4096 + m.to, (TYPE_CODE.get(m.type) ?? 0) * 65536 + m.entries.length, m.term * 1048576 + m.index);
    if (LEADER_ONLY.has(m.type)) this.safety.observeLeader(m.from, m.term, now);
    const dest = this.nodes.get(m.to);
    if (dest === undefined || !dest.started) return; // no such machine (yet)
    // A transport reports a message it could not deliver (peer down, link cut, send dropped), as
    // etcd's does; the leader then falls back from pipelining to probing.
    const copies = this.peerNet.send(m.from, m.to, m);
    if (copies === 0 || !dest.up) from.reportUnreachable(m.to);
  }

  private targets(): NodeId[] {
    const out: NodeId[] = [];
    for (const n of this.nodes.values()) if (n.started && !n.retired) out.push(n.id);
    return out;
  }

  // ---------------------------------------------------------------------------------------
  // Observations

  private onLeader(n: SimNode, term: number): void {
    const now = this.queue.nowMs;
    this.safety.observeLeader(n.id, term, now);
    this.leaderSinceMs.set(n.id, now);
    const log = n.raw.raft.log;
    this.safety.checkLeaderLog(n.id, term, { firstIndex: log.firstIndex(), lastIndex: log.lastIndex(), termAt: (i) => log.termOrUndefined(i) ?? -1 }, now);
    this.trace.event(now, 'raft', [n.id], `node ${n.id} became leader of term ${term} (last index ${log.lastIndex()}, commit ${log.committed})`);
    // Nemesis: a leader that dies before its first entries replicate leaves a log with a
    // higher-term tail than the rest (the setting of the Raft paper's Figure 8).
    // While the Figure-8 partition lasts, every leader the majority elects dies at once.
    const armed = !this.faultsStopped && this.crashNextWinAmong.includes(n.id);
    if (armed) {
      // Cut it off at once, so even the messages already in flight never arrive: its new
      // entries stay on its own disk (Figure 8 (b)).
      this.peerNet.partition([[n.id], this.targets().filter((id) => id !== n.id)]);
      this.trace.event(now, 'fault', [n.id], `figure-8 nemesis: cut off node ${n.id}`);
    }
    const p = this.config.plan.crashOnElectionProbability;
    if (!this.faultsStopped && (armed || (p > 0 && this.faultPrng.chance(p)))) {
      const inc = n.incarnation;
      // Armed: isolated already; crash once its own write is durable (Figure 8 needs it on disk).
      this.queue.after(armed ? 50 : this.faultPrng.int(4), () => {
        if (n.incarnation === inc && n.up && !this.faultsStopped) this.crashNode(n, `just after winning term ${term}`, armed ? this.o.electionTicks * 8 * this.o.tickIntervalMs : undefined);
      });
    }
  }

  private onConfApplied(n: SimNode, cc: ConfChange, index: number): void {
    if (index <= this.o.nodes) return; // the bootstrap entries
    this.trace.event(this.queue.nowMs, 'raft', [n.id, cc.nodeId], () => `node ${n.id} applied ${ConfChangeType[cc.type]}(${cc.nodeId}) at index ${index}: voters ${n.conf.voters.join(',')} learners ${n.conf.learners.join(',') || '-'}`);
  }

  // ---------------------------------------------------------------------------------------
  // Faults

  private scheduleFaults(): void {
    const plan = this.config.plan;
    const jitter = (mean: number): number => Math.floor(mean * (0.5 + this.faultPrng.next()));
    if (plan.partitionMeanIntervalMs > 0) {
      const loop = (): void => {
        if (this.faultsStopped) return;
        if (!this.partitionActive) this.formPartition();
        this.queue.after(jitter(plan.partitionMeanIntervalMs), loop);
      };
      this.queue.after(jitter(plan.partitionMeanIntervalMs), loop);
    }
    if (plan.figure8MeanIntervalMs > 0) {
      const loop = (): void => {
        if (this.faultsStopped) return;
        this.startFigure8();
        this.queue.after(jitter(plan.figure8MeanIntervalMs), loop);
      };
      this.queue.after(jitter(plan.figure8MeanIntervalMs), loop);
    }
    if (plan.crashMeanIntervalMs > 0) {
      const loop = (): void => {
        if (this.faultsStopped) return;
        this.crashOne();
        this.queue.after(jitter(plan.crashMeanIntervalMs), loop);
      };
      this.queue.after(jitter(plan.crashMeanIntervalMs), loop);
    }
  }

  /**
   * The nemesis that strikes at the moment a leader commits: sometimes it crashes the leader
   * right then — most often when the newly committed range holds entries of earlier terms
   * (a new leader catching up its followers), where commitment rules matter most (Raft §5.4.2).
   */
  private onLeaderCommit(n: SimNode, from: number, to: number): void {
    const plan = this.config.plan;
    if (this.faultsStopped || (plan.crashOnCommitProbability === 0 && this.crashOnOldCommitUntilMs < 0)) return;
    const log = n.raw.raft.log;
    const term = n.raw.raft.term;
    let earlierTerms = false;
    for (let i = from + 1; i <= to && !earlierTerms; i++) earlierTerms = (log.termOrUndefined(i) ?? term) < term;
    const armed = earlierTerms && this.queue.nowMs <= this.crashOnOldCommitUntilMs;
    if (armed) this.crashOnOldCommitUntilMs = -1;
    const p = earlierTerms ? plan.crashOnCommitProbability : plan.crashOnCommitProbability / 50;
    if (!armed && !this.faultPrng.chance(p)) return;
    const inc = n.incarnation;
    const downMs = armed ? this.o.electionTicks * 8 * this.o.tickIntervalMs : undefined;
    // In the Figure-8 scenario the other holder of the old entries goes down too, so the node
    // with the higher-term tail can win next.
    const partner = armed ? this.figure8Minority.find((id) => id !== n.id) : undefined;
    this.queue.after(0, () => {
      if (this.faultsStopped) return;
      if (n.incarnation === inc && n.up) this.crashNode(n, `just after committing up to index ${to}${earlierTerms ? ' (entries of earlier terms)' : ''}`, downMs);
      const p2 = partner === undefined ? undefined : this.nodes.get(partner);
      if (p2 !== undefined && p2.up) this.crashNode(p2, 'with the figure-8 leader', downMs);
    });
  }

  /**
   * The Raft paper's Figure 8, as a nemesis: the leader keeps one follower and loses the rest
   * (its new entries reach one node); the majority elects a leader that dies at once (a
   * higher-term entry on one node); the partition heals; whoever then leads and commits
   * entries of an earlier term dies right after committing, and the Figure-8 leader comes
   * back. A correct Raft never loses a committed entry here; one that commits earlier-term
   * entries by counting replicas does.
   */
  private startFigure8(): void {
    const leader = this.currentLeader();
    const ids = this.targets().filter((id) => this.nodes.get(id)!.up);
    if (this.partitionActive || leader === undefined || ids.length < 3) return;
    const others = this.faultPrng.shuffle(ids.filter((id) => id !== leader.id));
    const minority = [leader.id, others[0]!];
    this.figure8Minority = minority;
    const majority = others.slice(1);
    this.peerNet.partition([minority, majority]);
    this.partitionActive = true;
    this.partitions++;
    this.crashNextWinAmong = majority;
    const tick = this.o.tickIntervalMs;
    this.trace.event(this.queue.nowMs, 'fault', [], `figure-8 nemesis: partition {${minority.join(',')}} | {${majority.join(',')}}`);
    this.queue.after((this.o.electionTicks * 4 + this.faultPrng.int(this.o.electionTicks * 4)) * tick, () => {
      if (this.faultsStopped || !this.partitionActive) return;
      this.peerNet.heal();
      this.partitionActive = false;
      this.crashNextWinAmong = [];
      this.crashOnOldCommitUntilMs = this.queue.nowMs + this.o.electionTicks * 10 * tick;
      this.trace.event(this.queue.nowMs, 'fault', [], 'figure-8 nemesis: network healed');
    });
  }

  /**
   * The lost-acks nemesis, just before the faults stop: nothing reaches the leader while it
   * still reaches everyone, so the acknowledgements of its last entries are lost. Shorter than
   * an election timeout, so it stays leader; the quiet period's idle start then shows whether
   * it learns, without a write, what its followers hold.
   */
  private deafenLeader(): void {
    const leader = this.currentLeader();
    if (this.partitionActive || leader === undefined) return;
    const others = this.targets().filter((id) => id !== leader.id);
    this.peerNet.cutOneWay(others, [leader.id]);
    this.partitionActive = true;
    this.partitions++;
    this.trace.event(this.queue.nowMs, 'fault', [leader.id], `lost-acks nemesis: nothing reaches leader ${leader.id} until the faults stop`);
  }

  private formPartition(): void {
    const ids = this.targets();
    if (ids.length < 2) return;
    const shape = pickPartition(ids, this.faultPrng, this.currentLeader()?.id);
    const net = this.peerNet;
    switch (shape.kind) {
      case 'split':
        net.partition(shape.groups);
        break;
      case 'isolate':
        net.partition([[shape.node], shape.rest]);
        break;
      case 'one-way':
        net.cutOneWay(shape.senders, shape.receivers);
        break;
      case 'bridge':
        net.partition([shape.left, shape.right]);
        break;
    }
    this.partitionActive = true;
    this.partitions++;
    const now = this.queue.nowMs;
    this.trace.event(now, 'fault', [], describePartition(shape));
    this.queue.after(50 + this.faultPrng.int(this.config.plan.partitionMaxMs), () => {
      if (this.faultsStopped || !this.partitionActive) return;
      this.peerNet.heal();
      this.partitionActive = false;
      this.trace.event(this.queue.nowMs, 'fault', [], 'network healed');
    });
  }

  private crashOne(): void {
    const up = [...this.nodes.values()].filter((n) => n.up);
    if (up.length === 0) return;
    const syncing = up.filter((n) => n.busy);
    const leader = this.currentLeader();
    let pool = up;
    if (syncing.length > 0 && this.faultPrng.chance(this.config.plan.crashDuringFsyncBias)) pool = syncing;
    else if (leader !== undefined && this.faultPrng.chance(this.config.plan.crashLeaderBias)) pool = [leader];
    const n = this.faultPrng.pick(pool);
    this.crashNode(n, n.busy ? 'during an fsync' : '');
  }

  private crashNode(n: SimNode, why: string, downMaxMs = this.config.plan.downMaxMs): void {
    const lostBefore = n.stats.writesLost;
    const wasLeader = n.raw.raft.role === Role.Leader;
    n.crash();
    const now = this.queue.nowMs;
    this.trace.event(now, 'fault', [n.id], `crash ${wasLeader ? 'leader' : 'node'} ${n.id}${why ? ' ' + why : ''} (${n.stats.writesLost - lostBefore} unsynced writes lost)`);
    const downMs = 10 + this.faultPrng.int(downMaxMs);
    const inc = n.incarnation;
    this.queue.after(downMs, () => {
      if (this.faultsStopped || n.incarnation !== inc || n.retired) return;
      n.restart();
      this.trace.event(this.queue.nowMs, 'fault', [n.id], `restart node ${n.id} (term ${n.raw.raft.term}, commit ${n.raw.raft.log.committed}, applied ${n.appliedIndex})`);
    });
  }

  /** The quiet period: heal, restart, make the network and disks reliable; then judge liveness. */
  private stopFaults(): void {
    this.faultsStopped = true;
    this.crashNextWinAmong = [];
    this.crashOnOldCommitUntilMs = -1;
    this.peerNet.heal();
    this.partitionActive = false;
    this.peerNet.setProfile({ ...RELIABLE_NETWORK });
    this.clientNet.setProfile({ ...RELIABLE_NETWORK });
    for (const n of this.nodes.values()) {
      n.disk.profile = { ...STEADY_DISK };
      if (n.started && !n.up && !n.retired) n.restart();
    }
    this.trace.event(this.queue.nowMs, 'fault', [], 'faults stop: network healed and reliable, every node up');
    if (this.idleTicks > 0) {
      const tick = this.o.tickIntervalMs;
      const idleEndMs = this.queue.nowMs + this.idleTicks * tick;
      for (const c of this.clients) c.pauseUntil(idleEndMs);
      // What the leader holds a little before the end is what must be acknowledged by then: the
      // membership operator may still append during the pause, too late to be answered.
      let mark: IdleMark | undefined;
      this.queue.at(idleEndMs - IDLE_CHECK_GRACE_TICKS * tick, () => (mark = this.idleMark()));
      // Scheduled before any client's resumption at the same instant, so it runs first.
      this.queue.at(idleEndMs, () => mark !== undefined && this.checkIdleProgress(mark));
    }
    this.queue.after(0, () => this.livenessTick());
  }

  // ---------------------------------------------------------------------------------------
  // Liveness

  private livenessTick(): void {
    if (this.livenessDone) return;
    const now = this.queue.nowMs;
    const tick = this.o.tickIntervalMs;
    const leaderDeadline = this.quietStartMs + this.o.livenessLeaderTicks * tick;
    const clientDeadline = this.quietStartMs + this.o.livenessClientTicks * tick;
    if (this.leaderEstablishedMs < 0) {
      if (this.stableLeader() !== undefined) this.leaderEstablishedMs = now;
      else if (now >= leaderDeadline) {
        this.safety.report({
          invariant: 'liveness',
          message: `no leader with a live quorum ${this.o.livenessLeaderTicks} ticks after the faults stopped`,
          atMs: now,
          nodes: [],
          detail: this.describeNodes(),
        });
        this.livenessDone = true;
        return;
      }
    }
    if (now >= clientDeadline) {
      const stuck = this.clients.filter((c) => c.lastOkCallMs < this.quietStartMs).map((c) => c.endpoint);
      if (stuck.length > 0) {
        this.safety.report({
          invariant: 'liveness',
          message: `clients ${stuck.join(',')} completed no operation within ${this.o.livenessClientTicks} ticks after the faults stopped`,
          atMs: now,
          nodes: [],
          detail: this.describeNodes(),
        });
      }
      this.livenessDone = true;
      const leader = this.stableLeader();
      const convergeAtMs = now + this.o.livenessConvergeTicks * tick;
      if (stuck.length === 0 && leader !== undefined && convergeAtMs <= this.endMs) {
        const target = leader.raw.raft.log.committed;
        this.queue.at(convergeAtMs, () => this.checkConvergence(target));
      }
      return;
    }
    const next = this.leaderEstablishedMs < 0 ? Math.min(leaderDeadline, now + tick) : clientDeadline;
    if (next <= this.endMs) this.queue.at(next, () => this.livenessTick());
  }

  /**
   * The idle start of the quiet period lasts livenessIdleTicks, unless that is too short to
   * outlast what the faults leave running (a disk stall, a delayed message) plus a catch-up:
   * then none (a short run).
   */
  private static idleTicks(o: SimOptions, plan: FaultPlan): number {
    const leftoverMs = plan.disk.stallMaxMs * Math.sign(plan.disk.stallProbability) + plan.network.spikeMaxDelayMs * Math.sign(plan.network.spikeProbability);
    const neededTicks = Math.ceil(leftoverMs / o.tickIntervalMs) + IDLE_CATCH_UP_ELECTIONS * o.electionTicks + IDLE_CHECK_GRACE_TICKS;
    return o.livenessIdleTicks >= neededTicks ? o.livenessIdleTicks : 0;
  }

  /** The leader and its last index, near the end of the idle start. */
  private idleMark(): IdleMark | undefined {
    const leader = this.stableLeader();
    if (leader === undefined) return undefined; // judged by livenessTick
    return { leader, term: leader.raw.raft.term, last: leader.raw.raft.log.lastIndex() };
  }

  /**
   * The end of the quiet period's idle start: a leader in office for at least half of it, and
   * still in office since the mark, knows every live member holds what it held at the mark,
   * and has committed it.
   */
  private checkIdleProgress(mark: IdleMark): void {
    const leader = this.stableLeader();
    if (leader !== mark.leader || leader.raw.raft.term !== mark.term) return;
    const tenureTicks = (this.queue.nowMs - (this.leaderSinceMs.get(leader.id) ?? 0)) / this.o.tickIntervalMs;
    if (tenureTicks * 2 < this.idleTicks) return;
    const r = leader.raw.raft;
    const last = mark.last;
    const members = [...leader.conf.voters, ...leader.conf.learners].filter((id) => id !== leader.id);
    const unconfirmed = members.filter((id) => this.nodes.get(id)?.up === true && (r.trk.progress.get(id)?.match ?? 0) < last);
    if (unconfirmed.length === 0 && r.log.committed >= last) return;
    const what = unconfirmed.length > 0 ? `has no acknowledgement of index ${last} from live node${unconfirmed.length > 1 ? 's' : ''} ${unconfirmed.join(',')}` : `has not committed index ${last}`;
    this.safety.report({
      invariant: 'liveness',
      message: `leader ${leader.id} ${what} after ${this.idleTicks} ticks without client writes`,
      atMs: this.queue.nowMs,
      nodes: [leader.id, ...unconfirmed],
      detail: this.describeNodes(),
    });
  }

  /** Every live member has applied at least `target` (what the leader had committed earlier). */
  private checkConvergence(target: number): void {
    const leader = this.stableLeader();
    if (leader === undefined) return; // reported by nothing: leadership may legitimately move
    const members = [...leader.conf.voters, ...leader.conf.learners];
    const behind = members.map((id) => this.nodes.get(id)).filter((n): n is SimNode => n !== undefined && n.up && n.appliedIndex < target);
    if (behind.length === 0) return;
    this.safety.report({
      invariant: 'liveness',
      message: `node${behind.length > 1 ? 's' : ''} ${behind.map((n) => n.id).join(',')} did not apply index ${target} within ${this.o.livenessConvergeTicks} ticks (stuck behind the leader)`,
      atMs: this.queue.nowMs,
      nodes: behind.map((n) => n.id),
      detail: this.describeNodes(),
    });
  }

  /** An up leader followed, in its term, by a majority of the voters it knows. */
  private stableLeader(): SimNode | undefined {
    for (const l of this.nodes.values()) {
      if (!l.up || l.raw.raft.role !== Role.Leader) continue;
      const voters = l.conf.voters;
      if (voters.length === 0) continue;
      let following = 0;
      for (const v of voters) {
        const n = this.nodes.get(v);
        if (n !== undefined && n.up && n.raw.raft.lead === l.id && n.raw.raft.term === l.raw.raft.term) following++;
      }
      if (following * 2 > voters.length) return l;
    }
    return undefined;
  }

  private describeNodes(): string[] {
    return [...this.nodes.values()]
      .filter((n) => n.started)
      .map((n) => {
        if (!n.up) return `node ${n.id}: ${n.retired ? 'retired' : 'down'}`;
        const r = n.raw.raft;
        return `node ${n.id}: ${r.role} term ${r.term} lead ${r.lead} commit ${r.log.committed} applied ${n.appliedIndex} last ${r.log.lastIndex()} voters ${n.conf.voters.join(',')}`;
      });
  }

  // ---------------------------------------------------------------------------------------
  // Membership operator: add a learner, promote it, remove a founding voter, retire it.

  private setStage(s: Stage): void {
    this.stage = s;
    this.stageSinceMs = this.queue.nowMs;
    this.nextProposeAtMs = 0;
    this.trace.event(this.queue.nowMs, 'raft', [], `operator: ${s}`);
  }

  private currentLeader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.nodes.values()) {
      if (n.up && n.raw.raft.role === Role.Leader && (best === undefined || n.raw.raft.term > best.raw.raft.term)) best = n;
    }
    return best;
  }

  private propose(leader: SimNode, cc: ConfChange): void {
    const now = this.queue.nowMs;
    if (now < this.nextProposeAtMs) return;
    this.nextProposeAtMs = now + 500;
    if (leader.proposeConfChange(cc)) {
      this.trace.event(now, 'raft', [leader.id, cc.nodeId], `operator: node ${leader.id} proposes ${ConfChangeType[cc.type]}(${cc.nodeId})`);
    }
  }

  private operatorTick(): void {
    if (this.stage === 'done') return;
    this.queue.after(OPERATOR_INTERVAL_MS, () => this.operatorTick());
    if (this.stage === 'waiting') return;
    const spare = this.nodes.get(this.spare)!;
    const leader = this.currentLeader();
    const now = this.queue.nowMs;
    switch (this.stage) {
      case 'add-learner':
        if (!spare.started) spare.startEmpty();
        if (leader === undefined) return;
        if (leader.conf.learners.includes(this.spare) || leader.conf.voters.includes(this.spare)) return this.setStage('promote');
        return this.propose(leader, { type: ConfChangeType.AddLearner, nodeId: this.spare });
      case 'promote':
        if (leader === undefined) return;
        if (leader.conf.voters.includes(this.spare)) {
          const founders = leader.conf.voters.filter((id) => id !== this.spare);
          this.victim = this.opPrng.pick(founders);
          return this.setStage('remove');
        }
        // Promote once the learner has caught up (or after a while, caught up or not).
        if (!(spare.up && spare.appliedIndex + 5 >= leader.appliedIndex) && now - this.stageSinceMs < 3000) return;
        return this.propose(leader, { type: ConfChangeType.AddVoter, nodeId: this.spare });
      case 'remove':
        if (leader === undefined) return;
        if (!leader.conf.voters.includes(this.victim) && !leader.conf.learners.includes(this.victim)) {
          this.setStage('retire');
          const victim = this.nodes.get(this.victim)!;
          this.queue.after(500 + this.opPrng.int(1500), () => {
            victim.retire();
            this.trace.event(this.queue.nowMs, 'raft', [victim.id], `operator: node ${victim.id} retired`);
            this.setStage('done');
          });
          return;
        }
        return this.propose(leader, { type: ConfChangeType.RemoveNode, nodeId: this.victim });
      default:
        return;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Reporting

  private explain(v: Violation): string[] {
    const lines = [`${v.invariant} violated at ${v.atMs} ms: ${v.message}`];
    if (v.detail !== undefined) lines.push(...v.detail.map((d) => `  ${d}`));
    const relevant = (e: TraceEvent): boolean => {
      // Faults and leadership changes are always context; client results only for the key at fault.
      if (e.kind === 'client') return v.key !== undefined && e.key === v.key;
      return true;
    };
    lines.push(`last ${TRACE_LINES_ON_VIOLATION} relevant events:`);
    lines.push(...this.trace.recent(TRACE_LINES_ON_VIOLATION, relevant).map((l) => `  ${l}`));
    return lines;
  }

  private stats(events: number, linSteps: number): SeedStats {
    let maxTerm = 0;
    let maxCommit = 0;
    let crashes = 0;
    let writesLost = 0;
    let fsyncs = 0;
    let snapsTaken = 0;
    let snapsInstalled = 0;
    for (const n of this.nodes.values()) {
      if (n.started) {
        maxTerm = Math.max(maxTerm, n.raw.raft.term);
        maxCommit = Math.max(maxCommit, n.raw.raft.log.committed);
      }
      crashes += n.stats.crashes;
      writesLost += n.stats.writesLost;
      fsyncs += n.stats.fsyncs;
      snapsTaken += n.stats.snapshotsTaken;
      snapsInstalled += n.stats.snapshotsInstalled;
    }
    const ps = this.peerNet.stats;
    const count = (s: HistoryOp['status']): number => this.history.ops.filter((op) => op.status === s).length;
    let leaderTerms = 0;
    for (let t = 1; t <= maxTerm; t++) if (this.safety.leaderOf(t) !== undefined) leaderTerms++;
    return {
      virtualMs: this.queue.nowMs,
      events,
      messagesSent: ps.sent,
      messagesDelivered: ps.delivered,
      messagesLost: ps.lost,
      messagesCut: ps.cutByPartition,
      messagesDuplicated: ps.duplicated,
      peakMessagesPerSecond: this.peakMessagesPerSecond,
      leaderTerms,
      maxTerm,
      maxCommitIndex: maxCommit,
      crashes,
      writesLostOnCrash: writesLost,
      partitions: this.partitions,
      fsyncs,
      snapshotsTaken: snapsTaken,
      snapshotsInstalled: snapsInstalled,
      membershipStage: this.stage,
      clientOk: count('ok'),
      clientFail: count('fail'),
      clientIndeterminate: count('indeterminate'),
      linearizabilitySteps: linSteps,
    };
  }
}
