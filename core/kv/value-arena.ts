/**
 * Where the MVCC history keeps its values: appended to large off-heap slabs (Buffers), each
 * record holding only its slab, offset and length.
 *
 * Why not a string or a Buffer per value: every object on the V8 heap makes each young-
 * generation collection (scavenge) slower, because V8 visits every old-space page's header
 * on each one, and a store with a long history is mostly values. Measured on a member with
 * 250,000 revisions of 256-byte values (bench/kv/scavenge-history.ts, perf): the page walk in
 * ScavengerCollector::CollectGarbage grew from 2% to 7% of the process's CPU time and the mean
 * scavenge from 2.2 to 3.2 ms, while every request in flight waits on it. Bytes in a slab are
 * not on the V8 heap at all.
 *
 * Slabs are append-only: a value's bytes are never overwritten, so a record that compaction
 * already dropped still reads its value (its slab stays alive while anything points at it).
 * Space comes back by relocation: once less than half of a full slab is still referenced, the
 * values still in use move to the current slab and the old slab is left to the collector.
 * Every full slab is left at least three quarters used (see slabFor), so after a relocation
 * the slabs hold at most 8/3 of the bytes in use, plus the current slab.
 */

/** What the arena stores a value for (a KvRecord): where its bytes are. */
export interface ArenaValue {
  /** null for a value not stored (a tombstone). */
  slab: ArenaSlab | null;
  offset: number;
  length: number;
  /** Set by release(): the history no longer holds this value, so it is not relocated. */
  released: boolean;
}

/** Largest size of a shared slab; they start at a sixteenth of it and grow with the bytes in use. */
export const SLAB_BYTES = 256 * 1024;

export class ArenaSlab {
  /** Bytes appended so far. */
  used = 0;
  /** Bytes of values stored here and not released. */
  live = 0;
  /**
   * The values stored here, for relocation. Released ones are pruned once they are an eighth
   * of the list (amortized, eight holders looked at per release): a released record, and
   * through it a deleted key's history, must not stay reachable from a slab still in use
   * enough never to be relocated.
   */
  holders: ArenaValue[] = [];
  /** Holders in the list released since it was last pruned. */
  releasedHolders = 0;
  /** Queued for relocation (at most once). */
  sparse = false;
  constructor(readonly buf: Buffer) {}
}

/** The slab every empty value points at: nothing stored, nothing counted. */
const EMPTY_SLAB = new ArenaSlab(Buffer.alloc(0));

export class ValueArena {
  /** Bytes of slabs this arena holds: what the values cost in memory. */
  slabBytes = 0;
  /** Bytes of values stored and not released. */
  liveBytes = 0;
  private current: ArenaSlab | null = null;
  /** Full slabs less than half live, waiting for relocate(). */
  private sparse: ArenaSlab[] = [];

  /**
   * `maxSlab`: the largest shared slab (tests use tiny ones); values of at least a quarter of it
   * get a slab of their own.
   */
  constructor(private readonly maxSlab = SLAB_BYTES) {}

  /** Copies `bytes` into the arena and points `holder` at them. */
  store(holder: ArenaValue, bytes: Uint8Array): void {
    const n = bytes.byteLength;
    holder.released = false;
    holder.length = n;
    if (n === 0) {
      holder.slab = EMPTY_SLAB;
      holder.offset = 0;
      return;
    }
    const slab = this.slabFor(n);
    slab.buf.set(bytes, slab.used);
    holder.slab = slab;
    holder.offset = slab.used;
    slab.used += n;
    slab.live += n;
    slab.holders.push(holder);
    this.liveBytes += n;
  }

  /** The history dropped `holder`: its bytes stay readable but no longer count or move. */
  release(holder: ArenaValue): void {
    const slab = holder.slab;
    if (holder.released || slab === null || slab === EMPTY_SLAB) return;
    holder.released = true;
    slab.live -= holder.length;
    this.liveBytes -= holder.length;
    if (++slab.releasedHolders * 8 > slab.holders.length) {
      slab.holders = slab.holders.filter((h) => !h.released);
      slab.releasedHolders = 0;
    }
    if (slab !== this.current) this.markIfSparse(slab);
  }

  /** Moves the values still in use out of sparse slabs, letting those slabs go. */
  relocate(): void {
    while (this.sparse.length > 0) {
      const slab = this.sparse.pop()!;
      for (const h of slab.holders) {
        if (h.released || h.slab !== slab) continue;
        slab.live -= h.length;
        this.liveBytes -= h.length;
        this.store(h, storedView(h));
      }
      this.slabBytes -= slab.buf.byteLength;
    }
  }

  private slabFor(n: number): ArenaSlab {
    const cur = this.current;
    if (n * 4 >= this.maxSlab || (cur !== null && cur.used + n > cur.buf.byteLength && (cur.buf.byteLength - cur.used) * 4 >= cur.buf.byteLength)) {
      // A slab of its own, for a large value or one that does not fit a current slab still
      // a quarter free (which keeps that room): so every shared slab is left at least three
      // quarters used. Released, it is wholly free and goes on the next relocate().
      this.slabBytes += n;
      return new ArenaSlab(Buffer.allocUnsafeSlow(n));
    }
    if (cur !== null && cur.used + n <= cur.buf.byteLength) return cur;
    if (cur !== null) this.markIfSparse(cur);
    const size = this.nextSlabSize(n);
    this.slabBytes += size;
    this.current = new ArenaSlab(Buffer.allocUnsafeSlow(size));
    return this.current;
  }

  /**
   * A small store gets small slabs (an empty slab tail is memory held for nothing): the size
   * doubles from a sixteenth of the largest while the bytes in use are over four slabs' worth,
   * and a value never takes more than a quarter of its slab.
   */
  private nextSlabSize(n: number): number {
    let size = Math.max(1, Math.floor(this.maxSlab / 16));
    while (size < this.maxSlab && (size < n * 4 || size * 4 < this.liveBytes)) size *= 2;
    return size;
  }

  private markIfSparse(slab: ArenaSlab): void {
    if (!slab.sparse && slab.live * 2 < slab.used) {
      slab.sparse = true;
      this.sparse.push(slab);
    }
  }
}

/** Bytes of a stored value, as a view into its slab (callers copy before handing it out). */
export function storedView(v: ArenaValue): Buffer {
  return v.slab!.buf.subarray(v.offset, v.offset + v.length);
}

/** A fresh copy of a stored value's bytes. */
export function storedCopy(v: ArenaValue): Buffer {
  const out = Buffer.allocUnsafe(v.length);
  v.slab!.buf.copy(out, 0, v.offset, v.offset + v.length);
  return out;
}

/** Byte-order comparison of a stored value with `bytes` (-1, 0, 1). */
export function compareStored(v: ArenaValue, bytes: Uint8Array): number {
  return v.slab!.buf.compare(bytes, 0, bytes.byteLength, v.offset, v.offset + v.length);
}

/** Byte-order comparison of two stored values (-1, 0, 1). */
export function compareStoredValues(a: ArenaValue, b: ArenaValue): number {
  return a.slab!.buf.compare(b.slab!.buf, b.offset, b.offset + b.length, a.offset, a.offset + a.length);
}
