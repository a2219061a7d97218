/**
 * Snapshot save/restore of the whole KvStore state, as a stream: an async iterable of byte
 * chunks out, any chunking of the same bytes back in. Used for Raft snapshots (streamed to a
 * follower in chunks) and for `picloud-node snapshot save/restore`.
 *
 * Format (version 1): a sequence of frames, each a 4-byte big-endian length and a CBOR map:
 *   {t:'h', format, version, revision, compactRevision, appliedIndex, appliedTerm, context?}
 *       context: bytes of the embedder's own at the same applied index (the manager's member
 *       table with addresses), opaque here
 *   {t:'l', l: [[leaseId, ttlSeconds], ...]}                       (0..n frames)
 *   {t:'a', a: AuthState image}                                    (0..1 frame; none: auth empty)
 *   {t:'k', k: [[key, [[main, sub, create, version, lease, value|null], ...]], ...]}
 *       keys in increasing order; a key's records may continue in the next frame
 *   {t:'e', records, sha256}   sha256 of every byte before this frame
 * The image is the state at one revision, consistent while applies continue: records above
 * that revision are skipped and physical compaction waits until the stream ends.
 */
import { createHash } from 'node:crypto';
import { Decoder, Encoder } from 'cbor-x';
import { AuthState, type AuthImage } from './auth.js';
import { KvError } from './errors.js';
import { SNAPSHOT_CHUNK_BYTES, SNAPSHOT_FRAME_BYTES_MAX } from './limits.js';
import { visibleRecords, type KvRecord } from './mvcc.js';
import { StateBuilder } from './state-builder.js';
import type { InstallableState, KvStore } from './store.js';

export const SNAPSHOT_FORMAT = 'picloud-kv-snapshot';
export const SNAPSHOT_VERSION = 1;
const LEASES_PER_FRAME = 4096;

const encoder = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

function corrupt(detail: string): KvError {
  return new KvError('SNAPSHOT_CORRUPT', detail);
}

/** Collects frames into chunks of about `chunkBytes`. */
class ChunkWriter {
  private parts: Buffer[] = [];
  private size = 0;
  readonly hash = createHash('sha256');
  constructor(private readonly chunkBytes: number) {}

  frame(payload: unknown, hashed = true): void {
    const body = encoder.encode(payload);
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(body.byteLength);
    if (hashed) {
      this.hash.update(len);
      this.hash.update(body);
    }
    this.parts.push(len, body);
    this.size += 4 + body.byteLength;
  }

  get ready(): boolean {
    return this.size >= this.chunkBytes;
  }

  take(): Buffer | undefined {
    if (this.size === 0) return undefined;
    const out = Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    return out;
  }
}

type EncodedRecord = [number, number, number, number, number, Uint8Array | null];

function encodeRecord(r: KvRecord): EncodedRecord {
  return [r.main, r.sub, r.createRevision, r.version, r.lease, r.value];
}

/**
 * A consistent image of the store's state at the revision current when it is opened, read
 * out in batches while applies continue: records above that revision are skipped, and
 * physical compaction is held back (pin) until `close`. Used by the snapshot writer and by
 * the persistence layer's full rewrite.
 */
export class StateImage {
  readonly revision: number;
  readonly compactRevision: number;
  readonly appliedIndex: number;
  readonly appliedTerm: number;
  readonly leases: Array<{ id: number; ttlSeconds: number }>;
  readonly auth: AuthImage;
  private readonly epoch: number;
  private after: string | undefined;
  /** The rest of a history cut at the end of the last batch. */
  private rest: { key: Uint8Array; records: KvRecord[] } | undefined;
  private closed = false;
  recordCount = 0;

  constructor(private readonly store: KvStore) {
    store.pin();
    const idx = store.mvcc;
    this.epoch = store.stateEpoch;
    this.revision = idx.currentRevision;
    this.compactRevision = idx.compactRevision;
    this.appliedIndex = store.appliedIndex;
    this.appliedTerm = store.appliedTerm;
    this.leases = store.leases();
    this.auth = store.auth.image();
  }

  /** The store's state was replaced (a restore) since the image was opened. */
  get superseded(): boolean {
    return this.store.stateEpoch !== this.epoch;
  }

  /**
   * The next batch: histories in key order, each the key and its records, about `batchBytes`
   * in all (a long history is cut where a batch is full and goes on in the next, under the same
   * key: one key's history may be larger than a frame may be). Empty when done.
   */
  nextBatch(batchBytes: number): Array<{ key: Uint8Array; records: KvRecord[] }> {
    if (this.closed) return [];
    if (this.superseded) throw corrupt('state replaced while an image was being read');
    const out: Array<{ key: Uint8Array; records: KvRecord[] }> = [];
    let bytes = 0;
    const { revision, compactRevision } = this;
    if (this.rest !== undefined) {
      const { key, records } = this.rest;
      bytes = this.emit(out, key, records, batchBytes, bytes);
      if (this.rest !== undefined) return out;
    }
    this.store.mvcc.scan(this.after ?? '', this.after !== undefined, '', (h) => {
      if (bytes >= batchBytes) return false;
      this.after = h.skey;
      if (h.indexAt(revision) < 0) return true; // created after the image's revision
      let recs = visibleRecords(h, compactRevision);
      if (recs.length > 0 && recs[recs.length - 1]!.main > revision) recs = recs.filter((r) => r.main <= revision);
      if (recs.length === 0) return true;
      bytes = this.emit(out, h.key, recs, batchBytes, bytes);
      return this.rest === undefined;
    });
    return out;
  }

  /** Adds `records` of `key` to the batch until it is full; what is left waits in `rest`. Returns the batch's bytes. */
  private emit(out: Array<{ key: Uint8Array; records: KvRecord[] }>, key: Uint8Array, records: readonly KvRecord[], batchBytes: number, bytes: number): number {
    const part: KvRecord[] = [];
    out.push({ key, records: part });
    bytes += key.byteLength;
    for (let i = 0; i < records.length; i++) {
      if (bytes >= batchBytes && part.length > 0) {
        // A copy: the history itself grows with later applies (records past the image's revision).
        this.rest = { key, records: records.slice(i) };
        return bytes;
      }
      const r = records[i]!;
      part.push(r);
      this.recordCount++;
      bytes += r.sizeBytes + 24;
    }
    this.rest = undefined;
    return bytes;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.store.unpin();
  }
}

/**
 * A snapshot of the store taken when this object is created (so `appliedIndex` is exactly
 * the index a Raft snapshot must carry), read out as chunks. Applies may run between chunks;
 * replacing the state (a restore) meanwhile aborts it with SNAPSHOT_CORRUPT. Iterate it to
 * the end or call `return()`: until then physical compaction is held back.
 */
export class SnapshotStream implements AsyncIterableIterator<Uint8Array> {
  readonly revision: number;
  readonly appliedIndex: number;
  readonly appliedTerm: number;
  private readonly image: StateImage;
  private readonly gen: AsyncGenerator<Uint8Array, void, void>;

  constructor(store: KvStore, chunkBytes: number = SNAPSHOT_CHUNK_BYTES, context?: Uint8Array) {
    this.image = new StateImage(store);
    this.revision = this.image.revision;
    this.appliedIndex = this.image.appliedIndex;
    this.appliedTerm = this.image.appliedTerm;
    this.gen = imageChunks(this.image, chunkBytes, context);
  }

  next(): Promise<IteratorResult<Uint8Array, void>> {
    return this.gen.next();
  }

  /** Stops early and releases the image. */
  async return(): Promise<IteratorResult<Uint8Array, void>> {
    this.image.close(); // a generator never started would not run its finally
    return this.gen.return(undefined);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** The snapshot stream of `store` at its current revision (see SnapshotStream). */
export function writeSnapshot(store: KvStore, chunkBytes: number = SNAPSHOT_CHUNK_BYTES, context?: Uint8Array): SnapshotStream {
  return new SnapshotStream(store, chunkBytes, context);
}

async function* imageChunks(image: StateImage, chunkBytes: number, context: Uint8Array | undefined): AsyncGenerator<Uint8Array, void, void> {
  try {
    const w = new ChunkWriter(chunkBytes);
    w.frame({
      t: 'h',
      format: SNAPSHOT_FORMAT,
      version: SNAPSHOT_VERSION,
      revision: image.revision,
      compactRevision: image.compactRevision,
      appliedIndex: image.appliedIndex,
      appliedTerm: image.appliedTerm,
      ...(context !== undefined ? { context } : {}),
    });
    for (let i = 0; i < image.leases.length; i += LEASES_PER_FRAME) {
      w.frame({ t: 'l', l: image.leases.slice(i, i + LEASES_PER_FRAME).map((l) => [l.id, l.ttlSeconds]) });
    }
    // Left out while nothing was ever set, so such snapshots stay readable by versions before auth.
    if (image.auth.revision > 0) w.frame({ t: 'a', a: image.auth });
    for (;;) {
      const batch = image.nextBatch(chunkBytes);
      if (batch.length === 0) break;
      w.frame({ t: 'k', k: batch.map((b) => [b.key, b.records.map(encodeRecord)]) });
      if (w.ready) yield w.take()!;
    }
    w.frame({ t: 'e', records: image.recordCount, sha256: w.hash.digest() }, false);
    yield w.take()!;
  } finally {
    image.close();
  }
}

/** Incremental frame reader over arbitrarily chunked input. */
class FrameReader {
  private parts: Buffer[] = [];
  private size = 0;

  push(chunk: Uint8Array): void {
    if (!(chunk instanceof Uint8Array)) throw corrupt('chunk is not bytes');
    if (chunk.byteLength === 0) return;
    this.parts.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.size += chunk.byteLength;
  }

  /** The next whole frame (length prefix and body), or undefined when more input is needed. */
  next(): { raw: Buffer; body: Buffer } | undefined {
    if (this.size < 4) return undefined;
    if (this.parts[0]!.byteLength < 4) this.parts = [Buffer.concat(this.parts, this.size)];
    const len = this.parts[0]!.readUInt32BE(0);
    if (len > SNAPSHOT_FRAME_BYTES_MAX) throw corrupt(`frame of ${len} bytes`);
    if (this.size < 4 + len) return undefined;
    const all = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
    const raw = all.subarray(0, 4 + len);
    const rest = all.subarray(4 + len);
    this.parts = rest.byteLength > 0 ? [rest] : [];
    this.size = rest.byteLength;
    return { raw, body: raw.subarray(4) };
  }

  get pending(): number {
    return this.size;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype;
}

/** Reads and verifies a snapshot stream; throws KvError SNAPSHOT_CORRUPT on anything wrong. */
export async function readSnapshot(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<InstallableState> {
  const reader = new FrameReader();
  const hash = createHash('sha256');
  const builder = new StateBuilder();
  let header: Record<string, unknown> | undefined;
  let done: InstallableState | undefined;
  let auth: unknown;

  const handle = (raw: Buffer, body: Buffer): void => {
    if (done) throw corrupt('bytes after the end frame');
    let f: unknown;
    try {
      f = decoder.decode(body);
    } catch (e) {
      throw corrupt(`undecodable frame: ${(e as Error).message}`);
    }
    if (!isPlainObject(f)) throw corrupt('frame is not a map');
    if (header === undefined) {
      if (f.t !== 'h' || f.format !== SNAPSHOT_FORMAT) throw corrupt('not a picloud kv snapshot');
      if (f.version !== SNAPSHOT_VERSION) throw corrupt(`unsupported snapshot version ${String(f.version)}`);
      if (f.context !== undefined && !(f.context instanceof Uint8Array)) throw corrupt('bad context');
      header = f;
      hash.update(raw);
      return;
    }
    switch (f.t) {
      case 'l': {
        if (!Array.isArray(f.l)) throw corrupt('bad lease frame');
        for (const l of f.l) {
          if (!Array.isArray(l) || l.length !== 2) throw corrupt('bad lease');
          builder.addLease(l[0], l[1]);
        }
        hash.update(raw);
        return;
      }
      case 'a': {
        if (auth !== undefined) throw corrupt('two auth frames');
        new AuthState().load(f.a); // validates (throws SNAPSHOT_CORRUPT)
        auth = f.a;
        hash.update(raw);
        return;
      }
      case 'k': {
        if (!Array.isArray(f.k)) throw corrupt('bad key frame');
        for (const entry of f.k) {
          if (!Array.isArray(entry) || entry.length !== 2 || !Array.isArray(entry[1])) throw corrupt('bad key entry');
          for (const r of entry[1] as unknown[]) {
            if (!Array.isArray(r) || r.length !== 6) throw corrupt('bad record');
            builder.addRecord(entry[0], r[0], r[1], r[2], r[3], r[4], r[5]);
          }
        }
        hash.update(raw);
        return;
      }
      case 'e': {
        const sum = f.sha256;
        if (!(sum instanceof Uint8Array) || !hash.digest().equals(Buffer.from(sum))) throw corrupt('checksum mismatch');
        if (f.records !== builder.recordCount) throw corrupt('record count mismatch');
        done = builder.finish({
          currentRevision: header.revision as number,
          compactRevision: header.compactRevision as number,
          appliedIndex: header.appliedIndex as number,
          appliedTerm: header.appliedTerm as number,
        });
        if (header.context instanceof Uint8Array) done.context = header.context;
        if (auth !== undefined) done.auth = auth;
        return;
      }
      default:
        throw corrupt('unknown frame type');
    }
  };

  for await (const chunk of source) {
    reader.push(chunk);
    for (let fr = reader.next(); fr; fr = reader.next()) handle(fr.raw, fr.body);
  }
  if (reader.pending > 0) throw corrupt(done ? 'bytes after the end frame' : 'truncated frame');
  if (!done) throw corrupt('truncated: no end frame');
  return done;
}
