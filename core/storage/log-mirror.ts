/**
 * The in-memory mirror of what RaftLogStore has made durable: hard state, the compaction
 * point, the entries after it and the snapshot's metadata. It answers Raft's Storage reads
 * synchronously; it changes only after a batch is fsynced, so Raft never reads an entry that
 * a crash could take back. Snapshot data is not held here: Raft gets an external snapshot
 * (its size) and the embedder reads the file chunk by chunk as it is sent.
 */
import { RaftError } from '../raft/errors.js';
import { limitSize, type Storage } from '../raft/storage.js';
import type { ConfState, Entry, HardState, Snapshot, SnapshotMetadata } from '../raft/types.js';
import { StorageError } from './errors.js';

export const EMPTY_SNAPSHOT_METADATA: SnapshotMetadata = Object.freeze({
  index: 0,
  term: 0,
  conf: Object.freeze({ voters: [], learners: [] }) as unknown as ConfState,
});

/** Index and term of the last entry dropped from the log (the snapshot's last entry, or 0/0). */
export interface LogOffset {
  index: number;
  term: number;
}

export class LogMirror implements Storage {
  private hard: HardState = { term: 0, vote: 0, commit: 0 };
  private offset: LogOffset = { index: 0, term: 0 };
  private ents: Entry[] = [];
  private snapMeta: SnapshotMetadata = EMPTY_SNAPSHOT_METADATA;

  /**
   * @param snapshotSizeBytes the current snapshot file's size.
   * @param snapshotNeeded asks the embedder for a snapshot reaching the log's start (the log
   *   was compacted beyond the last one); snapshot() reports it unavailable until then.
   */
  constructor(
    private readonly snapshotSizeBytes: () => number,
    private readonly snapshotNeeded: () => void = () => undefined,
  ) {}

  // ------------------------------------------------------------ Storage (Raft's reads)

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: { ...this.hard }, confState: this.snapMeta.conf };
  }

  firstIndex(): number {
    return this.offset.index + 1;
  }

  lastIndex(): number {
    return this.offset.index + this.ents.length;
  }

  term(i: number): number {
    if (i < this.offset.index) throw new RaftError('COMPACTED', `term(${i}) below first ${this.firstIndex()}`);
    if (i === this.offset.index) return this.offset.term;
    if (i > this.lastIndex()) throw new RaftError('UNAVAILABLE', `term(${i}) beyond last ${this.lastIndex()}`);
    return this.ents[i - this.offset.index - 1]!.term;
  }

  entries(lo: number, hi: number, maxBytes?: number): Entry[] {
    if (lo <= this.offset.index) throw new RaftError('COMPACTED', `entries(${lo}) below first ${this.firstIndex()}`);
    if (hi > this.lastIndex() + 1) throw new RaftError('UNAVAILABLE', `entries(${lo},${hi}) beyond last ${this.lastIndex()}`);
    const base = this.offset.index + 1;
    return limitSize(this.ents.slice(lo - base, hi - base), maxBytes);
  }

  /** The current snapshot, external: its bytes stay in the file (RaftLogStore.readSnapshotChunk). */
  snapshot(): Snapshot {
    if (this.snapMeta.index < this.offset.index) {
      // The log was compacted beyond the last snapshot (the applied state, durable, covers
      // it): a follower that needs one gets a fresh snapshot once the embedder has made it.
      this.snapshotNeeded();
      throw new RaftError('SNAPSHOT_TEMPORARILY_UNAVAILABLE', `no snapshot reaches the log's start at ${this.offset.index + 1}`);
    }
    if (this.snapMeta.index === 0) return { metadata: this.snapMeta, data: new Uint8Array(0) };
    return { metadata: this.snapMeta, data: { external: true, sizeBytes: this.snapshotSizeBytes() } };
  }

  // ------------------------------------------------------------ state for the store

  hardState(): HardState {
    return { ...this.hard };
  }

  snapshotMetadata(): SnapshotMetadata {
    return this.snapMeta;
  }

  logOffset(): LogOffset {
    return { ...this.offset };
  }

  /** Number of entries held in memory. */
  get entryCount(): number {
    return this.ents.length;
  }

  // ------------------------------------------------------------ updates after a durable write

  setHardState(h: HardState): void {
    this.hard = { ...h };
  }

  /** Appends entries that follow (or overwrite part of) the log, dropping any suffix after them. */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    let first = entries[0]!.index;
    let list = entries;
    if (first <= this.offset.index) {
      list = entries.slice(this.offset.index + 1 - first);
      if (list.length === 0) return;
      first = list[0]!.index;
    }
    if (first > this.lastIndex() + 1) {
      throw new StorageError('ERR_INVALID_ARGUMENT', `append at ${first} leaves a gap after ${this.lastIndex()}`);
    }
    this.ents.length = first - this.offset.index - 1;
    for (const e of list) this.ents.push(e);
  }

  /** A snapshot from the leader replaces the whole log. */
  applySnapshot(meta: SnapshotMetadata): void {
    this.snapMeta = meta;
    this.offset = { index: meta.index, term: meta.term };
    this.ents = [];
  }

  /** A snapshot of the local state machine: the log stays until compact(). */
  setSnapshot(meta: SnapshotMetadata): void {
    this.snapMeta = meta;
  }

  /** Drops entries up to and including `offset.index`. */
  compact(offset: LogOffset): void {
    if (offset.index <= this.offset.index) return;
    this.ents = this.ents.slice(offset.index - this.offset.index);
    this.offset = { ...offset };
  }

  /** Restores state loaded at open. */
  load(state: { hard: HardState; offset: LogOffset; entries: Entry[]; snapshot: SnapshotMetadata }): void {
    this.hard = { ...state.hard };
    this.offset = { ...state.offset };
    this.ents = state.entries;
    this.snapMeta = state.snapshot;
  }
}
