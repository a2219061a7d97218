/**
 * The watch hub: delivers the store's changes to watchers (key, prefix or range; from a past
 * revision or from now; prev_kv; no-put / no-delete filters; progress notifications), with
 * etcd's WatchResponse semantics, in bounded memory.
 *
 * - Fan-out without scanning every watcher: synced single-key watchers are indexed by key in
 *   a Map, range watchers in an interval tree; an event visits only the watchers it matches.
 * - Watchers that start in the past ("unsynced") catch up from the revision log in steps,
 *   paced by their consumer: a step fills the watcher's buffer and stops; draining resumes it.
 * - Bounded buffers (WATCH_BUFFER_EVENTS_MAX / _BYTES_MAX). A synced watcher whose buffer is
 *   full (its consumer behind, or one apply batch bringing it more than the buffer holds) goes
 *   back to catching up from the log, as etcd moves such a watcher to its unsynced set: the
 *   events buffered are delivered first, the rest read at its consumer's pace; nothing is lost
 *   and its memory does not grow with its lag.
 * - A start revision below the compaction point yields etcd's compaction response
 *   (compact_revision set, canceled).
 *
 * Threading model: everything runs on the node's event loop. The hub is told of changes by
 * the store (KvListener, synchronously inside apply); the gRPC layer owns one WatchStream per
 * Watch call and pulls responses with `next()` when it can write (see WatchStream).
 */
import { KV_ERRORS } from './errors.js';
import { IntervalTree } from './interval-tree.js';
import { keyString, spanOf, type KeySpan } from './keys.js';
import {
  MAX_KEY_BYTES,
  MAX_WATCHERS_PER_STREAM,
  WATCH_BUFFER_BYTES_MAX,
  WATCH_BUFFER_EVENTS_MAX,
  WATCH_RESPONSE_BYTES_TARGET,
  WATCH_SYNC_REVISIONS_PER_STEP,
  KV_OVERHEAD_BYTES,
} from './limits.js';
import type { KvRecord } from './mvcc.js';
import type { KvListener, KvStore } from './store.js';
import {
  EventType,
  INVALID_WATCH_ID,
  type ResponseHeader,
  WatchFilterType,
  type WatchCreateRequest,
  type WatchEvent,
  type WatchResponse,
} from './types.js';

/**
 * A drained watcher's buffer, shared by all of them (a fan-out drains a thousand at once).
 * A buffer may be shared (frozen): this one, or a revision's one event given to every watcher
 * whose buffer was empty. admit() and admitOne() replace a shared buffer rather than push to it.
 */
const NO_EVENTS = Object.freeze([]) as unknown as WatchEvent[];

/** How often idle progress_notify watchers hear the revision, by default (etcd's 10 minutes; progressTick). */
export const PROGRESS_NOTIFY_INTERVAL_MS = 600_000;

export interface WatchHubOptions {
  bufferEventsMax?: number;
  bufferBytesMax?: number;
  responseBytesTarget?: number;
  watchersPerStreamMax?: number;
  syncRevisionsPerStep?: number;
  /** Runs deferred catch-up work later (default setImmediate). Tests pass their own. */
  schedule?: (fn: () => void) => void;
}

/** Counters for tests and /metrics. */
export interface WatchHubStats {
  /** Events the store reported. */
  events: number;
  /** Watchers examined because an index said they match (never "all watchers"). */
  watchersMatched: number;
  /** Synced watchers whose buffer was full, sent back to catch up from the log. */
  slowUnsyncs: number;
}

function eventBytes(e: WatchEvent): number {
  let n = e.kv.key.byteLength + e.kv.value.byteLength + KV_OVERHEAD_BYTES;
  if (e.prevKv) n += e.prevKv.key.byteLength + e.prevKv.value.byteLength + KV_OVERHEAD_BYTES;
  return n;
}

/**
 * A FIFO with O(1) push/shift (Array#shift is O(n) on large arrays). Its array is reused once
 * drained: a stream's queue gets a watcher per revision, and a fan-out drains a thousand.
 */
class Queue<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  private tail = 0;
  get length(): number {
    return this.tail - this.head;
  }
  push(x: T): void {
    this.items[this.tail++] = x;
  }
  peek(): T | undefined {
    return this.head < this.tail ? this.items[this.head] : undefined;
  }
  shift(): T | undefined {
    if (this.head >= this.tail) return undefined;
    const x = this.items[this.head]!;
    this.items[this.head++] = undefined;
    if (this.head === this.tail) {
      this.head = this.tail = 0;
    } else if (this.head > 1024 && this.head * 2 > this.tail) {
      this.items = this.items.slice(this.head, this.tail);
      this.tail -= this.head;
      this.head = 0;
    }
    return x;
  }
  remove(pred: (x: T) => boolean): void {
    this.items = this.items.slice(this.head, this.tail).filter((x) => !pred(x!));
    this.head = 0;
    this.tail = this.items.length;
  }
}

class Watcher {
  /** Events not yet handed to the consumer, in revision order. */
  buf: WatchEvent[] = NO_EVENTS;
  bufBytes = 0;
  /** Unsynced: the next revision to read from the log. Synced: unused (the hub's revision). */
  nextRev = 0;
  /** The last revision read from the log: buffered events up to it are a catch-up's, not live. */
  replayedThrough = 0;
  synced = false;
  /** In the stream's ready queue. */
  queued = false;
  /** A last response (slow-consumer or compaction cancel) sent once the buffer is drained. */
  final: WatchResponse | undefined;
  removed = false;
  /** Something was sent since the last progress tick (etcd elides the next notification). */
  sentSinceProgress = false;
  /** Created held (see WatchStream.create): gets events, sends none until released. */
  held = false;

  constructor(
    readonly id: number,
    readonly stream: WatchStream,
    readonly start: string,
    /** undefined: single key; '': unbounded; else exclusive end. */
    readonly end: string | undefined,
    /** Events below this revision are not delivered. */
    readonly minRev: number,
    readonly noPut: boolean,
    readonly noDelete: boolean,
    readonly prevKv: boolean,
    readonly progressNotify: boolean,
  ) {}

  contains(skey: string): boolean {
    if (this.end === undefined) return skey === this.start;
    return skey >= this.start && (this.end === '' || skey < this.end);
  }

  wants(e: WatchEvent): boolean {
    return e.type === EventType.PUT ? !this.noPut : !this.noDelete;
  }
}

function response(revision: number, watchId: number, extra: Partial<WatchResponse> = {}): WatchResponse {
  return {
    header: { revision },
    watchId,
    created: false,
    canceled: false,
    compactRevision: 0,
    cancelReason: '',
    fragment: false,
    events: [],
    ...extra,
  };
}

export class WatchHub implements KvListener {
  readonly stats: WatchHubStats = { events: 0, watchersMatched: 0, slowUnsyncs: 0 };
  readonly bufferEventsMax: number;
  readonly bufferBytesMax: number;
  readonly responseBytesTarget: number;
  readonly watchersPerStreamMax: number;
  private readonly syncRevisionsPerStep: number;
  private readonly schedule: (fn: () => void) => void;
  private readonly byKey = new Map<string, Set<Watcher>>();
  private readonly byRange = new IntervalTree<Set<Watcher>>();
  private readonly unsynced = new Set<Watcher>();
  private readonly streams = new Set<WatchStream>();
  private pumpScheduled = false;
  /** The last revision the store reported: synced watchers have been given everything up to it. */
  private lastRevision: number;
  private lastEventsHeader: ResponseHeader = { revision: -1 };
  private readonly unsubscribe: () => void;

  constructor(
    readonly store: KvStore,
    opts: WatchHubOptions = {},
  ) {
    this.bufferEventsMax = opts.bufferEventsMax ?? WATCH_BUFFER_EVENTS_MAX;
    this.bufferBytesMax = opts.bufferBytesMax ?? WATCH_BUFFER_BYTES_MAX;
    this.responseBytesTarget = opts.responseBytesTarget ?? WATCH_RESPONSE_BYTES_TARGET;
    this.watchersPerStreamMax = opts.watchersPerStreamMax ?? MAX_WATCHERS_PER_STREAM;
    this.syncRevisionsPerStep = opts.syncRevisionsPerStep ?? WATCH_SYNC_REVISIONS_PER_STEP;
    this.schedule = opts.schedule ?? ((fn) => void setImmediate(fn));
    this.lastRevision = store.revision;
    this.unsubscribe = store.subscribe(this);
  }

  /** One stream per gRPC Watch call. `onReady` fires when the stream has something to send after being drained. */
  openStream(onReady?: () => void): WatchStream {
    const s = new WatchStream(this, onReady);
    this.streams.add(s);
    return s;
  }

  get watcherCount(): number {
    let n = 0;
    for (const s of this.streams) n += s.size;
    return n;
  }

  get unsyncedCount(): number {
    return this.unsynced.size;
  }

  /** The last revision the store reported: synced watchers have been given everything up to it. */
  get revision(): number {
    return this.lastRevision;
  }

  /** @internal An events response's header, shared by the watchers of a fan-out (responses are never altered). */
  eventsHeader(revision: number): ResponseHeader {
    if (this.lastEventsHeader.revision !== revision) this.lastEventsHeader = { revision };
    return this.lastEventsHeader;
  }

  /** Detaches from the store; streams stay readable but receive nothing new. */
  close(): void {
    this.unsubscribe();
  }

  // ---------------------------------------------------------------- indexes

  /** @internal */
  addSynced(w: Watcher): void {
    w.synced = true;
    if (w.end === undefined) {
      let set = this.byKey.get(w.start);
      if (!set) this.byKey.set(w.start, (set = new Set()));
      set.add(w);
    } else {
      let set = this.byRange.get(w.start, w.end);
      if (!set) this.byRange.set(w.start, w.end, (set = new Set()));
      set.add(w);
    }
  }

  /** @internal */
  removeWatcher(w: Watcher): void {
    w.removed = true;
    this.unsynced.delete(w);
    this.unindex(w);
  }

  /** @internal Is `w` catching up from the log (or waiting to)? */
  isUnsynced(w: Watcher): boolean {
    return this.unsynced.has(w);
  }

  private unindex(w: Watcher): void {
    if (!w.synced) return;
    w.synced = false;
    if (w.end === undefined) {
      const set = this.byKey.get(w.start);
      set?.delete(w);
      if (set?.size === 0) this.byKey.delete(w.start);
    } else {
      const set = this.byRange.get(w.start, w.end);
      set?.delete(w);
      if (set?.size === 0) this.byRange.delete(w.start, w.end);
    }
  }

  // ---------------------------------------------------------------- store events

  onRevision(revision: number, events: readonly WatchEvent[]): void {
    this.lastRevision = revision;
    this.stats.events += events.length;
    if (events.length === 1) return this.onSingleEvent(revision, events[0]!);
    const perWatcher = new Map<Watcher, WatchEvent[]>();
    const add = (w: Watcher, e: WatchEvent, bare: () => WatchEvent): void => {
      this.stats.watchersMatched++;
      if (revision < w.minRev || !w.wants(e)) return;
      const ev = w.prevKv || e.prevKv === undefined ? e : bare();
      const list = perWatcher.get(w);
      if (list) list.push(ev);
      else perWatcher.set(w, [ev]);
    };
    for (const e of events) {
      const skey = keyString(e.kv.key);
      let bareEv: WatchEvent | undefined;
      const bare = (): WatchEvent => (bareEv ??= { type: e.type, kv: e.kv });
      const keyed = this.byKey.get(skey);
      if (keyed) for (const w of keyed) add(w, e, bare);
      this.byRange.stab(skey, (set) => {
        for (const w of set) add(w, e, bare);
      });
    }
    for (const [w, evs] of perWatcher) {
      if (!this.admit(w, evs)) this.unsyncFull(w, revision);
    }
  }

  /**
   * The common revision (one put or delete): each matching watcher gets the event on its own,
   * with no per-revision grouping, and the event's size is counted once for all of them.
   */
  private onSingleEvent(revision: number, e: WatchEvent): void {
    const skey = keyString(e.kv.key);
    const bytes = eventBytes(e);
    let bare: WatchEvent | undefined;
    let bareBytes = 0;
    // The buffer of every watcher that was drained: [e] (or [bare]), made once.
    let alone: WatchEvent[] | undefined;
    let bareAlone: WatchEvent[] | undefined;
    const one = (w: Watcher): void => {
      this.stats.watchersMatched++;
      if (revision < w.minRev || !w.wants(e)) return;
      let ok: boolean;
      if (w.prevKv || e.prevKv === undefined) ok = this.admitOne(w, e, bytes, (alone ??= Object.freeze([e]) as WatchEvent[]));
      else {
        if (bare === undefined) {
          bare = { type: e.type, kv: e.kv };
          bareBytes = eventBytes(bare);
          bareAlone = Object.freeze([bare]) as WatchEvent[];
        }
        ok = this.admitOne(w, bare, bareBytes, bareAlone!);
      }
      if (!ok) (slow ??= []).push(w);
    };
    // Unsynced after the walk: that removes the watcher from the indexes being walked.
    let slow: Watcher[] | undefined;
    const keyed = this.byKey.get(skey);
    if (keyed) for (const w of keyed) one(w);
    this.byRange.stab(skey, (set) => {
      for (const w of set) one(w);
    });
    if (slow) for (const w of slow) this.unsyncFull(w, revision);
  }

  onCompact(revision: number): void {
    for (const w of [...this.unsynced]) {
      if (w.nextRev < revision) this.finishCompacted(w);
    }
  }

  /** The state was replaced: every watcher re-reads from the new state where it left off. */
  onRestore(): void {
    const seen = this.lastRevision;
    this.lastRevision = this.store.revision;
    for (const s of this.streams) {
      for (const w of s.watcherList()) {
        if (!w.synced || w.final) continue;
        this.removeWatcher(w);
        w.removed = false;
        w.nextRev = Math.max(w.minRev, seen + 1);
        this.unsynced.add(w);
      }
    }
    this.pump();
  }

  /** Puts one revision's events in the buffer; false if it does not fit (the buffer is full). */
  private admit(w: Watcher, evs: WatchEvent[]): boolean {
    if (w.removed || w.final) return true;
    let bytes = 0;
    for (const e of evs) bytes += eventBytes(e);
    if (w.buf.length > 0 && (w.buf.length + evs.length > this.bufferEventsMax || w.bufBytes + bytes > this.bufferBytesMax)) {
      return false;
    }
    if (w.buf.length === 0) w.buf = evs;
    else {
      if (Object.isFrozen(w.buf)) w.buf = w.buf.slice();
      for (const e of evs) w.buf.push(e);
    }
    w.bufBytes += bytes;
    w.stream.markReady(w);
    return true;
  }

  /**
   * admit() for a revision of one event whose size is known; `alone` is [e], shared (frozen),
   * which a drained watcher takes as its buffer: a fan-out makes one array, not one per watcher.
   */
  private admitOne(w: Watcher, e: WatchEvent, bytes: number, alone: WatchEvent[]): boolean {
    if (w.removed || w.final) return true;
    if (w.buf.length > 0 && (w.buf.length + 1 > this.bufferEventsMax || w.bufBytes + bytes > this.bufferBytesMax)) return false;
    if (w.buf.length === 0) w.buf = alone;
    else if (Object.isFrozen(w.buf)) w.buf = [...w.buf, e];
    else w.buf.push(e);
    w.bufBytes += bytes;
    w.stream.markReady(w);
    return true;
  }

  /**
   * A synced watcher whose buffer cannot take revision `resumeRevision`: it leaves the indexes
   * and, once its buffer has room, reads the log from that revision at its consumer's pace (the
   * events it holds go first), then joins the synced watchers again; etcd moves such a watcher
   * to its unsynced set. A compaction past that revision meanwhile ends it with etcd's compaction
   * response, as any watcher behind the compaction. A held watcher drops its buffer instead:
   * nothing it holds has been sent, and it reads the log once released.
   */
  private unsyncFull(w: Watcher, resumeRevision: number): void {
    this.stats.slowUnsyncs++;
    this.unindex(w);
    if (w.held) {
      w.nextRev = w.buf.length > 0 ? w.buf[0]!.kv.modRevision : resumeRevision;
      w.buf = NO_EVENTS;
      w.bufBytes = 0;
      return; // release() starts its catch-up
    }
    w.nextRev = resumeRevision;
    this.unsynced.add(w);
  }

  private finishCompacted(w: Watcher): void {
    const compactRevision = this.store.compactRevision;
    this.removeWatcher(w);
    w.final = response(this.store.revision, w.id, {
      canceled: true,
      compactRevision,
      cancelReason: KV_ERRORS.COMPACTED.message,
    });
    w.stream.markReady(w);
  }

  // ---------------------------------------------------------------- catching up

  /** @internal Registers a watcher that starts in the past and runs its first step. */
  addUnsynced(w: Watcher, startRev: number): void {
    w.nextRev = startRev;
    this.unsynced.add(w);
    if (this.catchUp(w)) this.schedulePump();
  }

  /**
   * @internal One catch-up step for `w`: read the log from w.nextRev while the buffer has room
   * and the step budget lasts. Returns true when more work remains that is not waiting on the consumer.
   */
  catchUp(w: Watcher): boolean {
    if (w.synced || w.final || w.removed) return false;
    const idx = this.store.mvcc;
    if (w.nextRev < idx.compactRevision) {
      this.finishCompacted(w);
      return false;
    }
    const current = idx.currentRevision;
    const compacted = idx.compactRevision;
    let blocked = false;
    const visitRecords = (main: number, recs: Iterable<KvRecord>): boolean => {
      const evs: WatchEvent[] = [];
      for (const r of recs) {
        if (!w.contains(r.hist.skey)) continue;
        // At the compact revision only what compaction keeps, whether physical compaction has
        // run yet or not and whatever the watch's shape (etcd sends no delete at that revision).
        if (main <= compacted && !keptByCompaction(r, compacted)) continue;
        const e = recordEvent(r, w.prevKv, compacted);
        if (w.wants(e)) evs.push(e);
      }
      if (evs.length > 0 && main >= w.minRev && !this.admit(w, evs)) {
        blocked = true;
        return false;
      }
      w.nextRev = main + 1;
      return true;
    };
    if (w.end === undefined) {
      // A single key: its own history is the log to read.
      const h = idx.history(w.start);
      if (h) {
        let i = h.indexAt(w.nextRev - 1) + 1;
        let steps = 0;
        // A revision at a time, whole: a txn may put and then delete the key (two records at one
        // revision); stopping between them would skip the second, nextRev being past the revision.
        while (i < h.records.length && steps < this.syncRevisionsPerStep) {
          const main = h.records[i]!.main;
          if (main > current) break;
          let end = i + 1;
          while (end < h.records.length && h.records[end]!.main === main) end++;
          steps++;
          if (!visitRecords(main, end === i + 1 ? [h.records[i]!] : h.records.slice(i, end))) break;
          i = end;
        }
        if (!blocked && steps < this.syncRevisionsPerStep) w.nextRev = current + 1;
      } else {
        w.nextRev = current + 1;
      }
    } else {
      const next = idx.scanRevisions(w.nextRev, current, this.syncRevisionsPerStep, visitRecords);
      if (!blocked) w.nextRev = Math.max(w.nextRev, next);
    }
    w.replayedThrough = w.nextRev - 1;
    if (!blocked && w.nextRev > current) {
      this.unsynced.delete(w);
      this.addSynced(w);
      w.stream.onWatcherSynced();
      return false;
    }
    return !blocked;
  }

  /** Runs catch-up steps for every unsynced watcher not waiting on its consumer. Returns true if work remains. */
  pump(): boolean {
    this.pumpScheduled = false;
    let more = false;
    for (const w of [...this.unsynced]) {
      if (w.buf.length < this.bufferEventsMax && this.catchUp(w)) more = true;
    }
    if (more) this.schedulePump();
    return more;
  }

  /** @internal */
  schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    this.schedule(() => this.pump());
  }

  // ---------------------------------------------------------------- progress

  /**
   * Call every progress interval (etcd: 10 minutes): a progress notification goes to each
   * synced watcher that asked for them and had nothing sent since the last tick.
   */
  progressTick(): void {
    const rev = this.store.revision;
    for (const s of this.streams) {
      for (const w of s.watcherList()) {
        // Not below its start: a client resuming here has seen through minRev - 1 elsewhere.
        if (!w.progressNotify || w.held || w.minRev - 1 > rev) continue;
        if (w.synced && !w.final && w.buf.length === 0 && !w.sentSinceProgress) {
          s.enqueueControl(response(rev, w.id));
        }
        w.sentSinceProgress = false;
      }
    }
  }

  /** @internal */
  forgetStream(s: WatchStream): void {
    this.streams.delete(s);
  }
}

/**
 * A log record as a watch event (catch-up path). Its prevKv is etcd's: the key as of the revision
 * before the event's (so the put of a txn that puts and then deletes the key is no one's prevKv),
 * none when that revision is compacted (etcd's read of it fails), whether or not physical
 * compaction has run yet.
 */
function recordEvent(r: KvRecord, withPrev: boolean, compactRevision: number): WatchEvent {
  const e: WatchEvent = { type: r.tombstone ? EventType.DELETE : EventType.PUT, kv: r.toKeyValue() };
  if (withPrev && r.main - 1 >= compactRevision) {
    const p = r.hist.liveAt(r.main - 1);
    if (p) e.prevKv = p.toKeyValue();
  }
  return e;
}

const SMALLEST_KEY = Buffer.from([0]);

/** The keys a watch covers: etcd reads an empty key as "\0", the smallest. */
function watchSpan(req: Pick<WatchCreateRequest, 'key' | 'rangeEnd'>): KeySpan {
  return spanOf(req.key && req.key.byteLength > 0 ? req.key : SMALLEST_KEY, req.rangeEnd);
}

/**
 * Why a watch's keys cannot be watched (too large a key, an empty range), or undefined. The gRPC
 * server asks before giving the watch an ID: etcd refuses such a create in one response with
 * watch_id -1.
 */
export function watchRangeRefusal(req: Pick<WatchCreateRequest, 'key' | 'rangeEnd'>): string | undefined {
  const re = req.rangeEnd;
  if ((req.key?.byteLength ?? 0) > MAX_KEY_BYTES || (re !== undefined && re.byteLength > MAX_KEY_BYTES)) {
    return `${KV_ERRORS.KEY_TOO_LARGE.message} (max ${MAX_KEY_BYTES} bytes)`;
  }
  const { start, end } = watchSpan(req);
  if (end !== undefined && end !== '' && start >= end) return KV_ERRORS.WATCHER_RANGE_EMPTY.message;
  return undefined;
}

/**
 * The watchers of one gRPC Watch call and the responses waiting for it. The gRPC layer calls
 * create / cancel / requestProgress for the client's requests and pulls responses with
 * `next()` while the socket accepts writes; `onReady` tells it when to pull again (once per
 * transition from "drained" to "has something").
 */
export class WatchStream {
  private readonly watchers = new Map<number, Watcher>();
  private readonly control = new Queue<WatchResponse>();
  private readonly ready = new Queue<Watcher>();
  private nextId = 0;
  private closed = false;
  private signaled = false;
  private progressRequested = false;
  constructor(
    private readonly hub: WatchHub,
    private readonly onReady: (() => void) | undefined,
  ) {}

  get size(): number {
    return this.watchers.size;
  }

  /** @internal */
  watcherList(): Watcher[] {
    return [...this.watchers.values()];
  }

  /**
   * Handles a WatchCreateRequest: queues the "created" response (or a failed create, canceled
   * with etcd's reason) and returns the watch ID (-1 on failure). `held`: nothing is sent until
   * release(). A watcher from now (or a future revision) gets its events meanwhile, as etcd's
   * would (a compaction cannot take them); if they overflow its buffer it reads them from the
   * log once released instead (a hold never makes it "too slow"). A replay from the past starts
   * once released.
   */
  create(req: WatchCreateRequest, opts: { held?: boolean } = {}): number {
    if (this.closed) return INVALID_WATCH_ID;
    const hub = this.hub;
    const current = hub.store.revision;
    const fail = (reason: string): number => {
      this.enqueueControl(response(current, INVALID_WATCH_ID, { created: true, canceled: true, cancelReason: reason }));
      return INVALID_WATCH_ID;
    };
    // A negative start is below etcd's compaction point once the store has been compacted
    // (canceled with the compact revision, as any start below it); before that (compact
    // revision -1) etcd reads -1 as a watch from now and cancels one below -1 as compacted.
    const startRev = req.startRevision === -1 && hub.store.compactRevision < 0 ? 0 : (req.startRevision ?? 0);
    const refusal = watchRangeRefusal(req);
    if (refusal !== undefined) return fail(refusal);
    const { start, end } = watchSpan(req);
    if (this.watchers.size >= hub.watchersPerStreamMax) {
      return fail(`${KV_ERRORS.TOO_MANY_WATCHERS.message} (max ${hub.watchersPerStreamMax})`);
    }
    let id = req.watchId ?? 0;
    if (id > 0) {
      if (this.watchers.has(id)) return fail(KV_ERRORS.WATCHER_DUPLICATE_ID.message);
    } else {
      while (this.watchers.has(this.nextId)) this.nextId++;
      id = this.nextId++;
    }
    const filters = req.filters ?? [];
    const synced = startRev === 0 || startRev > current;
    const w = new Watcher(
      id,
      this,
      start,
      end,
      synced ? Math.max(current + 1, startRev) : startRev,
      filters.includes(WatchFilterType.NOPUT),
      filters.includes(WatchFilterType.NODELETE),
      !!req.prevKv,
      !!req.progressNotify,
    );
    this.watchers.set(id, w);
    this.enqueueControl(response(current, id, { created: true }));
    w.held = opts.held === true;
    if (synced) hub.addSynced(w);
    else if (w.held) w.nextRev = startRev; // the replay starts once released
    else hub.addUnsynced(w, startRev);
    return id;
  }

  /** Sends what the watchers created held hold, and lets them go on. */
  release(): void {
    for (const w of this.watchers.values()) {
      if (!w.held) continue;
      w.held = false;
      if (w.synced || w.final !== undefined || this.hub.isUnsynced(w)) {
        if (w.buf.length > 0 || w.final !== undefined) this.markReady(w);
      } else {
        this.hub.addUnsynced(w, w.nextRev);
      }
    }
  }

  /**
   * The revision through which every event of this stream's watchers has been taken with
   * next(): a progress answer claims no more (a watcher held, catching up or with events
   * buffered has not delivered what follows its position).
   */
  deliveredThrough(): number {
    let through = this.hub.revision;
    for (const w of this.watchers.values()) {
      // (A watcher ending, w.final, delivers only what it has buffered.)
      if (!w.synced && w.final === undefined) through = Math.min(through, w.nextRev - 1);
      if (w.buf.length > 0) through = Math.min(through, w.buf[0]!.kv.modRevision - 1);
    }
    return through;
  }

  /** Cancels a watcher; queues etcd's canceled response. False (and no response) if it does not exist. */
  cancel(watchId: number): boolean {
    const w = this.watchers.get(watchId);
    if (!w || this.closed) return false;
    this.drop(w);
    this.enqueueControl(response(this.hub.store.revision, watchId, { canceled: true }));
    return true;
  }

  private drop(w: Watcher): void {
    this.hub.removeWatcher(w);
    this.watchers.delete(w.id);
    w.buf = NO_EVENTS;
    w.bufBytes = 0;
    if (w.queued) {
      w.queued = false;
      this.ready.remove((x) => x === w);
    }
  }

  /**
   * etcd's RequestProgressAll: a progress response with watch ID -1 once every watcher of the
   * stream is synced and drained (deferred until then, never dropped).
   */
  requestProgress(): void {
    if (this.watchers.size === 0) return; // etcd answers nothing on a stream without watchers
    this.progressRequested = true;
    this.tryProgress();
  }

  private tryProgress(): void {
    if (!this.progressRequested) return;
    for (const w of this.watchers.values()) {
      if (!w.synced || w.buf.length > 0 || w.final) return;
    }
    this.progressRequested = false;
    this.enqueueControl(response(this.hub.store.revision, INVALID_WATCH_ID));
  }

  /** @internal */
  onWatcherSynced(): void {
    if (this.progressRequested) this.tryProgress();
  }

  /** @internal */
  enqueueControl(r: WatchResponse): void {
    this.control.push(r);
    this.signal();
  }

  /** @internal */
  markReady(w: Watcher): void {
    if (!w.queued) {
      w.queued = true;
      this.ready.push(w);
    }
    this.signal();
  }

  private signal(): void {
    if (this.signaled || this.closed) return;
    this.signaled = true;
    this.onReady?.();
  }

  get hasPending(): boolean {
    return this.control.length > 0 || this.ready.length > 0;
  }

  /** The next response to send, or undefined when drained (then wait for onReady). */
  next(): WatchResponse | undefined {
    const c = this.control.shift();
    if (c) return c;
    const hub = this.hub;
    while (this.ready.length > 0) {
      const w = this.ready.peek()!;
      if (w.held) {
        // release() queues it again
        this.ready.shift();
        w.queued = false;
        continue;
      }
      if (w.buf.length > 0) {
        const resp = this.take(w);
        this.ready.shift();
        if (w.buf.length > 0 || w.final) this.ready.push(w);
        else w.queued = false;
        // Room again: let a catching-up watcher read further.
        if (!w.synced && !w.final && hub.catchUp(w)) hub.schedulePump();
        if (w.buf.length === 0 && this.progressRequested) this.tryProgress();
        return resp;
      }
      this.ready.shift();
      w.queued = false;
      if (w.final) {
        const f = w.final;
        this.hub.removeWatcher(w);
        this.watchers.delete(w.id);
        this.tryProgress();
        return f;
      }
    }
    const late = this.control.shift();
    if (late) return late;
    this.signaled = false;
    return undefined;
  }

  /** Takes whole revisions from the buffer up to the response size target. */
  private take(w: Watcher): WatchResponse {
    const buf = w.buf;
    let n = 0;
    let bytes = 0;
    while (n < buf.length) {
      const rev = buf[n]!.kv.modRevision;
      let m = n;
      let revBytes = 0;
      while (m < buf.length && buf[m]!.kv.modRevision === rev) revBytes += eventBytes(buf[m++]!);
      if (n > 0 && bytes + revBytes > this.hub.responseBytesTarget) break;
      bytes += revBytes;
      n = m;
    }
    const events = n === buf.length ? buf : buf.slice(0, n);
    w.buf = n === buf.length ? NO_EVENTS : buf.slice(n);
    w.bufBytes = Math.max(0, w.bufBytes - bytes);
    w.sentSinceProgress = true;
    const lastRev = events[events.length - 1]!.kv.modRevision;
    // Header, as etcd 3.4's: events read from the log carry the store's revision now (etcd's
    // catch-up answers do, however much of the history is still to come), live ones their last
    // revision (etcd sends each live revision on its own, at that revision, even when the store
    // has moved on), which the watchers of one fan-out share.
    const revision = lastRev <= w.replayedThrough ? this.hub.store.revision : lastRev;
    // Written out rather than through response(): this runs once per watcher per fan-out.
    return { header: this.hub.eventsHeader(revision), watchId: w.id, created: false, canceled: false, compactRevision: 0, cancelReason: '', fragment: false, events };
  }

  /** Removes every watcher; nothing more is queued. */
  close(): void {
    if (this.closed) return;
    for (const w of [...this.watchers.values()]) this.drop(w);
    this.closed = true;
    this.hub.forgetStream(this);
  }
}

/** Whether compaction at `compactRevision` keeps `r` (at or below it): a live key's last record, not a tombstone or anything older. */
function keptByCompaction(r: KvRecord, compactRevision: number): boolean {
  if (r.tombstone) return false;
  const i = r.hist.indexAt(compactRevision);
  return i >= 0 && r.hist.records[i] === r;
}
