/**
 * Rebuilds a whole KvStore state from its records and leases, as read back from a snapshot
 * stream (records in key order) or from LevelDB (records in revision order), checking every
 * invariant on the way: a corrupt or hostile image is refused with SNAPSHOT_CORRUPT rather
 * than installed. The in-memory index (key → revisions) and the revision log are derived here.
 */
import { KvError } from './errors.js';
import { keyString } from './keys.js';
import { MAX_KEY_BYTES, MAX_LEASE_ID, MAX_LEASE_TTL_SECONDS, MIN_LEASE_ID } from './limits.js';
import { KeyHistory, KvRecord, type RevisionLog } from './mvcc.js';
import type { InstallableState } from './store.js';
import { ValueArena } from './value-arena.js';

function corrupt(detail: string): KvError {
  return new KvError('SNAPSHOT_CORRUPT', detail);
}

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

/** A lease ID a grant can give (negative ones too, as etcd's), or 0 for none. */
function isLeaseIdOrNone(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= MIN_LEASE_ID && n <= MAX_LEASE_ID;
}

export interface StateMeta {
  currentRevision: number;
  compactRevision: number;
  appliedIndex: number;
  appliedTerm: number;
}

export class StateBuilder {
  private readonly hists = new Map<string, KeyHistory>();
  private readonly records: KvRecord[] = [];
  private readonly arena = new ValueArena();
  private readonly leases = new Map<number, number>();
  private lastKey: string | undefined;
  private keysInOrder = true;
  private revisionOrder = true;
  private lastMain = -1;
  private lastSub = -1;

  get recordCount(): number {
    return this.records.length;
  }

  /** Adds one record; `value` null is a tombstone. Copies the byte arrays it keeps. */
  addRecord(
    key: unknown,
    main: unknown,
    sub: unknown,
    createRevision: unknown,
    version: unknown,
    lease: unknown,
    value: unknown,
  ): void {
    if (!(key instanceof Uint8Array) || key.byteLength === 0 || key.byteLength > MAX_KEY_BYTES) throw corrupt('bad key');
    if (!isCount(main) || main < 2 || !isCount(sub) || !isCount(createRevision) || !isCount(version) || !isLeaseIdOrNone(lease)) {
      throw corrupt('bad record numbers');
    }
    if (value !== null && !(value instanceof Uint8Array)) throw corrupt('bad value');
    const skey = keyString(key);
    let h = this.hists.get(skey);
    if (h === undefined) {
      if (this.lastKey !== undefined && skey < this.lastKey) this.keysInOrder = false;
      this.lastKey = skey;
      h = new KeyHistory(skey);
      this.hists.set(skey, h);
    } else if (skey !== this.lastKey) {
      this.keysInOrder = false;
    }
    const prev = h.latest();
    if (value === null) {
      if (createRevision !== 0 || version !== 0 || lease !== 0) throw corrupt('tombstone with fields');
      if (prev === undefined || prev.tombstone) throw corrupt('tombstone without a live record before it');
    } else if (prev === undefined) {
      if (version === 0 || createRevision > main || createRevision < 2) throw corrupt('bad first record');
      if (version === 1 && createRevision !== main) throw corrupt('version 1 not created at its revision');
    } else if (prev.tombstone) {
      if (version !== 1 || createRevision !== main) throw corrupt('recreated key must start at version 1');
    } else if (version !== prev.version + 1 || createRevision !== prev.createRevision) {
      throw corrupt('version or create revision out of sequence');
    }
    if (prev !== undefined && main < prev.main) throw corrupt('key history out of order');
    // Two records of a key at one revision: only a txn that puts and then deletes it (nested txns) writes that.
    if (prev !== undefined && main === prev.main && !(sub > prev.sub && value === null && !prev.tombstone)) {
      throw corrupt('two records of a key at one revision that are not a put and then its delete');
    }
    // Copied into the arena: nothing of the decoded chunk is kept.
    const rec = new KvRecord(h, main, sub, createRevision, version, lease, value, this.arena);
    h.append(rec);
    this.records.push(rec);
    if (main < this.lastMain || (main === this.lastMain && sub <= this.lastSub)) this.revisionOrder = false;
    this.lastMain = main;
    this.lastSub = sub;
  }

  addLease(id: unknown, ttlSeconds: unknown): void {
    if (!isLeaseIdOrNone(id) || id === 0 || !isCount(ttlSeconds) || ttlSeconds > MAX_LEASE_TTL_SECONDS) throw corrupt('bad lease');
    if (this.leases.has(id)) throw corrupt('duplicate lease');
    this.leases.set(id, ttlSeconds);
  }

  finish(meta: StateMeta): InstallableState {
    const { currentRevision, compactRevision, appliedIndex, appliedTerm } = meta;
    if (!isCount(currentRevision) || currentRevision < 1) throw corrupt('bad revision');
    if (!Number.isSafeInteger(compactRevision) || compactRevision < -1 || compactRevision > currentRevision) {
      throw corrupt('bad compact revision');
    }
    if (!isCount(appliedIndex) || !isCount(appliedTerm)) throw corrupt('bad applied index');

    let ordered = this.records;
    if (!this.revisionOrder) {
      ordered = this.records.slice().sort((a, b) => a.main - b.main || a.sub - b.sub);
    }
    const revlog: RevisionLog = { mains: [], recs: [] };
    let prev: KvRecord | undefined;
    for (const r of ordered) {
      if (r.main > currentRevision) throw corrupt('record above the current revision');
      if (prev !== undefined && prev.main === r.main) {
        if (prev.sub === r.sub) throw corrupt('duplicate revision');
        const last = revlog.recs.length - 1;
        const cur = revlog.recs[last]!;
        if (Array.isArray(cur)) cur.push(r);
        else revlog.recs[last] = [cur, r];
      } else {
        revlog.mains.push(r.main);
        revlog.recs.push(r);
      }
      prev = r;
    }
    for (const h of this.hists.values()) {
      const live = h.live();
      if (live && live.lease !== 0 && !this.leases.has(live.lease)) throw corrupt('key attached to a missing lease');
    }
    const sorted = [...this.hists.values()];
    if (!this.keysInOrder) sorted.sort((a, b) => (a.skey < b.skey ? -1 : 1)); // keys are unique
    return {
      hists: this.hists,
      arena: this.arena,
      sorted,
      revlog,
      leases: [...this.leases].map(([id, ttlSeconds]) => ({ id, ttlSeconds })).sort((a, b) => a.id - b.id),
      currentRevision,
      compactRevision,
      appliedIndex,
      appliedTerm,
    };
  }
}
