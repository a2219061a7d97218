/**
 * The SWIM + Lifeguard membership protocol as a pure state machine. It is fed decoded UDP
 * messages (`step`), stream requests and results (TCP), and the passage of time (`tick`), and
 * answers each call with Effects: packets to send, stream requests to make, membership events.
 * It owns no sockets, no clock and no randomness of its own (a RandomSource is injected), so
 * core/sim runs thousands of them in virtual time and core/net/gossip-node.ts runs one for real.
 *
 * What it implements:
 * - failure detection: randomized round-robin probes, ping-req through k helpers with nacks,
 *   a TCP fallback ping, suspicion with incarnation numbers and refutation. A member is declared
 *   dead only by a node's own suspicion timer, after that node checked with the suspect
 *   directly; a death notice from others is evidence (it starts or confirms a suspicion), never
 *   a verdict, so stale notices — after a partition heals, say — cannot kill live members;
 * - Lifeguard: local health awareness (Awareness), dynamic suspicion timeouts (Suspicion), and
 *   the buddy system (suspicion is sent to the suspect, in its probes and at once);
 * - dissemination: a transmit-limited broadcast queue piggybacked on every packet plus a gossip
 *   loop, and push-pull full-state exchange (periodic, on join, and to failed members so
 *   partitions heal);
 * - graceful leave, metadata updates, name-conflict refusal.
 * Not here: wire encoding (codec/), encryption (keyring/), sockets and timers (core/net).
 */
import type { RandomSource } from '../sim/prng.js';
import { Awareness } from './awareness.js';
import { BroadcastQueue } from './broadcast-queue.js';
import { aliveMessage, checkMeta, messageSize, packetSize, pushPullEntrySize, pushPullSize } from './codec/index.js';
import {
  pushPullIntervalFor,
  retransmitLimit,
  suspicionTimeouts,
  validateConfig,
  type GossipConfig,
} from './config.js';
import { GossipDecodeError, GossipError } from './errors.js';
import {
  MAX_INCARNATION,
  MAX_INCARNATION_STEP,
  MAX_MEMBERS,
  MAX_MESSAGES_PER_PACKET,
  MAX_NAME_BYTES,
  MAX_RELAYS,
  MAX_REAPED_MEMBERS,
  PROTOCOL_VERSION,
  SEAL_OVERHEAD_BYTES,
} from './limits.js';
import { MemberTable, entryOf, isLive, memberInfo, type MemberRecord } from './member-table.js';
import { Suspicion } from './suspicion.js';
import {
  MsgType,
  emptyEffects,
  type Address,
  type AliveMsg,
  type DeadMsg,
  type Effects,
  type MemberEventType,
  type MemberInfo,
  type Message,
  type Meta,
  type PushPullEntry,
  type PushPullMsg,
  type StateMsg,
  type StreamMsg,
  type SuspectMsg,
} from './types.js';

export interface GossipMachineOptions {
  name: string;
  /** The address other members use to reach this node (advertised). */
  address: Address;
  meta?: Meta;
  /** Starting incarnation, e.g. the persisted one + 1 after a restart. */
  incarnation?: number;
  config: GossipConfig;
  random: RandomSource;
  nowMs: number;
  /** Simulations only: start out knowing these members, as if a push-pull had happened. */
  initialMembers?: readonly PushPullEntry[];
  /**
   * The reaped members' last incarnations saved by a previous run (reapedMembers(), oldest
   * first; past MAX_REAPED_MEMBERS the oldest are dropped). A restarted node that forgot them
   * would take a replayed alive message of a member reaped before the restart as a new member.
   */
  reaped?: Iterable<readonly [name: string, incarnation: number]>;
  /**
   * Returns the (immutable) Address object for host:port. A simulator running thousands of
   * machines passes one shared interner so they do not each hold a copy of every address.
   */
  internAddress?: (host: string, port: number) => Address;
}

/** Counters for metrics and tests. All monotonically increasing. */
export interface GossipCounters {
  probes: number;
  probeFailures: number;
  indirectProbes: number;
  tcpFallbackProbes: number;
  tcpFallbackRescues: number;
  acksReceived: number;
  nacksReceived: number;
  relays: number;
  relaysRefused: number;
  suspicionsRaised: number;
  confirmations: number;
  refutations: number;
  deathsDeclared: number;
  /** State messages older than what we know (duplicates of what we know are not counted). */
  staleMessages: number;
  /** Acks and nacks matching no probe or relay in flight (late, or answers to suspicion checks). */
  unmatchedAcks: number;
  /** Direct replies with our alive message to someone holding a suspicion about us. */
  aliveReplies: number;
  suspicionChecks: number;
  misdirectedPings: number;
  nameConflicts: number;
  packetsSent: number;
  packetBytesSent: number;
  pushPulls: number;
  pushPullsServed: number;
  reconnects: number;
  membersReaped: number;
  memberLimitDrops: number;
  /** Messages ignored for claiming an incarnation more than MAX_INCARNATION_STEP above the known one. */
  implausibleIncarnations: number;
  /** Alive messages for a reaped member at or below its last incarnation (replays): not re-added. */
  reapedAlivesIgnored: number;
}

function newCounters(): GossipCounters {
  return {
    probes: 0, probeFailures: 0, indirectProbes: 0, tcpFallbackProbes: 0, tcpFallbackRescues: 0,
    acksReceived: 0, nacksReceived: 0, relays: 0, relaysRefused: 0, suspicionsRaised: 0,
    confirmations: 0, refutations: 0, deathsDeclared: 0, staleMessages: 0, unmatchedAcks: 0,
    aliveReplies: 0, suspicionChecks: 0, misdirectedPings: 0,
    nameConflicts: 0, packetsSent: 0, packetBytesSent: 0, pushPulls: 0, pushPullsServed: 0,
    reconnects: 0, membersReaped: 0, memberLimitDrops: 0, implausibleIncarnations: 0, reapedAlivesIgnored: 0,
  };
}

interface ProbeState {
  target: MemberRecord;
  seq: number;
  pingTimeoutAtMs: number;
  deadlineAtMs: number;
  indirectSent: boolean;
  expectedNacks: number;
  nacks: number;
}

interface Relay {
  origin: Address;
  originSeq: number;
  /** 0 once sent or when no nack was asked for. */
  nackAtMs: number;
  expiresAtMs: number;
}

type PendingStream =
  | { kind: 'tcp-ping'; seq: number }
  | { kind: 'join' }
  | { kind: 'push-pull' }
  | { kind: 'reconnect' };

/** A helper sends its nack this fraction of the probe timeout after the ping-req arrived, so the
 * nack reaches the origin before the origin's probe deadline. */
const NACK_TIMEOUT_FRACTION = 0.8;
/** How often tombstones past their retention are swept. */
const REAP_INTERVAL_MS = 10_000;
const UINT32_MOD = 0x1_0000_0000;

export class GossipMachine {
  readonly name: string;
  readonly config: GossipConfig;
  readonly counters: GossipCounters = newCounters();

  private readonly random: RandomSource;
  private readonly internAddress: (host: string, port: number) => Address;
  private readonly table: MemberTable;
  private readonly queue = new BroadcastQueue();
  private readonly awareness: Awareness;
  private addr: Address;
  private incarnationNo: number;
  private meta: Meta;
  private status: 'alive' | 'left' = 'alive';

  private now: number;
  private seqNo: number;
  private probe: ProbeState | undefined;
  private readonly relays = new Map<number, Relay>();
  private readonly suspected = new Set<MemberRecord>();
  /**
   * The last incarnation of each reaped member, oldest first (at most MAX_REAPED_MEMBERS). A replayed
   * alive message of a member that is gone must not bring it back once its record is reaped,
   * and a replay can come as long as the key that sealed it stays installed, which this machine
   * cannot see; so these have no time limit, only a count limit.
   */
  private readonly reaped = new Map<string, number>();
  /** Each member's incarnation as known when the packet being handled arrived (implausible()). */
  private readonly knownAtArrival = new Map<string, number>();
  /** Bumped at every change of `reaped`, so the runner knows when to save it again. */
  private reapedEdits = 0;
  private readonly pendingStreams = new Map<number, PendingStream>();
  private nextStreamId = 1;

  private nextProbeAtMs: number;
  private nextGossipAtMs: number;
  private nextPushPullAtMs: number;
  private nextReconnectAtMs: number;
  private nextReapAtMs: number;
  private wakeAtMs = 0;
  private out: Effects = emptyEffects();
  /** Set while a packet is being handled that told us we are suspect or dead. */
  private aliveReplyDue = false;
  private inPacket = false;
  private lastNameConflictText: string | undefined;

  constructor(opts: GossipMachineOptions) {
    validateConfig(opts.config);
    if (!opts.name || Buffer.byteLength(opts.name) > MAX_NAME_BYTES || /[\x00-\x1f\x7f]/.test(opts.name)) {
      throw new GossipError('GOSSIP_NAME_INVALID', `node name must be 1..${MAX_NAME_BYTES} bytes, without control characters (the others would refuse it)`);
    }
    this.name = opts.name;
    this.config = opts.config;
    this.random = opts.random;
    this.internAddress = opts.internAddress ?? ((host, port) => ({ host, port }));
    this.table = new MemberTable(opts.random);
    this.awareness = new Awareness(opts.config.awarenessMaxMultiplier);
    this.addr = { host: opts.address.host, port: opts.address.port };
    this.incarnationNo = opts.incarnation ?? 0;
    this.meta = this.checkedMeta(opts.meta ?? {});
    this.now = opts.nowMs;
    this.seqNo = this.random.int(UINT32_MOD);
    const c = opts.config;
    // Stagger the periodic work so a cluster started at once does not act in lockstep.
    this.nextProbeAtMs = this.now + this.random.next() * c.probeIntervalMs;
    this.nextGossipAtMs = this.now + this.random.next() * c.gossipIntervalMs;
    this.nextPushPullAtMs = this.now + this.random.next() * c.pushPullIntervalMs;
    this.nextReconnectAtMs = this.now + c.reconnectIntervalMs * (1 + this.random.next());
    this.nextReapAtMs = this.now + REAP_INTERVAL_MS;
    for (const [name, incarnation] of opts.reaped ?? []) {
      if (name === this.name) continue;
      this.rememberReaped(name, incarnation);
    }
    this.reapedEdits = 0;
    for (const e of opts.initialMembers ?? []) {
      if (e.name === this.name) continue;
      this.addRecord(e.name, this.internAddress(e.host, e.port), e.incarnation, e.status, e.meta, e.protocol);
    }
    if (opts.initialMembers) {
      this.nextPushPullAtMs = this.now + this.random.next() * pushPullIntervalFor(c, this.clusterSize());
    }
    this.recomputeWake();
  }

  // -------------------------------------------------------------------------------------------
  // Queries

  get incarnation(): number {
    return this.incarnationNo;
  }

  get address(): Address {
    return this.addr;
  }

  get healthScore(): number {
    return this.awareness.healthScore;
  }

  get hasLeft(): boolean {
    return this.status === 'left';
  }

  /** Earliest machine time at which tick() has work to do (ticking earlier is harmless). */
  nextDeadlineMs(): number {
    return this.wakeAtMs;
  }

  /** Members including this node. */
  members(): MemberInfo[] {
    const self: MemberInfo = {
      name: this.name, host: this.addr.host, port: this.addr.port, status: this.status,
      incarnation: this.incarnationNo, meta: this.meta, statusChangedMs: 0,
    };
    return [self, ...this.table.all().map(memberInfo)];
  }

  member(name: string): MemberInfo | undefined {
    if (name === this.name) return this.members()[0];
    const r = this.table.get(name);
    return r ? memberInfo(r) : undefined;
  }

  /** Live members including this node: the n in every λ·log(n) formula. */
  clusterSize(): number {
    return this.table.liveCount + 1;
  }

  /** Counts of other members by status (O(1)). */
  viewSummary(): { live: number; suspect: number; known: number } {
    return { live: this.table.liveCount, suspect: this.suspected.size, known: this.table.size };
  }

  /** The reaped members' last incarnations, oldest first: what a restart passes back as `reaped`. */
  reapedMembers(): Array<[name: string, incarnation: number]> {
    return [...this.reaped];
  }

  /** Changes of reapedMembers() so far (0 at start): the runner saves them when this moves. */
  get reapedChanges(): number {
    return this.reapedEdits;
  }

  /** Broadcasts still queued for retransmission. */
  queuedBroadcasts(): number {
    return this.queue.length;
  }

  /** Transmissions so far of our leave message; -1 once it reached its retransmit limit. */
  leaveTransmits(): number {
    return this.queue.transmitsOf(this.name);
  }

  get broadcastsDropped(): number {
    return this.queue.dropped;
  }

  /**
   * What the latest name conflict was (counters.nameConflicts counts them): memberlist logs
   * each and tells a conflict delegate; a node taking another's name must not go unnoticed.
   */
  get lastNameConflict(): string | undefined {
    return this.lastNameConflictText;
  }

  // -------------------------------------------------------------------------------------------
  // Inputs

  // Every input below returns an Effects batch that the machine reuses: the embedder must act
  // on it (or copy it) before calling into the machine again.

  /** One received UDP packet (already authenticated and decoded). */
  step(messages: readonly Message[], from: Address, nowMs: number): Effects {
    this.begin(nowMs);
    // State messages first, so that when a ping carries a suspicion about us (buddy system,
    // suspicion checks) the ack already carries our answer.
    this.inPacket = true;
    this.aliveReplyDue = false;
    for (const m of messages) if (m.t >= MsgType.Alive) this.handle(m, from);
    for (const m of messages) if (m.t < MsgType.Alive) this.handle(m, from);
    if (this.aliveReplyDue) this.replyAlive(from, []);
    this.inPacket = false;
    return this.flush();
  }

  tick(nowMs: number): Effects {
    this.begin(nowMs);
    const now = this.now;
    const c = this.config;
    if (this.probe) {
      if (!this.probe.indirectSent && now >= this.probe.pingTimeoutAtMs) this.startIndirect(this.probe);
      if (this.probe && now >= this.probe.deadlineAtMs) this.probeFailed(this.probe);
    }
    if (!this.probe && this.status === 'alive' && now >= this.nextProbeAtMs) this.startProbe();
    for (const [seq, r] of this.relays) {
      if (r.nackAtMs > 0 && now >= r.nackAtMs) {
        r.nackAtMs = 0;
        this.send(r.origin, [{ t: MsgType.Nack, seq: r.originSeq }]);
      }
      if (now >= r.expiresAtMs) this.relays.delete(seq);
    }
    for (const r of this.suspected) {
      const sp = r.suspicion;
      if (!sp) continue;
      if (sp.checksSent < c.suspicionChecks) {
        if (now >= this.checkDueMs(sp)) {
          sp.checksSent++;
          sp.lastCheckMs = now;
          this.counters.suspicionChecks++;
          // The suspicion alone is the question: a live suspect answers with its alive message.
          this.send(r.addr, [{ t: MsgType.Suspect, name: r.name, incarnation: r.incarnation, from: this.name }]);
        }
      } else if (!c.faults?.suspicionNeverExpires && now >= this.expiryMs(sp)) {
        this.counters.deathsDeclared++;
        this.onDead({ t: MsgType.Dead, name: r.name, incarnation: r.incarnation, from: this.name });
      }
    }
    if (now >= this.nextGossipAtMs) {
      // Skip missed periods rather than bursting after a stall.
      this.nextGossipAtMs += c.gossipIntervalMs;
      if (this.nextGossipAtMs <= now) this.nextGossipAtMs = now + c.gossipIntervalMs;
      if (this.queue.length > 0) this.gossip();
    }
    if (now >= this.nextPushPullAtMs) {
      this.nextPushPullAtMs = now + pushPullIntervalFor(c, this.clusterSize());
      if (this.status === 'alive') this.periodicPushPull();
    }
    if (c.reconnectIntervalMs > 0 && now >= this.nextReconnectAtMs) {
      this.nextReconnectAtMs = now + c.reconnectIntervalMs;
      if (this.status === 'alive') this.reconnect();
    }
    if (now >= this.nextReapAtMs) {
      this.nextReapAtMs = now + REAP_INTERVAL_MS;
      this.reap();
    }
    this.recomputeWake();
    return this.flush();
  }

  /** Starts joining through the given seeds: a push-pull with each (outcomes arrive in `joins`). */
  join(seeds: readonly Address[], nowMs: number): Effects {
    this.begin(nowMs);
    for (const seed of seeds) {
      this.requestStream(seed, this.pushPullMsg(true), this.config.tcpTimeoutMs, { kind: 'join' });
    }
    // Announce ourselves too, so the cluster hears of us even before the seeds re-gossip.
    this.broadcast(this.selfAlive());
    return this.flush();
  }

  /** Changes this node's metadata and spreads it (a new incarnation). */
  updateMeta(meta: Meta, nowMs: number): Effects {
    this.begin(nowMs);
    this.meta = this.checkedMeta(meta);
    this.incarnationNo++;
    this.broadcast(this.selfAlive());
    return this.flush();
  }

  /** Leaves gracefully: others will report this node as `left`. Stops probing. */
  leave(nowMs: number): Effects {
    this.begin(nowMs);
    if (this.status !== 'left') {
      this.status = 'left';
      this.probe = undefined;
      this.broadcast({ t: MsgType.Dead, name: this.name, incarnation: this.incarnationNo, from: this.name });
    }
    return this.flush();
  }

  /** Serves an inbound stream request; returns the reply to send back and any effects. */
  handleStream(req: StreamMsg, nowMs: number): { reply: StreamMsg; effects: Effects } {
    this.begin(nowMs);
    let reply: StreamMsg;
    switch (req.t) {
      case MsgType.StreamPing:
        reply = req.target === this.name
          ? { t: MsgType.Ack, seq: req.seq }
          : { t: MsgType.StreamError, code: 'GOSSIP_WRONG_TARGET', message: `this node is ${this.name}` };
        break;
      case MsgType.PushPull: {
        this.counters.pushPullsServed++;
        const conflict = req.join ? this.joinConflict(req) : undefined;
        if (conflict) {
          this.nameConflict(`join refused: ${conflict}`);
          reply = { t: MsgType.StreamError, code: 'GOSSIP_NAME_CONFLICT', message: conflict };
          break;
        }
        // Merge first, so the reply already carries our refutations and revivals.
        this.mergeState(req.states, req.from);
        reply = this.pushPullMsg(false);
        break;
      }
      default:
        reply = { t: MsgType.StreamError, code: 'GOSSIP_UNSUPPORTED', message: `stream message ${req.t} not served here` };
    }
    return { reply, effects: this.flush() };
  }

  /** Reports the outcome of a stream request made through Effects.streams (null = failed). */
  streamResult(id: number, reply: StreamMsg | null, nowMs: number): Effects {
    this.begin(nowMs);
    const pending = this.pendingStreams.get(id);
    if (!pending) return this.flush();
    this.pendingStreams.delete(id);
    switch (pending.kind) {
      case 'tcp-ping':
        if (reply?.t === MsgType.Ack && this.probe && this.probe.seq === pending.seq && reply.seq === pending.seq) {
          this.counters.tcpFallbackRescues++;
          this.probeSucceeded();
        }
        break;
      case 'join':
        if (!reply) this.out.joins.push({ streamId: id, ok: false, code: 'GOSSIP_STREAM_FAILED' });
        else if (reply.t === MsgType.StreamError) this.out.joins.push({ streamId: id, ok: false, code: reply.code });
        else if (reply.t !== MsgType.PushPull) this.out.joins.push({ streamId: id, ok: false, code: 'GOSSIP_DECODE_MALFORMED' });
        else {
          const conflict = this.selfConflict(reply.states);
          if (conflict) {
            this.nameConflict(`our name ${this.name} is held by a live member at another address`);
            this.out.joins.push({ streamId: id, ok: false, code: 'GOSSIP_NAME_CONFLICT' });
          } else {
            this.mergeState(reply.states, reply.from);
            this.out.joins.push({ streamId: id, ok: true });
          }
        }
        break;
      case 'push-pull':
      case 'reconnect':
        if (reply?.t === MsgType.PushPull && !this.selfConflict(reply.states)) this.mergeState(reply.states, reply.from);
        break;
    }
    this.recomputeWake();
    return this.flush();
  }

  // -------------------------------------------------------------------------------------------
  // Message handling

  private handle(m: Message, from: Address): void {
    switch (m.t) {
      case MsgType.Ping:
        if (m.target !== this.name) {
          this.counters.misdirectedPings++;
          return;
        }
        if (this.aliveReplyDue) this.replyAlive(from, [{ t: MsgType.Ack, seq: m.seq }]);
        else this.send(from, [{ t: MsgType.Ack, seq: m.seq }]);
        return;
      case MsgType.PingReq:
        this.onPingReq(m.seq, m.target, { host: m.host, port: m.port }, m.nack, from);
        return;
      case MsgType.Ack:
        this.onAck(m.seq);
        return;
      case MsgType.Nack:
        if (this.probe && this.probe.seq === m.seq) {
          this.counters.nacksReceived++;
          // No more than the helpers asked (memberlist's channel holds that many): extra ones,
          // repeated or forged, would count as health this node does not have.
          if (this.probe.nacks < this.probe.expectedNacks) this.probe.nacks++;
        } else this.counters.unmatchedAcks++;
        return;
      case MsgType.Alive:
        this.onAlive(m);
        return;
      case MsgType.Suspect:
        this.onSuspect(m, false);
        return;
      case MsgType.Dead:
        this.onDead(m);
        return;
    }
  }

  private onPingReq(originSeq: number, target: string, targetAddr: Address, wantNack: boolean, origin: Address): void {
    if (target === this.name || this.relays.size >= MAX_RELAYS) {
      this.counters.relaysRefused++;
      return;
    }
    this.counters.relays++;
    const seq = this.nextSeq();
    const pt = this.config.probeTimeoutMs;
    const nackAtMs = wantNack ? this.now + NACK_TIMEOUT_FRACTION * pt : 0;
    this.relays.set(seq, { origin, originSeq, nackAtMs, expiresAtMs: this.now + this.config.probeIntervalMs });
    this.wake(nackAtMs > 0 ? nackAtMs : this.now + this.config.probeIntervalMs);
    this.send(targetAddr, [{ t: MsgType.Ping, seq, target }]);
  }

  private onAck(seq: number): void {
    if (this.probe && this.probe.seq === seq) {
      this.counters.acksReceived++;
      this.probeSucceeded();
      return;
    }
    const relay = this.relays.get(seq);
    if (relay) {
      this.relays.delete(seq);
      this.send(relay.origin, [{ t: MsgType.Ack, seq: relay.originSeq }]);
      return;
    }
    this.counters.unmatchedAcks++;
  }

  private onAlive(a: AliveMsg): void {
    if (a.name === this.name) {
      this.onAliveAboutSelf(a);
      return;
    }
    const r = this.table.get(a.name);
    if (!r) {
      const last = this.reaped.get(a.name);
      if (last !== undefined) {
        if (a.incarnation <= last) {
          this.counters.reapedAlivesIgnored++;
          this.staleComeback(a, last);
          return;
        }
        if (this.implausible(a.name, a.incarnation, last)) return;
      }
      if (this.table.size >= MAX_MEMBERS) {
        this.counters.memberLimitDrops++;
        return;
      }
      if (this.reaped.delete(a.name)) this.reapedEdits++;
      const added = this.addRecord(a.name, this.internAddress(a.host, a.port), a.incarnation, 'alive', a.meta, a.protocol);
      this.emit('join', added);
      this.broadcast(a);
      return;
    }
    if (this.implausible(a.name, a.incarnation, r.incarnation)) return;
    const moved = r.addr.host !== a.host || r.addr.port !== a.port;
    if (moved) {
      // Same name, another address: a different node, unless the old one is gone.
      if (isLive(r)) {
        this.nameConflict(`${a.host}:${a.port} claims the name ${a.name}, held by a live member at ${r.addr.host}:${r.addr.port}; ignored`);
        return;
      }
      // It may come back elsewhere, but above its last incarnation: an older announcement from
      // an address it had before is a replay.
      if (a.incarnation <= r.incarnation) {
        this.staleComeback(a, r.incarnation);
        return;
      }
    } else if (a.incarnation <= r.incarnation) {
      if (a.incarnation < r.incarnation) this.counters.staleMessages++;
      return;
    }
    const wasDown = !isLive(r);
    const changed = moved || !metaEqual(r.meta, a.meta);
    r.incarnation = a.incarnation;
    if (moved) r.addr = this.internAddress(a.host, a.port);
    r.meta = a.meta;
    r.protocol = a.protocol;
    if (r.status !== 'alive') {
      this.clearSuspicion(r);
      this.table.setStatus(r, 'alive', this.now);
    }
    if (wasDown) this.emit('join', r);
    else if (changed) this.emit('update', r);
    this.broadcast(a);
  }

  /**
   * An alive message for a departed member (reaped, or at an address other than its record's)
   * no newer than its last incarnation: a replay, or the member itself back without its saved
   * incarnation. Not believed; the claimed address is told the member is suspect at that
   * incarnation, so a live node there refutes above it and rejoins.
   */
  private staleComeback(a: AliveMsg, last: number): void {
    this.counters.staleMessages++;
    this.send(this.internAddress(a.host, a.port), [{ t: MsgType.Suspect, name: a.name, incarnation: last, from: this.name }]);
  }

  private onAliveAboutSelf(a: AliveMsg): void {
    if (a.incarnation < this.incarnationNo || this.implausibleAboutSelf(a.incarnation)) return;
    const same = a.host === this.addr.host && a.port === this.addr.port && metaEqual(a.meta, this.meta);
    if (same) {
      // Our own announcement (perhaps from before a restart): adopt its incarnation.
      this.incarnationNo = a.incarnation;
      return;
    }
    if (a.host !== this.addr.host || a.port !== this.addr.port) this.nameConflict(`${a.host}:${a.port} claims our name ${a.name}; refuted`);
    this.refute(a.incarnation);
  }

  /** `tellDirectly`: we raised this suspicion from our own failed probe. */
  private onSuspect(s: SuspectMsg, tellDirectly: boolean): void {
    if (s.name === this.name) {
      this.suspectedSelf(s.incarnation);
      return;
    }
    const r = this.table.get(s.name);
    if (!r || this.implausible(s.name, s.incarnation, r.incarnation)) return;
    if (s.incarnation < r.incarnation) {
      this.counters.staleMessages++;
      return;
    }
    if (r.status === 'dead' || r.status === 'left') return;
    if (r.status === 'suspect') {
      if (r.suspicion && r.suspicion.confirm(s.from)) {
        this.counters.confirmations++;
        this.wake(this.checkDueMs(r.suspicion));
        this.broadcast(s);
      }
      return;
    }
    r.incarnation = s.incarnation;
    this.table.setStatus(r, 'suspect', this.now);
    const { minMs, maxMs, k } = suspicionTimeouts(this.config, this.clusterSize());
    r.suspicion = new Suspicion(s.from, k, minMs, maxMs, this.now);
    this.suspected.add(r);
    this.wake(Math.min(this.checkDueMs(r.suspicion), r.suspicion.deadlineMs()));
    this.broadcast(s);
    if (tellDirectly && this.config.tellSuspectDirectly) this.send(r.addr, [s]);
  }

  private onDead(d: DeadMsg): void {
    if (d.name === this.name) {
      this.suspectedSelf(d.incarnation);
      return;
    }
    const r = this.table.get(d.name);
    if (!r || this.implausible(d.name, d.incarnation, r.incarnation)) return;
    if (d.incarnation < r.incarnation) {
      this.counters.staleMessages++;
      return;
    }
    if (!isLive(r)) return;
    const left = d.from === d.name;
    if (!left && d.from !== this.name) {
      // Someone else's verdict is evidence, not proof: it starts (or confirms) our own
      // suspicion, so the member still gets checked and can refute before we declare it. This
      // is what keeps a healed partition from flooding each side with stale death notices.
      this.onSuspect({ t: MsgType.Suspect, name: d.name, incarnation: d.incarnation, from: d.from }, false);
      return;
    }
    r.incarnation = d.incarnation;
    this.clearSuspicion(r);
    this.table.setStatus(r, left ? 'left' : 'dead', this.now);
    this.emit(left ? 'leave' : 'fail', r);
    this.broadcast(d);
  }

  /**
   * Someone says we are suspect or dead at `incarnation`: refute it if it is current, and when
   * it came in a packet, answer the sender directly with our alive message (even for a stale
   * claim: the sender is behind and may be holding a suspicion that would otherwise expire).
   */
  private suspectedSelf(incarnation: number): void {
    if (this.status === 'left' || this.config.faults?.noRefutation) return;
    if (this.implausibleAboutSelf(incarnation)) return;
    if (incarnation >= this.incarnationNo) this.refute(incarnation);
    if (this.inPacket) this.aliveReplyDue = true;
  }

  private replyAlive(to: Address, msgs: Message[]): void {
    this.aliveReplyDue = false;
    this.counters.aliveReplies++;
    msgs.push(this.selfAlive());
    this.send(to, msgs);
  }

  /** Someone believes we are suspect, dead or different: announce a newer incarnation. */
  private refute(incarnation: number): void {
    if (this.config.faults?.noRefutation || this.status === 'left') return;
    this.counters.refutations++;
    // Claims are at most MAX_INCARNATION_STEP above ours per packet (implausibleAboutSelf()),
    // so the cap is out of reach of anything but ~2^37 packets; it only keeps us decodable.
    this.incarnationNo = Math.min(MAX_INCARNATION, Math.max(this.incarnationNo, incarnation) + 1);
    // Lifeguard: being suspected is a hint that we are the slow one.
    this.awareness.applyDelta(1);
    this.broadcast(this.selfAlive());
  }

  private clearSuspicion(r: MemberRecord): void {
    r.suspicion = undefined;
    this.suspected.delete(r);
  }

  // -------------------------------------------------------------------------------------------
  // Probing

  private startProbe(): void {
    const c = this.config;
    const intervalMs = this.awareness.scale(c.probeIntervalMs);
    this.nextProbeAtMs = this.now + intervalMs;
    const target = this.table.nextProbeTarget();
    if (!target) return;
    this.counters.probes++;
    const seq = this.nextSeq();
    this.probe = {
      target,
      seq,
      pingTimeoutAtMs: this.now + this.awareness.scale(c.probeTimeoutMs),
      deadlineAtMs: this.now + intervalMs,
      indirectSent: false,
      expectedNacks: 0,
      nacks: 0,
    };
    const msgs: Message[] = [{ t: MsgType.Ping, seq, target: target.name }];
    // Buddy system: a suspect learns of its suspicion from whoever probes it.
    if (target.status === 'suspect') {
      msgs.push({ t: MsgType.Suspect, name: target.name, incarnation: target.incarnation, from: this.name });
    }
    this.send(target.addr, msgs);
  }

  private startIndirect(p: ProbeState): void {
    p.indirectSent = true;
    const c = this.config;
    const target = p.target;
    const helpers = this.table.sample(c.indirectChecks, (r) => r !== target && r.status === 'alive');
    for (const h of helpers) {
      this.counters.indirectProbes++;
      p.expectedNacks++;
      this.send(h.addr, [{ t: MsgType.PingReq, seq: p.seq, target: target.name, host: target.addr.host, port: target.addr.port, nack: true }]);
    }
    if (c.tcpFallbackProbe) {
      this.counters.tcpFallbackProbes++;
      const timeoutMs = Math.max(1, p.deadlineAtMs - this.now);
      this.requestStream(target.addr, { t: MsgType.StreamPing, seq: p.seq, target: target.name }, timeoutMs, { kind: 'tcp-ping', seq: p.seq });
    }
  }

  private probeSucceeded(): void {
    this.probe = undefined;
    this.awareness.applyDelta(-1);
  }

  private probeFailed(p: ProbeState): void {
    this.probe = undefined;
    this.counters.probeFailures++;
    // Lifeguard: missing nacks mean our own packets are not getting through.
    this.awareness.applyDelta(p.expectedNacks > 0 ? p.expectedNacks - p.nacks : 1);
    const target = p.target;
    if (target.slot < 0 || !isLive(target)) return;
    this.counters.suspicionsRaised++;
    this.onSuspect({ t: MsgType.Suspect, name: target.name, incarnation: target.incarnation, from: this.name }, true);
  }

  // -------------------------------------------------------------------------------------------
  // Dissemination

  private gossip(): void {
    const c = this.config;
    const now = this.now;
    const targets = this.table.sample(c.gossipNodes, (r) =>
      isLive(r) || now - r.statusChangedMs < c.gossipToTheDeadMs,
    );
    for (const t of targets) {
      if (this.queue.length === 0) break;
      this.send(t.addr, []);
    }
  }

  private broadcast(m: StateMsg): void {
    this.queue.push(m);
    this.wake(Math.max(this.nextGossipAtMs, this.now));
  }

  /**
   * Sends `msgs` to `to`, topped up with queued broadcasts that fit the UDP budget. With no
   * messages of its own (gossip), nothing is sent unless a broadcast was queued.
   */
  private send(to: Address, msgs: Message[]): void {
    let body = 0;
    for (const m of msgs) body += messageSize(m);
    // Reserve 2 bytes for the array head (up to 255 messages).
    const budget = this.config.udpBudgetBytes - SEAL_OVERHEAD_BYTES - 2 - body;
    const extra: StateMsg[] = [];
    const limit = retransmitLimit(this.config, this.clusterSize());
    body += this.queue.take(budget, MAX_MESSAGES_PER_PACKET - msgs.length, limit, extra);
    for (const m of extra) msgs.push(m);
    if (msgs.length === 0) return;
    const sizeBytes = packetSize(msgs.length, body);
    this.counters.packetsSent++;
    this.counters.packetBytesSent += sizeBytes;
    this.out.packets.push({ to, messages: msgs, sizeBytes });
  }

  // -------------------------------------------------------------------------------------------
  // Push-pull, join, reconnect

  private pushPullMsg(join: boolean): PushPullMsg {
    const states: PushPullEntry[] = [this.selfEntry()];
    for (const r of this.table.all()) states.push(entryOf(r));
    return { t: MsgType.PushPull, join, from: this.name, states };
  }

  /** Encoded size of a push-pull message (the simulator's byte accounting). */
  static pushPullBytes(m: PushPullMsg): number {
    let sum = 0;
    for (const e of m.states) sum += pushPullEntrySize(e);
    return pushPullSize(m.from, m.states.length, sum);
  }

  private periodicPushPull(): void {
    const [peer] = this.table.sample(1, (r) => r.status === 'alive');
    if (!peer) return;
    this.counters.pushPulls++;
    this.requestStream(peer.addr, this.pushPullMsg(false), this.config.tcpTimeoutMs, { kind: 'push-pull' });
  }

  /** Tries one failed member, so both halves of a healed partition find each other. */
  private reconnect(): void {
    const [peer] = this.table.sample(1, (r) => r.status === 'dead');
    if (!peer) return;
    this.counters.reconnects++;
    this.requestStream(peer.addr, this.pushPullMsg(false), this.config.tcpTimeoutMs, { kind: 'reconnect' });
  }

  /** Merges a remote full state received from (or sent by) member `peer`. */
  private mergeState(states: readonly PushPullEntry[], peer: string): void {
    for (const e of states) {
      switch (e.status) {
        case 'alive':
          this.onAlive(aliveMessage(e.name, e.incarnation, e.host, e.port, e.meta, e.protocol));
          break;
        case 'suspect':
        case 'dead': {
          // A remote verdict of death only makes us suspect, so the member gets a chance to
          // refute. The suspicion is the peer's, not independent evidence: it starts a timer
          // but never counts as a Lifeguard confirmation of one already running.
          const r = e.name === this.name ? undefined : this.table.get(e.name);
          if (r && r.status === 'suspect') break;
          this.onSuspect({ t: MsgType.Suspect, name: e.name, incarnation: e.incarnation, from: peer }, false);
          break;
        }
        case 'left':
          this.onDead({ t: MsgType.Dead, name: e.name, incarnation: e.incarnation, from: e.name });
          break;
      }
    }
  }

  /** A join request from a name that a live member at another address already holds. */
  private joinConflict(req: PushPullMsg): string | undefined {
    const claimed = req.states.find((e) => e.name === req.from);
    if (!claimed) return undefined;
    if (req.from === this.name) {
      if (claimed.host !== this.addr.host || claimed.port !== this.addr.port) return `name ${req.from} is taken by a live member`;
      return undefined;
    }
    const r = this.table.get(req.from);
    if (r && isLive(r) && (r.addr.host !== claimed.host || r.addr.port !== claimed.port)) {
      return `name ${req.from} is taken by a live member at ${r.addr.host}:${r.addr.port}`;
    }
    return undefined;
  }

  /** Our name held by a live member at another address in a remote state. */
  private selfConflict(states: readonly PushPullEntry[]): boolean {
    const e = states.find((s) => s.name === this.name);
    return !!e && (e.status === 'alive' || e.status === 'suspect') && (e.host !== this.addr.host || e.port !== this.addr.port);
  }

  private requestStream(to: Address, request: StreamMsg, timeoutMs: number, pending: PendingStream): void {
    const id = this.nextStreamId++;
    this.pendingStreams.set(id, pending);
    this.out.streams.push({ id, to, request, timeoutMs });
  }

  private reap(): void {
    const c = this.config;
    if (this.table.size === this.table.liveCount) return; // no tombstones
    const doomed: MemberRecord[] = [];
    for (const r of this.table.all()) {
      if (r.status === 'dead' && this.now - r.statusChangedMs > c.deadMemberRetentionMs) doomed.push(r);
      else if (r.status === 'left' && this.now - r.statusChangedMs > c.leftMemberRetentionMs) doomed.push(r);
    }
    for (const r of doomed) {
      this.table.remove(r);
      this.counters.membersReaped++;
      this.rememberReaped(r.name, r.incarnation);
    }
  }

  /** Records a reaped member as the newest entry, forgetting the oldest past MAX_REAPED_MEMBERS. */
  private rememberReaped(name: string, incarnation: number): void {
    this.reaped.delete(name);
    this.reaped.set(name, incarnation);
    if (this.reaped.size > MAX_REAPED_MEMBERS) this.reaped.delete(this.reaped.keys().next().value!);
    this.reapedEdits++;
  }

  // -------------------------------------------------------------------------------------------
  // Helpers

  private addRecord(name: string, addr: Address, incarnation: number, status: MemberRecord['status'], meta: Meta, protocol: number): MemberRecord {
    const r: MemberRecord = {
      name, addr, incarnation, status, meta, protocol,
      statusChangedMs: this.now, suspicion: undefined, slot: -1,
    };
    this.table.add(r);
    return r;
  }

  private selfAlive(): AliveMsg {
    return aliveMessage(this.name, this.incarnationNo, this.addr.host, this.addr.port, this.meta, PROTOCOL_VERSION);
  }

  private selfEntry(): PushPullEntry {
    return {
      name: this.name, incarnation: this.incarnationNo, host: this.addr.host, port: this.addr.port,
      status: this.status, meta: this.meta, protocol: PROTOCOL_VERSION,
    };
  }

  private emit(type: MemberEventType, r: MemberRecord): void {
    this.out.events.push({ type, member: memberInfo(r), atMs: this.now });
  }

  private nextSeq(): number {
    this.seqNo = (this.seqNo + 1) % UINT32_MOD;
    return this.seqNo;
  }

  private checkedMeta(meta: Meta): Meta {
    try {
      return checkMeta(meta);
    } catch (err) {
      if (err instanceof GossipDecodeError) {
        throw new GossipError(err.code === 'GOSSIP_DECODE_OVERSIZED' ? 'GOSSIP_META_TOO_LARGE' : 'GOSSIP_META_INVALID', err.message);
      }
      throw err;
    }
  }

  /** When the next suspicion check ping is due: the checks end one probe timeout before the
   * deadline, at least half a probe timeout apart. */
  private checkDueMs(sp: Suspicion): number {
    const pt = this.config.probeTimeoutMs;
    const remaining = this.config.suspicionChecks - sp.checksSent;
    return Math.max(sp.deadlineMs() - remaining * pt, sp.lastCheckMs + pt / 2);
  }

  /** When the suspicion expires: its deadline, but never before the last check had time to be answered. */
  private expiryMs(sp: Suspicion): number {
    return Math.max(sp.deadlineMs(), sp.lastCheckMs + this.config.probeTimeoutMs);
  }

  /** Counts a name conflict and keeps its description for the embedder's log. */
  private nameConflict(what: string): void {
    this.counters.nameConflicts++;
    this.lastNameConflictText = what;
  }

  /**
   * A claim about `name` too far above what this node knew of it when the packet (or push-pull)
   * that carries it arrived (MAX_INCARNATION_STEP): many messages about one member in one
   * packet raise it once, not once each.
   */
  private implausible(name: string, claimed: number, known: number): boolean {
    let base = this.knownAtArrival.get(name);
    if (base === undefined) this.knownAtArrival.set(name, (base = known));
    if (claimed - base <= MAX_INCARNATION_STEP) return false;
    this.counters.implausibleIncarnations++;
    return true;
  }

  /** A claim about this node: refuted within the step bound above our own incarnation. */
  private implausibleAboutSelf(claimed: number): boolean {
    return this.implausible(this.name, claimed, this.incarnationNo);
  }

  private wake(atMs: number): void {
    if (atMs < this.wakeAtMs) this.wakeAtMs = atMs;
  }

  private recomputeWake(): void {
    let w = this.nextReapAtMs;
    if (this.probe) w = Math.min(w, this.probe.indirectSent ? this.probe.deadlineAtMs : this.probe.pingTimeoutAtMs);
    else if (this.status === 'alive') w = Math.min(w, this.nextProbeAtMs);
    for (const r of this.relays.values()) w = Math.min(w, r.nackAtMs > 0 ? r.nackAtMs : r.expiresAtMs);
    for (const r of this.suspected) {
      const sp = r.suspicion;
      if (!sp) continue;
      if (sp.checksSent < this.config.suspicionChecks) w = Math.min(w, this.checkDueMs(sp));
      else if (!this.config.faults?.suspicionNeverExpires) w = Math.min(w, this.expiryMs(sp));
    }
    if (this.queue.length > 0) w = Math.min(w, Math.max(this.nextGossipAtMs, this.now));
    w = Math.min(w, this.nextPushPullAtMs);
    if (this.config.reconnectIntervalMs > 0) w = Math.min(w, this.nextReconnectAtMs);
    this.wakeAtMs = w;
  }

  /** Starts a public call: advances the clock and empties the reused effects batch. */
  private begin(nowMs: number): void {
    this.now = Math.max(this.now, nowMs);
    if (this.knownAtArrival.size > 0) this.knownAtArrival.clear();
    const o = this.out;
    if (o.packets.length) o.packets.length = 0;
    if (o.streams.length) o.streams.length = 0;
    if (o.events.length) o.events.length = 0;
    if (o.joins.length) o.joins.length = 0;
  }

  /** The effects batch is reused: it is valid until the next call into the machine. */
  private flush(): Effects {
    return this.out;
  }
}

/** Structural equality of two metadata values. */
export function metaEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k)) return false;
    if (!metaEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false;
  }
  return true;
}
