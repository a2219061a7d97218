/**
 * RawNode: the embedding API around Raft (etcd-io/raft's rawnode.go). The embedder calls
 * tick() on its clock, step() for each received message, propose()/readIndex()/… for
 * requests, and drains ready()/advance() — see the Ready contract in types.ts.
 */
import { decodeConfChange, encodeConfChange } from './confchange.js';
import { RaftError, invariant } from './errors.js';
import { DEFAULT_RAFT_CONFIG, Raft, RaftConfig } from './raft.js';
import { ProgressState } from './progress.js';
import {
  ConfChange,
  ConfState,
  EntryType,
  HardState,
  Message,
  MessageType,
  NodeId,
  Ready,
  Role,
  SoftState,
  emptyMessage,
  isLocalMessage,
  isResponseMessage,
} from './types.js';

export type RaftClass = new (cfg: RaftConfig) => Raft;

export interface RaftStatus {
  id: NodeId;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  lead: NodeId;
  role: Role;
  lastIndex: number;
  conf: ConfState;
  leadTransferee: NodeId;
  /** Messages dropped for a term more than MAX_TERM_STEP above this node's (raft.ts). */
  termJumpsRefused: number;
  /** Leader only: each member's replication state. */
  progress?: Record<string, { match: number; next: number; state: ProgressState; recentActive: boolean }>;
}

export type RawNodeConfig = Partial<Omit<RaftConfig, 'id' | 'storage' | 'random'>> & Pick<RaftConfig, 'id' | 'storage' | 'random'>;

export class RawNode {
  readonly raft: Raft;
  private prevSoft: SoftState;
  private prevHard: HardState;
  /** Term and vote as of the previous Ready (durable once it was advanced). */
  private prevDurableTerm: { term: number; vote: NodeId };
  /** What the outstanding Ready handed out, to be confirmed by advance(). */
  private pending: { lastEntry?: { index: number; term: number }; snapshotIndex?: number; appliedTo?: number } | undefined;

  constructor(config: RawNodeConfig, raftClass: RaftClass = Raft) {
    this.raft = new raftClass({ ...DEFAULT_RAFT_CONFIG, ...config });
    this.prevSoft = this.raft.softState();
    this.prevHard = this.raft.hardState();
    this.prevDurableTerm = { term: this.prevHard.term, vote: this.prevHard.vote };
  }

  tick(): void {
    this.raft.tick();
  }

  /** Start an election now (tests, and a single-node bootstrap that should not wait). */
  campaign(): void {
    this.raft.step(emptyMessage(MessageType.Hup, this.raft.id, this.raft.id, 0));
  }

  /** Propose application data; throws RaftError PROPOSAL_DROPPED when it cannot be accepted. */
  propose(data: Uint8Array): void {
    const m = emptyMessage(MessageType.Prop, this.raft.id, this.raft.id, 0);
    m.entries = [{ term: 0, index: 0, type: EntryType.Normal, data }];
    this.raft.step(m);
  }

  /** Propose a membership change; it takes effect when applied (applyConfChange). */
  proposeConfChange(cc: ConfChange): void {
    const m = emptyMessage(MessageType.Prop, this.raft.id, this.raft.id, 0);
    m.entries = [{ term: 0, index: 0, type: EntryType.ConfChange, data: encodeConfChange(cc) }];
    this.raft.step(m);
  }

  /** Apply a committed conf change entry; returns the new configuration to persist with the state. */
  applyConfChange(cc: ConfChange): ConfState {
    return this.raft.applyConfChange(cc);
  }

  /** Request a linearizable read; a ReadState with the same context appears in a later Ready. */
  readIndex(ctx: Uint8Array): void {
    const m = emptyMessage(MessageType.ReadIndex, this.raft.id, this.raft.id, 0);
    m.context = ctx;
    this.raft.step(m);
  }

  /** Ask the leader to hand leadership to `to` (sent as TimeoutNow once `to` is caught up). */
  transferLeadership(to: NodeId): void {
    this.raft.step(emptyMessage(MessageType.TransferLeader, to, this.raft.id, 0));
  }

  /** Deliver a message from a peer. Local message types are refused. */
  step(m: Message): void {
    if (isLocalMessage(m.type) && m.type !== MessageType.Unreachable) {
      throw new RaftError('STEP_LOCAL_MSG', `cannot step local message ${m.type}`);
    }
    if (!this.raft.trk.progress.has(m.from) && isResponseMessage(m.type) && this.raft.role === 'leader') {
      // A response from a node that is not (or no longer) a member: ignore.
      return;
    }
    this.raft.step(m);
  }

  reportUnreachable(id: NodeId): void {
    const m = emptyMessage(MessageType.Unreachable, id, this.raft.id, 0);
    this.raft.step(m);
  }

  /** A chunk of the snapshot at `snapshotIndex` for `id` could not be read (see Raft.snapshotFailed). */
  reportSnapshotFailure(id: NodeId, snapshotIndex: number): void {
    this.raft.snapshotFailed(id, snapshotIndex);
  }

  hasReady(): boolean {
    const r = this.raft;
    r.flushPendingAppends();
    if (r.msgs.length > 0 || r.readStates.length > 0 || r.snapshotWrites.length > 0) return true;
    if (r.log.unstableEntries().length > 0 || r.log.hasPendingSnapshot()) return true;
    if (r.log.hasNextCommittedEntries()) return true;
    const hs = r.hardState();
    if (hs.term !== this.prevHard.term || hs.vote !== this.prevHard.vote || hs.commit !== this.prevHard.commit) return true;
    const ss = r.softState();
    return ss.lead !== this.prevSoft.lead || ss.role !== this.prevSoft.role;
  }

  ready(): Ready {
    invariant(this.pending === undefined, 'ready() called again before advance()');
    const r = this.raft;
    r.flushPendingAppends();
    const entries = r.log.unstableEntries().slice();
    const committedEntries = r.log.nextCommittedEntries();
    const snapshot = r.log.unstable.snapshot;
    const rd: Ready = {
      entries,
      committedEntries,
      snapshot,
      messages: r.msgs,
      earlyMessages: [],
      readStates: r.readStates,
      snapshotChunks: r.snapshotWrites,
      mustSync: false,
    };
    r.msgs = [];
    r.readStates = [];
    r.snapshotWrites = [];
    const ss = r.softState();
    if (ss.lead !== this.prevSoft.lead || ss.role !== this.prevSoft.role) {
      rd.softState = ss;
      this.prevSoft = ss;
    }
    const hs = r.hardState();
    if (hs.term !== this.prevHard.term || hs.vote !== this.prevHard.vote || hs.commit !== this.prevHard.commit) {
      rd.hardState = hs;
      rd.mustSync = entries.length > 0 || hs.term !== this.prevHard.term || hs.vote !== this.prevHard.vote;
      this.prevHard = hs;
    }
    if (entries.length > 0 || snapshot) rd.mustSync = true;
    // A leader whose term and vote were already durable before this Ready may send at once.
    const termDurable = !rd.hardState || (rd.hardState.term === this.prevDurableTerm.term && rd.hardState.vote === this.prevDurableTerm.vote);
    if (r.role === Role.Leader && termDurable && !snapshot) {
      rd.earlyMessages = rd.messages;
      rd.messages = [];
    }
    this.prevDurableTerm = { term: hs.term, vote: hs.vote };
    const last = entries[entries.length - 1];
    const lastCommitted = committedEntries[committedEntries.length - 1];
    this.pending = {
      lastEntry: last ? { index: last.index, term: last.term } : undefined,
      snapshotIndex: snapshot?.metadata.index,
      appliedTo: lastCommitted?.index,
    };
    if (lastCommitted) r.log.applying = lastCommitted.index;
    return rd;
  }

  /** The embedder finished the last Ready: entries are stable, committed entries applied. */
  advance(): void {
    const p = this.pending;
    invariant(p !== undefined, 'advance() without ready()');
    this.pending = undefined;
    const log = this.raft.log;
    if (p.snapshotIndex !== undefined) {
      log.stableSnapTo(p.snapshotIndex);
      if (p.snapshotIndex > log.applied) log.appliedTo(p.snapshotIndex);
    }
    if (p.lastEntry) {
      log.stableTo(p.lastEntry.index, p.lastEntry.term);
      this.raft.selfPersisted(p.lastEntry.index, p.lastEntry.term);
    }
    if (p.appliedTo !== undefined) log.appliedTo(p.appliedTo);
  }

  status(): RaftStatus {
    const r = this.raft;
    const st: RaftStatus = {
      id: r.id,
      term: r.term,
      vote: r.vote,
      commit: r.log.committed,
      applied: r.log.applied,
      lead: r.lead,
      role: r.role,
      lastIndex: r.log.lastIndex(),
      conf: r.trk.confState(),
      leadTransferee: r.leadTransferee,
      termJumpsRefused: r.termJumpsRefused,
    };
    if (r.role === Role.Leader) {
      st.progress = {};
      for (const [id, pr] of r.trk.progress) {
        st.progress[String(id)] = { match: pr.match, next: pr.next, state: pr.state, recentActive: pr.recentActive };
      }
    }
    return st;
  }
}

export { decodeConfChange };
