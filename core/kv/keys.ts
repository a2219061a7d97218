/**
 * Key encoding and key ranges. Inside the store a key is a "binary string": its bytes as
 * latin1 code units. JavaScript compares such strings code unit by code unit, which is exactly
 * byte order, so Map lookups and `<` work without Buffer.compare calls.
 */

/** The interval a request names: a single key, [start, end), or every key >= start. */
export interface KeySpan {
  start: string;
  /**
   * undefined: the single key `start`. '' : no upper bound (etcd's "\0" range end).
   * Otherwise the exclusive end. ('' cannot be a real end: etcd keys are never empty.)
   */
  end: string | undefined;
}

export function keyString(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

export function keyBytes(key: string): Buffer {
  return Buffer.from(key, 'latin1');
}

/** Slab size of ValueSlab; values above an eighth of it get memory of their own. */
export const VALUE_SLAB_BYTES = 16 * 1024;

/**
 * Packs small byte arrays that are kept for a while into slabs that hold those arrays only:
 * packed like Node's pool, but with no transient buffers among them (a kept slice of Node's
 * 8 KiB pool keeps the whole pool slab, and every transient buffer cut from it, alive). Used
 * for the Raft entries a member proposes, which its log keeps until the next log compaction
 * and drops in order, so slabs are freed in order too. A slab lives while any of its arrays does.
 */
export class ValueSlab {
  private slab: Buffer | undefined;
  private used = 0;

  copy(bytes: Uint8Array): Buffer {
    const out = this.alloc(bytes.byteLength);
    out.set(bytes);
    return out;
  }

  /** `n` uninitialised bytes. */
  alloc(n: number): Buffer {
    if (n > VALUE_SLAB_BYTES / 8) return Buffer.allocUnsafeSlow(n);
    if (this.slab === undefined || this.used + n > VALUE_SLAB_BYTES) {
      this.slab = Buffer.allocUnsafeSlow(VALUE_SLAB_BYTES);
      this.used = 0;
    }
    const out = this.slab.subarray(this.used, this.used + n);
    this.used += n;
    return out;
  }
}

export const EMPTY_BYTES: Buffer = Buffer.alloc(0);

/** etcd's range_end convention (mkGteRange): empty = single key, [0] = to the end. */
export function spanOf(key: Uint8Array, rangeEnd: Uint8Array | undefined): KeySpan {
  const start = keyString(key);
  if (rangeEnd === undefined || rangeEnd.byteLength === 0) return { start, end: undefined };
  if (rangeEnd.byteLength === 1 && rangeEnd[0] === 0) return { start, end: '' };
  return { start, end: keyString(rangeEnd) };
}

export function spanContains(span: KeySpan, key: string): boolean {
  if (span.end === undefined) return key === span.start;
  return key >= span.start && (span.end === '' || key < span.end);
}

/** The smallest key greater than every key with this prefix; [0] (no end) when none exists. */
export function prefixEnd(prefix: Uint8Array): Uint8Array {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}
