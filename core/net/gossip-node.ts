/**
 * GossipNode: one member of a real cluster. Runs the pure GossipMachine with the wall clock
 * (a single timer at the machine's next deadline) and the real UDP/TCP transport, encodes what
 * the machine sends, feeds it what arrives, and exposes the result: the member list, membership
 * events as an async iterator, metadata updates, graceful leave, cluster-wide keyring rotation,
 * and metrics. Persistence (incarnation, keyring, reaped members) is left to callbacks.
 */
import { isWildcard } from './advertise.js';
import { randomInt } from 'node:crypto';
import { encodePacket } from '../gossip/codec/index.js';
import { PICLOUD_LAN_CONFIG, retransmitLimit, type GossipConfig } from '../gossip/config.js';
import { GossipError } from '../gossip/errors.js';
import { listedKey, type Keyring } from '../gossip/keyring/index.js';
import type { KeyringAuthority } from '../gossip/keyring/authority.js';
import { MAX_EVENT_BUFFER, MAX_KEYRING_VERSION_STEP } from '../gossip/limits.js';
import { GossipMachine, type GossipCounters } from '../gossip/machine.js';
import {
  MsgType,
  type Address,
  type Effects,
  type KeyringOpMsg,
  type KeyringOpName,
  type MemberEvent,
  type MemberInfo,
  type Message,
  type Meta,
  type StreamMsg,
} from '../gossip/types.js';
import { Prng, type RandomSource } from '../sim/prng.js';
import { GossipTransport, type TransportStats } from './gossip-transport.js';

export interface GossipLogger {
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
}

export interface GossipNodeOptions {
  name: string;
  bindHost: string;
  /** 0 picks a free port. */
  bindPort: number;
  /** Address others use to reach us; defaults to bindHost (required when binding a wildcard). */
  advertiseHost?: string;
  advertisePort?: number;
  keyring: Keyring;
  config?: GossipConfig;
  meta?: Meta;
  /** Starting incarnation (persisted value + 1 after a restart). */
  incarnation?: number;
  random?: RandomSource;
  /** Called whenever our incarnation changes (to persist it). */
  onIncarnationChange?(incarnation: number): void;
  /** The reaped members' last incarnations a previous run saved (GossipMachineOptions.reaped). */
  reaped?: Iterable<readonly [name: string, incarnation: number]>;
  /** Called whenever the reaped members' memory changed (to persist it), oldest first. */
  onReapedChange?(reaped: Array<[name: string, incarnation: number]>): void;
  /** Called after the keyring changed (to persist it). */
  onKeyringChange?(keyring: Keyring): void;
  /**
   * Who may change the keyring for others (keyring/authority.ts): given, changes from other
   * members are taken only signed, and this node sends its own only if it can sign them.
   */
  keyringAuthority?: KeyringAuthority;
  logger?: GossipLogger;
}

/** An event as delivered to users: the machine's event plus wall-clock time. */
export interface GossipEvent extends MemberEvent {
  at: string;
}

export interface KeyringResult {
  op: KeyringOpName;
  /** Members asked, this node included. */
  members: number;
  ok: number;
  errors: Array<{ node: string; code: string; message: string }>;
  /** For list: each key with how many members hold it and on how many it is primary. */
  keys?: Array<{ key: string; members: number; primaryOn: number }>;
}

interface Subscriber {
  queue: GossipEvent[];
  wake: (() => void) | undefined;
  error: GossipError | undefined;
  closed: boolean;
}

const KEYRING_FANOUT = 16;
/**
 * Tries of a keyring change at a member that refuses it as stale, each above the versions it
 * reported. Changes begun at once on n members each take the first try of one version at a
 * member and refuse the others, so every one of them is in everywhere within n tries.
 */
export const KEYRING_CHANGE_TRIES = 8;
/** At most one name-conflict warning per this long (a key holder could send thousands). */
const CONFLICT_LOG_INTERVAL_MS = 10_000;

export class GossipNode {
  private readonly machine: GossipMachine;
  private transport!: GossipTransport;

  /** Route Raft join connections arriving on the gossip port (see GossipTransport.setJoinHandler). */
  setJoinHandler(handler: ((sock: import('node:net').Socket, onAuthenticated: () => void) => void) | undefined): void {
    this.transport.setJoinHandler(handler);
  }
  private timer: NodeJS.Timeout | undefined;
  private timerAtMs = Infinity;
  private readonly subscribers = new Set<Subscriber>();
  private readonly joinWaiters = new Map<number, (ok: boolean, code?: string) => void>();
  private lastIncarnation: number;
  private reapedChangesSaved = 0;
  private stopped = false;
  private readonly log: GossipLogger;
  private conflictsLogged = 0;
  /** Keyring changes refused for a version at or below ours (replays, or a behind origin). */
  private keyringStale = 0;
  private keyringUnsigned = 0;
  private conflictLoggedAtMs = -Infinity;

  private constructor(private readonly opts: GossipNodeOptions, address: Address, config: GossipConfig) {
    this.log = opts.logger ?? { info: () => {}, warn: () => {} };
    this.machine = new GossipMachine({
      name: opts.name,
      address,
      meta: opts.meta ?? {},
      incarnation: opts.incarnation ?? 0,
      config,
      random: opts.random ?? new Prng(randomInt(0x7fff_ffff)),
      nowMs: performance.now(),
      reaped: opts.reaped,
    });
    this.lastIncarnation = this.machine.incarnation;
  }

  /** Binds the sockets and starts the protocol (alone until join() is called). */
  static async start(opts: GossipNodeOptions): Promise<GossipNode> {
    const config = opts.config ?? { ...PICLOUD_LAN_CONFIG };
    const advertiseHost = opts.advertiseHost ?? opts.bindHost;
    if (isWildcard(advertiseHost)) {
      throw new GossipError('GOSSIP_CONFIG_INVALID', `bind address ${opts.bindHost} is a wildcard: give an advertise address`);
    }
    let node: GossipNode | undefined;
    const transport = await GossipTransport.listen({
      bindHost: opts.bindHost,
      bindPort: opts.bindPort,
      keyring: opts.keyring,
      onPacket: (msgs, from) => node?.onPacket(msgs, from),
      onStream: (req, from) => node!.onStream(req, from),
      streamDeadlineMs: config.tcpTimeoutMs,
    });
    const address = { host: advertiseHost, port: opts.advertisePort ?? transport.port };
    try {
      node = new GossipNode(opts, address, config);
    } catch (err) {
      await transport.close();
      throw err;
    }
    node.transport = transport;
    node.schedule();
    return node;
  }

  get name(): string {
    return this.machine.name;
  }

  get port(): number {
    return this.transport.port;
  }

  get address(): Address {
    return this.machine.address;
  }

  get incarnation(): number {
    return this.machine.incarnation;
  }

  get config(): GossipConfig {
    return this.machine.config;
  }

  /**
   * Joins through the seeds (push-pull with each). Resolves with how many answered; rejects
   * with GOSSIP_NAME_CONFLICT if our name is held by another live member, or GOSSIP_JOIN_FAILED
   * if no seed could be reached.
   */
  async join(seeds: readonly Address[]): Promise<number> {
    this.checkRunning();
    if (seeds.length === 0) return 0;
    const results: Array<Promise<{ ok: boolean; code?: string }>> = [];
    const fx = this.machine.join(seeds, this.now());
    for (const s of fx.streams) {
      results.push(new Promise((resolve) => this.joinWaiters.set(s.id, (ok, code) => resolve({ ok, code }))));
    }
    this.apply(fx);
    const outcomes = await Promise.all(results);
    const ok = outcomes.filter((o) => o.ok).length;
    if (outcomes.some((o) => o.code === 'GOSSIP_NAME_CONFLICT')) {
      throw new GossipError('GOSSIP_NAME_CONFLICT', `the name ${this.name} is used by another live member`);
    }
    if (ok === 0) {
      const codes = [...new Set(outcomes.map((o) => o.code))].join(', ');
      throw new GossipError('GOSSIP_JOIN_FAILED', `no seed answered (${codes})`);
    }
    return ok;
  }

  members(): MemberInfo[] {
    return this.machine.members();
  }

  /** Membership events (join, update, leave, fail) from now on. A consumer that falls
   * MAX_EVENT_BUFFER events behind is cancelled with GOSSIP_WATCH_OVERFLOW. */
  events(): AsyncIterableIterator<GossipEvent> {
    const sub: Subscriber = { queue: [], wake: undefined, error: undefined, closed: this.stopped };
    this.subscribers.add(sub);
    const close = (): void => {
      sub.closed = true;
      this.subscribers.delete(sub);
      sub.wake?.();
    };
    const it: AsyncIterableIterator<GossipEvent> = {
      next: async (): Promise<IteratorResult<GossipEvent>> => {
        for (;;) {
          if (sub.queue.length > 0) return { value: sub.queue.shift()!, done: false };
          if (sub.error) {
            const e = sub.error;
            sub.error = undefined;
            throw e;
          }
          if (sub.closed) return { value: undefined, done: true };
          await new Promise<void>((r) => (sub.wake = r));
          sub.wake = undefined;
        }
      },
      return: async (): Promise<IteratorResult<GossipEvent>> => {
        close();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }

  updateMeta(meta: Meta): void {
    this.checkRunning();
    this.apply(this.machine.updateMeta(meta, this.now()));
  }

  /** Leaves gracefully: announces it and waits (bounded) until the announcement has spread. */
  async leave(timeoutMs?: number): Promise<void> {
    if (this.stopped || this.machine.hasLeft) return;
    this.apply(this.machine.leave(this.now()));
    const c = this.machine.config;
    const limit = retransmitLimit(c, this.machine.clusterSize());
    const budget = timeoutMs ?? Math.max(1_000, 4 * c.gossipIntervalMs * Math.ceil(limit / Math.max(1, c.gossipNodes)));
    const deadline = performance.now() + budget;
    while (performance.now() < deadline && this.machine.clusterSize() > 1 && this.machine.leaveTransmits() !== -1) {
      await new Promise((r) => setTimeout(r, Math.min(50, c.gossipIntervalMs)));
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const resolve of this.joinWaiters.values()) resolve(false, 'GOSSIP_STOPPED');
    this.joinWaiters.clear();
    await this.transport.close();
    for (const sub of this.subscribers) {
      sub.closed = true;
      sub.wake?.();
    }
    this.subscribers.clear();
  }

  /**
   * A keyring operation on this node and, unless `local`, on every live member (over the
   * encrypted stream, as Serf's `keys` command does). Never throws for per-member failures;
   * they are listed in `errors`.
   */
  async keyringOp(op: KeyringOpName, key: string, opts: { local?: boolean; timeoutMs?: number } = {}): Promise<KeyringResult> {
    this.checkRunning();
    const authority = this.opts.keyringAuthority;
    if (op !== 'list' && !opts.local && authority !== undefined && authority.sign === undefined) {
      throw new GossipError('GOSSIP_KEYRING_UNSIGNED', `keyring ${op} for the whole cluster is made on a manager: this node holds a worker token, which cannot sign it (--local changes this node alone)`);
    }
    const result: KeyringResult = { op, members: 1, ok: 0, errors: [] };
    const lists: string[][] = [];
    const ring = this.opts.keyring;
    // A change is the next event of our Lamport clock (list changes nothing: 0).
    let version = op === 'list' ? 0 : ring.version + 1;
    const local = this.applyKeyringOp(op, key, version);
    if (local.ok) {
      result.ok++;
      lists.push(local.keys);
    } else result.errors.push({ node: this.name, code: local.code, message: local.message });
    if (!opts.local) {
      let peers = this.machine.members().filter((m) => m.name !== this.name && m.status === 'alive');
      result.members += peers.length;
      const timeoutMs = opts.timeoutMs ?? this.machine.config.tcpTimeoutMs;
      // A member whose keyring is ahead of ours (it took a change we missed while away, or one
      // begun elsewhere at the same time) refuses ours as stale and says its version: ask those
      // again, after everything they have seen.
      for (let round = 0; round < KEYRING_CHANGE_TRIES && peers.length > 0; round++) {
        const stale: Array<{ peer: MemberInfo; version: number }> = [];
        const change: KeyringOpMsg = { t: MsgType.KeyringOp, op, key, version };
        if (op !== 'list' && authority?.sign !== undefined) change.sig = authority.sign({ op, key, version });
        for (let i = 0; i < peers.length; i += KEYRING_FANOUT) {
          await Promise.all(
            peers.slice(i, i + KEYRING_FANOUT).map(async (p) => {
              try {
                const reply = await this.transport.request({ host: p.host, port: p.port }, change, timeoutMs);
                if (reply.t === MsgType.KeyringReply && reply.ok) {
                  result.ok++;
                  lists.push(reply.keys);
                } else if (reply.t === MsgType.KeyringReply && reply.code === 'GOSSIP_KEYRING_STALE' && round < KEYRING_CHANGE_TRIES - 1 && reply.version < version + MAX_KEYRING_VERSION_STEP) {
                  stale.push({ peer: p, version: reply.version });
                } else if (reply.t === MsgType.KeyringReply) {
                  result.errors.push({ node: p.name, code: reply.code, message: reply.code });
                } else {
                  result.errors.push({ node: p.name, code: 'GOSSIP_DECODE_MALFORMED', message: 'unexpected reply' });
                }
              } catch (err) {
                const e = err as GossipError;
                result.errors.push({ node: p.name, code: e.code ?? 'GOSSIP_STREAM_FAILED', message: e.message });
              }
            }),
          );
        }
        if (stale.length === 0) break;
        // Our ring moves up to the versions they reported (so any change we take from now on is
        // above them, and a later replay of this retry to us is stale or repeats our own change),
        // but not to the retry's own: a change another member began at the same moment retries
        // to us at that same version and must still be taken here (had we moved to it, each of
        // two such origins refused the other's retry as stale).
        this.witnessKeyringVersion(Math.max(...stale.map((s) => s.version)));
        version = ring.version + 1;
        peers = stale.map((s) => s.peer);
      }
    }
    if (op === 'list') {
      // Other members answer with fingerprints: shown as the key where this node holds it.
      const ours = new Map(ring.list().map((k) => [listedKey(k), k]));
      const byKey = new Map<string, { key: string; members: number; primaryOn: number }>();
      for (const keys of lists) {
        keys.forEach((reported, i) => {
          const k = ours.get(reported) ?? reported;
          const e = byKey.get(k) ?? { key: k, members: 0, primaryOn: 0 };
          e.members++;
          if (i === 0) e.primaryOn++;
          byKey.set(k, e);
        });
      }
      result.keys = [...byKey.values()].sort((a, b) => b.primaryOn - a.primaryOn || b.members - a.members);
    }
    return result;
  }

  metrics(): Record<string, number> {
    const out: Record<string, number> = {};
    const c: GossipCounters = this.machine.counters;
    for (const [k, v] of Object.entries(c)) out[k] = v;
    const t: TransportStats = this.transport.stats;
    for (const [k, v] of Object.entries(t)) out[k] = v;
    const counts = { alive: 0, suspect: 0, dead: 0, left: 0 };
    for (const m of this.machine.members()) counts[m.status]++;
    out.membersAlive = counts.alive;
    out.membersSuspect = counts.suspect;
    out.membersDead = counts.dead;
    out.membersLeft = counts.left;
    out.healthScore = this.machine.healthScore;
    out.incarnation = this.machine.incarnation;
    out.broadcastQueue = this.machine.queuedBroadcasts();
    out.broadcastsDropped = this.machine.broadcastsDropped;
    out.keyringStale = this.keyringStale;
    out.keyringUnsigned = this.keyringUnsigned;
    return out;
  }

  // -------------------------------------------------------------------------------------------

  private now(): number {
    return performance.now();
  }

  private checkRunning(): void {
    if (this.stopped) throw new GossipError('GOSSIP_STOPPED', 'gossip node is stopped');
  }

  private onPacket(msgs: Message[], from: Address): void {
    if (this.stopped) return;
    this.apply(this.machine.step(msgs, from, this.now()));
  }

  private onStream(req: StreamMsg, _from: Address): StreamMsg {
    if (req.t === MsgType.KeyringOp) {
      const authority = this.opts.keyringAuthority;
      if (req.op !== 'list' && authority !== undefined && !authority.verify({ op: req.op, key: req.key, version: req.version }, req.sig)) {
        // A gossip key holder that is no manager (a worker token), or a change re-signed wrong.
        this.keyringUnsigned++;
        return { t: MsgType.KeyringReply, ok: false, code: 'GOSSIP_KEYRING_UNSIGNED', keys: [], version: this.opts.keyring.version };
      }
      const r = this.applyKeyringOp(req.op, req.key, req.version, authority !== undefined);
      // Fingerprints, never the keys: a list needs no signature, and anyone holding the current
      // key (a leaked worker token) could otherwise read a key installed to retire it.
      return { t: MsgType.KeyringReply, ok: r.ok, code: r.ok ? '' : r.code, keys: r.ok ? r.keys.map(listedKey) : [], version: this.opts.keyring.version };
    }
    if (this.stopped) return { t: MsgType.StreamError, code: 'GOSSIP_STOPPED', message: 'stopping' };
    const { reply, effects } = this.machine.handleStream(req, this.now());
    this.apply(effects);
    // A joiner learns how far the cluster's keyring changes have gone (learnKeyringVersion).
    if (req.t === MsgType.PushPull && req.join && reply.t === MsgType.PushPull) return { ...reply, keyringVersion: this.opts.keyring.version };
    return reply;
  }

  /**
   * Applies a keyring op at Lamport time `version` (ignored for list). A change at or below the
   * ring's version is refused (GOSSIP_KEYRING_STALE): it is a replay, or its origin missed a
   * later change. A newer one moves the version even if the op itself fails, so it cannot be
   * replayed to succeed later. One too far above is refused, unless a manager signed it
   * (`signed`): a key holder answering a manager's change as stale at an inflated version moves
   * that manager's versions up, and its next changes must still be taken.
   */
  private applyKeyringOp(op: KeyringOpName, key: string, version: number, signed = false): { ok: true; keys: string[] } | { ok: false; code: string; message: string } {
    const ring = this.opts.keyring;
    if (op !== 'list') {
      if (version <= ring.version) {
        this.keyringStale++;
        return { ok: false, code: 'GOSSIP_KEYRING_STALE', message: `keyring change at version ${version} is not newer than this member's ${ring.version}` };
      }
      if (version > ring.version + MAX_KEYRING_VERSION_STEP && !signed) {
        return { ok: false, code: 'GOSSIP_KEYRING_IMPLAUSIBLE', message: `keyring change at version ${version} is too far above this member's ${ring.version}` };
      }
      ring.version = version;
    }
    try {
      switch (op) {
        case 'install':
          ring.install(key);
          break;
        case 'use':
          ring.use(key);
          break;
        case 'remove':
          ring.remove(key);
          break;
        case 'list':
          break;
      }
    } catch (err) {
      const e = err as GossipError;
      if (op !== 'list') this.saveKeyringQuietly();
      return { ok: false, code: e.code ?? 'GOSSIP_KEY_INVALID', message: e.message };
    }
    if (op !== 'list') {
      this.log.info(`gossip keyring: ${op} done`);
      try {
        this.opts.onKeyringChange?.(ring);
      } catch (err) {
        // In force in memory, lost at a restart: say so rather than report success.
        const message = `keyring ${op} is in force but could not be saved (${(err as Error).message}); it is lost when this node restarts`;
        this.log.warn(`gossip ${message}`);
        return { ok: false, code: 'GOSSIP_KEYRING_NOT_SAVED', message };
      }
    }
    return { ok: true, keys: ring.list() };
  }

  /** Moves the keyring's version up to `version` (reported by a member ahead of us) and saves it. */
  private witnessKeyringVersion(version: number): void {
    const ring = this.opts.keyring;
    if (version <= ring.version) return;
    ring.version = version;
    this.saveKeyringQuietly();
  }

  /**
   * Takes the keyring version a seed reported in its answer to our join. A member that joins
   * after keyring changes (a fresh data dir, or a keyring saved before versions) would otherwise
   * stay at an older version than the cluster and take a recorded change replayed to it, e.g.
   * the install of a key the cluster has since removed. Bounded as a change is: a key holder's
   * answer at the largest version would make every later change stale here.
   */
  private learnKeyringVersion(version: number, seed: string): void {
    const ring = this.opts.keyring;
    if (version <= ring.version) return;
    if (version > ring.version + MAX_KEYRING_VERSION_STEP) {
      this.log.warn(`gossip: ${seed} answered our join at keyring version ${version}, too far above ours (${ring.version}); not taken`);
      return;
    }
    this.witnessKeyringVersion(version);
  }

  /** Saves a version-only change; a failure is logged (the keys themselves did not change). */
  private saveKeyringQuietly(): void {
    try {
      this.opts.onKeyringChange?.(this.opts.keyring);
    } catch (err) {
      this.log.warn(`gossip keyring version not saved: ${(err as Error).message}`);
    }
  }

  /** Carries out one batch of effects. Must run before the next call into the machine. */
  private apply(fx: Effects): void {
    for (const p of fx.packets) this.transport.sendPacket(p.to, encodePacket(p.messages));
    for (const s of fx.streams) {
      const { id } = s;
      this.transport.request(s.to, s.request, s.timeoutMs).then(
        (reply) => this.streamDone(id, reply),
        () => this.streamDone(id, null),
      );
    }
    for (const j of fx.joins) {
      const w = this.joinWaiters.get(j.streamId);
      if (w) {
        this.joinWaiters.delete(j.streamId);
        w(j.ok, j.code);
      }
    }
    if (fx.events.length > 0) this.publish(fx.events);
    this.logNameConflicts();
    if (this.machine.incarnation !== this.lastIncarnation) {
      this.lastIncarnation = this.machine.incarnation;
      try {
        this.opts.onIncarnationChange?.(this.lastIncarnation);
      } catch (err) {
        // Saving it lets a restart start above it; not saved (a full disk), a restarted node
        // refutes the stale state it meets with a higher incarnation anyway.
        this.log.warn(`gossip: incarnation ${this.lastIncarnation} not saved: ${(err as Error).message}`);
      }
    }
    if (this.machine.reapedChanges !== this.reapedChangesSaved) {
      this.reapedChangesSaved = this.machine.reapedChanges;
      try {
        this.opts.onReapedChange?.(this.machine.reapedMembers());
      } catch (err) {
        // Lost at a restart only: a replayed alive of a reaped member is then taken until probed.
        this.log.warn(`gossip: reaped members not saved: ${(err as Error).message}`);
      }
    }
    this.schedule();
  }

  private logNameConflicts(): void {
    const total = this.machine.counters.nameConflicts;
    if (total === this.conflictsLogged || this.now() - this.conflictLoggedAtMs < CONFLICT_LOG_INTERVAL_MS) return;
    const n = total - this.conflictsLogged;
    this.conflictsLogged = total;
    this.conflictLoggedAtMs = this.now();
    this.log.warn(`gossip: name conflict${n > 1 ? ` (${n} since the last warning)` : ''}: ${this.machine.lastNameConflict ?? ''}`);
  }

  private streamDone(id: number, reply: StreamMsg | null): void {
    if (this.stopped) return;
    if (reply?.t === MsgType.PushPull && reply.keyringVersion !== undefined && this.joinWaiters.has(id)) this.learnKeyringVersion(reply.keyringVersion, reply.from);
    this.apply(this.machine.streamResult(id, reply, this.now()));
  }

  private publish(events: readonly MemberEvent[]): void {
    if (this.subscribers.size === 0) return;
    const at = new Date().toISOString();
    for (const e of events) {
      const ev: GossipEvent = { ...e, at };
      for (const sub of this.subscribers) {
        if (sub.queue.length >= MAX_EVENT_BUFFER) {
          sub.error = new GossipError('GOSSIP_WATCH_OVERFLOW', `event consumer fell ${MAX_EVENT_BUFFER} events behind and was cancelled`);
          sub.closed = true;
          this.subscribers.delete(sub);
          sub.queue.length = 0;
        } else sub.queue.push(ev);
        sub.wake?.();
      }
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    const at = this.machine.nextDeadlineMs();
    if (this.timer && this.timerAtMs <= at) return;
    if (this.timer) clearTimeout(this.timer);
    const delay = Math.max(0, Math.min(at - this.now(), 1_000));
    this.timerAtMs = this.now() + delay;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAtMs = Infinity;
      if (!this.stopped) this.apply(this.machine.tick(this.now()));
    }, delay);
    this.timer.unref();
  }
}
