/**
 * Range reads over the MVCC index, with etcd's semantics (server/etcdserver/txn/range.go):
 * `count` is every key in the range at the read revision (before limit and before the
 * revision filters), `more` says the limit cut the result, filters prune, then sort, then
 * limit. Also the paged form for ranges too large for one response (etcd#12342).
 */
import { KvError } from './errors.js';
import { KV_OVERHEAD_BYTES, MAX_RANGE_RESPONSE_BYTES, RANGE_PAGE_BYTES_DEFAULT } from './limits.js';
import { EMPTY_BYTES, spanOf, type KeySpan } from './keys.js';
import type { KeyHistory, KvRecord, MvccIndex } from './mvcc.js';
import { compareStoredValues } from './value-arena.js';
import { SortOrder, SortTarget, type KeyValue, type RangeRequest, type RangeResponse } from './types.js';

/** etcd's mvcc rangeKeys revision checks: 0 or below reads at the current revision. */
export function checkReadRevision(idx: MvccIndex, revision: number, readRev: number): void {
  if (revision <= 0) return;
  if (revision > readRev) throw new KvError('FUTURE_REV', `revision ${revision} > ${readRev}`);
  if (revision < idx.compactRevision) throw new KvError('COMPACTED', `revision ${revision} < ${idx.compactRevision}`);
}

/**
 * etcd's checkRequestRange, run on a txn's reads before the txn: any revision but 0 is held
 * against the compacted one, which is -1 until the first compaction. So a negative revision is
 * "compacted" once the store has been compacted (below -1, always); a Range alone, and a txn's
 * read that passes, reads it as the current revision.
 */
export function checkTxnReadRevision(idx: MvccIndex, revision: number, readRev: number): void {
  if (revision === 0) return;
  if (revision > readRev) throw new KvError('FUTURE_REV', `revision ${revision} > ${readRev}`);
  if (revision < idx.compactRevision) throw new KvError('COMPACTED', `revision ${revision} < ${idx.compactRevision}`);
}

function isDefaultOrdering(r: RangeRequest): boolean {
  const order = r.sortOrder ?? SortOrder.NONE;
  const target = r.sortTarget ?? SortTarget.KEY;
  return order === SortOrder.NONE || (target === SortTarget.KEY && order === SortOrder.ASCEND);
}

function hasRevisionFilters(r: RangeRequest): boolean {
  return !!(r.minModRevision || r.maxModRevision || r.minCreateRevision || r.maxCreateRevision);
}

function passesFilters(r: RangeRequest, rec: KvRecord): boolean {
  if (r.maxModRevision && rec.main > r.maxModRevision) return false;
  if (r.minModRevision && rec.main < r.minModRevision) return false;
  if (r.maxCreateRevision && rec.createRevision > r.maxCreateRevision) return false;
  if (r.minCreateRevision && rec.createRevision < r.minCreateRevision) return false;
  return true;
}

/** Visits the live records of `span` at `rev` in key order; stop by returning false. */
export function visitLive(
  idx: MvccIndex,
  span: KeySpan,
  rev: number,
  visit: (rec: KvRecord) => boolean | void,
  after?: string,
): void {
  if (span.end === undefined) {
    if (after !== undefined) return;
    const rec = idx.history(span.start)?.liveAt(rev);
    if (rec) visit(rec);
    return;
  }
  if (span.end !== '' && span.end <= span.start) return;
  // A txn's read at an earlier revision must not see the txn's own writes.
  const useLatest = rev >= idx.newestRevision;
  const from = after ?? span.start;
  idx.scan(from, after !== undefined, span.end, (h: KeyHistory) => {
    const rec = useLatest ? h.live() : h.liveAt(rev);
    if (rec) return visit(rec);
    return true;
  });
}

function toKv(rec: KvRecord, keysOnly: boolean): KeyValue {
  return rec.toKeyValue(keysOnly);
}

function compareNum(a: number, b: number): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Sorts in place; stable, so ties keep ascending key order (etcd's sort is unstable there). */
function sortRecords(recs: KvRecord[], r: RangeRequest): void {
  let order = r.sortOrder ?? SortOrder.NONE;
  const target = r.sortTarget ?? SortTarget.KEY;
  if (target !== SortTarget.KEY && order === SortOrder.NONE) order = SortOrder.ASCEND;
  if (order === SortOrder.NONE || (target === SortTarget.KEY && order === SortOrder.ASCEND)) return;
  let cmp: (a: KvRecord, b: KvRecord) => number;
  switch (target) {
    case SortTarget.KEY:
      cmp = (a, b) => (a.hist.skey < b.hist.skey ? -1 : a.hist.skey > b.hist.skey ? 1 : 0);
      break;
    case SortTarget.VERSION:
      cmp = (a, b) => compareNum(a.version, b.version);
      break;
    case SortTarget.CREATE:
      cmp = (a, b) => compareNum(a.createRevision, b.createRevision);
      break;
    case SortTarget.MOD:
      cmp = (a, b) => compareNum(a.main, b.main);
      break;
    default:
      cmp = compareStoredValues;
  }
  recs.sort(order === SortOrder.DESCEND ? (a, b) => cmp(b, a) : cmp);
}

/**
 * A Range as etcd executes it. `readRev` is the revision "now" (inside a write txn: the txn's
 * own revision once it has changed something); `maxBytes` caps the response held in memory.
 */
export function executeRange(
  idx: MvccIndex,
  r: RangeRequest,
  readRev: number,
  maxBytes: number = MAX_RANGE_RESPONSE_BYTES,
): RangeResponse {
  const revision = r.revision ?? 0;
  checkReadRevision(idx, revision, readRev);
  const rev = revision > 0 ? revision : readRev;
  const span = spanOf(r.key, r.rangeEnd);
  const limit = r.limit ?? 0;
  const plain = isDefaultOrdering(r) && !hasRevisionFilters(r);
  // Records we must hold: with default order and no filters only limit + 1 of them.
  const keep = r.countOnly ? 0 : plain && limit > 0 ? limit + 1 : Infinity;

  const recs: KvRecord[] = [];
  let count = 0;
  let bytes = 0;
  visitLive(idx, span, rev, (rec) => {
    count++;
    if (recs.length < keep) {
      recs.push(rec);
      bytes += rec.sizeBytes + KV_OVERHEAD_BYTES;
      if (bytes > maxBytes) throw new KvError('RANGE_TOO_LARGE', `more than ${maxBytes} bytes`);
    }
    return true;
  });

  let out = recs;
  if (hasRevisionFilters(r)) out = out.filter((rec) => passesFilters(r, rec));
  sortRecords(out, r);
  let more = false;
  if (limit > 0 && out.length > limit) {
    out = out.slice(0, limit);
    more = true;
  }
  const keysOnly = !!r.keysOnly;
  return { header: { revision: readRev }, kvs: out.map((rec) => toKv(rec, keysOnly)), more, count };
}

export interface RangePage {
  /** The revision every page reads at (fixed when the iteration starts). */
  revision: number;
  kvs: KeyValue[];
  /**
   * More matching keys exist after this page: either another page follows, or (on the last
   * page) the limit cut the result, like RangeResponse.more. The generator ends after the last page.
   */
  more: boolean;
}

/**
 * Pages of a Range at one fixed revision, each at most `pageBytes` (but at least one key),
 * so a server can stream any range in bounded memory. Each page re-seeks after the last key,
 * so writes between pages are harmless; a compaction past the read revision between pages
 * ends the iteration with COMPACTED. Custom sort orders are refused (they need every key
 * at once), as etcd's RangeStream refuses them; revision filters and limit are honoured.
 */
export function* rangePages(
  idx: MvccIndex,
  r: RangeRequest,
  pageBytes: number = RANGE_PAGE_BYTES_DEFAULT,
): Generator<RangePage, void, void> {
  if (!isDefaultOrdering(r)) throw new KvError('STREAM_UNSUPPORTED');
  const revision = r.revision ?? 0;
  checkReadRevision(idx, revision, idx.currentRevision);
  const rev = revision > 0 ? revision : idx.currentRevision;
  const span = spanOf(r.key, r.rangeEnd);
  const limit = r.limit ?? 0;
  const keysOnly = !!r.keysOnly;
  let after: string | undefined;
  let emitted = 0;
  for (;;) {
    if (rev < idx.compactRevision) throw new KvError('COMPACTED', `revision ${rev} compacted during a paged range`);
    const kvs: KeyValue[] = [];
    let bytes = 0;
    let stop = 'end' as 'end' | 'page' | 'limit';
    visitLive(
      idx,
      span,
      rev,
      (rec) => {
        if (!passesFilters(r, rec)) return true;
        if (limit > 0 && emitted + kvs.length >= limit) {
          stop = 'limit';
          return false;
        }
        if (kvs.length > 0 && bytes + rec.sizeBytes + KV_OVERHEAD_BYTES > pageBytes) {
          stop = 'page';
          return false;
        }
        kvs.push(toKv(rec, keysOnly));
        bytes += rec.sizeBytes + KV_OVERHEAD_BYTES;
        after = rec.hist.skey;
        return true;
      },
      after,
    );
    emitted += kvs.length;
    yield { revision: rev, kvs, more: stop !== 'end' };
    if (stop !== 'page') return;
  }
}
