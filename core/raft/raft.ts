/**
 * Raft, the algorithm (Ongaro 2014), as a pure state machine: `step(message)` and `tick()`
 * change state and queue outgoing messages in `msgs`; RawNode turns that into Ready batches.
 * No I/O, no clock, no randomness of its own (an injected RandomSource jitters elections).
 *
 * Features: PreVote, CheckQuorum (leader lease for votes), pipelined and batched log
 * replication with probe/replicate/snapshot flow control (an append that only carries the
 * commit index to a follower known to hold the whole log is marked commit-only and goes
 * unanswered; etcd-io/raft answers it), fast backtracking with
 * (index, term) hints, chunked InstallSnapshot, single-server membership changes with
 * learners, ReadIndex, leadership transfer (TimeoutNow).
 *
 * The protected methods marked HOOK are the places the simulator's deliberately wrong
 * variants override (core/sim/bugs.ts); nothing in production subclasses Raft.
 */
import type { RandomSource } from '../sim/prng.js';
import { applyToConfState } from './confchange.js';
import { RaftError, invariant } from './errors.js';
import { RaftLog } from './log.js';
import { Progress, ProgressState, ProgressTracker, VoteResult, type SnapshotTransfer } from './progress.js';
import { ReadOnly } from './readonly.js';
import { Storage } from './storage.js';
import {
  ConfChange,
  ConfState,
  EMPTY_BYTES,
  Entry,
  EntryType,
  HardState,
  Message,
  MessageType,
  NONE,
  NodeId,
  ReadState,
  Role,
  Snapshot,
  SnapshotChunkWrite,
  SnapshotData,
  SoftState,
  emptyMessage,
  snapshotSizeBytes,
} from './types.js';

export interface RaftConfig {
  id: NodeId;
  /** Followers start an election after [electionTicks, 2·electionTicks) ticks without a leader. */
  electionTicks: number;
  /** The leader sends heartbeats every heartbeatTicks; must be well below electionTicks. */
  heartbeatTicks: number;
  storage: Storage;
  /** The last index the application has applied (restart point); defaults to the snapshot index. */
  applied?: number;
  /** Upper bound on the entries bytes of one AppendEntries: proposals are batched up to this. */
  maxSizePerMsgBytes: number;
  /** Pipelining window: AppendEntries in flight per follower in the replicate state. */
  maxInflightMsgs: number;
  /** Bytes of committed entries handed to the application per Ready. */
  maxApplyBytesPerReady: number;
  /** Proposals beyond this many uncommitted bytes are dropped (leader flow control). */
  maxUncommittedEntriesBytes: number;
  /** Snapshots travel in chunks of this many bytes. */
  snapshotChunkBytes: number;
  /** Chunks of a snapshot sent ahead of the follower's acknowledgements (a window, not stop-and-wait). */
  maxInflightSnapshotChunks: number;
  /**
   * A follower hands each received snapshot chunk to the embedder (Ready.snapshotChunks)
   * instead of collecting the image in memory; the restored snapshot is then external.
   */
  spoolIncomingSnapshots?: boolean;
  /** A leader that has not heard from a quorum within an election timeout steps down. */
  checkQuorum: boolean;
  /** Candidates first check they could win without disturbing the cluster (§9.6). */
  preVote: boolean;
  /** Followers forward proposals and read requests to the leader. */
  disableProposalForwarding?: boolean;
  random: RandomSource;
}

export const DEFAULT_RAFT_CONFIG = {
  electionTicks: 10,
  heartbeatTicks: 1,
  maxSizePerMsgBytes: 1024 * 1024,
  maxInflightMsgs: 256,
  maxApplyBytesPerReady: 4 * 1024 * 1024,
  maxUncommittedEntriesBytes: 64 * 1024 * 1024,
  snapshotChunkBytes: 1024 * 1024,
  maxInflightSnapshotChunks: 4,
  checkQuorum: true,
  preVote: true,
} as const;

/** Heartbeat responses without an acknowledged snapshot chunk before the chunk is resent. */
export const SNAPSHOT_RESEND_HEARTBEATS = 3;
/** Most heartbeats counted as on their way to a follower receiving a snapshot (its queue's worth on a slow link). */
const HEARTBEATS_UNANSWERED_MAX = 256;

/**
 * How far above this node's term a message may take it; a message further ahead is dropped
 * (counted in termJumpsRefused). Terms are JavaScript numbers, exact up to 2^53 - 1: a peer
 * that sent 2^53 - 1 once used to stop every election for good (term + 1 no longer grows).
 * With pre-vote a term rises only by elections a quorum allowed, so a member lags by a few
 * terms, not 2^16; anyone holding the cluster token now needs 2^37 messages to reach the end.
 */
export const MAX_TERM_STEP = 2 ** 16;
/** No election past this term: a candidate's term must still be exact. */
export const MAX_TERM = Number.MAX_SAFE_INTEGER;

/** Marks a vote request caused by TimeoutNow: it may disturb a leader still in its lease. */
export const CAMPAIGN_TRANSFER = new TextEncoder().encode('CampaignTransfer');

enum CampaignType {
  PreElection = 'pre-election',
  Election = 'election',
  Transfer = 'transfer',
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A partially received snapshot on a follower. */
interface IncomingSnapshot {
  index: number;
  term: number;
  from: NodeId;
  /** The bytes so far, unless the embedder spools them. */
  chunks: Uint8Array[] | undefined;
  receivedBytes: number;
}

export class Raft {
  readonly id: NodeId;
  term = 0;
  vote: NodeId = NONE;
  lead: NodeId = NONE;
  role: Role = Role.Follower;
  readonly log: RaftLog;
  readonly trk: ProgressTracker;
  readonly readOnly = new ReadOnly();
  /** Outgoing messages, drained by RawNode.ready(). */
  msgs: Message[] = [];
  readStates: ReadState[] = [];
  /** Received snapshot chunks for the embedder's spool, drained by RawNode.ready(). */
  snapshotWrites: SnapshotChunkWrite[] = [];

  /** Leader: index of the last conf change proposed; no new one until it is applied. */
  pendingConfIndex = 0;
  /** Leader: payload bytes of the entries it appended that are not committed yet (bounded by maxUncommittedEntriesBytes). */
  uncommittedBytes = 0;
  /** Leader: each append's last index and payload bytes, oldest first from uncommittedHead, until committed. */
  private uncommittedAppends: Array<{ last: number; bytes: number }> = [];
  private uncommittedHead = 0;
  /** Proposals were appended since the last broadcast. */
  private appendsPending = false;
  leadTransferee: NodeId = NONE;
  /** Messages dropped for a term more than MAX_TERM_STEP above ours. */
  termJumpsRefused = 0;
  /** Leader: ReadIndex requests that arrived before an entry of this term committed. */
  private pendingReadIndexMessages: Message[] = [];
  private incomingSnapshot: IncomingSnapshot | undefined;

  electionElapsed = 0;
  heartbeatElapsed = 0;
  randomizedElectionTimeout = 0;

  readonly cfg: RaftConfig;

  constructor(cfg: RaftConfig) {
    invariant(cfg.id !== NONE, 'raft id must not be 0');
    invariant(cfg.heartbeatTicks > 0 && cfg.electionTicks > cfg.heartbeatTicks, 'electionTicks must exceed heartbeatTicks');
    this.cfg = cfg;
    this.id = cfg.id;
    this.log = new RaftLog(cfg.storage, cfg.maxApplyBytesPerReady);
    this.trk = new ProgressTracker(cfg.maxInflightMsgs);
    const { hardState, confState } = cfg.storage.initialState();
    this.trk.applyConf(confState, this.log.lastIndex() + 1);
    if (hardState.term !== 0 || hardState.commit !== 0 || hardState.vote !== 0) this.loadHardState(hardState);
    if (cfg.applied !== undefined && cfg.applied > 0) this.log.appliedTo(cfg.applied);
    this.becomeFollower(this.term, NONE);
  }

  private loadHardState(hs: HardState): void {
    invariant(
      hs.commit >= this.log.committed && hs.commit <= this.log.lastIndex(),
      `hard state commit ${hs.commit} outside [${this.log.committed}, ${this.log.lastIndex()}]`,
    );
    this.log.committed = hs.commit;
    this.term = hs.term;
    this.vote = hs.vote;
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  softState(): SoftState {
    return { lead: this.lead, role: this.role };
  }

  /** Voters may campaign; learners and removed nodes may not. */
  promotable(): boolean {
    return this.trk.isVoter(this.id) && !this.log.hasPendingSnapshot();
  }

  // ---------------------------------------------------------------------------------------
  // Sending

  protected send(m: Message): void {
    if (m.from === NONE) m.from = this.id;
    if (m.type === MessageType.Vote || m.type === MessageType.VoteResp || m.type === MessageType.PreVote || m.type === MessageType.PreVoteResp) {
      invariant(m.term !== 0, `${m.type} must carry a term`);
    } else {
      invariant(m.term === 0, `${m.type} term is set by send()`);
      // Proposals and read requests forwarded to the leader are local to it: no term.
      if (m.type !== MessageType.Prop && m.type !== MessageType.ReadIndex) m.term = this.term;
    }
    this.msgs.push(m);
  }

  /** Send entries (or a snapshot) to `to` if its flow control allows. Returns true if sent. */
  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.trk.progress.get(to);
    if (!pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.termOrUndefined(prevIndex);
    let ents: Entry[] | undefined;
    if (prevTerm !== undefined) {
      try {
        ents = this.log.entriesFrom(pr.next, this.cfg.maxSizePerMsgBytes);
      } catch (e) {
        if (!(e instanceof RaftError && e.code === 'COMPACTED')) throw e;
      }
    }
    if (prevTerm === undefined || ents === undefined) {
      return this.startSnapshot(to, pr);
    }
    if (ents.length === 0 && !sendIfEmpty) return false;
    const m = emptyMessage(MessageType.App, this.id, to, 0);
    m.index = prevIndex;
    m.logTerm = prevTerm;
    m.entries = ents;
    m.commit = this.log.committed;
    // The answer to an empty append at or below the follower's known match changes nothing
    // here (handleAppendResponse ignores it): tell the follower not to send it.
    m.commitOnly = ents.length === 0 && pr.match >= prevIndex;
    pr.sentEntries(ents.length > 0 ? ents[ents.length - 1]!.index : prevIndex, ents.length);
    this.send(m);
    return true;
  }

  private sendAppend(to: NodeId): void {
    this.maybeSendAppend(to, true);
  }

  /** The follower is behind our first log index: switch it to a chunked snapshot transfer. */
  private startSnapshot(to: NodeId, pr: Progress): boolean {
    // Don't spend bandwidth on a follower that is not responding (it may be down).
    if (!pr.recentActive) return false;
    let snapshot: Snapshot;
    try {
      snapshot = this.log.snapshot();
    } catch (e) {
      // The embedder is still making one: the next heartbeat response asks again.
      if (e instanceof RaftError && e.code === 'SNAPSHOT_TEMPORARILY_UNAVAILABLE') return false;
      throw e;
    }
    invariant(snapshot.metadata.index > 0, 'need a non-empty snapshot');
    pr.becomeSnapshot(snapshot);
    this.sendSnapshotChunks(to, pr.transfer!);
    return true;
  }

  /**
   * Sends the chunk at transfer.sentBytes (always one, so an empty image or a resend goes out),
   * then more while fewer than maxInflightSnapshotChunks are unacknowledged.
   */
  private sendSnapshotChunks(to: NodeId, transfer: SnapshotTransfer): void {
    const { snapshot } = transfer;
    const data = snapshot.data;
    const total = snapshotSizeBytes(data);
    const windowBytes = this.cfg.snapshotChunkBytes * this.cfg.maxInflightSnapshotChunks;
    for (;;) {
      const offset = transfer.sentBytes;
      const end = Math.min(total, offset + this.cfg.snapshotChunkBytes);
      const m = emptyMessage(MessageType.Snap, this.id, to, 0);
      m.snapshot = {
        metadata: snapshot.metadata,
        offset,
        data: data instanceof Uint8Array ? data.subarray(offset, end) : EMPTY_BYTES,
        totalBytes: total,
        done: end === total,
      };
      // An external snapshot's bytes are read by the embedder as the message leaves.
      if (!(data instanceof Uint8Array)) m.snapshot.bytesToAttach = end - offset;
      this.send(m);
      transfer.sentBytes = end;
      transfer.answersBeforeLastChunk = transfer.heartbeatsUnanswered;
      if (end >= total || end - transfer.ackedBytes >= windowBytes) return;
    }
  }

  /**
   * The embedder could not attach a chunk of the snapshot being sent to `to` (its file was
   * replaced by a newer one): drop the transfer, as etcd's ReportSnapshot(failure) does. The
   * next append attempt starts over with the current snapshot.
   */
  snapshotFailed(to: NodeId, snapshotIndex: number): void {
    const pr = this.trk.progress.get(to);
    if (this.role !== Role.Leader || !pr || pr.state !== ProgressState.Snapshot) return;
    if (pr.transfer?.snapshot.metadata.index !== snapshotIndex) return; // an earlier transfer's failure
    pr.pendingSnapshot = 0;
    pr.becomeProbe();
  }

  private sendHeartbeat(to: NodeId, ctx: Uint8Array): void {
    const pr = this.trk.progress.get(to);
    if (!pr) return;
    // Never tell a follower to commit beyond what it is known to hold.
    const m = emptyMessage(MessageType.Heartbeat, this.id, to, 0);
    m.commit = Math.min(pr.match, this.log.committed);
    m.context = ctx;
    // Bounded: heartbeats lost without an Unreachable report would otherwise put off resends for good.
    if (pr.state === ProgressState.Snapshot && pr.transfer) pr.transfer.heartbeatsUnanswered = Math.min(pr.transfer.heartbeatsUnanswered + 1, HEARTBEATS_UNANSWERED_MAX);
    this.send(m);
  }

  private forEachPeer(fn: (id: NodeId, pr: Progress) => void): void {
    for (const [id, pr] of this.trk.progress) if (id !== this.id) fn(id, pr);
  }

  bcastAppend(): void {
    this.forEachPeer((id) => this.sendAppend(id));
  }

  private bcastHeartbeat(): void {
    const ctx = this.readOnly.lastPendingContext() ?? EMPTY_BYTES;
    this.forEachPeer((id) => this.sendHeartbeat(id, ctx));
  }

  // ---------------------------------------------------------------------------------------
  // Role transitions

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = NONE;
    }
    this.lead = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.abortLeaderTransfer();
    this.trk.resetVotes();
    const last = this.log.lastIndex();
    for (const [id, pr] of this.trk.progress) {
      const learner = pr.isLearner;
      const fresh = new Progress(last + 1, this.cfg.maxInflightMsgs, learner);
      if (id === this.id) fresh.match = Math.min(last, this.stableLastIndex());
      this.trk.progress.set(id, fresh);
    }
    this.pendingConfIndex = 0;
    this.uncommittedBytes = 0;
    this.uncommittedAppends = [];
    this.uncommittedHead = 0;
    this.readOnly.reset();
    this.pendingReadIndexMessages = [];
  }

  private resetRandomizedElectionTimeout(): void {
    this.randomizedElectionTimeout = this.cfg.electionTicks + this.cfg.random.int(this.cfg.electionTicks);
  }

  becomeFollower(term: number, lead: NodeId): void {
    this.reset(term);
    this.lead = lead;
    this.role = Role.Follower;
  }

  private becomeCandidate(): void {
    invariant(this.role !== Role.Leader, 'leader cannot become candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = Role.Candidate;
  }

  private becomePreCandidate(): void {
    invariant(this.role !== Role.Leader, 'leader cannot become pre-candidate');
    // A pre-candidate changes neither term nor vote: a failed pre-vote leaves no trace.
    this.trk.resetVotes();
    this.lead = NONE;
    this.role = Role.PreCandidate;
  }

  protected becomeLeader(): void {
    invariant(this.role !== Role.Follower, 'follower cannot become leader directly');
    this.reset(this.term);
    this.lead = this.id;
    this.role = Role.Leader;
    const self = this.trk.progress.get(this.id);
    if (self) self.becomeReplicate();
    // Any conf change in the log may be uncommitted: no new one until everything up to here
    // is applied (which also requires committing the no-op below, an entry of our term).
    this.pendingConfIndex = this.log.lastIndex();
    this.appendEntries([{ term: 0, index: 0, type: EntryType.Normal, data: EMPTY_BYTES }]);
  }

  // ---------------------------------------------------------------------------------------
  // Elections

  private hup(t: CampaignType): void {
    if (this.role === Role.Leader) return;
    if (!this.promotable()) return;
    // term + 1 would not be a new term (see MAX_TERM_STEP): stay a follower rather than vote twice in one.
    if (this.term >= MAX_TERM) return;
    // A conf change committed but not applied may change whether we are a voter.
    if (this.hasUnappliedConfChanges()) return;
    this.campaign(t);
  }

  private hasUnappliedConfChanges(): boolean {
    if (this.log.applied >= this.log.committed) return false;
    try {
      const ents = this.log.slice(this.log.applied + 1, this.log.committed + 1);
      return ents.some((e) => e.type === EntryType.ConfChange);
    } catch {
      return false;
    }
  }

  private campaign(t: CampaignType): void {
    let voteMsg: MessageType;
    let term: number;
    if (t === CampaignType.PreElection) {
      this.becomePreCandidate();
      voteMsg = MessageType.PreVote;
      term = this.term + 1; // the term we would campaign in; our own term is unchanged
    } else {
      this.becomeCandidate();
      voteMsg = MessageType.Vote;
      term = this.term;
    }
    this.trk.recordVote(this.id, true);
    if (this.trk.tallyVotes().result === VoteResult.Won) {
      // Single voter: won immediately.
      if (t === CampaignType.PreElection) this.campaign(CampaignType.Election);
      else this.becomeLeader();
      return;
    }
    for (const id of this.trk.voters) {
      if (id === this.id) continue;
      const m = emptyMessage(voteMsg, this.id, id, term);
      m.index = this.log.lastIndex();
      m.logTerm = this.log.lastTerm();
      if (t === CampaignType.Transfer) m.context = CAMPAIGN_TRANSFER;
      this.send(m);
    }
  }

  /** HOOK: may we grant this (pre-)vote, given the candidate's log? (§5.4.1 election restriction) */
  protected candidateLogOk(m: Message): boolean {
    return this.log.isUpToDate(m.index, m.logTerm);
  }

  private handleVoteRequest(m: Message): void {
    const isPre = m.type === MessageType.PreVote;
    const canVote =
      this.vote === m.from ||
      (this.vote === NONE && this.lead === NONE) ||
      // A pre-vote for a future term does not bind us.
      (isPre && m.term > this.term);
    const resp = emptyMessage(isPre ? MessageType.PreVoteResp : MessageType.VoteResp, this.id, m.from, 0);
    if (canVote && this.candidateLogOk(m)) {
      // Respond in the candidate's term: for a pre-vote ours may be lower, and a response
      // in our own term would be ignored as stale.
      resp.term = m.term;
      this.send(resp);
      if (!isPre) {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      resp.term = this.term;
      resp.reject = true;
      this.send(resp);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Step

  step(m: Message): void {
    if (m.term > this.term + MAX_TERM_STEP) {
      this.termJumpsRefused++;
      return;
    }
    if (m.term === 0) {
      // local message (or a forwarded proposal / read request)
    } else if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = sameBytes(m.context, CAMPAIGN_TRANSFER);
        const inLease = this.cfg.checkQuorum && this.lead !== NONE && this.electionElapsed < this.cfg.electionTicks;
        // A follower that heard from a live leader recently ignores candidates (§4.2.3):
        // a removed or partitioned node cannot disrupt a healthy cluster.
        if (!force && inLease) return;
      }
      if (m.type === MessageType.PreVote) {
        // Never change our term because of a pre-vote.
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // The term in a granted pre-vote response is the one we will campaign in.
      } else if (m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap) {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, NONE);
      }
    } else if (m.term < this.term) {
      if ((this.cfg.checkQuorum || this.cfg.preVote) && (m.type === MessageType.Heartbeat || m.type === MessageType.App)) {
        // A stale leader (e.g. just healed from a partition) learns our term and steps down.
        // Without this, a node with a higher term from pre-vote-less elections could be stuck.
        this.send(emptyMessage(MessageType.AppResp, this.id, m.from, 0));
      } else if (m.type === MessageType.PreVote) {
        const resp = emptyMessage(MessageType.PreVoteResp, this.id, m.from, this.term);
        resp.reject = true;
        this.send(resp);
      }
      return;
    }

    switch (m.type) {
      case MessageType.Hup:
        this.hup(this.cfg.preVote ? CampaignType.PreElection : CampaignType.Election);
        return;
      case MessageType.Vote:
      case MessageType.PreVote:
        this.handleVoteRequest(m);
        return;
      default:
        break;
    }
    switch (this.role) {
      case Role.Leader:
        this.stepLeader(m);
        break;
      case Role.Candidate:
      case Role.PreCandidate:
        this.stepCandidate(m);
        break;
      case Role.Follower:
        this.stepFollower(m);
        break;
    }
  }

  private stepLeader(m: Message): void {
    switch (m.type) {
      case MessageType.Beat:
        this.bcastHeartbeat();
        return;
      case MessageType.Prop:
        this.handleProposal(m);
        return;
      case MessageType.ReadIndex:
        this.handleReadIndex(m);
        return;
      case MessageType.TransferLeader:
        this.handleTransferLeader(m);
        return;
      default:
        break;
    }
    const pr = this.trk.progress.get(m.from);
    if (!pr) return; // not a member (removed, or not yet added)
    switch (m.type) {
      case MessageType.AppResp:
        pr.recentActive = true;
        this.handleAppendResponse(m, pr);
        break;
      case MessageType.HeartbeatResp:
        pr.recentActive = true;
        this.handleHeartbeatResponse(m, pr);
        break;
      case MessageType.SnapResp:
        pr.recentActive = true;
        this.handleSnapshotResponse(m, pr);
        break;
      case MessageType.Unreachable:
        // Optimistic replication assumed delivery; fall back to probing.
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        // The connection dropped what it held: no answer is coming to the heartbeats in it.
        if (pr.transfer) {
          pr.transfer.heartbeatsUnanswered = 0;
          pr.transfer.answersBeforeLastChunk = 0;
        }
        break;
      default:
        break;
    }
  }

  private handleProposal(m: Message): void {
    if (m.entries.length === 0) throw new RaftError('PROPOSAL_DROPPED', 'empty proposal');
    if (!this.trk.progress.has(this.id)) throw new RaftError('PROPOSAL_DROPPED', 'leader was removed from the configuration');
    if (this.leadTransferee !== NONE) throw new RaftError('PROPOSAL_DROPPED', `leadership transfer to ${this.leadTransferee} in progress`);
    let confIndex = 0;
    for (const [i, e] of m.entries.entries()) {
      if (e.type !== EntryType.ConfChange) continue;
      if (this.pendingConfIndex > this.log.applied || confIndex > 0) {
        throw new RaftError('CONF_CHANGE_PENDING', `conf change at ${confIndex || this.pendingConfIndex} not yet applied (applied ${this.log.applied})`);
      }
      confIndex = this.log.lastIndex() + 1 + i;
    }
    this.appendEntries(m.entries.map((e) => ({ ...e })));
    // Only once appended: a proposal refused (the uncommitted limit) leaves no conf change pending.
    if (confIndex > 0) this.pendingConfIndex = confIndex;
    // Batching: proposals arriving before the next Ready travel in one AppendEntries.
    this.appendsPending = true;
  }

  /** Send the appends deferred by proposals (RawNode calls this when building a Ready). */
  flushPendingAppends(): void {
    if (!this.appendsPending) return;
    this.appendsPending = false;
    if (this.role === Role.Leader) this.bcastAppend();
  }

  /** Leader: append new entries of this term to our own log (batched into the next sends). */
  protected appendEntries(ents: Entry[]): void {
    let bytes = 0;
    for (const e of ents) bytes += e.data.length;
    if (this.uncommittedBytes > 0 && bytes > 0 && this.uncommittedBytes + bytes > this.cfg.maxUncommittedEntriesBytes) {
      throw new RaftError('PROPOSAL_DROPPED', `uncommitted log exceeds ${this.cfg.maxUncommittedEntriesBytes} bytes`);
    }
    this.uncommittedBytes += bytes;
    let index = this.log.lastIndex();
    for (const e of ents) {
      e.term = this.term;
      e.index = ++index;
    }
    this.log.append(ents);
    if (bytes > 0) this.uncommittedAppends.push({ last: index, bytes });
    // Our own copy counts toward commit only once it is durable: see selfPersisted().
  }

  /**
   * The embedder made our log durable up to (index, term). A leader now counts its own copy
   * toward the quorum; this is what lets it send appends before its own fsync completes.
   */
  selfPersisted(index: number, term: number): void {
    if (this.role !== Role.Leader || this.log.termOrUndefined(index) !== term) return;
    const self = this.trk.progress.get(this.id);
    if (!self || !self.maybeUpdate(index)) return;
    if (this.maybeCommit()) this.bcastAppend();
  }

  /** The last index known to be in stable storage. */
  stableLastIndex(): number {
    return this.log.unstable.offset - 1;
  }

  /** HOOK: advance commit to what a quorum holds — only for entries of the current term (§5.4.2). */
  protected maybeCommit(): boolean {
    const before = this.log.committed;
    const changed = this.log.maybeCommit(this.trk.committedIndex(), this.term);
    if (changed) this.onCommitAdvanced(before);
    return changed;
  }

  protected onCommitAdvanced(before: number): void {
    // Entries of our term are committed: ReadIndex requests that waited for that may go.
    if (before < this.log.committed) {
      this.releaseCommittedBytes();
      if (this.pendingReadIndexMessages.length > 0 && this.committedEntryInCurrentTerm()) {
        const pending = this.pendingReadIndexMessages;
        this.pendingReadIndexMessages = [];
        for (const req of pending) this.handleReadIndex(req);
      }
    }
  }

  /**
   * Takes what committed off the uncommitted bytes, append by append (one committed in part stays
   * counted until all of it is). Zeroing the count at any commit, as before, let the tail grow
   * without bound while a quorum acknowledged a little at a time.
   */
  private releaseCommittedBytes(): void {
    const q = this.uncommittedAppends;
    while (this.uncommittedHead < q.length && q[this.uncommittedHead]!.last <= this.log.committed) {
      this.uncommittedBytes -= q[this.uncommittedHead]!.bytes;
      this.uncommittedHead++;
    }
    if (this.uncommittedHead === q.length) {
      this.uncommittedAppends = [];
      this.uncommittedHead = 0;
    } else if (this.uncommittedHead > 1024 && this.uncommittedHead * 2 > q.length) {
      this.uncommittedAppends = q.slice(this.uncommittedHead);
      this.uncommittedHead = 0;
    }
  }

  protected committedEntryInCurrentTerm(): boolean {
    return this.log.termOrUndefined(this.log.committed) === this.term;
  }

  /** HOOK: leader's ReadIndex: record commit index, confirm leadership with a heartbeat round. */
  protected handleReadIndex(m: Message): void {
    // Until an entry of this term commits, our commit index may lag the true one (§6.4). A
    // single voter too: restarted, it knows only the commit index it last saved, which may
    // be behind writes it acknowledged (a commit-only hard state is not saved on its own).
    if (!this.committedEntryInCurrentTerm()) {
      this.pendingReadIndexMessages.push(m);
      return;
    }
    if (this.trk.voters.length === 1 && this.trk.isVoter(this.id)) {
      this.respondToReadIndex(m, this.log.committed);
      return;
    }
    this.readOnly.addRequest(this.log.committed, m);
    this.readOnly.recvAck(this.id, m.context);
    this.bcastHeartbeatWithContext(m.context);
  }

  private bcastHeartbeatWithContext(ctx: Uint8Array): void {
    this.forEachPeer((id) => this.sendHeartbeat(id, ctx));
  }

  protected respondToReadIndex(req: Message, index: number): void {
    if (req.from === NONE || req.from === this.id) {
      this.readStates.push({ index, context: req.context });
      return;
    }
    const resp = emptyMessage(MessageType.ReadIndexResp, this.id, req.from, 0);
    resp.index = index;
    resp.context = req.context;
    this.send(resp);
  }

  private handleAppendResponse(m: Message, pr: Progress): void {
    if (m.reject) {
      // Fast backtracking: jump past every entry of the conflicting term at once.
      let nextProbeIdx = m.rejectHint;
      if (m.logTerm > 0) nextProbeIdx = this.log.findConflictByTerm(m.rejectHint, m.logTerm)[0];
      if (pr.maybeDecrTo(m.index, nextProbeIdx)) {
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        this.sendAppend(m.from);
      }
      return;
    }
    const wasPaused = pr.isPaused();
    // A stale or duplicate ack changes nothing, as in etcd: letting one unpause a probe made
    // every duplicated ack another append, and so another ack (part of the storm of the
    // simulator's seed 7301976). A heartbeat response unpauses a probe instead.
    if (!pr.maybeUpdate(m.index)) return;
    switch (pr.state) {
      case ProgressState.Probe:
        pr.becomeReplicate();
        break;
      case ProgressState.Snapshot:
        if (pr.match >= pr.pendingSnapshot) {
          pr.becomeProbe();
          pr.becomeReplicate();
        }
        break;
      case ProgressState.Replicate:
        pr.inflights.freeLE(m.index);
        pr.inflights.growWindow();
        break;
    }
    if (this.maybeCommit()) {
      this.bcastAppend();
    } else if (wasPaused) {
      this.sendAppend(m.from);
    }
    // Fill the window (pipelining) with whatever is left to send.
    while (this.maybeSendAppend(m.from, false)) {
      // loop bounded by the in-flight window
    }
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.sendTimeoutNow(m.from);
    }
  }

  private handleHeartbeatResponse(m: Message, pr: Progress): void {
    pr.probeSent = false;
    if (pr.state === ProgressState.Replicate && pr.inflights.full()) pr.inflights.freeFirstOne();
    if (pr.state === ProgressState.Snapshot && pr.transfer) {
      // A chunk may have been lost (a broken connection): resend from the last acknowledged
      // byte, but only once answers to heartbeats sent after the last chunk came without its
      // acknowledgement; a chunk still on its way (1 MiB on a slow link) would otherwise be
      // sent twice, and each copy's ack would send the next.
      const transfer = pr.transfer;
      if (transfer.heartbeatsUnanswered > 0) transfer.heartbeatsUnanswered--;
      if (transfer.answersBeforeLastChunk > 0) transfer.answersBeforeLastChunk--;
      else if (++transfer.heartbeatsWithoutProgress >= SNAPSHOT_RESEND_HEARTBEATS) {
        transfer.heartbeatsWithoutProgress = 0;
        transfer.sentBytes = transfer.ackedBytes;
        this.sendSnapshotChunks(m.from, transfer);
      }
    } else if (pr.match < this.log.lastIndex()) {
      this.sendAppend(m.from);
    }
    if (m.context.length === 0) return;
    const acks = this.readOnly.recvAck(m.from, m.context);
    if (!acks) return;
    let voterAcks = 0;
    for (const id of acks) if (this.trk.isVoter(id)) voterAcks++;
    if (voterAcks < Math.floor(this.trk.voters.length / 2) + 1) return;
    for (const rs of this.readOnly.advance(m.context)) this.respondToReadIndex(rs.req, rs.index);
  }

  private handleSnapshotResponse(m: Message, pr: Progress): void {
    if (pr.state !== ProgressState.Snapshot || !pr.transfer) return;
    const meta = pr.transfer.snapshot.metadata;
    if (m.logTerm !== meta.term || m.rejectHint !== meta.index) return; // another transfer's ack
    const transfer = pr.transfer;
    if (m.reject) {
      // The follower lacks bytes before what we sent (a chunk was lost): go back to them, once.
      const from = Math.min(m.index, transfer.ackedBytes);
      if (from === transfer.rewoundTo) return;
      transfer.ackedBytes = from;
      transfer.sentBytes = from;
      transfer.rewoundTo = from;
      this.sendSnapshotChunks(m.from, transfer);
      return;
    }
    // The ack of a duplicate chunk moves nothing: the chunks after it went out with the first.
    if (m.index <= transfer.ackedBytes) return;
    transfer.ackedBytes = m.index;
    if (m.index > transfer.rewoundTo) transfer.rewoundTo = -1;
    transfer.heartbeatsWithoutProgress = 0;
    if (transfer.sentBytes < snapshotSizeBytes(transfer.snapshot.data)) this.sendSnapshotChunks(m.from, transfer);
  }

  private handleTransferLeader(m: Message): void {
    const transferee = m.from;
    const pr = this.trk.progress.get(transferee);
    if (!pr || pr.isLearner) return;
    if (this.leadTransferee !== NONE) {
      if (this.leadTransferee === transferee) return; // already under way
      this.abortLeaderTransfer();
    }
    if (transferee === this.id) return;
    // The transfer must finish within an election timeout or it is abandoned.
    this.electionElapsed = 0;
    this.leadTransferee = transferee;
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(transferee);
    else this.sendAppend(transferee);
  }

  private sendTimeoutNow(to: NodeId): void {
    this.send(emptyMessage(MessageType.TimeoutNow, this.id, to, 0));
  }

  abortLeaderTransfer(): void {
    this.leadTransferee = NONE;
  }

  private stepCandidate(m: Message): void {
    const myVoteResp = this.role === Role.PreCandidate ? MessageType.PreVoteResp : MessageType.VoteResp;
    switch (m.type) {
      case MessageType.Prop:
        throw new RaftError('PROPOSAL_DROPPED', 'no leader (election in progress)');
      case MessageType.App:
        this.becomeFollower(m.term, m.from);
        this.handleAppendEntries(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshotChunk(m);
        return;
      case MessageType.ReadIndex:
        throw new RaftError('PROPOSAL_DROPPED', 'no leader (election in progress)');
      default:
        break;
    }
    if (m.type !== myVoteResp) return;
    this.trk.recordVote(m.from, !m.reject);
    const { result } = this.trk.tallyVotes();
    if (result === VoteResult.Won) {
      if (this.role === Role.PreCandidate) {
        this.campaign(CampaignType.Election);
      } else {
        this.becomeLeader();
        this.bcastAppend();
      }
    } else if (result === VoteResult.Lost) {
      // A lost pre-vote keeps our term; a lost vote keeps the new one.
      this.becomeFollower(this.term, NONE);
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.Prop:
        if (this.lead === NONE) throw new RaftError('PROPOSAL_DROPPED', 'no leader');
        if (this.cfg.disableProposalForwarding) throw new RaftError('PROPOSAL_DROPPED', 'not the leader; forwarding disabled');
        this.forward(m);
        return;
      case MessageType.App:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppendEntries(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshotChunk(m);
        return;
      case MessageType.TransferLeader:
        // Not forwarded (etcd forwards it with the transferee in `from`): the peer transport
        // takes a message only from the member it authenticated, so the leader would never see
        // it. Only the leader transfers; the caller asked one that no longer is.
        return;
      case MessageType.TimeoutNow:
        // The leader asked us to take over: campaign at once, skipping pre-vote.
        this.hup(CampaignType.Transfer);
        return;
      case MessageType.ReadIndex:
        if (this.lead === NONE) throw new RaftError('PROPOSAL_DROPPED', 'no leader to serve a read');
        this.forward(m);
        return;
      case MessageType.ReadIndexResp:
        this.readStates.push({ index: m.index, context: m.context });
        return;
      default:
        return;
    }
  }

  private forward(m: Message): void {
    const fwd: Message = { ...m, to: this.lead, term: 0 };
    this.send(fwd);
  }

  /** HOOK: follower side of AppendEntries (§5.3). */
  protected handleAppendEntries(m: Message): void {
    if (m.index < this.log.committed) {
      // Everything up to our commit index already matches the leader: say so.
      const resp = emptyMessage(MessageType.AppResp, this.id, m.from, 0);
      resp.index = this.log.committed;
      this.send(resp);
      return;
    }
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    const resp = emptyMessage(MessageType.AppResp, this.id, m.from, 0);
    if (lastNew !== undefined) {
      if (m.commitOnly && m.entries.length === 0) return;
      resp.index = lastNew;
      this.send(resp);
      return;
    }
    // Reject with a hint: the last index at or below m.index whose term ≤ m.logTerm. The
    // leader then skips all entries of conflicting terms in one round trip.
    const hintIndex = Math.min(m.index, this.log.lastIndex());
    const [idx, term] = this.log.findConflictByTerm(hintIndex, m.logTerm);
    resp.index = m.index;
    resp.reject = true;
    resp.rejectHint = idx;
    resp.logTerm = term;
    this.send(resp);
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
    const resp = emptyMessage(MessageType.HeartbeatResp, this.id, m.from, 0);
    resp.context = m.context;
    this.send(resp);
  }

  /** Follower: collect InstallSnapshot chunks; restore on the last one. */
  private handleSnapshotChunk(m: Message): void {
    const chunk = m.snapshot;
    if (!chunk) return;
    const meta = chunk.metadata;
    const ack = (received: number, reject: boolean): void => {
      const resp = emptyMessage(MessageType.SnapResp, this.id, m.from, 0);
      resp.index = received;
      resp.reject = reject;
      resp.rejectHint = meta.index;
      resp.logTerm = meta.term;
      this.send(resp);
    };
    if (meta.index <= this.log.committed) {
      // We have all of it already (we just installed it, or caught up otherwise): say so as
      // etcd does, so the leader ends the transfer instead of sending it again from the start.
      this.incomingSnapshot = undefined;
      const resp = emptyMessage(MessageType.AppResp, this.id, m.from, 0);
      resp.index = this.log.committed;
      this.send(resp);
      return;
    }
    let inc = this.incomingSnapshot;
    if (!inc || inc.index !== meta.index || inc.term !== meta.term || inc.from !== m.from) {
      if (chunk.offset !== 0) {
        ack(0, true); // we have nothing of this snapshot: start over
        return;
      }
      inc = { index: meta.index, term: meta.term, from: m.from, chunks: this.cfg.spoolIncomingSnapshots ? undefined : [], receivedBytes: 0 };
      this.incomingSnapshot = inc;
    }
    if (chunk.offset !== inc.receivedBytes) {
      ack(inc.receivedBytes, chunk.offset > inc.receivedBytes);
      return;
    }
    if (inc.chunks) inc.chunks.push(chunk.data.slice());
    else this.snapshotWrites.push({ metadata: meta, offset: chunk.offset, data: chunk.data });
    inc.receivedBytes += chunk.data.length;
    if (!chunk.done) {
      ack(inc.receivedBytes, false);
      return;
    }
    this.incomingSnapshot = undefined;
    if (inc.receivedBytes !== chunk.totalBytes) {
      // A leader that changed its mind about the size: start over rather than install it.
      ack(0, true);
      return;
    }
    const data: SnapshotData = inc.chunks ? Buffer.concat(inc.chunks) : { external: true, sizeBytes: inc.receivedBytes };
    const snapshot: Snapshot = { metadata: meta, data };
    const resp = emptyMessage(MessageType.AppResp, this.id, m.from, 0);
    if (this.restoreSnapshot(snapshot)) {
      resp.index = this.log.lastIndex();
    } else {
      resp.index = this.log.committed;
    }
    this.send(resp);
  }

  /** HOOK: install a complete snapshot from the leader; false if we already have its entries. */
  protected restoreSnapshot(s: Snapshot): boolean {
    const { index, term } = s.metadata;
    if (index <= this.log.committed) return false;
    if (this.role !== Role.Follower) {
      // Only a follower of the sender's term gets here; defensive: never restore otherwise.
      this.becomeFollower(this.term + 1, NONE);
      return false;
    }
    if (this.log.matchTerm(index, term)) {
      // Our log already contains the snapshot's last entry: keep the entries after it.
      this.log.commitTo(index);
      return false;
    }
    this.log.restore(s);
    this.trk.applyConf(s.metadata.conf, this.log.lastIndex() + 1);
    return true;
  }

  // ---------------------------------------------------------------------------------------
  // Ticks

  tick(): void {
    if (this.role === Role.Leader) this.tickHeartbeat();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.step(emptyMessage(MessageType.Hup, this.id, this.id, 0));
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.cfg.electionTicks) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum) {
        if (!this.trk.quorumActive(this.id)) {
          this.becomeFollower(this.term, NONE);
          return;
        }
        this.forEachPeer((_, pr) => (pr.recentActive = false));
      }
      // A transfer that did not finish within an election timeout is abandoned.
      if (this.leadTransferee !== NONE) this.abortLeaderTransfer();
    }
    if (this.role !== Role.Leader) return;
    if (this.heartbeatElapsed >= this.cfg.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Membership

  /** Apply a committed conf change (called by RawNode.applyConfChange). */
  applyConfChange(cc: ConfChange): ConfState {
    const conf = applyToConfState(this.trk.confState(), cc);
    // New members start at next = lastIndex, so there is one entry to probe them with now.
    this.trk.applyConf(conf, Math.max(this.log.lastIndex(), 1));
    if (this.role === Role.Leader) {
      if (!this.trk.isVoter(this.id)) {
        // Removed or demoted: stop leading; the remaining voters elect a new leader.
        this.becomeFollower(this.term, NONE);
        return conf;
      }
      if (this.leadTransferee !== NONE && !this.trk.isVoter(this.leadTransferee)) this.abortLeaderTransfer();
      // The quorum changed: entries may now be committed.
      if (this.maybeCommit()) this.bcastAppend();
      else this.forEachPeer((id) => this.maybeSendAppend(id, false));
    }
    return conf;
  }
}
