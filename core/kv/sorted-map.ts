/**
 * An ordered map from binary-string keys to values, for range scans over the key index.
 * Layout: a list of sorted chunks (each at most CHUNK_MAX entries) plus the first key of each
 * chunk, so a lookup is two binary searches and an insert moves at most CHUNK_MAX entries.
 * Simpler than a B-tree and as fast at the sizes we hold (millions of keys). Point lookups
 * belong to a Map beside it; this structure is only for order.
 */

const CHUNK_MAX = 512;
const CHUNK_MERGE_BELOW = 64;

interface Chunk<V> {
  keys: string[];
  vals: V[];
}

export class SortedKeyMap<V> {
  private chunks: Chunk<V>[] = [];
  private firsts: string[] = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Builds from entries already sorted by key, strictly increasing. */
  static fromSorted<V>(keys: string[], vals: V[]): SortedKeyMap<V> {
    const m = new SortedKeyMap<V>();
    const half = CHUNK_MAX / 2;
    for (let i = 0; i < keys.length; i += half) {
      const chunk = { keys: keys.slice(i, i + half), vals: vals.slice(i, i + half) };
      m.chunks.push(chunk);
      m.firsts.push(chunk.keys[0]!);
    }
    m.count = keys.length;
    return m;
  }

  /** Index of the chunk that holds (or would hold) `key`. */
  private chunkFor(key: string): number {
    const f = this.firsts;
    let lo = 0;
    let hi = f.length - 1;
    // Last chunk whose first key <= key (0 if key precedes all).
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (f[mid]! <= key) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  private static lowerBound(keys: string[], key: string): number {
    let lo = 0;
    let hi = keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (keys[mid]! < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  get(key: string): V | undefined {
    if (this.count === 0) return undefined;
    const c = this.chunks[this.chunkFor(key)]!;
    const i = SortedKeyMap.lowerBound(c.keys, key);
    return c.keys[i] === key ? c.vals[i] : undefined;
  }

  set(key: string, val: V): void {
    if (this.chunks.length === 0) {
      this.chunks.push({ keys: [key], vals: [val] });
      this.firsts.push(key);
      this.count = 1;
      return;
    }
    const ci = this.chunkFor(key);
    const c = this.chunks[ci]!;
    const i = SortedKeyMap.lowerBound(c.keys, key);
    if (c.keys[i] === key) {
      c.vals[i] = val;
      return;
    }
    if (i === c.keys.length) {
      c.keys.push(key);
      c.vals.push(val);
    } else {
      c.keys.splice(i, 0, key);
      c.vals.splice(i, 0, val);
    }
    if (i === 0) this.firsts[ci] = key;
    this.count++;
    if (c.keys.length > CHUNK_MAX) {
      const half = c.keys.length >>> 1;
      const right = { keys: c.keys.splice(half), vals: c.vals.splice(half) };
      this.chunks.splice(ci + 1, 0, right);
      this.firsts.splice(ci + 1, 0, right.keys[0]!);
    }
  }

  delete(key: string): boolean {
    if (this.count === 0) return false;
    const ci = this.chunkFor(key);
    const c = this.chunks[ci]!;
    const i = SortedKeyMap.lowerBound(c.keys, key);
    if (c.keys[i] !== key) return false;
    c.keys.splice(i, 1);
    c.vals.splice(i, 1);
    this.count--;
    if (c.keys.length === 0) {
      this.chunks.splice(ci, 1);
      this.firsts.splice(ci, 1);
      return true;
    }
    if (i === 0) this.firsts[ci] = c.keys[0]!;
    // Keep chunks from thinning out after mass deletes: merge a small chunk into its neighbour.
    if (c.keys.length < CHUNK_MERGE_BELOW && ci + 1 < this.chunks.length) {
      const next = this.chunks[ci + 1]!;
      if (c.keys.length + next.keys.length <= CHUNK_MAX) {
        c.keys.push(...next.keys);
        c.vals.push(...next.vals);
        this.chunks.splice(ci + 1, 1);
        this.firsts.splice(ci + 1, 1);
      }
    }
    return true;
  }

  /**
   * Visits entries in key order from `start` (inclusive, or exclusive when `afterStart`) up to
   * `end` (exclusive; '' = no end). Stops early when `visit` returns false.
   */
  scan(start: string, afterStart: boolean, end: string, visit: (key: string, val: V) => boolean | void): void {
    if (this.count === 0) return;
    let ci = this.chunkFor(start);
    let i = SortedKeyMap.lowerBound(this.chunks[ci]!.keys, start);
    if (afterStart && this.chunks[ci]!.keys[i] === start) i++;
    for (; ci < this.chunks.length; ci++, i = 0) {
      const c = this.chunks[ci]!;
      for (; i < c.keys.length; i++) {
        const k = c.keys[i]!;
        if (end !== '' && k >= end) return;
        if (visit(k, c.vals[i]!) === false) return;
      }
    }
  }

  /** Keys in order (tests and snapshots). */
  *keys(): IterableIterator<string> {
    for (const c of this.chunks) yield* c.keys;
  }
}
