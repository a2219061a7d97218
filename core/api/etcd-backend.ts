/**
 * The etcd v3 API answered by a manager: translates the gRPC front end's requests
 * (core/net/etcd/service.ts) into core/kv requests replicated through Raft, reads served
 * after a ReadIndex barrier (linearizable) or locally (serializable), watches on the
 * node's WatchHub, leases on the leader's timers, members from the Raft configuration.
 * Every failure reaches the client as etcd's error (EtcdError).
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createReadStream, createWriteStream, readdirSync, rmSync } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { ConfChangeType, Role, quorumSize } from '../raft/index.js';
import * as kv from '../kv/index.js';
import { EtcdError, type EtcdErrorCode, forwardedEtcdError, isEtcdError, watchRefusalReason } from '../net/etcd/errors.js';
import { sameElements } from '../net/etcd/watch-encoding.js';
import type * as api from '../net/etcd/service.js';
import { ManagerAuthBackend } from './etcd-auth-backend.js';
import { etcdErrors, etcdErrorsSync, toEtcdError } from './etcd-errors.js';
import { DEFAULT_REQUEST_TIMEOUT_MS, ManagerNode } from './manager-node.js';
import { FORWARD_TIMEOUT_MS, LeaseForwarder, type ForwardTarget } from './lease-forwarder.js';
import { clientUrl, type ClientTlsSource } from '../net/etcd/client-tls.js';
import { parseHostPort } from '../net/address.js';

/** How soon a watch's second auth check is tried again when it found no leader. */
const WATCH_RECHECK_RETRY_MS = 200;
/** How soon a lease call is tried again while no leader answers it (etcd's LeaseRenew: 50 ms). */
const LEADER_RETRY_MS = 50;
/** Errors that say only that no leader answered: a lease call waits for the next one. */
const LEADERLESS = new Set<EtcdErrorCode>(['NO_LEADER', 'LEADER_CHANGED']);

/** The etcd version clients see in `endpoint status` (the API we implement). */
export const ETCD_COMPAT_VERSION = '3.4.0';

const SORT_ORDER: Record<api.SortOrder, number> = { NONE: 0, ASCEND: 1, DESCEND: 2 };
const SORT_TARGET: Record<api.SortTarget, number> = { KEY: 0, VERSION: 1, CREATE: 2, MOD: 3, VALUE: 4 };
const CMP_RESULT: Record<api.CompareResult, number> = { EQUAL: 0, GREATER: 1, LESS: 2, NOT_EQUAL: 3 };
const CMP_TARGET: Record<api.CompareTarget, number> = { VERSION: 0, CREATE: 1, MOD: 2, VALUE: 3, LEASE: 4 };
const CMP_OPERAND_FIELD: Record<api.CompareTarget, keyof kv.Compare> = {
  VERSION: 'version',
  CREATE: 'createRevision',
  MOD: 'modRevision',
  VALUE: 'value',
  LEASE: 'lease',
};

/**
 * The API's view of a hub event, made once per event: with many watchers of one key the hub
 * hands each of them the same event object, and the wire encoding is cached on it in turn.
 */
const apiEvents = new WeakMap<kv.WatchEvent, api.WatchEvent>();

/**
 * A hub response's events in the API's view. Every watcher of a fan-out holds its own array of
 * the same event objects, so the last answer is handed out again while the elements match
 * (the wire encoder then knows the events at a glance).
 */
let lastApiEvents: { from: readonly kv.WatchEvent[]; to: api.WatchEvent[] } | undefined;

function apiEventList(events: readonly kv.WatchEvent[]): api.WatchEvent[] {
  const last = lastApiEvents;
  if (last !== undefined && sameElements(last.from, events)) return last.to;
  const to = events.map(apiEvent);
  lastApiEvents = { from: events, to };
  return to;
}
function apiEvent(e: kv.WatchEvent): api.WatchEvent {
  let a = apiEvents.get(e);
  if (a === undefined) {
    a = { type: e.type === kv.EventType.DELETE ? 'DELETE' : 'PUT', kv: e.kv, prevKv: e.prevKv };
    apiEvents.set(e, a);
  }
  return a;
}

function toKvRange(r: api.RangeRequest): kv.RangeRequest {
  return {
    key: r.key,
    rangeEnd: r.rangeEnd,
    limit: r.limit,
    revision: r.revision,
    sortOrder: SORT_ORDER[r.sortOrder],
    sortTarget: SORT_TARGET[r.sortTarget],
    serializable: r.serializable,
    keysOnly: r.keysOnly,
    countOnly: r.countOnly,
    minModRevision: r.minModRevision,
    maxModRevision: r.maxModRevision,
    minCreateRevision: r.minCreateRevision,
    maxCreateRevision: r.maxCreateRevision,
  };
}

function toKvTxn(t: api.TxnRequest): kv.TxnRequest {
  const op = (o: api.RequestOp): kv.RequestOp => {
    switch (o.op) {
      case 'range':
        return { requestRange: toKvRange(o.request) };
      case 'put':
        return { requestPut: o.request };
      case 'deleteRange':
        return { requestDeleteRange: o.request };
      case 'txn':
        return { requestTxn: toKvTxn(o.request) };
    }
  };
  return {
    compare: t.compare.map((c) => {
      const out: kv.Compare = { result: CMP_RESULT[c.result], target: CMP_TARGET[c.target], key: c.key, rangeEnd: c.rangeEnd };
      // The operand goes in the field etcd's Compare.target_union uses for that target.
      Object.assign(out, { [CMP_OPERAND_FIELD[c.target]]: c.operand });
      return out;
    }),
    success: t.success.map(op),
    failure: t.failure.map(op),
  };
}

/** The Snapshot call's spool files in the data dir; any found at start are a killed process's (removeSnapshotSpools). */
export const SNAPSHOT_SPOOL_PREFIX = 'snapshot-';
export const SNAPSHOT_SPOOL_SUFFIX = '.tmp';
/**
 * Snapshot calls served at once; more are refused with etcd's "too many requests". Each holds a
 * spool file open (and a copy of the store on disk) until its client has read it: 1,100 unread
 * Snapshot streams on one connection took every descriptor of a member under a limit of 1,024,
 * and its Raft log write failed. NODE_RESERVED_FILES (agent/open-files.ts) counts these.
 */
export const MAX_CONCURRENT_SNAPSHOTS = 8;
/** Spool files of this process so far: names unique within a millisecond too. */
let snapshotSpools = 0;

/** Removes spool files a process killed mid-snapshot left in `dataDir`; returns how many. */
export function removeSnapshotSpools(dataDir: string): number {
  let n = 0;
  for (const f of readdirSync(dataDir)) {
    if (!f.startsWith(SNAPSHOT_SPOOL_PREFIX) || !f.endsWith(SNAPSHOT_SPOOL_SUFFIX)) continue;
    rmSync(join(dataDir, f), { force: true });
    n++;
  }
  return n;
}

/** At most one log line this often about lease requests the leader did not answer. */
const FORWARD_FAILURE_LOG_MS = 10_000;

/**
 * Status's dbSize: never 0, as etcd's (a bbolt file has pages even when empty), since a 0 is
 * left out of the JSON etcdctl and the gateway print (`endpoint status -w json` lost the field).
 */
const MIN_STATUS_DB_SIZE = 4096;
const statusDbSize = (retainedBytes: number): number => Math.max(MIN_STATUS_DB_SIZE, retainedBytes);

export class ManagerEtcdBackend implements api.EtcdBackend {
  private readonly forwarder: LeaseForwarder;
  private forwardFailureLoggedAt = -Infinity;
  /**
   * Watches with responses to send, pumped together in one microtask (one per fan-out, not per
   * watcher). Two arrays take turns and are refilled in place: a fan-out to a thousand watches
   * grew a new one from empty every time.
   */
  private readyWatches: ((() => void) | undefined)[] = [];
  private readyCount = 0;
  private spareReadyWatches: ((() => void) | undefined)[] = [];
  /** Snapshot calls begun and not yet released (MAX_CONCURRENT_SNAPSHOTS). */
  private snapshotsServed = 0;
  /** The header of the last events response, shared by the watchers of one fan-out. */
  private lastEventsHeader: api.ResponseHeader | undefined;

  readonly auth: ManagerAuthBackend;

  /** `clientTls`: the member's client port TLS, which it also dials the leader's with (lease-forwarder.ts). */
  constructor(
    private readonly node: ManagerNode,
    clientTls?: ClientTlsSource,
  ) {
    this.forwarder = new LeaseForwarder(clientTls, (leader, reason) =>
      node.opts.logger.warn({ leader, reason }, 'the leader\'s published client certificate cannot be used: forwarding to it as to a member that published none'),
    );
    this.auth = new ManagerAuthBackend({ node, header: (rev) => this.header(rev), replicate: (req) => this.replicate(req) });
  }

  /**
   * Checks a key request, then the caller's permission for it, and proposes it under the
   * caller's name. The request's own checks come first, as etcd's gRPC layer makes them before
   * its server asks who is calling: a bad request is told so, with or without a user.
   */
  private async replicateAs(req: kv.KvRequest, ctx: api.CallContext | undefined): Promise<kv.KvResponse> {
    const invalid = kv.checkRequest(req);
    if (invalid) throw invalid;
    const user = await this.auth.caughtUp(() => this.auth.authorize(req, ctx));
    return this.propose(kv.clientRequest(req, user), ctx);
  }

  close(): void {
    this.forwarder.close();
  }

  header(revision = this.node.store.revision): api.ResponseHeader {
    return { clusterId: this.node.clusterId, memberId: this.node.id, revision, raftTerm: this.node.driver.node.raft.term };
  }

  /** header(), reused while nothing in it changes (watch responses are encoded, never altered). */
  private eventsHeader(revision: number): api.ResponseHeader {
    const h = this.lastEventsHeader;
    const term = this.node.driver.node.raft.term;
    if (h !== undefined && h.revision === revision && h.raftTerm === term && h.memberId === this.node.id && h.clusterId === this.node.clusterId) return h;
    return (this.lastEventsHeader = this.header(revision));
  }

  private schedulePump(pump: () => void): void {
    this.readyWatches[this.readyCount++] = pump;
    if (this.readyCount === 1) queueMicrotask(() => this.runPumps());
  }

  private runPumps(): void {
    // Pumps scheduled while these run go to the other array, and to the next microtask.
    const pumps = this.readyWatches;
    const n = this.readyCount;
    this.readyWatches = this.spareReadyWatches;
    this.readyCount = 0;
    let i = 0;
    try {
      for (; i < n; i++) {
        const pump = pumps[i]!;
        pumps[i] = undefined;
        pump();
      }
    } finally {
      for (; i < n; i++) pumps[i] = undefined;
      this.spareReadyWatches = pumps;
    }
  }

  private withHeader<T extends { header: { revision: number } }>(r: T): Omit<T, 'header'> & { header: api.ResponseHeader } {
    return { ...r, header: this.header(r.header.revision) };
  }

  private fromKvTxn(r: kv.TxnResponse): api.TxnResponse {
    return {
      header: this.header(r.header.revision),
      succeeded: r.succeeded,
      responses: r.responses.map((o): api.ResponseOp => {
        if (o.responseRange) return { op: 'range', response: this.withHeader(o.responseRange) };
        if (o.responsePut) return { op: 'put', response: this.withHeader(o.responsePut) };
        if (o.responseDeleteRange) return { op: 'deleteRange', response: this.withHeader(o.responseDeleteRange) };
        return { op: 'txn', response: this.fromKvTxn(o.responseTxn!) };
      }),
    };
  }

  private async replicate(req: kv.KvRequest, ctx?: api.CallContext): Promise<kv.KvResponse> {
    // Refuse bad requests before they cost a log entry (apply re-checks anyway).
    const invalid = kv.checkRequest(req);
    if (invalid) throw invalid;
    return this.propose(req, ctx);
  }

  /** Proposes a request already checked; its error, if apply refuses it, is thrown. */
  private async propose(req: kv.KvRequest, ctx?: api.CallContext): Promise<kv.KvResponse> {
    const resp = await this.node.propose(req, ctx);
    if ('error' in resp) throw resp.error;
    return resp;
  }

  range(req: api.RangeRequest, ctx?: api.CallContext): Promise<api.RangeResponse> {
    return etcdErrors(async () => {
      const r = toKvRange(req);
      if (req.serializable) {
        await this.auth.caughtUp(() => this.auth.authorize({ range: r }, ctx));
      } else {
        // Checked once caught up: a permission the cluster has revoked must already count.
        await this.node.linearizableBarrier();
        this.auth.authorize({ range: r }, ctx);
      }
      return this.withHeader(this.node.store.range(r));
    });
  }

  put(req: api.PutRequest, ctx?: api.CallContext): Promise<api.PutResponse> {
    return etcdErrors(async () => {
      const resp = await this.replicateAs({ put: req }, ctx);
      return this.withHeader((resp as { put: kv.PutResponse }).put);
    });
  }

  deleteRange(req: api.DeleteRangeRequest, ctx?: api.CallContext): Promise<api.DeleteRangeResponse> {
    return etcdErrors(async () => {
      const resp = await this.replicateAs({ deleteRange: req }, ctx);
      return this.withHeader((resp as { deleteRange: kv.DeleteRangeResponse }).deleteRange);
    });
  }

  txn(req: api.TxnRequest, ctx?: api.CallContext): Promise<api.TxnResponse> {
    return etcdErrors(async () => {
      const t = toKvTxn(req);
      // Read-only: answered here as a range is (etcd does the same), not written to every
      // member's log; linearizable unless every range asked for serializable.
      if (kv.isTxnReadOnly(t)) {
        // A bad request is told so before who asks is checked, as on the write path.
        const invalid = kv.checkRequest({ txn: t });
        if (invalid) throw invalid;
        if (kv.isTxnSerializable(t)) {
          await this.auth.caughtUp(() => this.auth.authorize({ txn: t }, ctx));
        } else {
          await this.node.linearizableBarrier();
          this.auth.authorize({ txn: t }, ctx);
        }
        return this.fromKvTxn(this.node.store.readTxn(t));
      }
      const resp = await this.replicateAs({ txn: t }, ctx);
      return this.fromKvTxn((resp as { txn: kv.TxnResponse }).txn);
    });
  }

  compact(req: api.CompactionRequest, ctx?: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return etcdErrors(async () => {
      const resp = await this.replicateAs({ compaction: { revision: req.revision, physical: req.physical } }, ctx);
      return this.withHeader((resp as { compaction: kv.CompactionResponse }).compaction);
    });
  }

  watch(req: api.WatchCreateRequest, sink: api.WatchSink, ctx?: api.CallContext): api.WatchHandle {
    // A watch reads its range (etcd checks it once, when the watch is created).
    const range: kv.KvRequest = { range: { key: req.key, rangeEnd: req.rangeEnd } };
    etcdErrorsSync(() => this.auth.authorize(range, ctx));
    let closed = false;
    let pumping = false;
    let pumpAgain = false;
    // Deferred: the hub may call back synchronously inside create(), and pulling there
    // would take the history twice.
    const stream = this.node.watchHub.openStream(() => this.schedulePump(pump));
    // The hub may signal readiness from inside next(): never pump re-entrantly, or the same
    // response would be taken twice. A signal during a pump makes the pump loop once more.
    const pump = (): void => {
      if (pumping) {
        pumpAgain = true;
        return;
      }
      pumping = true;
      try {
        do {
          pumpAgain = false;
          drain();
        } while (pumpAgain && !closed);
      } finally {
        pumping = false;
      }
    };
    const drain = (): void => {
      // Not from a congested sink, not even one response: a catch-up from the log refills the
      // hub's buffer at each take, and a fan-out wakes every watch of a stream at each revision
      // (a thousand watches pulling one response each would pass the stream's send buffer, and
      // cancel them all, for a client reading a little slowly). They wait in the hub, which
      // reads them from the log if they overflow it, until the sink resumes them.
      for (let r = sink.congested() ? undefined : stream.next(); r && !closed; r = sink.congested() ? undefined : stream.next()) {
        if (r.canceled) {
          closed = true;
          stream.close();
          sink.cancel(r.cancelReason, this.header(r.header.revision), r.compactRevision !== 0 ? r.compactRevision : undefined);
          return;
        }
        if (r.events.length > 0) {
          sink.events(apiEventList(r.events), this.eventsHeader(r.header.revision));
        } else if (!r.created) {
          sink.progress(this.header(r.header.revision));
        }
      }
    };
    try {
      stream.create(
        {
          key: req.key,
          rangeEnd: req.rangeEnd,
          startRevision: req.startRevision,
          progressNotify: req.progressNotify,
          filters: req.filters.map((f) => (f === 'NOPUT' ? kv.WatchFilterType.NOPUT : kv.WatchFilterType.NODELETE)),
          prevKv: req.prevKv,
          watchId: 1,
          fragment: req.fragment, // acted on by the gRPC server, not the hub
        },
        { held: true },
      );
    } catch (e) {
      stream.close();
      throw toEtcdError(e);
    }
    const header = this.header();
    // The watcher is created held: it sends nothing until the check is made again with this
    // member caught up (one ReadIndex round; the "created" answer does not wait). A member that
    // had not yet applied a revoke, or auth being enabled, would otherwise stream what the
    // cluster no longer allows for as long as the watch lives (etcd checks only its own state).
    // Without a leader the round is tried again until there is one; nothing new commits
    // meanwhile, so only a replay of past revisions waits. (The round is paid by every watch,
    // with auth on or off: a member cannot know auth is off without it.)
    const recheck = (): void => {
      if (closed) return;
      this.node.linearizableBarrier().then(
        () => {
          if (closed) return;
          try {
            this.auth.authorize(range, ctx);
          } catch (e) {
            closed = true;
            stream.close();
            const err = toEtcdError(e);
            sink.cancel(isEtcdError(err) ? watchRefusalReason(err) : String(err), this.header());
            return;
          }
          stream.release(); // what it reads signals the pump
        },
        // Unref'd: a member shutting down does not wait for it (its watches are closed then).
        () => void setTimeout(recheck, WATCH_RECHECK_RETRY_MS).unref(),
      );
    };
    recheck();
    return {
      header,
      deliveredThrough: () => (closed ? Number.MAX_SAFE_INTEGER : stream.deliveredThrough()),
      resume: () => {
        if (!closed) this.schedulePump(pump);
      },
      cancel: () => {
        if (closed) return;
        closed = true;
        stream.close();
      },
    };
  }

  async watchProgress(): Promise<api.ResponseHeader> {
    return this.header();
  }

  leaseGrant(req: api.LeaseGrantRequest, ctx?: api.CallContext): Promise<api.LeaseGrantResponse> {
    return etcdErrors(async () => {
      const user = await this.auth.caughtUp(() => this.auth.caller(ctx));
      const resp = await this.replicate(kv.clientRequest({ leaseGrant: { TTL: req.ttlSeconds, ID: req.id } }, user), ctx);
      const g = (resp as { leaseGrant: kv.LeaseGrantResponse }).leaseGrant;
      return { header: this.header(g.header.revision), id: g.ID, ttlSeconds: g.TTL };
    });
  }

  /** Proposed, as etcd proposes it: whether the lease exists is decided when applied, not from this member's view (it may not have applied the grant yet). */
  leaseRevoke(id: number, ctx?: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return etcdErrors(async () => {
      const resp = await this.replicateAs({ leaseRevoke: { ID: id } }, ctx);
      return this.withHeader((resp as { leaseRevoke: kv.LeaseRevokeResponse }).leaseRevoke);
    });
  }

  /**
   * The leader did not answer a forwarded keep-alive or time-to-live: the client tries again
   * (etcd's "leader changed"), and the log says why, once per FORWARD_FAILURE_LOG_MS rather than
   * per retry (a certificate the leader refuses fails every one).
   */
  private forwardFailed(err: unknown): never {
    const now = performance.now();
    if (now - this.forwardFailureLoggedAt >= FORWARD_FAILURE_LOG_MS) {
      this.forwardFailureLoggedAt = now;
      this.node.opts.logger.warn({ leader: this.node.lead.toString(16), reason: (err as Error).message }, 'a request forwarded to the leader failed');
    }
    throw new EtcdError('LEADER_CHANGED');
  }

  hasLeader(): boolean {
    return this.node.lead !== 0;
  }

  isLearner(): boolean {
    return this.node.isLearner;
  }

  /** The leader's client address and published certificate, for what only the leader knows (lease time). */
  private leaderClientAddr(): ForwardTarget {
    // Just elected, lease timers not yet taken over: asking ourselves would loop.
    if (this.node.lead === this.node.id) throw new EtcdError('LEADER_CHANGED');
    const leader = this.node.members.get(this.node.lead);
    if (!leader?.clientAddr) throw new EtcdError('NO_LEADER');
    return { clientAddr: leader.clientAddr, clientCert: leader.clientCert };
  }

  /**
   * Longest a lease call waits for a leader's answer (etcd: its request timeout), kept under
   * FORWARD_TIMEOUT_MS so a follower that forwarded the call gets the answer.
   */
  private get leaderWaitMs(): number {
    return Math.min(this.node.opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, FORWARD_TIMEOUT_MS - 1_000);
  }

  /**
   * Lease time lives on the leader. While there is none, or the one known does not answer (an
   * election), etcd's keep-alive, time-to-live and lease list wait for the next leader, up to its
   * request timeout, rather than fail: a keep-alive stream ended by an election loses its lease
   * with a client that does not open another. So `call` is tried again until `deadline`.
   */
  private async untilLeaderAnswers<T>(deadline: number, call: () => Promise<T>): Promise<T> {
    for (;;) {
      try {
        return await call();
      } catch (e) {
        const err = toEtcdError(e);
        if (!(err instanceof EtcdError) || !LEADERLESS.has(err.code) || performance.now() + LEADER_RETRY_MS >= deadline) throw err;
      }
      await sleep(LEADER_RETRY_MS);
    }
  }

  leaseKeepAlive(id: number, ctx?: api.CallContext): Promise<api.LeaseKeepAliveResponse> {
    const deadline = performance.now() + this.leaderWaitMs;
    return this.untilLeaderAnswers(deadline, () => this.renewLease(id, deadline, ctx));
  }

  private renewLease(id: number, deadline: number, ctx?: api.CallContext): Promise<api.LeaseKeepAliveResponse> {
    return etcdErrors(async () => {
      // Keeping a lease alive keeps its keys: the caller must be allowed to write them (etcd 3.4.42+).
      await this.auth.caughtUp(() => {
        const caller = this.auth.caller(ctx);
        if (caller !== undefined) for (const k of this.node.store.leaseKeys(id)) this.node.store.auth.checkKeys(caller, true, k);
      });
      if (this.node.leaseTimers.isLeader) {
        // Renew only with leadership confirmed since the request came (etcd's
        // ensureLeadership): a leader whose disk stalls keeps answering on its event loop,
        // while the others elect a new leader that never hears of these renewals and lets
        // the lease expire under a client told it was renewed. After the round, Raft's own
        // state must still say leader in the same term (the role the driver reports lags
        // behind a stalled save), and the round must have started less than an election
        // timeout ago: no other leader can have been elected since, and a new one extends
        // every lease by at least that much. Counted from the round's start (it begins after
        // this request came), not from the request: a round queued behind another, or whose
        // apply waited on a slow disk, still proves leadership at its start, and renewals on a
        // busy leader must not fail while expiry goes on.
        const term = this.node.driver.node.raft.term;
        const roundStartMs = await this.node.linearizableBarrier();
        const raft = this.node.driver.node.raft;
        const stillLeader = this.node.leaseTimers.isLeader && raft.role === Role.Leader && raft.term === term;
        if (stillLeader && performance.now() - roundStartMs < this.node.electionTimeoutMs) {
          const timers = this.node.leaseTimers;
          if (!timers.expired(id)) return { header: this.header(), id, ttlSeconds: timers.keepAlive(id) };
          // Expired, its revoke due or in flight: as etcd's Renew, answer once the revoke is
          // applied here, so a client told TTL 0 finds the lease's keys gone (and can create
          // them again). Bounded; then answered as before: not found (an expired lease is never
          // renewed, and the leader check above may be old by now).
          if ((await timers.untilRevoked(id, Math.max(0, deadline - performance.now()))) !== 'not-leader') throw new EtcdError('LEASE_NOT_FOUND');
          // Leadership lost meanwhile (etcd's ErrNotPrimary): the new leader answers.
        }
      }
      // Lease time lives on the leader only: forward, as etcd does.
      // As the client, with a token of its own made here (undefined with auth off: whatever a
      // client sends then must not open streams of its own to the leader).
      const ttl = await this.forwarder.keepAlive(this.leaderClientAddr(), id, this.auth.forwardingToken(ctx)).catch((e: unknown) => this.forwardFailed(e));
      if (ttl <= 0) {
        // The leader answered after applying the revoke; this member may not have yet. One read
        // barrier catches up with everything the leader had committed (the revoke too), so
        // the client reading here next does not find the lease's keys.
        if (this.node.store.hasLease(id)) await this.node.linearizableBarrier().catch(() => undefined);
        throw new EtcdError('LEASE_NOT_FOUND');
      }
      return { header: this.header(), id, ttlSeconds: ttl };
    });
  }

  leaseTimeToLive(id: number, keys: boolean, ctx?: api.CallContext): Promise<api.LeaseTimeToLiveResponse> {
    return this.untilLeaderAnswers(performance.now() + this.leaderWaitMs, async () => {
      await this.node.linearizableBarrier();
      const user = this.auth.caller(ctx);
      let r = this.node.store.leaseTimeToLive(id, keys);
      // The attached keys are shown only to a user who may read them all (etcd 3.5).
      if (keys && user !== undefined) for (const k of r.keys) this.node.store.auth.checkKeys(user, false, k);
      if (r.TTL >= 0 && this.node.leaseTimers.isLeader) r = this.node.leaseTimers.timeToLive(r);
      else if (r.TTL >= 0) {
        // A follower knows the lease but not its time, which lives on the leader: ask it, as
        // etcd forwards TimeToLive (answering the granted TTL here would say it never runs down).
        const ttl = await this.forwarder.timeToLive(this.leaderClientAddr(), id, user === undefined ? undefined : this.auth.forwardingToken(ctx)?.token).catch((e: unknown) => this.forwardFailed(e));
        r = ttl < 0 ? { ...r, TTL: -1, grantedTTL: 0, keys: [] } : { ...r, TTL: ttl };
      }
      return { header: this.header(r.header.revision), id: r.ID, ttlSeconds: r.TTL, grantedTtlSeconds: r.grantedTTL, keys: r.keys };
    });
  }

  leaseLeases(ctx?: api.CallContext): Promise<api.LeaseLeasesResponse> {
    return this.untilLeaderAnswers(performance.now() + this.leaderWaitMs, async () => {
      await this.node.linearizableBarrier();
      this.auth.caller(ctx);
      const r = this.node.store.leaseLeases();
      return { header: this.header(r.header.revision), ids: r.leases.map((l) => l.ID) };
    });
  }

  /** Members in ID order, as etcd 3.4 lists them (etcdctl member list, member add's ETCD_INITIAL_CLUSTER). */
  private membersResponse(): api.MembersResponse {
    return {
      header: this.header(),
      members: [...this.node.members.values()].sort((a, b) => a.id - b.id).map((m) => ({
        id: m.id,
        name: m.name,
        peerUrls: m.peerAddr ? [`http://${m.peerAddr}`] : [],
        clientUrls: m.clientAddr ? [clientUrl(m.clientAddr)] : [],
        isLearner: m.isLearner,
      })),
    };
  }

  /**
   * As etcd's, open to every caller with auth on too: clients list the members to find
   * endpoints (clientv3's Sync, etcdctl's --cluster) with whatever user they run as.
   */
  async memberList(): Promise<api.MembersResponse> {
    return this.membersResponse();
  }

  memberAdd(peerUrls: string[], isLearner: boolean, ctx?: api.CallContext): Promise<api.MemberAddResponse> {
    return etcdErrors(async () => {
      await this.auth.adminCaughtUp(ctx);
      const peerAddr = peerAddress(peerUrls);
      if ([...this.node.members.values()].some((m) => m.peerAddr === peerAddr)) throw new EtcdError('PEER_URL_EXIST');
      if (this.node.membersFull) throw new EtcdError('TOO_MANY_MEMBERS');
      if (!isLearner) this.mayAddVoter();
      const id = 1 + Math.floor(Math.random() * (2 ** 47 - 1));
      // A learner added so stays one until `member promote`, as in etcd (the leader promotes by
      // itself only the learners --join adds).
      const context = new TextEncoder().encode(JSON.stringify({ name: '', peerAddr, clientAddr: '', ...(isLearner ? { operatorPromotes: true } : {}) }));
      await this.node.changeMembership({ type: isLearner ? ConfChangeType.AddLearner : ConfChangeType.AddVoter, nodeId: id, context }, () => this.node.members.has(id));
      const list = this.membersResponse();
      return { ...list, member: list.members.find((m) => m.id === id)! };
    });
  }

  memberRemove(id: number, ctx?: api.CallContext): Promise<api.MembersResponse> {
    return etcdErrors(async () => {
      await this.auth.adminCaughtUp(ctx);
      const m = this.node.members.get(id);
      if (!m) throw new EtcdError('MEMBER_NOT_FOUND');
      if (!m.isLearner) this.mayRemoveVoter(id);
      // Removing this member itself: a peer may tell it before it applies the removal.
      const gone = (): boolean => !this.node.members.has(id) || (id === this.node.id && this.node.wasRemoved);
      await this.node.changeMembership({ type: ConfChangeType.RemoveNode, nodeId: id }, gone);
      const list = this.membersResponse();
      return { ...list, members: list.members.filter((o) => o.id !== id) };
    });
  }

  /**
   * etcd's strict reconfiguration check (mayAddMember): the started voters must be a quorum of
   * the voters with the new one, or the cluster stops committing, and cannot even remove the
   * added ones again, until enough of them start. A second voter for a one-member cluster is
   * let through, as etcd lets it (the way to grow one).
   */
  private mayAddVoter(): void {
    const voters = [...this.node.members.values()].filter((m) => !m.isLearner);
    const started = voters.filter((m) => m.name !== '').length;
    if (started === 1 && voters.length === 1) return;
    if (started < quorumSize(voters.length + 1)) throw new EtcdError('MEMBER_NOT_ENOUGH_STARTED');
  }

  /**
   * etcd's strict reconfiguration check (mayRemoveMember): the voters left must hold a quorum
   * of started members (with none, nothing could commit again), and removing a voter this member
   * reaches must leave a quorum of reachable ones: with another voter down, removing a live one
   * would leave the cluster without a quorum until that one comes back.
   */
  private mayRemoveVoter(id: number): void {
    const others = [...this.node.members.values()].filter((o) => o.id !== id && !o.isLearner);
    const quorum = quorumSize(others.length);
    if (others.filter((o) => o.name !== '').length < quorum) throw new EtcdError('MEMBER_NOT_ENOUGH_STARTED');
    const reached = (o: { id: number }): boolean => o.id === this.node.id || this.node.reachesPeer(o.id);
    // A voter this member does not reach is safe to remove: it is no part of the live quorum.
    if (id !== this.node.id && !this.node.reachesPeer(id)) return;
    if (others.filter(reached).length < quorum) throw new EtcdError('UNHEALTHY');
  }

  memberUpdate(id: number, peerUrls: string[], ctx?: api.CallContext): Promise<api.MembersResponse> {
    return etcdErrors(async () => {
      await this.auth.adminCaughtUp(ctx);
      const m = this.node.members.get(id);
      if (!m) throw new EtcdError('MEMBER_NOT_FOUND');
      const peerAddr = peerAddress(peerUrls);
      if ([...this.node.members.values()].some((o) => o.id !== id && o.peerAddr === peerAddr)) throw new EtcdError('PEER_URL_EXIST');
      const op = randomBytes(8).toString('hex');
      const context = new TextEncoder().encode(JSON.stringify({ name: m.name, peerAddr, clientAddr: m.clientAddr, op }));
      // Done once this update is applied, whatever the record says after it (a running member
      // records the address it runs at again: its own word wins). Caught up from a snapshot
      // instead, the entry is never seen here: the record then shows it.
      await this.node.changeMembership({ type: ConfChangeType.UpdateNode, nodeId: id, context }, () => {
        const now = this.node.members.get(id);
        return now === undefined || this.node.lastAddressUpdate(id) === op || now.peerAddr === peerAddr;
      });
      return this.membersResponse();
    });
  }

  memberPromote(id: number, ctx?: api.CallContext): Promise<api.MembersResponse> {
    return etcdErrors(async () => {
      await this.auth.adminCaughtUp(ctx);
      const m = this.node.members.get(id);
      if (!m) throw new EtcdError('MEMBER_NOT_FOUND');
      if (!m.isLearner) throw new EtcdError('MEMBER_NOT_LEARNER');
      const promoted = (): boolean => this.node.members.get(id)?.isLearner === false;
      const st = this.node.driver.node.status();
      if (st.progress === undefined) {
        // Not the leader: it alone knows how far the learner's log has come.
        await this.forwarder.memberPromote(this.leaderClientAddr(), id, this.auth.forwardingToken(ctx)?.token).catch((e: unknown) => {
          throw forwardedEtcdError(e) ?? this.forwardFailed(e);
        });
        if (!(await this.node.membersSettle(promoted, FORWARD_TIMEOUT_MS))) throw new EtcdError('TIMEOUT');
        return this.membersResponse();
      }
      const refusal = this.node.promotionRefusal(id);
      if (refusal !== undefined) throw new EtcdError(refusal);
      await this.node.changeMembership({ type: ConfChangeType.AddVoter, nodeId: id }, promoted);
      return this.membersResponse();
    });
  }

  /** As etcd's, open to every caller (monitoring runs `endpoint status` as any user). */
  async status(): Promise<api.StatusResponse> {
    const st = this.node.driver.node.status();
    return {
      header: this.header(),
      version: ETCD_COMPAT_VERSION,
      // The store's history lives in memory: its estimates stand for etcd's database sizes.
      dbSizeBytes: statusDbSize(this.node.store.allocatedBytes),
      leader: st.lead,
      raftIndex: st.commit,
      raftTerm: st.term,
      raftAppliedIndex: st.applied,
      errors: [],
      dbSizeInUseBytes: statusDbSize(this.node.store.retainedBytes),
      isLearner: st.conf.learners.includes(st.id),
    };
  }

  /**
   * The cluster's alarms. NOSPACE is raised and cleared by the space quota itself
   * (core/kv/quota.ts), under the member whose quota is the cluster's (the smallest), so there
   * is nothing to disarm by hand: a disarm while it is raised says how to make room instead of
   * pretending to clear it.
   */
  async alarm(req?: api.AlarmRequest, ctx?: api.CallContext): Promise<api.AlarmResponse> {
    if (req !== undefined && req.action !== 'GET') await etcdErrors(() => this.auth.caughtUp(() => this.auth.admin(ctx)));
    const quota = this.node.clusterQuota;
    const alarms: api.AlarmResponse['alarms'] = this.node.noSpace ? [{ memberId: quota.id, alarm: 'NOSPACE' }] : [];
    if (req?.action === 'ACTIVATE') throw new EtcdError('UNSUPPORTED', 'alarms are raised by the member itself');
    if (req?.action === 'DEACTIVATE' && alarms.length > 0) {
      const whose = quota.id === this.node.id ? 'this member' : `member ${this.node.members.get(quota.id)?.name || quota.id.toString(16)}`;
      throw new EtcdError(
        'UNSUPPORTED',
        `NOSPACE clears by itself once the store is below ${Math.round(kv.QUOTA_CLEAR_FRACTION * 100)}% of the cluster's quota (${quota.quotaBytes} bytes, ${whose}'s, the smallest): compact (etcdctl compact REV) or delete keys`,
      );
    }
    return { header: this.header(), alarms: req?.action === 'DEACTIVATE' ? [] : alarms };
  }

  /** etcd's MoveLeader: on the leader, hand leadership to a voting member and wait until it has it. */
  moveLeader(targetId: number, ctx?: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return etcdErrors(async () => {
      await this.auth.adminCaughtUp(ctx);
      if (!this.node.isLeader) throw new EtcdError('NOT_LEADER');
      const target = this.node.members.get(targetId);
      if (target === undefined || target.isLearner) throw new EtcdError('BAD_LEADER_TRANSFEREE');
      if (!(await this.node.transferLeadership(targetId))) throw new EtcdError(this.node.isLeader ? 'TIMEOUT_LEADER_TRANSFER' : 'NOT_LEADER');
      return { header: this.header() };
    });
  }

  /** This member's hash of its key space (no read barrier, as in etcd): compare members with it. */
  hashKV(revision: number, ctx?: api.CallContext): Promise<api.HashKVResponse> {
    return etcdErrors(async () => {
      await this.auth.adminCaughtUp(ctx);
      const hashed = await this.node.store.hashKV(revision);
      // At the revision hashed, as etcd's (the walk runs a slice per turn; the store moves on).
      return { header: this.header(hashed.revision), hash: hashed.hash, compactRevision: hashed.compactRevision };
    });
  }

  defragment(ctx?: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return etcdErrors(async () => {
      await this.auth.adminCaughtUp(ctx);
      await this.node.defragment();
      return { header: this.header() };
    });
  }

  snapshot(ctx?: api.CallContext): Promise<api.SnapshotStream> {
    return etcdErrors(async () => {
      await this.auth.adminCaughtUp(ctx);
      if (this.snapshotsServed >= MAX_CONCURRENT_SNAPSHOTS) throw new EtcdError('TOO_MANY_REQUESTS', `${MAX_CONCURRENT_SNAPSHOTS} snapshots are being sent`);
      this.snapshotsServed++;
      let released = false;
      // Spool to a file first: the stream must announce its exact size, and must not hold
      // the whole image in memory.
      const path = join(this.node.opts.dataDir, `${SNAPSHOT_SPOOL_PREFIX}${process.pid}-${Date.now()}-${++snapshotSpools}${SNAPSHOT_SPOOL_SUFFIX}`);
      const release = async (): Promise<void> => {
        if (!released) this.snapshotsServed--;
        released = true;
        await rm(path, { force: true });
      };
      try {
        await pipeline(Readable.from(this.node.store.snapshot()), createWriteStream(path));
        const { size } = await stat(path);
        const header = this.header();
        async function* data(): AsyncGenerator<Uint8Array> {
          try {
            for await (const chunk of createReadStream(path)) yield chunk as Buffer;
          } finally {
            await release();
          }
        }
        return { header, sizeBytes: size, data: data(), release };
      } catch (e) {
        await release();
        throw e;
      }
    });
  }
}

/** The host:port of a member's first peer URL (etcd's are http://host:port); etcd's error otherwise. */
function peerAddress(peerUrls: string[]): string {
  if (peerUrls.length > 1) throw new EtcdError('INVALID_ARGUMENT', `picloud keeps one peer URL per member; ${peerUrls.length} given`);
  const peerAddr = peerUrls[0]?.replace(/^https?:\/\//, '') ?? '';
  if (!/^[^/\s]+:\d+$/.test(peerAddr)) throw new EtcdError('MEMBER_BAD_URLS');
  // The same parse the peer transport dials with (port 1-65535, brackets closed): a record it
  // could not dial would otherwise be committed for every member.
  try {
    parseHostPort(peerAddr);
  } catch {
    throw new EtcdError('MEMBER_BAD_URLS');
  }
  return peerAddr;
}
