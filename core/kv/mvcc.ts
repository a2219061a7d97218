/**
 * The multi-version data: every key's history of records, the ordered key index, and the
 * revision log that watchers catch up from. Knows revisions and compaction; knows nothing of
 * requests, leases or watchers (store.ts drives it).
 *
 * Revision model (etcd's): the store starts at revision 1; every write txn that changes
 * something takes the next main revision, and each change inside it a sub revision. A key's
 * record holds create_revision, version (1 on creation, +1 per put) and its lease; a delete
 * appends a tombstone (value null). Compaction at C drops every record superseded at or
 * before C, and whole keys whose last record at or before C is a tombstone.
 */
import { SortedKeyMap } from './sorted-map.js';
import type { KeyValue } from './types.js';
import { EMPTY_BYTES } from './keys.js';
import { ValueArena, storedCopy, storedView, type ArenaValue, type ArenaSlab } from './value-arena.js';

export class KvRecord implements ArenaValue {
  // Where the value's bytes are in the store's ValueArena (slab null for a tombstone); set by
  // the arena, which may move them (relocation) without the record changing otherwise.
  slab: ArenaSlab | null = null;
  offset = 0;
  length = 0;
  released = false;

  constructor(
    readonly hist: KeyHistory,
    readonly main: number,
    readonly sub: number,
    /** 0 for a tombstone. */
    readonly createRevision: number,
    /** 0 for a tombstone. */
    readonly version: number,
    readonly lease: number,
    /** The value, copied into `arena`; null for a tombstone. */
    value: Uint8Array | null,
    arena: ValueArena,
  ) {
    if (value !== null) arena.store(this, value);
  }

  get tombstone(): boolean {
    return this.slab === null;
  }

  /** The value's bytes, made on demand (a fresh Buffer: nothing shares the store's copy); null for a tombstone. */
  get value(): Buffer | null {
    return this.slab === null ? null : storedCopy(this);
  }

  /** The value's bytes in the arena, not copied (compare or hash them; never hand them out); null for a tombstone. */
  get storedValue(): Buffer | null {
    return this.slab === null ? null : storedView(this);
  }

  /** Bytes of the value (0 for a tombstone). */
  get valueBytes(): number {
    return this.length;
  }

  /** The KeyValue clients see (a delete event's kv has only key and modRevision); keysOnly leaves the value empty. */
  toKeyValue(keysOnly = false): KeyValue {
    return {
      key: this.hist.key,
      createRevision: this.createRevision,
      modRevision: this.main,
      version: this.version,
      value: keysOnly || this.slab === null ? EMPTY_BYTES : storedCopy(this),
      lease: this.lease,
    };
  }

  /** Bytes a client response would carry for this record (for memory caps). */
  get sizeBytes(): number {
    return this.hist.skey.length + this.valueBytes;
  }
}

/** Histories up to this many records are kept in exact-size arrays (KeyHistory.append). */
const EXACT_HISTORY_LENGTH = 16;

export class KeyHistory {
  /** Records in increasing (main, sub) order; never empty while the history is indexed. */
  records: KvRecord[] = [];
  /** The key as a binary string (latin1): the only copy of the key kept in memory. */
  constructor(readonly skey: string) {}

  /**
   * The key's bytes, made on demand: keeping a Buffer per key would cost ~150 bytes of heap
   * per key for something only responses need.
   */
  get key(): Buffer {
    return Buffer.from(this.skey, 'latin1');
  }

  /**
   * Appends the newest record. Short histories stay in exact-size arrays: V8 grows a
   * pushed-into array to 17 slots, ~130 bytes more per key than a history of one to three
   * records needs (measured: 209 against 81 bytes for three records).
   */
  append(rec: KvRecord): void {
    const rs = this.records;
    if (rs.length >= EXACT_HISTORY_LENGTH) rs.push(rec);
    else this.records = rs.length === 0 ? [rec] : rs.concat([rec]);
  }

  latest(): KvRecord | undefined {
    return this.records[this.records.length - 1];
  }

  /** The live record now, or undefined when the key is deleted. */
  live(): KvRecord | undefined {
    const r = this.records[this.records.length - 1];
    return r === undefined || r.tombstone ? undefined : r;
  }

  /** Index of the last record with main <= rev, or -1. */
  indexAt(rev: number): number {
    const rs = this.records;
    let hi = rs.length - 1;
    if (hi >= 0 && rs[hi]!.main <= rev) return hi; // the common case: reading the present
    let lo = 0;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (rs[mid]!.main <= rev) lo = mid + 1;
      else hi = mid - 1;
    }
    return hi;
  }

  /** The live record as of revision `rev`, or undefined. */
  liveAt(rev: number): KvRecord | undefined {
    const i = this.indexAt(rev);
    if (i < 0) return undefined;
    const r = this.records[i]!;
    return r.tombstone ? undefined : r;
  }

  /** The record just before `rec` in this history, if live (a change's previous value). */
  previousLive(rec: KvRecord): KvRecord | undefined {
    const i = this.records.lastIndexOf(rec);
    const p = i > 0 ? this.records[i - 1] : undefined;
    return p === undefined || p.tombstone ? undefined : p;
  }
}

/**
 * The revision log as two parallel arrays (one object per revision would cost ~100 bytes
 * per write at a million revisions): the main revisions in increasing order, and for each
 * its record, or its records in sub order when a revision changed several keys.
 */
export interface RevisionLog {
  mains: number[];
  recs: Array<KvRecord | KvRecord[]>;
}

/**
 * Bytes one retained record costs beyond its value's bytes (which the arena holds off the V8
 * heap): the KvRecord object and its slots in the key history, the revision log and its slab's
 * list (146 measured for 1,000 keys, test/kv/quota.test.ts). With
 * KEY_OVERHEAD_BYTES (a key's history, its string, its Map and sorted-index entries) the
 * estimate stays within ~25% of the measured heap for small and large values, few and many
 * keys (test/kv/quota.test.ts).
 */
export const RECORD_OVERHEAD_BYTES = 144;
export const KEY_OVERHEAD_BYTES = 192;

/** The estimate of one record's memory that the space quota counts (its key is counted once per history). */
export function recordRetainedBytes(r: KvRecord): number {
  return RECORD_OVERHEAD_BYTES + r.valueBytes;
}

function historyRetainedBytes(h: KeyHistory): number {
  return KEY_OVERHEAD_BYTES + h.skey.length;
}

export class MvccIndex {
  /** The last revision a write produced (1 for an empty store, as etcd). */
  currentRevision = 1;
  /** Reads and watches below this fail; -1 before the first compaction (etcd's compactMainRev). */
  compactRevision = -1;
  /** Records at or below this have been physically removed (lags compactRevision while pinned). */
  physicalCompactRevision = -1;
  /**
   * Estimated memory held by retained records (recordRetainedBytes each): what the space
   * quota (quota.ts) is measured against. Physical compaction gives it back.
   */
  retainedBytes = 0;

  /** Where the records' values are (value-arena.ts: off the V8 heap). */
  private arena = new ValueArena();
  private hists = new Map<string, KeyHistory>();
  private sorted = new SortedKeyMap<KeyHistory>();
  /** Revision log from the oldest retained revision >= compactRevision; head is a moving start. */
  private revMains: number[] = [];
  private revRecs: Array<KvRecord | KvRecord[]> = [];
  private revlogHead = 0;
  /** Histories with something to compact: more than one record, or a tombstone last. */
  private readonly compactable = new Set<KeyHistory>();

  // The write in progress (see beginWrite).
  private writeMain = 0;
  private writeRecords: KvRecord[] = [];

  get keyCount(): number {
    return this.hists.size;
  }

  /** Bytes the value arena holds beyond the values in use: released values not yet relocated, slab tails. */
  get valueSlackBytes(): number {
    return this.arena.slabBytes - this.arena.liveBytes;
  }

  history(skey: string): KeyHistory | undefined {
    return this.hists.get(skey);
  }

  /** Visits histories with keys in [start, end) in order ('' end = unbounded). */
  scan(start: string, afterStart: boolean, end: string, visit: (h: KeyHistory) => boolean | void): void {
    this.sorted.scan(start, afterStart, end, (_k, h) => visit(h));
  }

  // ---- writes ----

  /** Starts a write txn; its changes take main revision currentRevision + 1. */
  beginWrite(): void {
    this.writeMain = this.currentRevision + 1;
    this.writeRecords = [];
  }

  /** Changes made so far in the write in progress. */
  get writeChanges(): number {
    return this.writeRecords.length;
  }

  get writeRevision(): number {
    return this.writeMain;
  }

  /** The revision of the newest record held: the write in progress's once it has changed something. */
  get newestRevision(): number {
    return this.writeRecords.length > 0 ? this.writeMain : this.currentRevision;
  }

  /** Appends a put (the value is copied); the key must not already have been changed in this write. */
  put(skey: string, value: Uint8Array, lease: number): KvRecord {
    let h = this.hists.get(skey);
    if (h === undefined) {
      h = new KeyHistory(skey);
      this.hists.set(skey, h);
      this.sorted.set(skey, h);
      this.retainedBytes += historyRetainedBytes(h);
    }
    const prev = h.live();
    const rec = new KvRecord(
      h,
      this.writeMain,
      this.writeRecords.length,
      prev === undefined ? this.writeMain : prev.createRevision,
      prev === undefined ? 1 : prev.version + 1,
      lease,
      value,
      this.arena,
    );
    this.appendRecord(h, rec);
    return rec;
  }

  /** Appends a tombstone for a live key. */
  delete(h: KeyHistory): KvRecord {
    const rec = new KvRecord(h, this.writeMain, this.writeRecords.length, 0, 0, 0, null, this.arena);
    this.appendRecord(h, rec);
    return rec;
  }

  private appendRecord(h: KeyHistory, rec: KvRecord): void {
    h.append(rec);
    if (h.records.length > 1 || rec.tombstone) this.compactable.add(h);
    this.retainedBytes += recordRetainedBytes(rec);
    this.writeRecords.push(rec);
  }

  /** Ends the write; returns its records (empty: nothing changed, revision unchanged). */
  endWrite(): KvRecord[] {
    const recs = this.writeRecords;
    this.writeRecords = [];
    if (recs.length > 0) {
      this.currentRevision = this.writeMain;
      this.revMains.push(this.writeMain);
      this.revRecs.push(recs.length === 1 ? recs[0]! : recs.slice());
    }
    return recs;
  }

  // ---- compaction ----

  /**
   * Removes records no read at or above `rev` can see, and the revision log below `rev`.
   * Returns the removed records (for the persistence layer to delete).
   */
  physicalCompact(rev: number): KvRecord[] {
    const removed: KvRecord[] = [];
    for (const h of this.compactable) {
      const i = h.indexAt(rev);
      if (i < 0) continue;
      const cut = h.records[i]!.tombstone ? i + 1 : i;
      if (cut > 0) {
        for (let j = 0; j < cut; j++) {
          const r = h.records[j]!;
          removed.push(r);
          this.arena.release(r);
          this.retainedBytes -= recordRetainedBytes(r);
        }
        h.records = h.records.slice(cut);
      }
      if (h.records.length === 0) {
        this.compactable.delete(h);
        this.hists.delete(h.skey);
        this.sorted.delete(h.skey);
        this.retainedBytes -= historyRetainedBytes(h);
      } else if (h.records.length === 1 && !h.records[0]!.tombstone) {
        this.compactable.delete(h);
      }
    }
    const head = this.revlogIndex(rev);
    for (let i = this.revlogHead; i < head; i++) this.revRecs[i] = undefined as unknown as KvRecord; // release
    this.revlogHead = head;
    if (head > 1024 && head * 2 > this.revMains.length) {
      this.revMains = this.revMains.slice(head);
      this.revRecs = this.revRecs.slice(head);
      this.revlogHead = 0;
    }
    this.arena.relocate();
    if (rev > this.physicalCompactRevision) this.physicalCompactRevision = rev;
    return removed;
  }

  // ---- revision log ----

  /** Index into the revision log of the first entry with main >= rev. */
  private revlogIndex(rev: number): number {
    let lo = this.revlogHead;
    let hi = this.revMains.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.revMains[mid]! < rev) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Visits revision-log entries with main in [fromRev, toRev], at most `maxEntries` of them.
   * `visit` returning false stops before consuming that entry. Returns the revision to
   * continue from (toRev + 1 when done).
   */
  scanRevisions(
    fromRev: number,
    toRev: number,
    maxEntries: number,
    visit: (main: number, records: readonly KvRecord[]) => boolean | void,
  ): number {
    let i = this.revlogIndex(fromRev);
    let n = 0;
    for (; i < this.revMains.length; i++) {
      const main = this.revMains[i]!;
      if (main > toRev) return toRev + 1;
      if (n >= maxEntries) return main;
      n++;
      const r = this.revRecs[i]!;
      if (visit(main, Array.isArray(r) ? r : [r]) === false) return main;
    }
    return toRev + 1;
  }

  // ---- bulk load (snapshot restore, persistence) ----

  /**
   * Installs fully built histories; `revlog` holds every record of `hists` by revision, and
   * `arena` their values.
   */
  install(
    hists: Map<string, KeyHistory>,
    /** The same histories in key order. */
    sorted: KeyHistory[],
    revlog: RevisionLog,
    currentRevision: number,
    compactRevision: number,
    arena: ValueArena,
  ): void {
    this.arena = arena;
    this.hists = hists; // adopted, not copied: it can hold millions of entries
    this.sorted = SortedKeyMap.fromSorted(
      sorted.map((h) => h.skey),
      sorted,
    );
    this.revMains = revlog.mains;
    this.revRecs = revlog.recs;
    this.revlogHead = 0;
    this.compactable.clear();
    this.retainedBytes = 0;
    for (const h of hists.values()) {
      if (h.records.length > 1 || h.latest()!.tombstone) this.compactable.add(h);
      this.retainedBytes += historyRetainedBytes(h);
      for (const r of h.records) this.retainedBytes += recordRetainedBytes(r);
    }
    this.currentRevision = currentRevision;
    this.compactRevision = compactRevision;
    this.physicalCompactRevision = -1;
  }

  /** Every history in key order (snapshots, digests). */
  *historiesInOrder(): IterableIterator<KeyHistory> {
    for (const k of this.sorted.keys()) yield this.hists.get(k)!;
  }

  /** Number of histories queued for compaction (tests). */
  get compactableCount(): number {
    return this.compactable.size;
  }
}

/**
 * The records of a history that a fully compacted store keeps at `compactRevision`: what
 * snapshots carry and digests cover, independent of how far physical compaction has run.
 */
export function visibleRecords(h: KeyHistory, compactRevision: number): KvRecord[] {
  const i = h.indexAt(compactRevision);
  if (i < 0) return h.records;
  const start = h.records[i]!.tombstone ? i + 1 : i;
  return start === 0 ? h.records : h.records.slice(start);
}
