/**
 * Raft's safety properties (Raft paper, Figure 3), checked online from what the nodes
 * persist, send and apply:
 *  - election safety: at most one leader per term (from leader-only messages and role changes);
 *  - log matching: an (index, term) pair names one entry, and one predecessor term, across all
 *    logs — by induction, logs that share an entry share the whole prefix; terms never
 *    decrease along a log;
 *  - leader completeness: an entry known committed in a term below T is in the log of the
 *    leader of T;
 *  - state machine safety: no two nodes apply different entries at one index, and each node
 *    applies indexes in order without gaps.
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
  private readonly leaderLogChecked = new Set<string>();

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
      if (b === undefined || term < b) this.commitTermBound[i] = term;
      const t = termAt(i);
      if (t === undefined) continue;
      const known = this.committedTerm[i];
      if (known === undefined) this.committedTerm[i] = t;
      else if (known !== t) {
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

  /** Once per (leader, term): every entry known committed in an earlier term must be in its log. */
  checkLeaderLog(node: NodeId, term: number, log: LogView, atMs: number): void {
    const id = `${node}:${term}`;
    if (this.leaderLogChecked.has(id)) return;
    this.leaderLogChecked.add(id);
    for (let i = Math.max(1, log.firstIndex); i <= this.maxCommitKnown; i++) {
      const bound = this.commitTermBound[i];
      const committedTerm = this.committedTerm[i] ?? this.appliedTerm[i];
      if (bound === undefined || bound >= term || committedTerm === undefined) continue;
      if (i > log.lastIndex) {
        this.report({
          invariant: 'leader-completeness',
          message: `leader ${node} of term ${term} lacks committed index ${i} (its log ends at ${log.lastIndex})`,
          atMs,
          nodes: [node],
        });
        return;
      }
      const have = log.termAt(i);
      if (have !== committedTerm) {
        this.report({
          invariant: 'leader-completeness',
          message: `leader ${node} of term ${term} has term ${have} at committed index ${i}, committed entry has term ${committedTerm}`,
          atMs,
          nodes: [node],
        });
        return;
      }
    }
  }
}
