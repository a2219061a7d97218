/**
 * etcd's watch guarantees, checked on what a watcher received (across its reconnects) against a
 * reference history read once at the end. Each check answers the violations it found (empty:
 * none), so a test can also show that a tampered record is caught.
 */

export interface WatchEv {
  type: 'PUT' | 'DELETE';
  key: string;
  value: string;
  modRev: number;
  /** The key's state before this event, when prev_kv was asked (null: none). */
  prev: { value: string; modRev: number } | null;
}

export interface WatchResp {
  kind: 'created' | 'events' | 'progress' | 'canceled';
  headerRev: number;
  events: WatchEv[];
  fragment: boolean;
  member: string;
  /** Which stream of the watcher (1, 2, ... : each reconnect opens one). */
  session: number;
}

export interface WatchSpec {
  name: string;
  key: string;
  /** Absent: the key alone; '\0': every key from `key` on. */
  rangeEnd?: string;
  /** Absent: from the revision after the member's current one. */
  startRevision?: number;
  prevKv?: boolean;
  progressNotify?: boolean;
  fragment?: boolean;
  /** clientv3's WithRequireLeader ("hasleader" metadata). */
  requireLeader?: boolean;
}

export interface WatchRecord extends WatchSpec {
  responses: WatchResp[];
  /** The first revision its history covers (known once a stream was created). */
  firstRev: number | undefined;
}

export function inRange(key: string, spec: WatchSpec): boolean {
  if (spec.rangeEnd === undefined) return key === spec.key;
  return key >= spec.key && (spec.rangeEnd === '\0' || key < spec.rangeEnd);
}

const id = (e: WatchEv): string => `${e.modRev}/${e.key}`;
const show = (e: WatchEv | undefined): string => (e === undefined ? 'nothing' : `${e.type} ${e.key}=${e.value}@${e.modRev}`);

/** Ordered: event revisions never go back within the watcher's stream, reconnects included. */
export function checkOrdered(w: WatchRecord): string[] {
  const out: string[] = [];
  let last = 0;
  for (const r of w.responses) {
    for (const e of r.events) {
      if (e.modRev < last) out.push(`${w.name}: ${show(e)} after revision ${last} (session ${r.session}, ${r.member})`);
      last = Math.max(last, e.modRev);
    }
  }
  return out;
}

/** Unique: no (revision, key) delivered twice. */
export function checkUnique(w: WatchRecord): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const r of w.responses) {
    for (const e of r.events) {
      if (seen.has(id(e))) out.push(`${w.name}: ${show(e)} delivered twice (again in session ${r.session}, ${r.member})`);
      seen.add(id(e));
    }
  }
  return out;
}

/**
 * Atomic: the events of one revision arrive in one response, or in one run of consecutive
 * responses of which all but the last are fragments (only when the watcher asked for fragments).
 */
export function checkAtomic(w: WatchRecord): string[] {
  const out: string[] = [];
  const where = new Map<number, number>(); // revision -> index of the response run it arrived in
  let run = 0;
  for (const [i, r] of w.responses.entries()) {
    for (const e of r.events) {
      const at = where.get(e.modRev);
      if (at !== undefined && at !== run) out.push(`${w.name}: revision ${e.modRev} split across responses (${show(e)} in response ${i}, session ${r.session})`);
      where.set(e.modRev, run);
    }
    if (!(r.fragment && w.fragment === true)) run = i + 1;
  }
  return out;
}

/**
 * Complete and resumable: from its first revision to the last revision it was told about (an
 * event, or a progress response), the watcher got exactly the reference's events in its range.
 */
export function checkComplete(w: WatchRecord, reference: readonly WatchEv[]): string[] {
  if (w.firstRev === undefined) return [`${w.name}: never created`];
  const got = w.responses.flatMap((r) => r.events);
  const lastRev = Math.max(0, ...w.responses.map((r) => (r.kind === 'progress' ? r.headerRev : Math.max(0, ...r.events.map((e) => e.modRev)))));
  const want = reference.filter((e) => e.modRev >= w.firstRev! && e.modRev <= lastRev && inRange(e.key, w));
  const key = (e: WatchEv): string => `${e.type} ${id(e)}=${e.value}`;
  const gotKeys = new Set(got.map(key));
  const wantKeys = new Set(want.map(key));
  const missing = want.filter((e) => !gotKeys.has(key(e)));
  const extra = got.filter((e) => !wantKeys.has(key(e)));
  const out: string[] = [];
  if (missing.length > 0) out.push(`${w.name}: ${missing.length} events of revisions ${w.firstRev}..${lastRev} missing, first ${show(missing[0])}`);
  if (extra.length > 0) out.push(`${w.name}: ${extra.length} events not in the history, first ${show(extra[0])}`);
  return out;
}

/** prev_kv: each event's prev_kv is the key's state just before the event, per the reference. */
export function checkPrevKv(w: WatchRecord, reference: readonly WatchEv[]): string[] {
  if (w.prevKv !== true) return [];
  const before = new Map<string, { value: string; modRev: number } | null>();
  const state = new Map<string, { value: string; modRev: number }>();
  for (const e of reference) {
    before.set(id(e), state.get(e.key) ?? null);
    if (e.type === 'PUT') state.set(e.key, { value: e.value, modRev: e.modRev });
    else state.delete(e.key);
  }
  const out: string[] = [];
  for (const e of w.responses.flatMap((r) => r.events)) {
    const want = before.get(id(e));
    if (want === undefined) continue; // not in the history: checkComplete reports it
    if (JSON.stringify(e.prev) !== JSON.stringify(want)) out.push(`${w.name}: ${show(e)} has prev_kv ${JSON.stringify(e.prev)}, the history says ${JSON.stringify(want)}`);
  }
  return out;
}

/**
 * Progress: a progress response's revision is at least every event revision sent before it,
 * and every event after it is newer.
 */
export function checkProgress(w: WatchRecord): string[] {
  const out: string[] = [];
  let sent = 0;
  let promised = 0;
  for (const r of w.responses) {
    if (r.kind === 'progress') {
      if (r.headerRev < sent) out.push(`${w.name}: progress at ${r.headerRev} after an event of revision ${sent} (session ${r.session}, ${r.member})`);
      promised = Math.max(promised, r.headerRev);
    }
    for (const e of r.events) {
      if (e.modRev <= promised) out.push(`${w.name}: ${show(e)} after progress at ${promised} (session ${r.session}, ${r.member})`);
      sent = Math.max(sent, e.modRev);
    }
  }
  return out;
}

/** Every guarantee above, for one watcher. */
export function checkWatcher(w: WatchRecord, reference: readonly WatchEv[]): string[] {
  return [...checkOrdered(w), ...checkUnique(w), ...checkAtomic(w), ...checkComplete(w, reference), ...checkPrevKv(w, reference), ...checkProgress(w)];
}

/** Every acknowledged write is in the history at the revision its response named. */
export function checkAckedWrites(acked: ReadonlyArray<{ key: string; value: string; revision: number }>, reference: readonly WatchEv[]): string[] {
  const byId = new Map(reference.map((e) => [id(e), e]));
  const out: string[] = [];
  for (const a of acked) {
    const e = byId.get(`${a.revision}/${a.key}`);
    if (e?.type !== 'PUT' || e.value !== a.value) out.push(`acknowledged put ${a.key}=${a.value}@${a.revision}: the history has ${show(e)}`);
  }
  return out;
}
