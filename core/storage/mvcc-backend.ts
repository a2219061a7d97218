/**
 * Persistence of the applied MVCC state (core/kv KvStore) in LevelDB (classic-level), so a
 * restart loads the state instead of replaying the whole Raft log. Not responsible for the
 * Raft log itself (the log storage is), nor for deciding when to persist (the node calls
 * `persist` after applying a group of committed entries).
 *
 * Layout (one LevelDB directory of its own):
 *   'm/gen'                         u32: the live generation of the data keys
 *   'm/state'                       CBOR {appliedIndex, appliedTerm, currentRevision, compactRevision,
 *                                   records (the live generation's; absent in older stores)}
 *   'm/conf'                        the Raft ConfState bytes the caller hands in (opaque here)
 *   'm/auth'                        CBOR of the auth state's image (users, roles; absent: empty)
 *   'm/sealed'                      present: every value carries its checksum (value-checksum.ts)
 *   'd' gen:u32 'r' main:u64 sub:u32   one record (revision-keyed, as etcd's "key" bucket)
 *   'd' gen:u32 'l' id:u64             one lease: CBOR [ttlSeconds]
 * Records: flags:u8 (1 = tombstone) keyLen:u32 key create:f64 version:f64 lease:f64 value.
 * Every value above is stored sealed (value-checksum.ts: a CRC-32 of key and value before it)
 * and checked at open; a store written before checksums has no 'm/sealed' and loads its older
 * values unchecked.
 *
 * Atomicity: each `persist` is one LevelDB batch carrying the records, the applied index
 * and the ConfState together, so after a crash the state and its applied index agree; Raft
 * then re-applies entries after that index (KvStore skips those at or below it). A restored
 * snapshot is written under a new generation and switched to with one batch; a crash midway
 * leaves the old generation live and the partial one is cleared at the next open.
 *
 * A failed write poisons the backend (every later persist rejects with it): restart the node,
 * which reloads the last good state and re-applies the rest from the Raft log.
 *
 * Durability: `persist({ sync: false })` (the default) is not fsynced — losing it only means
 * re-applying entries from the Raft log. Before the Raft log is compacted up to index N, call
 * `persist({ sync: true })` and check `durableAppliedIndex >= N`: it flushes the unsynced
 * batches before it into synced table files first (flushEarlierWrites), as a synced LevelDB
 * write alone does not make them durable.
 *
 * The in-memory index (key → revisions) is rebuilt at open from the records.
 */
import type { ClassicLevel } from 'classic-level';
import { Decoder, Encoder } from 'cbor-x';
import { KvError } from '../kv/errors.js';
import type { KvRecord } from '../kv/mvcc.js';
import { StateImage } from '../kv/snapshot.js';
import { StateBuilder } from '../kv/state-builder.js';
import { KvStore, type KvStoreOptions, type StateChanges } from '../kv/store.js';
import { compactWholeDatabase, flushEarlierWrites, writeBatch, type BatchOp, type WriteObserver } from './level-batch.js';
import type { TornTail } from './level-log-tail.js';
import { openLevel } from './level-open.js';
import { SEAL_BYTES, STRICT_MARK, sealInPlace, sealedPut, unknownKey, unseal } from './value-checksum.js';
import { StorageError } from './errors.js';

const encoder = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

const META_GEN = Buffer.from('m/gen');
const META_STATE = Buffer.from('m/state');
const META_CONF = Buffer.from('m/conf');
const META_AUTH = Buffer.from('m/auth');
const META_SEALED = Buffer.from('m/sealed');
/** The metadata keys whose values are sealed (the marker itself is not). */
const META_KEYS = [META_GEN, META_STATE, META_CONF, META_AUTH];
const WHAT = 'the KV store';
const DATA = 0x64; // 'd'
const REC = 0x72; // 'r'
const LEASE = 0x6c; // 'l'

/** Bytes of records written per LevelDB batch during a full rewrite. */
export const MVCC_REWRITE_BATCH_BYTES = 4 * 1024 * 1024;

/**
 * The applied state's unsynced batches between its own memtable flushes (flushEarlierWrites),
 * counted as keys and values plus ENTRY_OVERHEAD_BYTES each: half of LevelDB's 4 MiB write
 * buffer, so LevelDB never starts a new log file by itself between two of them. It closes the
 * old one unsynced, and a power cut could then keep a later batch (its applied index) and lose
 * an earlier one (its changes): a silent gap, as the Raft log replays only after that index.
 * This closes the gap between log files, not within one: LevelDB's reader skips a zeroed block
 * silently and reads on, so a page of one file lost while a later page was written back could
 * still drop a batch unseen (ext4 writes a file's pages back in no set order). Narrower, not nil.
 */
export const MVCC_FLUSH_EVERY_BYTES = 2 * 1024 * 1024;
/** More than LevelDB's memtable spends on an entry beside its key and value. */
const ENTRY_OVERHEAD_BYTES = 64;
/** Entries read per iterator step at open. */
const LOAD_STEP_ENTRIES = 4096;

function recordKey(gen: number, main: number, sub: number): Buffer {
  const k = Buffer.allocUnsafe(18);
  k[0] = DATA;
  k.writeUInt32BE(gen, 1);
  k[5] = REC;
  k.writeUInt32BE(Math.floor(main / 2 ** 32), 6);
  k.writeUInt32BE(main >>> 0, 10);
  k.writeUInt32BE(sub, 14);
  return k;
}

/** The lease's ID as a big-endian int64: a positive ID's bytes are those of a uint64, so older data dirs read the same. */
function leaseKey(gen: number, id: number): Buffer {
  const k = Buffer.allocUnsafe(14);
  k[0] = DATA;
  k.writeUInt32BE(gen, 1);
  k[5] = LEASE;
  k.writeBigInt64BE(BigInt(id), 6);
  return k;
}

/** [from, to) of one generation's keys of one kind; kind undefined = the whole generation. */
function genRange(gen: number, kind?: number): { gte: Buffer; lt: Buffer } {
  const lo = Buffer.from([DATA, 0, 0, 0, 0, kind ?? 0]);
  lo.writeUInt32BE(gen, 1);
  const hi = Buffer.from(lo);
  if (kind === undefined) {
    hi.writeUInt32BE(gen + 1, 1);
    return { gte: lo.subarray(0, 5), lt: hi.subarray(0, 5) };
  }
  hi[5] = kind + 1;
  return { gte: lo, lt: hi };
}

/** A record's LevelDB key and its sealed value, the record encoded after the checksum's room. */
function recordOp(gen: number, r: KvRecord): BatchOp {
  const ldbKey = recordKey(gen, r.main, r.sub);
  const key = r.hist.key;
  const value = r.storedValue;
  const out = Buffer.allocUnsafe(SEAL_BYTES + 1 + 4 + key.byteLength + 24 + (value?.byteLength ?? 0));
  let o = SEAL_BYTES;
  out[o] = value === null ? 1 : 0;
  out.writeUInt32BE(key.byteLength, o + 1);
  out.set(key, o + 5);
  o += 5 + key.byteLength;
  out.writeDoubleBE(r.createRevision, o);
  out.writeDoubleBE(r.version, o + 8);
  out.writeDoubleBE(r.lease, o + 16);
  if (value) out.set(value, o + 24);
  return { type: 'put', key: ldbKey, value: sealInPlace(ldbKey, out) };
}

function corrupt(detail: string): KvError {
  return new KvError('SNAPSHOT_CORRUPT', `mvcc backend: ${detail}`);
}

export interface MvccBackendLoadStats {
  records: number;
  keys: number;
  leases: number;
  loadMs: number;
}

export interface PersistOptions {
  /** The Raft ConfState as of the applied index (opaque bytes), stored in the same batch. */
  confState?: Uint8Array;
  /** fsync this batch (needed before the Raft log is compacted past the applied index). */
  sync?: boolean;
}

export class MvccBackend {
  private chain: Promise<void> = Promise.resolve();
  private _durableAppliedIndex: number;
  private _confState: Uint8Array | undefined;
  /** A new store: its first write batch carries the marker that every value is sealed. */
  private sealOnFirstWrite = false;
  /** Records of the live generation on disk once the writes so far are done (m/state's `records`). */
  private recordsOnDisk = 0;
  /** Bytes written since the last memtable flush (MVCC_FLUSH_EVERY_BYTES); at the limit until the first, as the memtable's contents at open are not counted. */
  private unflushedBytes = MVCC_FLUSH_EVERY_BYTES;
  private closed = false;
  private readonly writeObservers: WriteObserver[] = [];
  /** A failed write leaves the disk behind memory for good: every later persist refuses. */
  private failure_: Error | undefined;

  private constructor(
    private readonly db: ClassicLevel<Buffer, Buffer>,
    private gen: number,
    readonly store: KvStore,
    readonly loadStats: MvccBackendLoadStats,
    confState: Uint8Array | undefined,
  ) {
    this._durableAppliedIndex = store.appliedIndex;
    this._confState = confState;
  }

  /** Opens the backend in `dir` (created unless `mustExist`; damage is refused, level-open.ts) and loads the state into a new KvStore. */
  static async open(
    dir: string,
    storeOptions: KvStoreOptions = {},
    { mustExist = false, onTornTail }: { mustExist?: boolean; onTornTail?: (torn: TornTail) => void } = {},
  ): Promise<MvccBackend> {
    const started = performance.now();
    const db = await openLevel(dir, { what: WHAT, mustExist, onTornTail });
    try {
      const strict = (await db.get(META_SEALED)) !== undefined;
      // The live generation is needed before the scan reaches its records ('d' sorts before 'm').
      const genRaw = await db.get(META_GEN);
      const genBytes = genRaw === undefined ? undefined : unseal(META_GEN, genRaw, strict, WHAT);
      if (genBytes !== undefined && genBytes.byteLength !== 4) throw corrupt('bad generation');
      const gen = genBytes ? genBytes.readUInt32BE(0) : 0;

      // One pass over every key from the first, with no seek: a damaged key (the checksum covers
      // it) fails wherever it now sorts, and a damaged index block cannot make a seek skip records.
      const builder = new StateBuilder();
      const leaseTtls: [id: number, ttl: unknown][] = [];
      const metaValues = new Map<string, Buffer>();
      let sealedSeen = false;
      const it = db.iterator();
      try {
        // Read the next step while decoding this one: LevelDB reads on the thread pool.
        let pending = it.nextv(LOAD_STEP_ENTRIES);
        for (;;) {
          const entries = await pending;
          if (entries.length === 0) break;
          pending = it.nextv(LOAD_STEP_ENTRIES);
          for (const [k, v] of entries) {
            const kind = k.length >= 6 && k[0] === DATA ? k[5] : undefined;
            if (kind === REC || kind === LEASE) {
              const body = unseal(k, v, strict, WHAT);
              if (k.readUInt32BE(1) !== gen) continue; // another generation's: checked, then cleared below
              if (kind === REC) addStoredRecord(builder, k, body);
              else if (k.length !== 14) throw corrupt('bad lease key');
              else leaseTtls.push([Number(k.readBigInt64BE(6)), decodeMeta(body)]);
            } else if (k.equals(META_SEALED)) sealedSeen = true;
            else if (META_KEYS.some((m) => m.equals(k))) metaValues.set(k.toString('latin1'), unseal(k, v, strict, WHAT));
            else if (strict) throw unknownKey(WHAT, k);
            else unseal(k, v, strict, WHAT);
          }
        }
      } finally {
        await it.close();
      }
      const scanned = (key: Buffer): Buffer | undefined => metaValues.get(key.toString('latin1'));
      // A damaged table index can hide a key from a lookup that a scan still finds.
      if (sealedSeen !== strict || !sameBytes(scanned(META_GEN), genBytes)) {
        throw new StorageError('ERR_CORRUPT', `${WHAT} is damaged: a lookup and a scan of it disagree (checksum marker or generation)`);
      }
      const stateBytes = scanned(META_STATE);
      const meta = stateBytes
        ? decodeMeta(stateBytes)
        : { appliedIndex: 0, appliedTerm: 0, currentRevision: 1, compactRevision: -1 };
      const confState = scanned(META_CONF);
      const authBytes = scanned(META_AUTH);
      let leases = 0;
      for (const [id, ttl] of leaseTtls) {
        if (!Array.isArray(ttl)) throw corrupt('bad lease value');
        builder.addLease(id, ttl[0]);
        leases++;
      }
      const records = builder.recordCount;
      // LevelDB's iterator passes over keys a damaged block puts out of order without a word.
      if (meta.records !== undefined && meta.records !== records) {
        throw new StorageError('ERR_CORRUPT', `${WHAT} is damaged: its state says it holds ${meta.records} records, but ${records} were read`);
      }
      const state = builder.finish({
        currentRevision: meta.currentRevision!,
        compactRevision: meta.compactRevision!,
        appliedIndex: meta.appliedIndex!,
        appliedTerm: meta.appliedTerm!,
      });
      if (authBytes) state.auth = decodeMeta(authBytes);
      // Leftovers of an interrupted rewrite (or of older generations) are not part of the state.
      await db.clear({ gte: Buffer.from([DATA]), lt: genRange(gen).gte });
      await db.clear({ gte: genRange(gen).lt, lt: Buffer.from([DATA + 1]) });

      const store = new KvStore(storeOptions);
      store.install(state, false);
      store.trackChanges();
      const stats = { records, keys: state.hists.size, leases, loadMs: performance.now() - started };
      // Nothing persisted yet (the state goes in every batch): a new store, sealed throughout once
      // it is written (not before: a store refused at open is left as it was).
      const backend = new MvccBackend(db, gen, store, stats, confState);
      backend.sealOnFirstWrite = !strict && stateBytes === undefined;
      backend.recordsOnDisk = records;
      return backend;
    } catch (e) {
      await db.close();
      throw e;
    }
  }

  /** Calls `fn` after each incremental batch of applied changes with how long it took. */
  observeWrites(fn: WriteObserver): void {
    this.writeObservers.push(fn);
  }

  /** Applied index of the last batch written with `sync: true` (or loaded at open). */
  get durableAppliedIndex(): number {
    return this._durableAppliedIndex;
  }

  /** Returns the disk space of deleted and compacted records (etcdctl defrag). */
  defragment(): Promise<void> {
    return compactWholeDatabase(this.db);
  }

  /** The ConfState bytes last persisted (or loaded at open). */
  get confState(): Uint8Array | undefined {
    return this._confState;
  }

  /**
   * Writes everything applied since the last persist as one batch (after a snapshot restore:
   * a full rewrite under a new generation). The changes are taken synchronously when called;
   * writes are serialized in call order.
   */
  /** The write that failed, once one has: every later persist fails with it (see persist). */
  get failure(): Error | undefined {
    return this.failure_;
  }

  persist(opts: PersistOptions = {}): Promise<void> {
    if (this.closed) return Promise.reject(new Error('mvcc backend is closed'));
    if (this.failure_) return Promise.reject(this.failure_);
    const changes = this.store.drainChanges();
    // A full rewrite must read the image now, at the same cut as the drained changes.
    const image = changes.full ? new StateImage(this.store) : undefined;
    // Taken now too: the auth state as of the drained changes' applied index.
    const auth = changes.auth && !image ? encoder.encode(this.store.auth.image()) : undefined;
    const conf = opts.confState ? Buffer.from(opts.confState) : undefined;
    if (conf) this._confState = conf;
    // A rewrite writes the ConfState even when unchanged (as of this cut): an older store's may
    // predate checksums, and the rewrite leaves the store strict.
    const rewriteConf = conf ?? this._confState;
    const run = image
      ? () => this.rewrite(image, changes, rewriteConf)
      : () => this.writeChanges(changes, conf, auth, opts.sync ?? false);
    const p = this.chain.then(() => {
      if (this.failure_) throw this.failure_;
      return run();
    });
    this.chain = p.catch((e: unknown) => {
      // These changes were drained and are lost to the disk: the node must restart (and
      // re-apply from the Raft log) rather than write later batches over a gap.
      this.failure_ ??= e instanceof Error ? e : new Error(String(e));
    });
    return p;
  }

  /** m/state: the applied position, and how many records the live generation holds on disk. */
  private stateValue(c: StateChanges, records: number): Buffer {
    return encoder.encode({
      appliedIndex: c.appliedIndex,
      appliedTerm: c.appliedTerm,
      currentRevision: c.currentRevision,
      compactRevision: c.compactRevision,
      records,
    });
  }

  private async writeChanges(c: StateChanges, conf: Buffer | undefined, auth: Buffer | undefined, sync: boolean): Promise<void> {
    const ops: BatchOp[] = [];
    const gen = this.gen;
    for (const r of c.appended) ops.push(recordOp(gen, r));
    for (const r of c.removed) ops.push({ type: 'del', key: recordKey(gen, r.main, r.sub) });
    for (const op of c.leaseOps) {
      if ('put' in op) ops.push(sealedPut(leaseKey(gen, op.put.id), encoder.encode([op.put.ttlSeconds])));
      else ops.push({ type: 'del', key: leaseKey(gen, op.del) });
    }
    // (A record compacted in the batch that appends it is put, then deleted: it nets out.)
    const records = this.recordsOnDisk + c.appended.length - c.removed.length;
    ops.push(sealedPut(META_STATE, this.stateValue(c, records)));
    if (conf) ops.push(sealedPut(META_CONF, conf));
    if (auth) ops.push(sealedPut(META_AUTH, auth));
    if (this.sealOnFirstWrite) ops.push({ type: 'put', key: META_SEALED, value: STRICT_MARK });
    // The applied index a synced batch makes durable covers the unsynced batches before it; and
    // an unsynced one must not land in a log file after one LevelDB started for an earlier batch.
    let bytes = 0;
    for (const op of ops) bytes += op.key.length + (op.type === 'put' ? op.value.length : 0) + ENTRY_OVERHEAD_BYTES;
    if (sync || this.unflushedBytes + bytes > MVCC_FLUSH_EVERY_BYTES) await this.flush();
    await writeBatch(this.db, ops, sync, this.writeObservers);
    this.unflushedBytes += bytes;
    this.sealOnFirstWrite = false;
    this.recordsOnDisk = records;
    if (sync) this._durableAppliedIndex = Math.max(this._durableAppliedIndex, c.appliedIndex);
  }

  /** Writes the whole image under the next generation, then switches to it in one synced batch. */
  private async rewrite(image: StateImage, c: StateChanges, conf: Uint8Array | undefined): Promise<void> {
    const gen = this.gen + 1;
    try {
      await this.db.clear(genRange(gen)); // leftovers of an abandoned rewrite
      for (;;) {
        const batch = image.nextBatch(MVCC_REWRITE_BATCH_BYTES);
        if (batch.length === 0) break;
        const ops = [];
        for (const part of batch) {
          for (const r of part.records) ops.push(recordOp(gen, r));
        }
        await writeBatch(this.db, ops, false);
      }
      const ops: BatchOp[] = [];
      for (const l of image.leases) ops.push(sealedPut(leaseKey(gen, l.id), encoder.encode([l.ttlSeconds])));
      const genValue = Buffer.alloc(4);
      genValue.writeUInt32BE(gen);
      ops.push(sealedPut(META_GEN, genValue));
      ops.push(
        sealedPut(
          META_STATE,
          this.stateValue(
            {
              ...c,
              appliedIndex: image.appliedIndex,
              appliedTerm: image.appliedTerm,
              currentRevision: image.revision,
              compactRevision: image.compactRevision,
            },
            image.recordCount, // every batch of the image has been read by now
          ),
        ),
      );
      if (conf) ops.push(sealedPut(META_CONF, conf));
      ops.push(sealedPut(META_AUTH, encoder.encode(image.auth)));
      // Every value of the live generation is now sealed: an older store becomes strict too.
      ops.push({ type: 'put', key: META_SEALED, value: STRICT_MARK });
      // The switch must not outlive the records it switches to (written unsynced above).
      await this.flush();
      await writeBatch(this.db, ops, true);
      this.sealOnFirstWrite = false;
      this.recordsOnDisk = image.recordCount;
    } catch (e) {
      // Another restore replaced the state meanwhile: its own full rewrite is queued behind
      // this one, and the old generation is still the live one. Not a failure. (What it wrote
      // fills the memtable uncounted: the next write flushes first.)
      if (image.superseded) {
        this.unflushedBytes = MVCC_FLUSH_EVERY_BYTES;
        return;
      }
      throw e;
    } finally {
      image.close();
    }
    const old = this.gen;
    this.gen = gen;
    this._durableAppliedIndex = image.appliedIndex;
    await this.db.clear(genRange(old));
    // Its deletes filled the memtable uncounted.
    await this.flush();
  }

  /** Every write so far into synced table files (flushEarlierWrites). */
  private async flush(): Promise<void> {
    await flushEarlierWrites(this.db);
    this.unflushedBytes = 0;
  }

  /** Waits for pending writes and closes the database. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.chain;
    await this.db.close();
  }
}

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}

function decodeMeta(bytes: Buffer): Record<string, number> {
  try {
    return decoder.decode(bytes) as Record<string, number>;
  } catch {
    throw corrupt('undecodable metadata');
  }
}

function addStoredRecord(builder: StateBuilder, k: Buffer, v: Buffer): void {
  if (k.byteLength !== 18 || v.byteLength < 29) throw corrupt('bad record entry');
  const main = k.readUInt32BE(6) * 2 ** 32 + k.readUInt32BE(10);
  const sub = k.readUInt32BE(14);
  const keyLen = v.readUInt32BE(1);
  if (5 + keyLen + 24 > v.byteLength) throw corrupt('bad record length');
  const key = v.subarray(5, 5 + keyLen);
  const o = 5 + keyLen;
  const tomb = v[0] === 1;
  builder.addRecord(
    key,
    main,
    sub,
    v.readDoubleBE(o),
    v.readDoubleBE(o + 8),
    v.readDoubleBE(o + 16),
    tomb ? null : v.subarray(o + 24),
  );
}
