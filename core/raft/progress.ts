/**
 * The leader's view of each follower (Progress) and of the configuration (ProgressTracker):
 * flow control (probe / replicate / snapshot), the in-flight window that pipelines
 * AppendEntries, vote tallying and quorum arithmetic. No messages are built here.
 */
import { invariant } from './errors.js';
import { ConfState, NodeId, Snapshot } from './types.js';

export enum ProgressState {
  /** Unknown match: send one AppendEntries per heartbeat interval until it lands. */
  Probe = 'probe',
  /** Known match: stream entries optimistically, up to the in-flight window. */
  Replicate = 'replicate',
  /** The follower needs a snapshot; entries wait until it is installed. */
  Snapshot = 'snapshot',
}

/** Messages in flight when replication to a follower (re)starts; see Inflights.window. */
export const RESTART_WINDOW = 4;

/** Ring buffer of the last index of each AppendEntries in flight to one follower. */
export class Inflights {
  private buf: number[];
  private start = 0;
  count = 0;
  /**
   * The window in use, at most `capacity`: back to RESTART_WINDOW messages when replication
   * restarts, doubled by each acknowledgement (so full again after six). A network that reorders
   * turns a full window of one-entry appends into a mix of accepts and rejects; each reject
   * sends the leader back to probing and each accept after it would resend the whole window, so
   * a follower catching up N entries cost about N × capacity messages (the simulator's seeds
   * 7301976 and 7301983: over 50,000 a second). The restart at a few messages is what bounds
   * each flap.
   */
  private window: number;
  constructor(readonly capacity: number) {
    invariant(capacity > 0, 'inflight window must be positive');
    this.buf = new Array<number>(capacity).fill(0);
    this.window = capacity;
  }
  /** Replication (re)starts: a few messages in flight until the follower acknowledges. */
  restartWindow(): void {
    this.window = Math.min(this.capacity, RESTART_WINDOW);
  }
  /** An acknowledgement: the window doubles, up to the capacity. */
  growWindow(): void {
    this.window = Math.min(this.capacity, this.window * 2);
  }
  add(lastIndex: number): void {
    invariant(!this.full(), 'inflights overflow');
    this.buf[(this.start + this.count) % this.capacity] = lastIndex;
    this.count++;
  }
  /** Release every message whose last index is ≤ `index` (acknowledged). */
  freeLE(index: number): void {
    while (this.count > 0 && this.buf[this.start]! <= index) {
      this.start = (this.start + 1) % this.capacity;
      this.count--;
    }
  }
  freeFirstOne(): void {
    if (this.count === 0) return;
    this.start = (this.start + 1) % this.capacity;
    this.count--;
  }
  full(): boolean {
    return this.count >= this.window;
  }
  reset(): void {
    this.start = 0;
    this.count = 0;
  }
}

/** Snapshot transfer in progress to one follower, sent chunk by chunk. */
export interface SnapshotTransfer {
  snapshot: Snapshot;
  /** Bytes the follower has acknowledged. */
  ackedBytes: number;
  /** Bytes sent so far (acknowledged or on their way). */
  sentBytes: number;
  /** Heartbeat responses since the last acknowledged chunk: the chunk in flight is resent after a few. */
  heartbeatsWithoutProgress: number;
  /** Heartbeats sent to the follower and not answered yet. */
  heartbeatsUnanswered: number;
  /**
   * Answers still to come to heartbeats sent before the last chunk: they say nothing about it.
   * The link is first in, first out, so an answer to a heartbeat sent after a chunk comes after
   * the chunk's own acknowledgement; only those count toward a resend. (Counting every answer
   * resent chunks still crossing a slow link: a transfer at 1 MB/s sent its bytes 3.5 times.)
   */
  answersBeforeLastChunk: number;
  /**
   * The byte a rejection made us go back to, until a chunk past it is acknowledged: the other
   * chunks of the window, still on their way behind the lost one, are rejected too, and each
   * rejection used to send the window again.
   */
  rewoundTo: number;
}

export class Progress {
  match = 0;
  next: number;
  state = ProgressState.Probe;
  /** Probe state: an AppendEntries is outstanding; wait for a response or heartbeat. */
  probeSent = false;
  /** Heard from within the current election timeout (CheckQuorum). */
  recentActive = false;
  pendingSnapshot = 0;
  transfer: SnapshotTransfer | undefined;
  readonly inflights: Inflights;

  constructor(
    next: number,
    maxInflight: number,
    public isLearner: boolean,
  ) {
    this.next = next;
    this.inflights = new Inflights(maxInflight);
  }

  private resetState(state: ProgressState): void {
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.transfer = undefined;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    // Coming back from a snapshot: the follower has at least the snapshot's entries.
    if (this.state === ProgressState.Snapshot) {
      const pending = this.pendingSnapshot;
      this.resetState(ProgressState.Probe);
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState(ProgressState.Probe);
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState(ProgressState.Replicate);
    this.inflights.restartWindow();
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshot: Snapshot): void {
    this.resetState(ProgressState.Snapshot);
    this.pendingSnapshot = snapshot.metadata.index;
    this.transfer = { snapshot, ackedBytes: 0, sentBytes: 0, heartbeatsWithoutProgress: 0, heartbeatsUnanswered: 0, answersBeforeLastChunk: 0, rewoundTo: -1 };
    this.next = snapshot.metadata.index + 1;
  }

  /** An AppendEntries ack for index n: returns false if it is stale. */
  maybeUpdate(n: number): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /** Record an AppendEntries sent with entries up to `last` (optimistic in Replicate). */
  sentEntries(last: number, entryCount: number): void {
    if (this.state === ProgressState.Replicate) {
      if (entryCount > 0) {
        this.next = last + 1;
        this.inflights.add(last);
      }
    } else if (this.state === ProgressState.Probe) {
      this.probeSent = true;
    }
  }

  /**
   * A rejection of the AppendEntries at `rejected`; `matchHint` is the follower's guess of
   * where the logs may match. Returns false if the rejection is stale.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === ProgressState.Replicate) {
      if (rejected <= this.match) return false; // stale: we already know it matches there
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false; // not the probe we sent last
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1, 1);
    this.probeSent = false;
    return true;
  }

  isPaused(): boolean {
    switch (this.state) {
      case ProgressState.Probe:
        return this.probeSent;
      case ProgressState.Replicate:
        return this.inflights.full();
      case ProgressState.Snapshot:
        return true;
    }
  }
}

/** Majority of a set of voters; 0 voters means no quorum is possible. */
export function quorumSize(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

export enum VoteResult {
  Pending = 'pending',
  Won = 'won',
  Lost = 'lost',
}

export class ProgressTracker {
  progress = new Map<NodeId, Progress>();
  voters: NodeId[] = [];
  learners: NodeId[] = [];
  votes = new Map<NodeId, boolean>();
  private matchScratch = new Float64Array(8);

  constructor(readonly maxInflight: number) {}

  confState(): ConfState {
    return { voters: [...this.voters], learners: [...this.learners] };
  }

  /** Install a configuration; existing progress is kept for members that remain. */
  applyConf(conf: ConfState, nextIndex: number): void {
    this.voters = [...conf.voters].sort((a, b) => a - b);
    this.learners = [...conf.learners].sort((a, b) => a - b);
    const members = new Set([...this.voters, ...this.learners]);
    for (const id of [...this.progress.keys()]) if (!members.has(id)) this.progress.delete(id);
    for (const id of members) {
      const learner = this.learners.includes(id);
      const pr = this.progress.get(id);
      if (pr) pr.isLearner = learner;
      else this.progress.set(id, new Progress(nextIndex, this.maxInflight, learner));
    }
  }

  isVoter(id: NodeId): boolean {
    return this.voters.includes(id);
  }

  /** The largest index acknowledged by a majority of voters. */
  committedIndex(): number {
    const n = this.voters.length;
    if (n === 0) return 0;
    // Called for every append response: an insertion sort into a kept buffer, no allocation.
    if (this.matchScratch.length < n) this.matchScratch = new Float64Array(n);
    const matches = this.matchScratch;
    for (let i = 0; i < n; i++) {
      const m = this.progress.get(this.voters[i]!)?.match ?? 0;
      let j = i;
      for (; j > 0 && matches[j - 1]! < m; j--) matches[j] = matches[j - 1]!;
      matches[j] = m;
    }
    return matches[quorumSize(n) - 1]!;
  }

  resetVotes(): void {
    this.votes.clear();
  }

  recordVote(id: NodeId, granted: boolean): void {
    if (!this.votes.has(id)) this.votes.set(id, granted);
  }

  tallyVotes(): { granted: number; rejected: number; result: VoteResult } {
    let granted = 0;
    let rejected = 0;
    for (const id of this.voters) {
      const v = this.votes.get(id);
      if (v === true) granted++;
      else if (v === false) rejected++;
    }
    const q = quorumSize(this.voters.length);
    const result = granted >= q ? VoteResult.Won : this.voters.length - rejected < q ? VoteResult.Lost : VoteResult.Pending;
    return { granted, rejected, result };
  }

  /** CheckQuorum: did a majority of voters talk to us in the last election timeout? */
  quorumActive(self: NodeId): boolean {
    let active = 0;
    for (const id of this.voters) {
      if (id === self || this.progress.get(id)?.recentActive) active++;
    }
    return active >= quorumSize(this.voters.length);
  }
}
