/**
 * Raft's safety properties (Raft paper, Figure 3), checked online from what the nodes
 * persist, send and apply:
 *  - election safety: at most one leader per term (from leader-only messages and role changes);
 *  - log matching: an (index, term) pair names one entry, and one predecessor term, across all
 *    logs — by induction, logs that share an entry share the whole prefix; terms never
 *    decrease along a log;
 *  - leader completeness: an entry known committed in a term below T is in the log of the
 *    leader of T;
 *  - state machine safety: no two nodes apply different entries at one index, each node
 *    applies indexes in order without gaps, and no two nodes hold different states at one
 *    applied index (compared where snapshots are made or installed, and at the end).
 * Not responsible for liveness or client-visible behaviour (see liveness in cluster.ts and
 * linearizability.ts).
 */
import type { Entry, NodeId } from '../raft/types.js';
import { fnv1a } from './hash.js';

export type Invariant =
  | 'election-safety'
  | 'log-matching'
  | 'leader-completeness'
  | 'state-machine-safety'
  | 'linearizability'
  | 'liveness'
  /** A feedback loop of messages (see MAX_PEER_MESSAGES_PER_VIRTUAL_SECOND in cluster.ts). */
  | 'message-storm'
  | 'exception';

export interface Violation {
  invariant: Invariant;
  message: string;
  atMs: number;
  nodes: NodeId[];
  /** For linearizability: the key whose history is not linearizable. */
  key?: string;
  detail?: string[];
}

interface EntryRecord {
  term: number;
  hash: number;
  /** Term of the entry before it in the log; -1 when unknown (it was compacted). */
  prevTerm: number;
}

/** A read-only view of a node's whole log (durable and not yet durable). */
export interface LogView {
  /** Index of the first entry held; entries below are covered by the snapshot. */
  firstIndex: number;
  lastIndex: number;
  termAt(index: number): number;
}

/** A leader's log as it was when it won its term: runs of equal terms, so a copy stays small. */
interface LeaderLogRecord {
  node: NodeId;
  term: number;
  firstIndex: number;
  lastIndex: number;
  /** runStart[k] is the first index of a run of entries of term runTerm[k]. */
  runStart: number[];
  runTerm: number[];
  /** Reported already: one leader-completeness violation per leader is the story. */
  violated: boolean;
}

function recordLeaderLog(node: NodeId, term: number, log: LogView): LeaderLogRecord {
  const rec: LeaderLogRecord = { node, term, firstIndex: log.firstIndex, lastIndex: log.lastIndex, runStart: [], runTerm: [], violated: false };
  for (let i = Math.max(1, log.firstIndex); i <= log.lastIndex; i++) {
    const t = log.termAt(i);
    if (rec.runTerm.length === 0 || rec.runTerm[rec.runTerm.length - 1] !== t) {
      rec.runStart.push(i);
      rec.runTerm.push(t);
    }
  }
  return rec;
}

function recordedTermAt(rec: LeaderLogRecord, index: number): number {
  let lo = 0;
  let hi = rec.runStart.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (rec.runStart[mid]! <= index) lo = mid;
    else hi = mid - 1;
  }
  return rec.runTerm[lo] ?? -1;
}

/** The checker stops recording after this many violations: the first ones are the story. */
export const MAX_VIOLATIONS_RECORDED = 20;

export function entryHash(e: Entry): number {
  return fnv1a(e.data, (0x811c9dc5 ^ (e.type + 1)) >>> 0);
}

export class RaftSafetyChecker {
  readonly violations: Violation[] = [];
  private readonly leaderOfTerm = new Map<number, NodeId>();
  private readonly byIndex: (EntryRecord[] | undefined)[] = [];
  /** What was applied at each index: term and content hash of the entry. */
  private readonly appliedTerm: number[] = [];
  private readonly appliedHash: number[] = [];
  /** The term of the entry committed at each index, as first seen committed by any node. */
  private readonly committedTerm: number[] = [];
  /** commitTermBound[i]: the lowest term in which some node knew index i committed. */
  private readonly commitTermBound: number[] = [];
  private maxCommitKnown = 0;
  private readonly commitSeenByNode = new Map<NodeId, number>();
  /** The first state-machine hash observed at each applied index, and whose it was. */
  private readonly stateAt = new Map<number, { node: NodeId; hash: number }>();
  private readonly leaderLogChecked = new Set<string>();
  /**
   * Every leader's log at its election: a commit from an earlier term may be learned only after
   * a later term's leader was elected, and must then be checked against that leader too.
   */
  private readonly leaderLogs: LeaderLogRecord[] = [];

  report(v: Violation): void {
    if (this.violations.length < MAX_VIOLATIONS_RECORDED) this.violations.push(v);
  }

  leaderOf(term: number): NodeId | undefined {
    return this.leaderOfTerm.get(term);
  }

  /** `node` acted as leader of `term` (became leader, or sent a leader-only message). */
  observeLeader(node: NodeId, term: number, atMs: number): void {
    const known = this.leaderOfTerm.get(term);
    if (known === undefined) this.leaderOfTerm.set(term, node);
    else if (known !== node) {
      this.report({ invariant: 'election-safety', message: `nodes ${known} and ${node} both leader of term ${term}`, atMs, nodes: [known, node] });
    }
  }

  /**
   * `node` wrote `entries` to its log; `prevTerm` is the term of the entry just before the
   * first one (0 at the start of the log, -1 if unknown).
   */
  observeAppend(node: NodeId, entries: readonly Entry[], prevTerm: number, atMs: number): void {
    let prev = prevTerm;
    for (let k = 0; k < entries.length; k++) {
      const e = entries[k]!;
      if (k > 0 && e.index !== entries[k - 1]!.index + 1) {
        this.report({ invariant: 'log-matching', message: `node ${node} wrote index ${e.index} after ${entries[k - 1]!.index}`, atMs, nodes: [node] });
      }
      if (prev >= 0 && e.term < prev) {
        this.report({ invariant: 'log-matching', message: `node ${node}: term ${e.term} at index ${e.index} follows term ${prev}`, atMs, nodes: [node] });
      }
      const hash = entryHash(e);
      let recs = this.byIndex[e.index];
      if (recs === undefined) this.byIndex[e.index] = recs = [];
      let rec: EntryRecord | undefined;
      for (const r of recs) if (r.term === e.term) rec = r;
      if (rec === undefined) recs.push({ term: e.term, hash, prevTerm: prev });
      else {
        if (rec.hash !== hash) {
          this.report({ invariant: 'log-matching', message: `node ${node} holds a different entry at index ${e.index} term ${e.term} than another node`, atMs, nodes: [node] });
        }
        if (prev >= 0 && rec.prevTerm >= 0 && rec.prevTerm !== prev) {
          this.report({
            invariant: 'log-matching',
            message: `entry (index ${e.index}, term ${e.term}) follows term ${prev} on node ${node} but term ${rec.prevTerm} elsewhere`,
            atMs,
            nodes: [node],
          });
        } else if (rec.prevTerm < 0) rec.prevTerm = prev;
      }
      prev = e.term;
    }
  }

  /**
   * `node`, in `term`, holds commit index `commit` (from its hard state); `termAt` reads the
   * term of an entry in its log (undefined when compacted). Two nodes that consider different
   * entries committed at one index violate state machine safety even before either applies.
   */
  observeCommit(node: NodeId, term: number, commit: number, termAt: (index: number) => number | undefined, atMs: number): void {
    const seen = this.commitSeenByNode.get(node) ?? 0;
    if (commit <= seen) return;
    for (let i = seen + 1; i <= commit; i++) {
      const b = this.commitTermBound[i];
      const boundLowered = b === undefined || term < b;
      if (boundLowered) this.commitTermBound[i] = term;
      const t = termAt(i);
      const known = this.committedTerm[i];
      if (t !== undefined && known === undefined) this.committedTerm[i] = t;
      // Newly known committed (or committed earlier than known): leaders already elected in
      // later terms must hold it.
      if (boundLowered || (t !== undefined && known === undefined)) this.recheckLeaders(i, atMs);
      if (t === undefined) continue;
      if (known !== undefined && known !== t) {
        this.report({
          invariant: 'state-machine-safety',
          message: `node ${node} (term ${term}) considers the term-${t} entry at index ${i} committed; another node committed a term-${known} entry there`,
          atMs,
          nodes: [node],
        });
      }
    }
    this.commitSeenByNode.set(node, commit);
    if (commit > this.maxCommitKnown) this.maxCommitKnown = commit;
  }

  /** `node` restarted: its commit index starts again from what it persisted. */
  forgetNode(node: NodeId): void {
    this.commitSeenByNode.delete(node);
  }

  /**
   * `node`'s whole state machine, as of `appliedIndex`, hashes to `stateHash` (taken where a
   * node creates or installs a snapshot, and at the end of a run). Applying equal entries
   * must give equal states: this catches a state that no entry-by-entry check sees, such as
   * one installed from a damaged snapshot.
   */
  observeState(node: NodeId, appliedIndex: number, stateHash: number, atMs: number): void {
    const known = this.stateAt.get(appliedIndex);
    if (known === undefined) this.stateAt.set(appliedIndex, { node, hash: stateHash });
    else if (known.hash !== stateHash) {
      this.report({
        invariant: 'state-machine-safety',
        message: `node ${node}'s state machine at applied index ${appliedIndex} differs from node ${known.node}'s at that index`,
        atMs,
        nodes: [known.node, node],
      });
    }
  }

  /** `node` applied `entry` to its state machine. */
  observeApply(node: NodeId, entry: Entry, atMs: number): void {
    const hash = entryHash(entry);
    const t = this.appliedTerm[entry.index];
    if (t === undefined) {
      this.appliedTerm[entry.index] = entry.term;
      this.appliedHash[entry.index] = hash;
    } else if (t !== entry.term || this.appliedHash[entry.index] !== hash) {
      this.report({
        invariant: 'state-machine-safety',
        message: `node ${node} applied (index ${entry.index}, term ${entry.term}) but another node applied term ${t} there${t === entry.term ? ' with other content' : ''}`,
        atMs,
        nodes: [node],
      });
    }
  }

  /**
   * Once per (leader, term): every entry known committed in an earlier term must be in its log.
   * The log is recorded, so commits learned later are checked against it too (observeCommit).
   */
  checkLeaderLog(node: NodeId, term: number, log: LogView, atMs: number): void {
    const id = `${node}:${term}`;
    if (this.leaderLogChecked.has(id)) return;
    this.leaderLogChecked.add(id);
    const rec = recordLeaderLog(node, term, log);
    this.leaderLogs.push(rec);
    for (let i = Math.max(1, log.firstIndex); i <= this.maxCommitKnown && !rec.violated; i++) this.checkLeaderHolds(rec, i, atMs);
  }

  private recheckLeaders(index: number, atMs: number): void {
    for (const rec of this.leaderLogs) if (!rec.violated) this.checkLeaderHolds(rec, index, atMs);
  }

  /** The leader `rec` must hold the entry at `index` if it is known committed in an earlier term. */
  private checkLeaderHolds(rec: LeaderLogRecord, i: number, atMs: number): void {
    const bound = this.commitTermBound[i];
    const committedTerm = this.committedTerm[i] ?? this.appliedTerm[i];
    if (bound === undefined || bound >= rec.term || committedTerm === undefined || i < rec.firstIndex) return;
    const { node, term } = rec;
    if (i > rec.lastIndex) {
      rec.violated = true;
      this.report({
        invariant: 'leader-completeness',
        message: `leader ${node} of term ${term} lacks committed index ${i} (its log ends at ${rec.lastIndex})`,
        atMs,
        nodes: [node],
      });
      return;
    }
    const have = recordedTermAt(rec, i);
    if (have !== committedTerm) {
      rec.violated = true;
      this.report({
        invariant: 'leader-completeness',
        message: `leader ${node} of term ${term} has term ${have} at committed index ${i}, committed entry has term ${committedTerm}`,
        atMs,
        nodes: [node],
      });
    }
  }
}
