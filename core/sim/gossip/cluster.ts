/**
 * Simulated cluster for the gossip state machine: many real GossipMachines in one process,
 * virtual time, and a seeded faulty network — per-packet loss, latency jitter (hence
 * reordering), partitions, crashed hosts — plus a model of TCP for push-pull and fallback
 * probes (lost handshake segments cost a 1 s SYN retransmit, lost data segments a 200 ms RTO).
 * Every run replays exactly from its seed. Packets are handed over as decoded message objects
 * (no encoding or encryption, for speed); bytes are counted from the codec's exact encoded
 * sizes plus the keyring's seal overhead. Observation (events, bytes) goes to an observer;
 * checking is in trackers.ts / checkers.ts.
 */
import { GossipMachine, type GossipCounters } from '../../gossip/machine.js';
import { encodeStreamFrame, messageSize } from '../../gossip/codec/index.js';
import type { GossipConfig } from '../../gossip/config.js';
import { SEAL_OVERHEAD_BYTES, STREAM_FRAME_HEADER_BYTES } from '../../gossip/limits.js';
import { MsgType, type Address, type Effects, type MemberEvent, type Message, type Meta, type PushPullEntry, type StreamMsg } from '../../gossip/types.js';
import { Prng } from '../prng.js';
import { EventQueue } from './event-queue.js';

export interface NetworkModel {
  /** Probability that one UDP packet (or TCP segment) is lost. */
  lossRate: number;
  minLatencyMs: number;
  maxLatencyMs: number;
}

export interface ClusterObserver {
  onEvent?(observer: number, ev: MemberEvent, nowMs: number): void;
}

export interface SimNode {
  index: number;
  name: string;
  addr: Address;
  machine: GossipMachine | undefined;
  /** Bumped on every restart, so in-flight callbacks to an old life are dropped. */
  life: number;
  tickToken: number;
  /** Virtual time of the currently valid scheduled tick. */
  tickAt: number;
  group: number;
  /** Incarnation "persisted" for restarts, as the agent keeps it in its data dir. */
  storedIncarnation: number;
  bootCount: number;
  udpBytesSent: number;
  tcpBytesSent: number;
  packetsSent: number;
}

const enum Kind {
  Deliver,
  Tick,
  StreamArrive,
  StreamReply,
  Action,
}

type SimEvent =
  | { k: Kind.Deliver; to: number; from: Address; msgs: Message[] }
  | { k: Kind.Tick; node: number; life: number; token: number }
  | { k: Kind.StreamArrive; from: number; fromLife: number; to: number; id: number; req: StreamMsg; replyDeadline: number }
  | { k: Kind.StreamReply; node: number; life: number; id: number; reply: StreamMsg | null }
  | { k: Kind.Action; fn: () => void };

const TCP_SEGMENT_BYTES = 1_448;
const PUSH_PULL_SAMPLE_EVERY = 8;
/** Linux's initial SYN retransmission timeout. */
const SYN_RTO_MS = 1_000;
/** Linux's minimum data retransmission timeout. */
const DATA_RTO_MS = 200;

export class SimCluster {
  readonly nodes: SimNode[] = [];
  readonly queue = new EventQueue<SimEvent>();
  private readonly byAddr = new Map<string, number>();
  /** One Address object per simulated host, shared by every machine (memory at 5,000 nodes). */
  private readonly addresses = new Map<string, Address>();
  private readonly intern = (host: string, port: number): Address => {
    const key = `${host}:${port}`;
    let a = this.addresses.get(key);
    if (!a) {
      a = { host, port };
      this.addresses.set(key, a);
    }
    return a;
  };
  private readonly rng: Prng;
  private observer: ClusterObserver = {};
  /** Live node-milliseconds, integrated, for per-node bandwidth. */
  private liveNodeMs = 0;
  private liveCount = 0;
  private lastIntegrateMs = 0;
  packetsDelivered = 0;
  packetsLost = 0;
  /** Bytes sent by category (all nodes), since the last resetByteCounters. */
  readonly bytesByKind = { probe: 0, stateMessages: 0, gossipPacketOverhead: 0, pushPull: 0, otherStreams: 0 };
  private pushPullCount = 0;
  private pushPullRawSum = 0;
  private pushPullWireSum = 0;
  /** Counters of machines that crashed (their state is gone, their history is not). */
  private retired: GossipCounters | undefined;

  constructor(
    readonly config: GossipConfig,
    readonly net: NetworkModel,
    readonly seed: number,
  ) {
    this.rng = new Prng(seed);
  }

  get now(): number {
    return Math.max(0, this.queue.now);
  }

  setObserver(o: ClusterObserver): void {
    this.observer = o;
  }

  /** Creates n nodes that already know each other (a converged cluster at time 0). */
  bootstrap(n: number, metaOf: (i: number) => Meta): void {
    const entries: PushPullEntry[] = [];
    for (let i = 0; i < n; i++) {
      const node = this.addNode(metaOf);
      entries.push({ name: node.name, incarnation: 0, host: node.addr.host, port: node.addr.port, status: 'alive', meta: metaOf(i), protocol: 1 });
    }
    for (const node of this.nodes) {
      node.machine = new GossipMachine({
        name: node.name, address: node.addr, meta: metaOf(node.index), incarnation: 0,
        config: this.config, random: this.rng.fork(), nowMs: this.now, initialMembers: entries, internAddress: this.intern,
      });
      this.setLive(node, true);
      this.schedule(node);
    }
  }

  /** A brand-new node that joins through a random live seed. Returns its index. */
  joinNew(metaOf: (i: number) => Meta): number {
    const node = this.addNode(metaOf);
    this.start(node, metaOf(node.index), 0);
    return node.index;
  }

  crash(i: number): void {
    const node = this.nodes[i]!;
    if (!node.machine) return;
    node.storedIncarnation = Math.max(node.storedIncarnation, node.machine.incarnation);
    this.retired = addCounters(this.retired, node.machine.counters);
    node.machine = undefined;
    node.life++;
    node.tickAt = -1;
    this.setLive(node, false);
  }

  /** Restarts a crashed node with its persisted incarnation + 1 and a new boot id in its meta. */
  restart(i: number, meta: Meta): void {
    const node = this.nodes[i]!;
    if (node.machine) return;
    node.life++;
    this.start(node, meta, node.storedIncarnation + 1);
  }

  updateMeta(i: number, meta: Meta): number {
    const node = this.nodes[i]!;
    const m = node.machine!;
    this.apply(node, m.updateMeta(meta, this.now));
    return m.incarnation;
  }

  leave(i: number): void {
    const node = this.nodes[i]!;
    if (node.machine) this.apply(node, node.machine.leave(this.now));
  }

  /** Puts the given nodes in group 1 and the rest in group 0; packets across groups are lost. */
  partition(groupOne: ReadonlySet<number>): void {
    for (const n of this.nodes) n.group = groupOne.has(n.index) ? 1 : 0;
  }

  heal(): void {
    for (const n of this.nodes) n.group = 0;
  }

  at(atMs: number, fn: () => void): void {
    this.queue.push(atMs, { k: Kind.Action, fn });
  }

  /** Runs until virtual time untilMs (or until the wall-clock budget runs out: returns false). */
  run(untilMs: number, wallBudgetMs = Infinity): boolean {
    const started = Date.now();
    let n = 0;
    for (;;) {
      const ev = this.queue.pop(untilMs);
      if (!ev) break;
      this.dispatch(ev);
      if ((++n & 0xffff) === 0 && Date.now() - started > wallBudgetMs) return false;
    }
    this.queue.advanceTo(untilMs);
    this.integrate();
    return true;
  }

  /** bytesByKind per live node per second. */
  breakdownPerNodePerSec(): Record<keyof SimCluster['bytesByKind'], number> {
    this.integrate();
    const out = { ...this.bytesByKind };
    for (const k of Object.keys(out) as Array<keyof typeof out>) out[k] = this.liveNodeMs > 0 ? (out[k] * 1000) / this.liveNodeMs : 0;
    return out;
  }

  /** Average bytes (UDP + TCP, sealed) per live node per second so far. */
  bytesPerNodePerSec(): number {
    this.integrate();
    let total = 0;
    for (const n of this.nodes) total += n.udpBytesSent + n.tcpBytesSent;
    return this.liveNodeMs > 0 ? (total * 1000) / this.liveNodeMs : 0;
  }

  resetByteCounters(): void {
    this.integrate();
    this.liveNodeMs = 0;
    for (const k of Object.keys(this.bytesByKind) as Array<keyof typeof this.bytesByKind>) this.bytesByKind[k] = 0;
    for (const n of this.nodes) {
      n.udpBytesSent = 0;
      n.tcpBytesSent = 0;
      n.packetsSent = 0;
    }
  }

  /** Machine counters summed over every node, past lives included. */
  totalCounters(): GossipCounters | undefined {
    let sum = this.retired ? { ...this.retired } : undefined;
    for (const n of this.nodes) if (n.machine) sum = addCounters(sum, n.machine.counters);
    return sum;
  }

  isUp(i: number): boolean {
    return this.nodes[i]?.machine !== undefined;
  }

  liveNodes(): number {
    return this.liveCount;
  }

  random(): Prng {
    return this.rng;
  }

  // -------------------------------------------------------------------------------------------

  private addNode(metaOf: (i: number) => Meta): SimNode {
    void metaOf;
    const index = this.nodes.length;
    const addr = this.intern(`10.${(index >> 16) & 255}.${(index >> 8) & 255}.${index & 255}`, 7946);
    const node: SimNode = {
      index, name: `node-${index}`, addr, machine: undefined, life: 0, tickToken: 0, tickAt: -1, group: 0,
      storedIncarnation: 0, bootCount: 0, udpBytesSent: 0, tcpBytesSent: 0, packetsSent: 0,
    };
    this.nodes.push(node);
    this.byAddr.set(`${addr.host}:${addr.port}`, index);
    return node;
  }

  private start(node: SimNode, meta: Meta, incarnation: number): void {
    node.bootCount++;
    const m = new GossipMachine({
      name: node.name, address: node.addr, meta, incarnation, config: this.config, random: this.rng.fork(), nowMs: this.now,
      internAddress: this.intern,
    });
    node.machine = m;
    node.tickAt = -1;
    this.setLive(node, true);
    const seeds: Address[] = [];
    for (let tries = 0; tries < 64 && seeds.length < 1; tries++) {
      const s = this.nodes[this.rng.int(this.nodes.length)]!;
      if (s !== node && s.machine && !s.machine.hasLeft) seeds.push(s.addr);
    }
    this.apply(node, m.join(seeds, this.now));
  }

  private setLive(node: SimNode, live: boolean): void {
    this.integrate();
    this.liveCount += live ? 1 : -1;
    void node;
  }

  private integrate(): void {
    const now = this.now;
    this.liveNodeMs += this.liveCount * (now - this.lastIntegrateMs);
    this.lastIntegrateMs = now;
  }

  private dispatch(ev: SimEvent): void {
    switch (ev.k) {
      case Kind.Deliver: {
        const node = this.nodes[ev.to]!;
        if (!node.machine) return;
        this.packetsDelivered++;
        this.apply(node, node.machine.step(ev.msgs, ev.from, this.now));
        return;
      }
      case Kind.Tick: {
        const node = this.nodes[ev.node]!;
        if (!node.machine || node.life !== ev.life || node.tickToken !== ev.token) return;
        node.tickToken++;
        this.apply(node, node.machine.tick(this.now), true);
        return;
      }
      case Kind.StreamArrive:
        this.serveStream(ev);
        return;
      case Kind.StreamReply: {
        const node = this.nodes[ev.node]!;
        if (!node.machine || node.life !== ev.life) return;
        this.apply(node, node.machine.streamResult(ev.id, ev.reply, this.now));
        return;
      }
      case Kind.Action:
        ev.fn();
        return;
    }
  }

  private apply(node: SimNode, fx: Effects, ticked = false): void {
    const now = this.now;
    const kinds = this.bytesByKind;
    for (const p of fx.packets) {
      const size = p.sizeBytes + SEAL_OVERHEAD_BYTES;
      node.udpBytesSent += size;
      node.packetsSent++;
      let stateBytes = 0;
      for (const m of p.messages) if (m.t >= MsgType.Alive) stateBytes += messageSize(m);
      kinds.stateMessages += stateBytes;
      if (p.messages[0]!.t >= MsgType.Alive) kinds.gossipPacketOverhead += size - stateBytes;
      else kinds.probe += size - stateBytes;
      const to = this.indexOf(p.to);
      if (to === undefined) continue;
      const dest = this.nodes[to]!;
      if (!dest.machine || dest.group !== node.group || this.lost()) {
        this.packetsLost++;
        continue;
      }
      this.queue.push(now + this.latency(), { k: Kind.Deliver, to, from: node.addr, msgs: p.messages });
    }
    for (const s of fx.streams) this.startStream(node, s.id, s.to, s.request, s.timeoutMs);
    if (fx.events.length > 0 && this.observer.onEvent) {
      for (const e of fx.events) this.observer.onEvent(node.index, e, now);
    }
    if (node.machine) this.schedule(node, ticked);
  }

  /** Makes sure the node is ticked no later than its machine's next deadline. */
  private schedule(node: SimNode, force = false): void {
    const m = node.machine!;
    const at = Math.max(Math.ceil(m.nextDeadlineMs()), this.now);
    if (!force && node.tickAt >= this.now && node.tickAt <= at) return;
    node.tickAt = at;
    node.tickToken++;
    this.queue.push(at, { k: Kind.Tick, node: node.index, life: node.life, token: node.tickToken });
  }

  /** Node index from a simulated address "10.a.b.c" (index = a·65536 + b·256 + c), without allocating. */
  private indexOf(a: Address): number | undefined {
    const h = a.host;
    if (a.port !== 7946 || h.charCodeAt(0) !== 49 || h.charCodeAt(1) !== 48 || h.charCodeAt(2) !== 46) {
      return this.byAddr.get(`${h}:${a.port}`);
    }
    let index = 0;
    let part = 0;
    for (let i = 3; i < h.length; i++) {
      const ch = h.charCodeAt(i);
      if (ch === 46) {
        index = index * 256 + part;
        part = 0;
      } else part = part * 10 + (ch - 48);
    }
    index = index * 256 + part;
    return index < this.nodes.length ? index : undefined;
  }

  private lost(): boolean {
    return this.net.lossRate > 0 && this.rng.next() < this.net.lossRate;
  }

  private latency(): number {
    const { minLatencyMs, maxLatencyMs } = this.net;
    return minLatencyMs + this.rng.int(maxLatencyMs - minLatencyMs + 1);
  }

  /**
   * Sealed, framed size of a stream message. Push-pull frames are deflated on the wire; encoding
   * and deflating every one is the simulator's most expensive step, so every 8th is measured
   * exactly and the others use the running compression ratio of the measured ones.
   */
  private streamBytes(m: StreamMsg): number {
    let plain: number;
    if (m.t === MsgType.PushPull) {
      const raw = GossipMachine.pushPullBytes(m);
      if (this.pushPullCount++ % PUSH_PULL_SAMPLE_EVERY === 0) {
        plain = encodeStreamFrame(m).length;
        this.pushPullRawSum += raw;
        this.pushPullWireSum += plain;
      } else {
        plain = Math.ceil((raw * this.pushPullWireSum) / this.pushPullRawSum);
      }
    } else {
      plain = encodeStreamFrame(m).length;
    }
    const size = plain + SEAL_OVERHEAD_BYTES + STREAM_FRAME_HEADER_BYTES;
    if (m.t === MsgType.PushPull) this.bytesByKind.pushPull += size;
    else this.bytesByKind.otherStreams += size;
    return size;
  }

  /** Delay of one TCP transfer of `bytes` over the lossy link (data RTOs only). */
  private transferDelay(bytes: number): number {
    let delay = this.latency();
    const segments = Math.max(1, Math.ceil(bytes / TCP_SEGMENT_BYTES));
    if (this.net.lossRate > 0) {
      // Lost segments are retransmitted after an RTO; a window in flight shares the wait, so
      // count one RTO per lost segment among the first few and amortize the rest.
      let lostSegments = 0;
      const sampled = Math.min(segments, 64);
      for (let i = 0; i < sampled; i++) if (this.lost()) lostSegments++;
      lostSegments = Math.round((lostSegments * segments) / sampled);
      delay += DATA_RTO_MS * Math.min(lostSegments, 4) + (lostSegments > 4 ? (lostSegments - 4) * this.latency() : 0);
    }
    return delay;
  }

  private startStream(node: SimNode, id: number, to: Address, req: StreamMsg, timeoutMs: number): void {
    const now = this.now;
    const deadline = now + timeoutMs;
    const destIndex = this.indexOf(to);
    const dest = destIndex === undefined ? undefined : this.nodes[destIndex];
    const fail = (): void => this.queue.push(Math.ceil(deadline), { k: Kind.StreamReply, node: node.index, life: node.life, id, reply: null });
    if (!dest || !dest.machine || dest.group !== node.group) {
      fail();
      return;
    }
    // Three-way handshake: a lost SYN or SYN-ACK costs the initial RTO.
    let t = now;
    for (let i = 0; i < 2; i++) {
      t += this.latency();
      while (this.lost()) {
        t += SYN_RTO_MS;
        if (t > deadline) {
          fail();
          return;
        }
      }
    }
    // Connected: the request's bytes go out (a refused or unanswered SYN sends none).
    const requestBytes = this.streamBytes(req);
    node.tcpBytesSent += requestBytes;
    t += this.transferDelay(requestBytes);
    if (t > deadline) {
      fail();
      return;
    }
    this.queue.push(Math.ceil(t), { k: Kind.StreamArrive, from: node.index, fromLife: node.life, to: dest.index, id, req, replyDeadline: deadline });
  }

  private serveStream(ev: Extract<SimEvent, { k: Kind.StreamArrive }>): void {
    const server = this.nodes[ev.to]!;
    const client = this.nodes[ev.from]!;
    const fail = (): void =>
      this.queue.push(Math.ceil(Math.max(ev.replyDeadline, this.now)), { k: Kind.StreamReply, node: client.index, life: ev.fromLife, id: ev.id, reply: null });
    if (!server.machine || server.group !== client.group) {
      fail();
      return;
    }
    const { reply, effects } = server.machine.handleStream(ev.req, this.now);
    this.apply(server, effects);
    const bytes = this.streamBytes(reply);
    server.tcpBytesSent += bytes;
    const t = this.now + this.transferDelay(bytes);
    if (t > ev.replyDeadline || !(client.machine && client.life === ev.fromLife)) {
      fail();
      return;
    }
    this.queue.push(Math.ceil(t), { k: Kind.StreamReply, node: client.index, life: ev.fromLife, id: ev.id, reply });
  }
}

function addCounters(sum: GossipCounters | undefined, c: GossipCounters): GossipCounters {
  if (!sum) return { ...c };
  for (const k of Object.keys(c) as Array<keyof GossipCounters>) sum[k] += c[k];
  return sum;
}
