/**
 * The simulated disk of one node: what Raft's embedder has written versus what an fsync has
 * made durable. A crash keeps only the durable image (hard state, snapshot, log entries) and
 * loses every write not yet covered by a completed fsync. An fsync covers the writes issued
 * before it began and takes virtual time (fsyncLatencyMs), so a crash can land while one is
 * in flight.
 *
 * Not responsible for scheduling: the node driver asks for a latency, schedules the
 * completion on the event queue, and ignores completions that belong to a previous life.
 */
import { snapshotSizeBytes, type Entry, type HardState, type Snapshot } from '../raft/types.js';
import { cloneEntries, cloneHardState, cloneSnapshot } from './clone.js';
import { SimError } from './errors.js';
import type { Prng } from './prng.js';

export type DiskWrite =
  | { kind: 'hardState'; hardState: HardState }
  /** Log entries; an entry at an index already on disk replaces it and everything after. */
  | { kind: 'append'; entries: Entry[] }
  /** A snapshot received from the leader: replaces the whole log. */
  | { kind: 'installSnapshot'; snapshot: Snapshot }
  /** The application's own snapshot: the log is kept until a compact. */
  | { kind: 'saveSnapshot'; snapshot: Snapshot }
  /** Drop log entries up to and including `index`, which the durable snapshot must cover. */
  | { kind: 'compact'; index: number };

/** What survives a crash. entries[k].index === offset + 1 + k. */
export interface DiskImage {
  hardState: HardState;
  snapshot: Snapshot | undefined;
  offset: number;
  entries: Entry[];
}

export interface DiskProfile {
  /** Every fsync takes a uniform time in [fsyncMinMs, fsyncMaxMs]. */
  fsyncMinMs: number;
  fsyncMaxMs: number;
  /** Probability that an fsync stalls (an SD card's garbage collection) for up to stallMaxMs more. */
  stallProbability: number;
  stallMaxMs: number;
}

/** A decent SD card: 2–8 ms per fsync, no stalls. */
export const STEADY_DISK: DiskProfile = { fsyncMinMs: 2, fsyncMaxMs: 8, stallProbability: 0, stallMaxMs: 0 };

/** Fixed bytes charged per write record (framing, checksum), for the write-volume statistics. */
export const WRITE_RECORD_OVERHEAD_BYTES = 16;

export interface DiskStats {
  writes: number;
  bytesWritten: number;
  fsyncs: number;
  /** Writes lost by crashes: written but never made durable. */
  writesLostOnCrash: number;
}

interface PendingWrite {
  seq: number;
  write: DiskWrite;
}

export class SimDisk {
  private durable: DiskImage = { hardState: { term: 0, vote: 0, commit: 0 }, snapshot: undefined, offset: 0, entries: [] };
  private pending: PendingWrite[] = [];
  private writeSeq = 0;
  readonly stats: DiskStats = { writes: 0, bytesWritten: 0, fsyncs: 0, writesLostOnCrash: 0 };

  constructor(public profile: DiskProfile = STEADY_DISK) {}

  /** Format the disk with an initial durable image (a founding member's bootstrap state). */
  format(image: DiskImage): void {
    if (this.pending.length > 0 || this.durable.entries.length > 0 || this.durable.snapshot !== undefined) {
      throw new SimError('SIM_DISK_INVARIANT', 'format of a disk in use');
    }
    this.durable = copyImage(image);
  }

  /** Record a write. The disk keeps its own copy: later changes to the caller's objects do not reach it. */
  write(w: DiskWrite): void {
    this.stats.writes++;
    this.stats.bytesWritten += writeBytes(w);
    this.pending.push({ seq: ++this.writeSeq, write: copyWrite(w) });
  }

  get pendingWrites(): number {
    return this.pending.length;
  }

  /** Start an fsync; returns the barrier to pass to completeFsync. */
  beginFsync(): number {
    this.stats.fsyncs++;
    return this.writeSeq;
  }

  /** Make every write issued before the barrier durable. A barrier from before a crash covers nothing new. */
  completeFsync(barrier: number): void {
    let n = 0;
    while (n < this.pending.length && this.pending[n]!.seq <= barrier) {
      applyWrite(this.durable, this.pending[n]!.write);
      n++;
    }
    if (n > 0) this.pending = this.pending.slice(n);
  }

  /** The node lost power: every write not made durable is gone. Returns how many were lost. */
  crash(): number {
    const lost = this.pending.length;
    this.stats.writesLostOnCrash += lost;
    this.pending = [];
    return lost;
  }

  fsyncLatencyMs(prng: Prng): number {
    const p = this.profile;
    let ms = p.fsyncMinMs + (p.fsyncMaxMs > p.fsyncMinMs ? prng.int(p.fsyncMaxMs - p.fsyncMinMs + 1) : 0);
    if (p.stallProbability > 0 && prng.chance(p.stallProbability)) ms += prng.int(p.stallMaxMs + 1);
    return ms;
  }

  /** A copy of what survives a crash now. */
  image(): DiskImage {
    return copyImage(this.durable);
  }

  /** Index of the last durable log entry (or of the durable snapshot). */
  durableLastIndex(): number {
    return this.durable.offset + this.durable.entries.length;
  }
}

function copyImage(img: DiskImage): DiskImage {
  return {
    hardState: cloneHardState(img.hardState),
    snapshot: img.snapshot === undefined ? undefined : cloneSnapshot(img.snapshot),
    offset: img.offset,
    entries: cloneEntries(img.entries),
  };
}

function copyWrite(w: DiskWrite): DiskWrite {
  switch (w.kind) {
    case 'hardState':
      return { kind: 'hardState', hardState: cloneHardState(w.hardState) };
    case 'append':
      return { kind: 'append', entries: cloneEntries(w.entries) };
    case 'installSnapshot':
      return { kind: 'installSnapshot', snapshot: cloneSnapshot(w.snapshot) };
    case 'saveSnapshot':
      return { kind: 'saveSnapshot', snapshot: cloneSnapshot(w.snapshot) };
    case 'compact':
      return { kind: 'compact', index: w.index };
  }
}

function writeBytes(w: DiskWrite): number {
  switch (w.kind) {
    case 'hardState':
      return WRITE_RECORD_OVERHEAD_BYTES + 24;
    case 'append': {
      let n = 0;
      for (const e of w.entries) n += WRITE_RECORD_OVERHEAD_BYTES + 17 + e.data.length;
      return n;
    }
    case 'installSnapshot':
    case 'saveSnapshot':
      return WRITE_RECORD_OVERHEAD_BYTES + 64 + snapshotSizeBytes(w.snapshot.data);
    case 'compact':
      return WRITE_RECORD_OVERHEAD_BYTES + 8;
  }
}

function applyWrite(img: DiskImage, w: DiskWrite): void {
  switch (w.kind) {
    case 'hardState':
      img.hardState = w.hardState;
      return;
    case 'append': {
      if (w.entries.length === 0) return;
      let ents = w.entries;
      const first = ents[0]!.index;
      const last = img.offset + img.entries.length;
      if (first > last + 1) throw new SimError('SIM_DISK_INVARIANT', `append at ${first} leaves a gap after ${last}`);
      if (first <= img.offset) ents = ents.slice(img.offset + 1 - first); // already covered by the snapshot
      if (ents.length === 0) return;
      const keep = ents[0]!.index - img.offset - 1;
      img.entries = img.entries.slice(0, keep).concat(ents);
      return;
    }
    case 'installSnapshot': {
      const cur = img.snapshot?.metadata.index ?? 0;
      if (w.snapshot.metadata.index <= cur) throw new SimError('SIM_DISK_INVARIANT', `snapshot ${w.snapshot.metadata.index} not newer than ${cur}`);
      img.snapshot = w.snapshot;
      img.offset = w.snapshot.metadata.index;
      img.entries = [];
      return;
    }
    case 'saveSnapshot': {
      const cur = img.snapshot?.metadata.index ?? 0;
      const idx = w.snapshot.metadata.index;
      if (idx <= cur) return; // a newer snapshot from the leader got there first
      if (idx < img.offset || idx > img.offset + img.entries.length) {
        throw new SimError('SIM_DISK_INVARIANT', `snapshot at ${idx} outside the durable log (${img.offset}, ${img.offset + img.entries.length}]`);
      }
      img.snapshot = w.snapshot;
      return;
    }
    case 'compact': {
      const snapIdx = img.snapshot?.metadata.index ?? 0;
      const idx = Math.min(w.index, snapIdx); // never drop what the durable snapshot does not cover
      if (idx <= img.offset) return;
      img.entries = img.entries.slice(idx - img.offset);
      img.offset = idx;
      return;
    }
  }
}
