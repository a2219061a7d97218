/**
 * The catalogue of deliberately wrong Raft variants. They exist only so the simulator can
 * prove its checkers have teeth: a test asserts each is caught within a bounded number of
 * seeds. Each variant overrides one HOOK method of core/raft's Raft (or a driver rule);
 * nothing outside core/sim and its tests may import this file.
 */
import { Raft } from '../raft/raft.js';
import { Message, MessageType, Snapshot } from '../raft/types.js';
import type { Invariant, Violation } from './safety.js';

export interface BugVariant {
  name: string;
  description: string;
  /**
   * The checkers meant to catch it. A failure of another kind (a message storm, an exception)
   * is a symptom, not proof that a checker has teeth for this bug.
   */
  caughtBy: readonly Invariant[];
  /** An exception from Raft's own invariant assertions (RaftError INVARIANT) counts as a catch too. */
  raftInvariantCatches?: boolean;
  /** Replaces the Raft class of every node. */
  raftClass?: typeof Raft;
  /** The driver sends a Ready's messages before its fsync completes (acks what a crash loses). */
  sendBeforeFsync?: boolean;
  /** Simulator options that give the bug room to show (merged into the run's options). */
  options?: Record<string, unknown>;
}

/** Counts replicas of entries from earlier terms to commit them (Raft paper, Figure 8). */
class CommitOldTermEntries extends Raft {
  protected override maybeCommit(): boolean {
    const before = this.log.committed;
    const quorumIndex = this.trk.committedIndex();
    if (quorumIndex <= before) return false;
    this.log.commitTo(quorumIndex);
    this.onCommitAdvanced(before);
    return true;
  }
}

/** Grants votes without checking the candidate's log is at least as up to date (§5.4.1). */
class VoteWithoutLogCheck extends Raft {
  protected override candidateLogOk(_m: Message): boolean {
    return true;
  }
}

/**
 * A follower that receives a matching AppendEntries drops every entry after the message's
 * last entry, even though they matched — so a stale (reordered) message erases entries the
 * follower has already acknowledged.
 */
class TruncateOnStaleAppend extends Raft {
  protected override handleAppendEntries(m: Message): void {
    const end = m.index + m.entries.length;
    if (m.entries.length > 0 && m.index >= this.log.committed && end < this.log.lastIndex() && this.log.matchTerm(m.index, m.logTerm)) {
      this.log.append(m.entries.map((e) => ({ ...e })));
    }
    super.handleAppendEntries(m);
  }
}

/** Serves reads at the local commit index without confirming leadership (no ReadIndex round). */
class ReadWithoutQuorumCheck extends Raft {
  protected override handleReadIndex(m: Message): void {
    this.respondToReadIndex(m, this.log.committed);
  }
}

/**
 * Installs a snapshot by discarding the whole log even when the follower holds the
 * snapshot's last entry and acknowledged entries after it.
 */
class SnapshotDiscardsLog extends Raft {
  protected override restoreSnapshot(s: Snapshot): boolean {
    if (s.metadata.index <= this.log.committed) return false;
    this.log.restore(s);
    this.trk.applyConf(s.metadata.conf, this.log.lastIndex() + 1);
    return true;
  }
}

/**
 * Marks every empty append "commit only", even one sent to a follower whose acknowledgement of
 * earlier entries was lost: the follower accepts it and stays silent, so the leader never learns
 * that the follower holds those entries until a later write carries entries again.
 */
class SilenceEveryEmptyAppend extends Raft {
  protected override send(m: Message): void {
    if (m.type === MessageType.App && m.entries.length === 0) m.commitOnly = true;
    super.send(m);
  }
}

export const BUGS: BugVariant[] = [
  {
    name: 'commit-old-term',
    caughtBy: ['leader-completeness', 'state-machine-safety', 'log-matching', 'linearizability'],
    description: 'commits entries of an earlier term by counting replicas (Figure 8)',
    raftClass: CommitOldTermEntries,
    // One entry per append and the scripted Figure-8 schedule: random faults alone make the
    // needed leader changes (2% of seeds) too rare.
    options: { maxSizePerMsgBytes: 1, figure8MeanIntervalMs: 2000 },
  },
  {
    name: 'vote-without-log-check',
    caughtBy: ['leader-completeness', 'state-machine-safety', 'log-matching', 'linearizability'],
    description: 'grants votes without the log up-to-date check',
    raftClass: VoteWithoutLogCheck,
  },
  {
    name: 'truncate-on-stale-append',
    caughtBy: ['leader-completeness', 'state-machine-safety', 'log-matching', 'linearizability'],
    description: 'a follower truncates acknowledged entries on a stale AppendEntries',
    raftClass: TruncateOnStaleAppend,
  },
  {
    name: 'read-without-readindex',
    caughtBy: ['linearizability'],
    description: 'a (possibly deposed) leader serves reads without confirming leadership',
    raftClass: ReadWithoutQuorumCheck,
  },
  {
    name: 'ack-before-fsync',
    caughtBy: ['election-safety', 'leader-completeness', 'state-machine-safety', 'log-matching', 'linearizability'],
    description: 'messages (acks, votes) are sent before the fsync they depend on completes',
    sendBeforeFsync: true,
  },
  {
    name: 'snapshot-discards-log',
    caughtBy: ['leader-completeness', 'state-machine-safety', 'log-matching', 'linearizability'],
    // Seeds 1-100 (2026-12-08): only Raft's own assertion `slice(i, i+1) beyond last` catches it
    // (seeds 66, 74, 97), never a data-safety checker.
    raftInvariantCatches: true,
    description: 'installing a snapshot discards acknowledged entries after it',
    raftClass: SnapshotDiscardsLog,
    // Frequent snapshots with no log kept behind them, so followers install them often.
    options: { snapshotEveryEntries: 10, keepEntriesAfterSnapshot: 0, maxSizePerMsgBytes: 1 },
  },
  {
    name: 'silence-every-empty-append',
    caughtBy: ['liveness'],
    description: 'followers do not answer any empty append, so a lost ack is never made good without a write',
    raftClass: SilenceEveryEmptyAppend,
  },
];

/** `v` is a catch of `bug` by a checker meant for it (see caughtBy). */
export function isIntendedCatch(bug: BugVariant, v: Violation): boolean {
  if (bug.caughtBy.includes(v.invariant)) return true;
  return bug.raftInvariantCatches === true && v.invariant === 'exception' && v.message.startsWith('RaftError: INVARIANT: ');
}

export function findBug(name: string): BugVariant | undefined {
  return BUGS.find((b) => b.name === name);
}
