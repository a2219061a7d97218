/**
 * The durable Raft log: hard state, entries and snapshot metadata in LevelDB (classic-level),
 * snapshot data in files beside it. Writes go through group commit (one synced LevelDB batch
 * covers every save that arrived while the previous batch was being fsynced), and a save
 * resolves only once its batch is on disk. Reads are served by an in-memory mirror
 * (LogMirror) that implements Raft's Storage interface and changes only after a durable write.
 *
 * Not responsible for: the applied state machine (core/kv and its backend), deciding when to
 * snapshot or compact (the embedder does), the snapshot's format (opaque bytes).
 *
 * On-disk layout under `dir`:
 *   log/            LevelDB. Keys: 'h' hard state, 's' StoredSnapshot, 'c' log offset
 *                   (index/term of the last dropped entry), 'e'+u64be(index) entries, 'l' the
 *                   last index (u64be), 'v' present when every value is sealed. Each value
 *                   but 'v' is sealed (value-checksum.ts); open reads every key once, checks each,
 *                   and refuses a log whose entries do not reach 'l' or its hard state's commit.
 *   snap/           snap-<term>-<index>.snap, the current snapshot's data (older ones deleted).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ReadStream } from 'node:fs';
import type { ClassicLevel } from 'classic-level';
import { RaftError } from '../raft/errors.js';
import type { Storage } from '../raft/storage.js';
import { snapshotSizeBytes, type ConfState, type Entry, type ExternalSnapshotData, type HardState, type Snapshot, type SnapshotChunkWrite, type SnapshotMetadata } from '../raft/types.js';
import {
  decodeEntry,
  decodeHardState,
  decodeStoredSnapshot,
  encodeEntry,
  encodeHardState,
  encodeStoredSnapshot,
} from '../net/raft-codec.js';
import { StorageError } from './errors.js';
import { GroupCommitter } from './group-commit.js';
import type { TornTail } from './level-log-tail.js';
import { openLevel } from './level-open.js';
import { compactWholeDatabase, writeBatch, type BatchOp, type WriteObserver } from './level-batch.js';
import { STRICT_MARK, sealedPut, unknownKey, unseal } from './value-checksum.js';

export type { WriteObserver } from './level-batch.js';
import { EMPTY_SNAPSHOT_METADATA, LogMirror, type LogOffset } from './log-mirror.js';
import { SnapshotFiles, snapshotFileName } from './snapshot-files.js';
import { fsyncDir } from './durable-file.js';

const KEY_HARD_STATE = Buffer.from('h');
const KEY_SNAPSHOT = Buffer.from('s');
const KEY_OFFSET = Buffer.from('c');
/** Present: every value in the store carries its checksum (value-checksum.ts). */
const KEY_SEALED = Buffer.from('v');
/**
 * The log's last index, written with every batch that moves it: LevelDB's iterator passes over
 * keys a damaged block puts out of order without a word, so a lost tail would otherwise go unseen.
 */
const KEY_LAST = Buffer.from('l');
const WHAT = 'the Raft log';
/** Entries read per iterator step at open. */
const LOAD_STEP_ENTRIES = 4096;
const ENTRY_PREFIX = 0x65; // 'e'

export function entryKey(index: number): Buffer {
  const k = Buffer.allocUnsafe(9);
  k[0] = ENTRY_PREFIX;
  k.writeBigUInt64BE(BigInt(index), 1);
  return k;
}

function entryKeyIndex(key: Uint8Array): number {
  if (key.length !== 9 || key[0] !== ENTRY_PREFIX) throw new StorageError('ERR_CORRUPT', 'malformed entry key');
  return Number(Buffer.from(key.buffer, key.byteOffset, key.byteLength).readBigUInt64BE(1));
}

/** What one save makes durable, in this order: snapshot, entries, hard state (types.ts Ready). */
export interface LogUpdate {
  hardState?: HardState;
  entries?: readonly Entry[];
  /** Pieces of a snapshot being received, written to its spool first. */
  snapshotChunks?: readonly SnapshotChunkWrite[];
  /**
   * A snapshot received from the leader: it replaces the whole log. External data means the
   * spool (filled by snapshotChunks) holds the bytes.
   */
  snapshot?: Snapshot;
}

export interface SaveOptions {
  /**
   * false when Raft's Ready says mustSync is false (only the commit index moved): the write
   * may ride in a batch without fsync. A batch is synced when any of its saves asks for it.
   */
  sync?: boolean;
}

export interface RaftLogStoreStats {
  /** save/createSnapshot/compact calls. */
  writes: number;
  /** LevelDB batches written. */
  batches: number;
  /** Batches written with sync (one fsync of LevelDB's log each). */
  syncedBatches: number;
  /** Most writes covered by one batch. */
  maxBatchWrites: number;
  /** Key + value bytes handed to LevelDB (before its own framing and compaction). */
  bytesWritten: number;
  /** Entries currently held in the in-memory mirror. */
  entriesInMemory: number;
}


/**
 * Checks a received snapshot's bytes before it replaces the log (e.g. by decoding them);
 * rejecting refuses the snapshot.
 */
export type IncomingSnapshotCheck = (metadata: SnapshotMetadata, data: AsyncIterable<Uint8Array>) => Promise<void>;

interface PreparedWrite {
  ops: BatchOp[];
  sync: boolean;
  /** A leader's snapshot whose data (given, or spooled) must be on disk before the batch that points at it. */
  snapshotFile?: { fileName: string; data: Uint8Array | ExternalSnapshotData };
  /** Update the mirror once the batch is durable; returns a snapshot file made obsolete, if any. */
  apply: () => string | undefined;
}

export class RaftLogStore implements Storage {
  private readonly mirror: LogMirror;
  private readonly committer: GroupCommitter<PreparedWrite>;
  private failed: unknown;
  private closed = false;
  private lastWrite: Promise<void> = Promise.resolve();
  /** The background deletion of compacted entries, awaited by close(). */
  private clearing: Promise<void> = Promise.resolve();
  private readonly stats_ = { batches: 0, syncedBatches: 0, bytesWritten: 0 };
  private readonly writeObservers: WriteObserver[] = [];

  // Where the log will stand once every submitted write is durable: later writes are
  // prepared against this, so keys to delete on truncation are known at submit time.
  private pendingOffset: LogOffset;
  private pendingLast: number;
  private pendingSnapshotIndex: number;
  /** File of the durable current snapshot. */
  private snapshotFile: string | undefined;
  private snapshotBytes = 0;
  private snapshotListener: (() => void) | undefined;
  /** A new store: its first write batch carries the marker that every value is sealed. */
  private sealOnFirstWrite = false;
  private incomingSnapshotCheck: IncomingSnapshotCheck | undefined;

  private constructor(
    readonly dir: string,
    private readonly db: ClassicLevel<Buffer, Buffer>,
    private readonly files: SnapshotFiles,
  ) {
    this.mirror = new LogMirror(
      () => this.snapshotBytes,
      () => this.snapshotListener?.(),
    );
    this.committer = new GroupCommitter((items) => this.flush(items));
    this.pendingOffset = { index: 0, term: 0 };
    this.pendingLast = 0;
    this.pendingSnapshotIndex = 0;
  }

  /**
   * Opens the store in `dir` and loads it into memory; creates it unless `mustExist` (the data
   * dir says it was written before, so a missing one is damage). Damage LevelDB would skip is refused.
   */
  static async open(dir: string, { mustExist = false, onTornTail }: { mustExist?: boolean; onTornTail?: (torn: TornTail) => void } = {}): Promise<RaftLogStore> {
    await mkdir(dir, { recursive: true });
    const db = await openLevel(join(dir, 'log'), { what: 'the Raft log', mustExist, onTornTail });
    const files = new SnapshotFiles(join(dir, 'snap'));
    const store = new RaftLogStore(dir, db, files);
    try {
      await files.init();
      // The entries of log/ and snap/ in it: LevelDB and the snapshot files fsync only their own.
      await fsyncDir(dir);
      await store.load();
    } catch (err) {
      await db.close().catch(() => undefined);
      throw err;
    }
    return store;
  }

  private async load(): Promise<void> {
    const strict = (await this.db.get(KEY_SEALED)) !== undefined;
    // One pass over every key from the first, with no seek: a damaged key (the checksum covers
    // it) fails wherever it now sorts, and a damaged index block cannot make a seek skip entries.
    let hardRaw: Buffer | undefined;
    let snapRaw: Buffer | undefined;
    let lastRaw: Buffer | undefined;
    let offset: LogOffset = { index: 0, term: 0 };
    let offsetSeen = false;
    let sealedSeen = false;
    const entries: Entry[] = [];
    const it = this.db.iterator();
    try {
      for (;;) {
        const batch = await it.nextv(LOAD_STEP_ENTRIES);
        if (batch.length === 0) break;
        for (const [key, value] of batch) {
          if (key.length === 9 && key[0] === ENTRY_PREFIX) {
            const index = entryKeyIndex(key);
            const body = unseal(key, value, strict, WHAT);
            if (index <= offset.index) continue; // compacted, awaiting its clear
            const expected = offset.index + entries.length + 1;
            if (index !== expected) throw new StorageError('ERR_CORRUPT', `log has a gap: found entry ${index}, expected ${expected}`);
            const entry = decodeOrCorrupt(() => decodeEntry(body));
            if (entry.index !== index) throw new StorageError('ERR_CORRUPT', `entry under key ${index} says index ${entry.index}`);
            entries.push(entry);
          } else if (key.equals(KEY_OFFSET)) {
            // 'c' sorts before every entry: the offset is known before the entries are read.
            const body = unseal(key, value, strict, WHAT);
            offset = decodeOrCorrupt(() => {
              const e = decodeEntry(body);
              return { index: e.index, term: e.term };
            });
            offsetSeen = true;
          } else if (key.equals(KEY_HARD_STATE)) hardRaw = unseal(key, value, strict, WHAT);
          else if (key.equals(KEY_LAST)) lastRaw = unseal(key, value, strict, WHAT);
          else if (key.equals(KEY_SNAPSHOT)) snapRaw = unseal(key, value, strict, WHAT);
          else if (key.equals(KEY_SEALED)) sealedSeen = true;
          else if (strict) throw unknownKey(WHAT, key);
          else unseal(key, value, strict, WHAT);
        }
      }
    } finally {
      await it.close();
    }
    if (sealedSeen !== strict) throw new StorageError('ERR_CORRUPT', `${WHAT} is damaged: its checksum marker was found by one read and not by another`);
    const hard = hardRaw === undefined ? { term: 0, vote: 0, commit: 0 } : decodeOrCorrupt(() => decodeHardState(hardRaw!));
    let snapshot: SnapshotMetadata = EMPTY_SNAPSHOT_METADATA;
    if (snapRaw !== undefined) {
      const rec = decodeOrCorrupt(() => decodeStoredSnapshot(snapRaw!));
      const size = await this.files.size(rec.fileName).catch(() => -1);
      if (size !== rec.sizeBytes) {
        throw new StorageError('ERR_SNAPSHOT_FILE', `snapshot file ${rec.fileName} missing or not ${rec.sizeBytes} bytes`);
      }
      snapshot = rec.metadata;
      this.snapshotFile = rec.fileName;
      this.snapshotBytes = rec.sizeBytes;
    }
    const last = Math.max(offset.index + entries.length, snapshot.index);
    if (lastRaw !== undefined) {
      if (lastRaw.length !== 8) throw new StorageError('ERR_CORRUPT', `${WHAT} is damaged: a bad last-index record`);
      const recorded = Number(lastRaw.readBigUInt64BE(0));
      if (recorded !== offset.index + entries.length) {
        throw new StorageError('ERR_CORRUPT', `${WHAT} is damaged: it was written up to entry ${recorded}, but holds entries up to ${offset.index + entries.length}`);
      }
    }
    if (hard.commit > last) {
      throw new StorageError('ERR_CORRUPT', `${WHAT} is damaged: its hard state says entry ${hard.commit} is committed, but the log ends at ${last}`);
    }
    // Nothing written yet: a new store, sealed throughout once it is written (not before: a
    // store refused at open is left as it was).
    this.sealOnFirstWrite = !strict && hardRaw === undefined && snapRaw === undefined && !offsetSeen && entries.length === 0;
    this.mirror.load({ hard, offset, entries, snapshot });
    this.pendingOffset = offset;
    this.pendingLast = offset.index + entries.length;
    this.pendingSnapshotIndex = snapshot.index;
    // Files left by a crash between writing a snapshot file and recording it, or by an
    // interrupted delete of an old one.
    await this.files.removeAllExcept(this.snapshotFile);
  }

  // ------------------------------------------------------------ Storage (Raft's reads)

  initialState(): { hardState: HardState; confState: ConfState } {
    return this.mirror.initialState();
  }
  entries(lo: number, hi: number, maxBytes?: number): Entry[] {
    return this.mirror.entries(lo, hi, maxBytes);
  }
  term(i: number): number {
    return this.mirror.term(i);
  }
  firstIndex(): number {
    return this.mirror.firstIndex();
  }
  lastIndex(): number {
    return this.mirror.lastIndex();
  }
  /** The current snapshot, external: Raft sends it by chunks read with readSnapshotChunk. */
  snapshot(): Snapshot {
    return this.mirror.snapshot();
  }

  // ------------------------------------------------------------ more reads

  hardState(): HardState {
    return this.mirror.hardState();
  }

  snapshotMetadata(): SnapshotMetadata {
    return this.mirror.snapshotMetadata();
  }

  /** Size of the current snapshot's data in bytes (0 when there is none). */
  snapshotSizeBytes(): number {
    return this.snapshotBytes;
  }

  /** Streams the current snapshot's data from `start`, never whole in memory. */
  openSnapshotStream(start = 0): ReadStream {
    if (this.snapshotFile === undefined) throw new StorageError('ERR_SNAPSHOT_FILE', 'no snapshot');
    return this.files.stream(this.snapshotFile, start);
  }

  /**
   * Up to maxBytes of the current snapshot's data from offset. With `of`, fails unless the
   * current snapshot is that one (a newer snapshot replaced its file).
   */
  readSnapshotChunk(offset: number, maxBytes: number, of?: { index: number; term: number }): Promise<Uint8Array> {
    const current = this.mirror.snapshotMetadata();
    if (this.snapshotFile === undefined) return Promise.reject(new StorageError('ERR_SNAPSHOT_FILE', 'no snapshot'));
    if (of !== undefined && (of.index !== current.index || of.term !== current.term)) {
      return Promise.reject(new StorageError('ERR_SNAPSHOT_FILE', `snapshot ${of.term}/${of.index} was replaced by ${current.term}/${current.index}`));
    }
    return this.files.readChunk(this.snapshotFile, offset, maxBytes);
  }

  /** Called (at most once per snapshot() call) when Raft needs a snapshot newer than the log's start. */
  onSnapshotNeeded(fn: () => void): void {
    this.snapshotListener = fn;
  }

  /**
   * Every received (spooled) snapshot goes through `check` before the save that names it
   * writes anything; if the check rejects, the spool is removed and that save rejects with
   * ERR_SNAPSHOT_REFUSED, the store staying usable (nothing of that save was written).
   */
  checkIncomingSnapshots(check: IncomingSnapshotCheck): void {
    this.incomingSnapshotCheck = check;
  }

  /** Calls `fn` after every LevelDB batch with how long it took (with its fsync when `sync`). */
  observeWrites(fn: WriteObserver): void {
    this.writeObservers.push(fn);
  }

  stats(): RaftLogStoreStats {
    const c = this.committer.stats;
    return {
      writes: c.submitted,
      batches: this.stats_.batches,
      syncedBatches: this.stats_.syncedBatches,
      maxBatchWrites: c.maxBatchItems,
      bytesWritten: this.stats_.bytesWritten,
      entriesInMemory: this.mirror.entryCount,
    };
  }

  // ------------------------------------------------------------ writes

  /**
   * Persists a Ready's snapshot, entries and hard state. Entries that overlap the log replace
   * it from their first index on (the conflicting suffix is deleted). Resolves once durable.
   */
  save(update: LogUpdate, options: SaveOptions = {}): Promise<void> {
    const refused = this.refuseWrites();
    if (refused) return Promise.reject(refused);
    const chunks = update.snapshotChunks !== undefined && update.snapshotChunks.length > 0 ? update.snapshotChunks : undefined;
    const snap = update.snapshot;
    const check = snap !== undefined && !(snap.data instanceof Uint8Array) ? this.incomingSnapshotCheck : undefined;
    if (chunks === undefined && check === undefined) return this.submitUpdate(update, options);
    return (async () => {
      if (chunks !== undefined) await this.spool(chunks);
      if (check !== undefined) await this.checkSpool(snap!.metadata, check);
      return this.submitUpdate(update, options);
    })();
  }

  /** save() once the update's snapshot bytes, if any, are on disk: prepare the batch against the pending log and submit it. */
  private submitUpdate(update: LogUpdate, options: SaveOptions): Promise<void> {
    const refused = this.refuseWrites();
    if (refused) return Promise.reject(refused);
    const ops: BatchOp[] = [];
    const snap = update.snapshot;
    let snapshotFile: PreparedWrite['snapshotFile'];
    if (snap !== undefined) {
      const meta = snap.metadata;
      if (meta.index <= this.pendingSnapshotIndex) {
        return Promise.reject(new RaftError('SNAPSHOT_OUT_OF_DATE', `snapshot ${meta.index} not newer than ${this.pendingSnapshotIndex}`));
      }
      const fileName = snapshotFileName(meta.term, meta.index);
      snapshotFile = { fileName, data: snap.data };
      for (let i = this.pendingOffset.index + 1; i <= this.pendingLast; i++) ops.push({ type: 'del', key: entryKey(i) });
      ops.push(sealedPut(KEY_SNAPSHOT, encodeStoredSnapshot({ metadata: meta, fileName, sizeBytes: snapshotSizeBytes(snap.data) })));
      ops.push(sealedPut(KEY_OFFSET, offsetRecord({ index: meta.index, term: meta.term })));
      this.pendingOffset = { index: meta.index, term: meta.term };
      this.pendingLast = meta.index;
      this.pendingSnapshotIndex = meta.index;
    }
    let entries = update.entries ?? [];
    if (entries.length > 0) {
      if (entries[0]!.index <= this.pendingOffset.index) entries = entries.slice(this.pendingOffset.index + 1 - entries[0]!.index);
    }
    if (entries.length > 0) {
      const first = entries[0]!.index;
      if (first > this.pendingLast + 1) {
        return Promise.reject(new StorageError('ERR_INVALID_ARGUMENT', `entries start at ${first}, log ends at ${this.pendingLast}`));
      }
      for (let k = 0; k < entries.length; k++) {
        const e = entries[k]!;
        if (e.index !== first + k) return Promise.reject(new StorageError('ERR_INVALID_ARGUMENT', 'entries are not consecutive'));
        ops.push(sealedPut(entryKey(e.index), encodeEntry(e)));
      }
      const last = first + entries.length - 1;
      for (let i = last + 1; i <= this.pendingLast; i++) ops.push({ type: 'del', key: entryKey(i) });
      this.pendingLast = last;
    }
    if (snap !== undefined || entries.length > 0) ops.push(sealedPut(KEY_LAST, lastIndexRecord(this.pendingLast)));
    const hs = update.hardState;
    if (hs !== undefined) ops.push(sealedPut(KEY_HARD_STATE, encodeHardState(hs)));
    if (ops.length === 0) return this.lastWrite.then(() => undefined, () => undefined);

    const savedEntries = entries;
    const prepared: PreparedWrite = {
      ops,
      sync: options.sync ?? true,
      snapshotFile,
      apply: () => {
        let obsolete: string | undefined;
        if (snap !== undefined && snapshotFile !== undefined) {
          obsolete = this.snapshotFile;
          this.snapshotFile = snapshotFile.fileName;
          this.snapshotBytes = snapshotSizeBytes(snap.data);
          this.mirror.applySnapshot(snap.metadata);
        }
        this.mirror.append(savedEntries);
        if (hs !== undefined) this.mirror.setHardState(hs);
        return obsolete;
      },
    };
    return this.submit(prepared);
  }

  /**
   * Records a snapshot of the local state machine at `index` (already applied, so its entry is
   * durable). The data is streamed to a file first. The log is kept: call compact() after.
   */
  async createSnapshot(index: number, conf: ConfState, data: Uint8Array | AsyncIterable<Uint8Array>): Promise<SnapshotMetadata> {
    const refused = this.refuseWrites();
    if (refused) throw refused;
    if (index <= this.pendingSnapshotIndex) {
      throw new RaftError('SNAPSHOT_OUT_OF_DATE', `snapshot ${index} not newer than ${this.pendingSnapshotIndex}`);
    }
    if (index > this.mirror.lastIndex()) {
      throw new StorageError('ERR_INVALID_ARGUMENT', `snapshot at ${index} beyond the durable log (${this.mirror.lastIndex()})`);
    }
    const meta: SnapshotMetadata = {
      index,
      term: this.mirror.term(index),
      conf: { voters: [...conf.voters], learners: [...conf.learners] },
    };
    const fileName = snapshotFileName(meta.term, meta.index);
    const sizeBytes = await this.files.write(fileName, data);
    if (index <= this.pendingSnapshotIndex) {
      // A newer snapshot was recorded while this one was being written.
      throw new RaftError('SNAPSHOT_OUT_OF_DATE', `snapshot ${index} not newer than ${this.pendingSnapshotIndex}`);
    }
    this.pendingSnapshotIndex = index;
    await this.submit({
      ops: [sealedPut(KEY_SNAPSHOT, encodeStoredSnapshot({ metadata: meta, fileName, sizeBytes }))],
      sync: true,
      apply: () => {
        const obsolete = this.snapshotFile;
        this.snapshotFile = fileName;
        this.snapshotBytes = sizeBytes;
        this.mirror.setSnapshot(meta);
        return obsolete;
      },
    });
    return meta;
  }

  /**
   * Deletes entries up to and including `index`. The caller guarantees the state machine is
   * durable at or beyond `index`: a snapshot covers it, or (etcd's way, no snapshot file
   * needed) its own applied state was fsynced past it. In the second case snapshot() reports
   * SNAPSHOT_TEMPORARILY_UNAVAILABLE and calls the onSnapshotNeeded listener until a
   * snapshot reaching the log's new start is created.
   */
  compact(index: number): Promise<void> {
    const refused = this.refuseWrites();
    if (refused) return Promise.reject(refused);
    if (index <= this.pendingOffset.index) return Promise.resolve();
    if (index > this.pendingLast) {
      return Promise.reject(new StorageError('ERR_INVALID_ARGUMENT', `compact(${index}) beyond the log's last entry ${this.pendingLast}`));
    }
    let term: number;
    try {
      term = this.mirror.term(index);
    } catch (err) {
      return Promise.reject(err);
    }
    const offset = { index, term };
    this.pendingOffset = offset;
    const moved = this.submit({
      ops: [sealedPut(KEY_OFFSET, offsetRecord(offset))],
      // Synced before the entries are cleared: with the offset unsynced, a power cut could keep
      // the clear's deletes (made durable by the next synced append, in a newer LevelDB log
      // file) and lose the offset (in the older file, closed unsynced): a gap at the next open.
      sync: true,
      apply: () => {
        this.mirror.compact(offset);
        return undefined;
      },
    });
    // The entries themselves are deleted by LevelDB's clear, in the thread pool: ten thousand
    // deletes put in one batch here held every member's event loop ~10 ms at each compaction.
    // Entries at or below the offset are never read (open() starts after it), and a clear
    // lost to a crash is redone by the next one, which starts from the first entry key.
    const cleared = moved.then(() => this.db.clear({ gte: entryKey(0), lte: entryKey(index) }));
    this.clearing = cleared.catch(() => undefined);
    return cleared;
  }

  /** Returns the disk space of compacted log entries (etcdctl defrag). */
  defragment(): Promise<void> {
    return compactWholeDatabase(this.db);
  }

  /** Waits for writes in flight, then closes the database. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.lastWrite.catch(() => undefined);
    await this.clearing;
    this.committer.failPending(new StorageError('ERR_STORE_CLOSED', 'store closed'));
    await this.db.close();
  }

  // ------------------------------------------------------------ internals

  private refuseWrites(): StorageError | undefined {
    if (this.closed) return new StorageError('ERR_STORE_CLOSED', 'store closed');
    if (this.failed !== undefined) {
      return new StorageError('ERR_STORE_FAILED', `an earlier write failed: ${(this.failed as Error).message}`, { cause: this.failed });
    }
    return undefined;
  }

  private submit(prepared: PreparedWrite): Promise<void> {
    let bytes = 0;
    for (const op of prepared.ops) bytes += op.key.length + (op.type === 'put' ? op.value.length : 0);
    const p = this.committer.submit(prepared, bytes);
    this.lastWrite = p.catch(() => undefined);
    return p;
  }

  private async flush(items: PreparedWrite[]): Promise<void> {
    if (this.failed !== undefined) throw this.refuseWrites();
    try {
      for (const item of items) {
        const file = item.snapshotFile;
        if (file === undefined) continue;
        if (file.data instanceof Uint8Array) await this.files.write(file.fileName, file.data);
        else await this.files.installSpool(file.fileName, file.data.sizeBytes);
      }
      const ops: BatchOp[] = [];
      let sync = false;
      for (const item of items) {
        for (const op of item.ops) ops.push(op);
        sync ||= item.sync;
      }
      if (this.sealOnFirstWrite) ops.push({ type: 'put', key: KEY_SEALED, value: STRICT_MARK });
      await writeBatch(this.db, ops, sync, this.writeObservers);
      this.sealOnFirstWrite = false;
      this.stats_.batches++;
      if (sync) this.stats_.syncedBatches++;
      for (const op of ops) this.stats_.bytesWritten += op.key.length + (op.type === 'put' ? op.value.length : 0);
    } catch (err) {
      // The disk state is unknown now (a partial snapshot file, a failed fsync): refuse every
      // further write, as etcd does on a WAL error, until the store is reopened.
      this.failed = err;
      this.committer.failPending(this.refuseWrites());
      throw err;
    }
    const obsolete: string[] = [];
    for (const item of items) {
      const old = item.apply();
      if (old !== undefined && old !== this.snapshotFile) obsolete.push(old);
    }
    // The database no longer points at these; a failed delete is retried at the next open.
    for (const name of obsolete) await this.files.remove(name).catch(() => undefined);
  }

  /** Writes received snapshot chunks to the spool of the file each snapshot will become. */
  private async spool(chunks: readonly SnapshotChunkWrite[]): Promise<void> {
    for (const c of chunks) await this.files.spoolChunk(snapshotFileName(c.metadata.term, c.metadata.index), c.offset, c.data);
  }

  private async checkSpool(meta: SnapshotMetadata, check: IncomingSnapshotCheck): Promise<void> {
    const spool = this.files.spoolName(snapshotFileName(meta.term, meta.index));
    const data = this.files.stream(spool);
    try {
      await check(meta, data);
    } catch (err) {
      data.destroy();
      await this.files.remove(spool).catch(() => undefined);
      throw new StorageError('ERR_SNAPSHOT_REFUSED', `received snapshot ${meta.term}/${meta.index} refused: ${(err as Error).message}`, { cause: err });
    }
    data.destroy();
  }
}

function offsetRecord(o: LogOffset): Uint8Array {
  return encodeEntry({ index: o.index, term: o.term, type: 0, data: new Uint8Array(0) });
}

function lastIndexRecord(index: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64BE(BigInt(index));
  return b;
}

function decodeOrCorrupt<T>(f: () => T): T {
  try {
    return f();
  } catch (err) {
    throw new StorageError('ERR_CORRUPT', `bad record in the log database: ${(err as Error).message}`, { cause: err });
  }
}
