/**
 * A simulated client of the replicated KV store: a closed loop of put / get / compare-and-set
 * on a few keys. Each operation gets a per-client sequence number that stays the same across
 * retries, so the state machine applies it once. An attempt that times out or finds no
 * leader is retried at another node (the leader hint first) until the operation's deadline;
 * then the client gives up and records the outcome as indeterminate (a write that may have
 * been appended) or failed (every attempt was refused, or it was a read).
 *
 * Not responsible for transport (the cluster routes requests over the simulated network) or
 * for serving requests (node.ts).
 */
import type { NodeId } from '../raft/types.js';
import type { EventQueue } from './events.js';
import type { HistoryRecorder, OpKind } from './history.js';
import type { Prng } from './prng.js';
import type { Trace } from './trace.js';
import { describeOp } from './history.js';

export interface ClientRequest {
  clientId: number;
  opId: number;
  attempt: number;
  op: OpKind;
  key: string;
  value?: string;
  expected?: string | null;
}

export type ClientResponse =
  | { clientId: number; opId: number; attempt: number; ok: true; value?: string | null; casOk?: boolean }
  /** Refused without being appended (no leader known, transfer in progress): safe to retry. */
  | { clientId: number; opId: number; attempt: number; ok: false; leaderHint: NodeId };

export interface ClientEnv {
  queue: EventQueue;
  history: HistoryRecorder;
  trace: Trace;
  /** Returns how many copies of the request the network carries (it may duplicate it). */
  send(from: number, to: NodeId, req: ClientRequest): number;
  /** Nodes worth trying (started, not removed). */
  targets(): NodeId[];
}

export interface ClientConfig {
  keys: number;
  thinkMsMax: number;
  requestTimeoutMs: number;
  opDeadlineMs: number;
}

/** Wait before retrying after a refusal, so a leaderless cluster is not hammered. */
export const RETRY_BACKOFF_MS_MAX = 50;

interface Current {
  handle: number;
  req: ClientRequest;
  deadlineMs: number;
  /** Attempts not answered "refused": each of them may have been appended. */
  unresolvedAttempts: Set<number>;
  /**
   * Attempts the network duplicated: a refusal answers one copy, and the other may arrive
   * later at a node that has a leader by then and be appended, so they are never settled.
   */
  duplicatedAttempts: Set<number>;
}

export class SimClient {
  private seq = 0;
  private cur: Current | undefined;
  private target: NodeId | undefined;
  /** The last value this client saw for each key (for plausible CAS expectations). */
  private readonly lastSeen = new Map<string, string | null>();
  /** Call time of the latest operation that completed ok, and when. */
  lastOkCallMs = -1;
  stopped = false;
  /** Until then the client starts and sends nothing (answers to earlier attempts still count). */
  private pausedUntilMs = 0;
  readonly counts = { ok: 0, fail: 0, indeterminate: 0, attempts: 0 };

  constructor(
    readonly endpoint: number,
    private readonly env: ClientEnv,
    private readonly prng: Prng,
    private readonly cfg: ClientConfig,
  ) {}

  start(): void {
    this.env.queue.after(this.prng.int(this.cfg.thinkMsMax + 1), () => this.nextOp());
  }

  /** Start and send nothing until `untilMs`. */
  pauseUntil(untilMs: number): void {
    this.pausedUntilMs = untilMs;
  }

  /** True if the client is paused; `then` runs when the pause ends. */
  private deferWhilePaused(then: () => void): boolean {
    if (this.env.queue.nowMs >= this.pausedUntilMs) return false;
    this.env.queue.at(this.pausedUntilMs, then);
    return true;
  }

  private nextOp(): void {
    if (this.stopped || this.deferWhilePaused(() => this.nextOp())) return;
    const key = `k${this.prng.int(this.cfg.keys)}`;
    const r = this.prng.next();
    const opId = ++this.seq;
    const value = `${this.endpoint}.${opId}`;
    let req: ClientRequest;
    if (r < 0.4) req = { clientId: this.endpoint, opId, attempt: 0, op: 'get', key };
    else if (r < 0.75) req = { clientId: this.endpoint, opId, attempt: 0, op: 'put', key, value };
    else {
      const seen = this.lastSeen.get(key);
      const expected = seen !== undefined && this.prng.chance(0.8) ? seen : null;
      req = { clientId: this.endpoint, opId, attempt: 0, op: 'cas', key, expected, value };
    }
    const input = req.op === 'get' ? {} : req.op === 'put' ? { value } : { expected: req.expected ?? null, value };
    const now = this.env.queue.nowMs;
    const handle = this.env.history.invoke(this.endpoint, key, req.op, input, now);
    this.cur = { handle, req, deadlineMs: now + this.cfg.opDeadlineMs, unresolvedAttempts: new Set(), duplicatedAttempts: new Set() };
    this.sendAttempt();
  }

  private sendAttempt(): void {
    const cur = this.cur;
    if (cur === undefined || this.stopped) return;
    const pending = cur.req.attempt;
    const resume = (): void => {
      if (this.cur !== cur || cur.req.attempt !== pending) return; // sent by another waiter
      if (this.env.queue.nowMs >= cur.deadlineMs) return this.giveUp();
      this.sendAttempt();
    };
    if (this.deferWhilePaused(resume)) return;
    const targets = this.env.targets();
    if (targets.length === 0) return this.retry(undefined);
    if (this.target === undefined || !targets.includes(this.target)) this.target = this.prng.pick(targets);
    const attempt = ++cur.req.attempt;
    this.counts.attempts++;
    cur.unresolvedAttempts.add(attempt);
    if (this.env.send(this.endpoint, this.target, { ...cur.req }) > 1) cur.duplicatedAttempts.add(attempt);
    this.env.queue.after(this.cfg.requestTimeoutMs, () => {
      if (this.cur === cur && cur.req.attempt === attempt) {
        this.target = undefined; // try someone else
        this.retry(undefined);
      }
    });
  }

  private retry(hint: NodeId | undefined): void {
    const cur = this.cur!;
    const now = this.env.queue.nowMs;
    if (now >= cur.deadlineMs) return this.giveUp();
    if (hint !== undefined && hint !== 0) this.target = hint;
    const attempt = cur.req.attempt;
    this.env.queue.after(1 + this.prng.int(RETRY_BACKOFF_MS_MAX), () => {
      if (this.cur === cur && cur.req.attempt === attempt) this.sendAttempt();
    });
  }

  private giveUp(): void {
    const cur = this.cur!;
    const h = this.env.history;
    // A read has no effect; a write that was refused on every attempt was never appended.
    if (cur.req.op === 'get' || cur.unresolvedAttempts.size === 0) {
      h.fail(cur.handle, this.env.queue.nowMs);
      this.counts.fail++;
    } else {
      h.indeterminate(cur.handle);
      this.counts.indeterminate++;
    }
    this.finishOp();
  }

  onResponse(resp: ClientResponse): void {
    const cur = this.cur;
    if (cur === undefined || resp.opId !== cur.req.opId || this.stopped) return; // a late answer to an old op
    if (!resp.ok) {
      if (!cur.duplicatedAttempts.has(resp.attempt)) cur.unresolvedAttempts.delete(resp.attempt);
      if (resp.attempt === cur.req.attempt) this.retry(resp.leaderHint);
      return;
    }
    const now = this.env.queue.nowMs;
    const h = this.env.history;
    const key = cur.req.key;
    if (cur.req.op === 'get') {
      h.ok(cur.handle, { value: resp.value ?? null }, now);
      this.lastSeen.set(key, resp.value ?? null);
    } else if (cur.req.op === 'put') {
      h.ok(cur.handle, {}, now);
      this.lastSeen.set(key, cur.req.value!);
    } else {
      h.ok(cur.handle, { ok: resp.casOk === true }, now);
      if (resp.casOk) this.lastSeen.set(key, cur.req.value!);
    }
    this.counts.ok++;
    this.lastOkCallMs = h.ops[cur.handle]!.call;
    this.env.trace.fold(now, this.endpoint, cur.req.opId, resp.casOk === true ? 1 : 0);
    const op = h.ops[cur.handle]!;
    this.env.trace.event(now, 'client', [], () => describeOp(op), key);
    this.finishOp();
  }

  private finishOp(): void {
    this.cur = undefined;
    this.env.queue.after(this.prng.int(this.cfg.thinkMsMax + 1), () => this.nextOp());
  }
}
