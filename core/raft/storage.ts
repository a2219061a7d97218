/**
 * The read side of stable storage that Raft consults, and MemoryStorage: the embedder's
 * in-memory mirror of what it has made durable. Raft never writes here; the embedder
 * appends after persisting a Ready (see types.ts Ready).
 */
import { encodeConfChange } from './confchange.js';
import { RaftError, invariant } from './errors.js';
import { ConfChangeType, ConfState, Entry, EntryType, HardState, NodeId, Snapshot } from './types.js';

export interface Storage {
  /** Hard state and the configuration as of the applied index the RawNode is started with. */
  initialState(): { hardState: HardState; confState: ConfState };
  /** Entries in [lo, hi), at least one if any exist, at most maxBytes beyond the first. */
  entries(lo: number, hi: number, maxBytes?: number): Entry[];
  /** Term of entry i; throws COMPACTED below firstIndex()-1, UNAVAILABLE above lastIndex(). */
  term(i: number): number;
  firstIndex(): number;
  lastIndex(): number;
  /**
   * The most recent snapshot, covering at least up to firstIndex()-1. May throw
   * SNAPSHOT_TEMPORARILY_UNAVAILABLE while one is being made; Raft then tries again later.
   */
  snapshot(): Snapshot;
}

export function entryBytes(e: Entry): number {
  return e.data.length + 24;
}

/** Cut `ents` so the total stays within maxBytes, always keeping the first entry. */
export function limitSize(ents: Entry[], maxBytes: number | undefined): Entry[] {
  if (maxBytes === undefined || ents.length <= 1) return ents;
  let size = entryBytes(ents[0]!);
  let n = 1;
  for (; n < ents.length; n++) {
    size += entryBytes(ents[n]!);
    if (size > maxBytes) break;
  }
  return n === ents.length ? ents : ents.slice(0, n);
}

export class MemoryStorage implements Storage {
  private hardState: HardState = { term: 0, vote: 0, commit: 0 };
  private snap: Snapshot = { metadata: { index: 0, term: 0, conf: { voters: [], learners: [] } }, data: new Uint8Array(0) };
  /** ents[0] is a dummy standing for the snapshot's last entry (index, term). */
  private ents: Entry[] = [{ index: 0, term: 0, type: EntryType.Normal, data: new Uint8Array(0) }];

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: { ...this.hardState }, confState: this.snap.metadata.conf };
  }

  getHardState(): HardState {
    return { ...this.hardState };
  }

  setHardState(hs: HardState): void {
    this.hardState = { ...hs };
  }

  private get offset(): number {
    return this.ents[0]!.index;
  }

  firstIndex(): number {
    return this.offset + 1;
  }

  lastIndex(): number {
    return this.offset + this.ents.length - 1;
  }

  term(i: number): number {
    const offset = this.offset;
    if (i < offset) throw new RaftError('COMPACTED', `term(${i}) below snapshot ${offset}`);
    if (i - offset >= this.ents.length) throw new RaftError('UNAVAILABLE', `term(${i}) beyond last ${this.lastIndex()}`);
    return this.ents[i - offset]!.term;
  }

  entries(lo: number, hi: number, maxBytes?: number): Entry[] {
    const offset = this.offset;
    if (lo <= offset) throw new RaftError('COMPACTED', `entries(${lo}) below first ${offset + 1}`);
    if (hi > this.lastIndex() + 1) throw new RaftError('UNAVAILABLE', `entries(${lo},${hi}) beyond last ${this.lastIndex()}`);
    return limitSize(this.ents.slice(lo - offset, hi - offset), maxBytes);
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /** Replace everything with a received snapshot (the embedder persisted it). */
  applySnapshot(snap: Snapshot): void {
    if (snap.metadata.index <= this.snap.metadata.index) {
      throw new RaftError('SNAPSHOT_OUT_OF_DATE', `snapshot ${snap.metadata.index} not newer than ${this.snap.metadata.index}`);
    }
    this.snap = snap;
    this.ents = [{ index: snap.metadata.index, term: snap.metadata.term, type: EntryType.Normal, data: new Uint8Array(0) }];
  }

  /** Record a snapshot the application made of its state at `index` (≤ applied). */
  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    if (index <= this.snap.metadata.index) {
      throw new RaftError('SNAPSHOT_OUT_OF_DATE', `snapshot ${index} not newer than ${this.snap.metadata.index}`);
    }
    invariant(index <= this.lastIndex(), `snapshot ${index} beyond last index ${this.lastIndex()}`);
    this.snap = { metadata: { index, term: this.term(index), conf: { voters: [...conf.voters], learners: [...conf.learners] } }, data };
    return this.snap;
  }

  /** Drop entries up to and including `index` (which a snapshot must cover). */
  compact(index: number): void {
    const offset = this.offset;
    if (index <= offset) return;
    invariant(index <= this.lastIndex(), `compact ${index} beyond last ${this.lastIndex()}`);
    const dummy = this.ents[index - offset]!;
    this.ents = [{ index: dummy.index, term: dummy.term, type: EntryType.Normal, data: new Uint8Array(0) }, ...this.ents.slice(index - offset + 1)];
  }

  /** Append persisted entries, truncating any conflicting suffix. */
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const last = entries[entries.length - 1]!.index;
    if (last < first) return; // all already compacted
    const ents = entries[0]!.index < first ? entries.slice(first - entries[0]!.index) : entries;
    const at = ents[0]!.index - this.offset;
    invariant(at <= this.ents.length, `append gap: first ${ents[0]!.index}, last ${this.lastIndex()}`);
    this.ents = this.ents.slice(0, at).concat(ents);
  }
}

/**
 * Initialise the storage of a brand-new cluster member that is one of the founding voters:
 * entries 1..n are AddVoter changes at term 1, already committed, as etcd-io/raft's
 * Bootstrap does. Joiners start empty and learn the configuration from the leader's log or
 * snapshot, so every member derives the same configuration from the same entries.
 */
export function bootstrap(storage: MemoryStorage, voters: NodeId[]): void {
  invariant(storage.lastIndex() === 0, 'bootstrap on non-empty storage');
  const { entries, hardState } = bootstrapEntries(voters.map((nodeId) => ({ nodeId })));
  storage.append(entries);
  storage.setHardState(hardState);
}

/** The entries and hard state that found a cluster (for any storage). */
export function bootstrapEntries(voters: Array<{ nodeId: NodeId; context?: Uint8Array }>): { entries: Entry[]; hardState: HardState } {
  invariant(voters.length > 0, 'bootstrap with no voters');
  const entries: Entry[] = voters.map((v, i) => ({
    term: 1,
    index: i + 1,
    type: EntryType.ConfChange,
    data: encodeConfChange({ type: ConfChangeType.AddVoter, nodeId: v.nodeId, context: v.context }),
  }));
  return { entries, hardState: { term: 1, vote: 0, commit: entries.length } };
}
