/**
 * The Raft transport between managers: TCP on the peer port, the PSK handshake
 * (handshake.ts), then sealed frames each carrying a batch of Raft messages.
 *
 * Sending: one outbound connection per peer, dialed by us, with a bounded queue. Messages
 * handed to send() in one turn of the event loop leave in one frame (or a few, at
 * MAX_BATCH_BYTES each). A full queue drops the message and counts it: Raft tolerates loss
 * and retries, whereas an unbounded queue would grow without limit behind a dead or slow peer.
 * A broken connection drops what was queued, reports the peer unreachable (Raft then probes
 * instead of streaming) and is redialed after an exponential backoff with full jitter.
 *
 * Stalls: a connection across a network partition does not break, it stalls (TCP retransmits
 * with a timeout that doubles up to two minutes, and keep-alives do not run while data is
 * unacknowledged), so after the network heals it could stay silent for about as long again.
 * So the receiving side of a connection tells the sender how many bytes have arrived (a sealed
 * progress notice back on that connection: one when it starts, then while bytes arrive, at most
 * PROGRESS_NOTICES_PER_STALL_TIMEOUT per stall timeout, the last one delayed rather than
 * dropped), and a sender with bytes outstanding that has had no notice for STALL_TIMEOUT_MS
 * closes the connection and redials; the new connection works as soon as the network does.
 * Progress is counted in bytes, not Raft answers: a 4 MiB batch on a slow link is progress long
 * before a follower can answer it, and some Raft messages are never answered. A receiver that
 * never sends a notice (an older version) is never judged. (etcd's peers get the same from a
 * 5 s read deadline and link heartbeats on their streams.)
 *
 * Receiving: connections accepted on the peer port are receive-only; each must finish the
 * handshake within HANDSHAKE_TIMEOUT_MS, names its node id in the handshake, and may only
 * deliver messages from that id to us. Anything else closes that connection and nothing more.
 * Two live processes dialing under one node id (a copied data dir) are told apart by the
 * instance id each names, and the later one is told to stop (duplicate-member.ts).
 *
 * Addresses: a dialer names in its handshake where its own peer port is reached now. A peer
 * whose address changed (a board that got a new DHCP lease, a member moved to another port)
 * is dialed at the address it announced, over any record the embedder gives, until it is
 * removed: its own authenticated word is the newest news of it (the embedder is told, and
 * records the change through Raft). peerSeenAt takes a hint from elsewhere (gossip) for a peer
 * we cannot reach.
 *
 * Not responsible for: which peers exist (the embedder calls addPeer/removePeer from the
 * membership it applies), chunking snapshots (Raft does), retries (Raft does).
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { Message, NodeId } from '../raft/types.js';
import { parseHostPort, type HostPort } from './address.js';
import { isWildcard } from './advertise.js';
import { NetError } from './errors.js';
import { DUPLICATE_LIVE_WINDOW_MS, decodeDuplicateNotice, encodeDuplicateNotice, judgeDuplicate, newInstanceId, type DuplicateNotice, type PeerInstance } from './duplicate-member.js';
import { MAX_FRAME_BYTES } from './frame.js';
import { ThrottledReports } from './throttled-reports.js';
import { AddressSlots } from './address-slots.js';
import { HANDSHAKE_TIMEOUT_MS, Purpose, clientHandshake, serverHandshake, type ClientHello } from './handshake.js';
import { decodeMessageBatch, encodeMessageBatch, estimateMessageBytes, isWireMessageType } from './raft-codec.js';
import { GCM_TAG_BYTES, MAX_SEALED_PLAINTEXT_BYTES, PendingFrameBytes, type SecureChannel } from './secure-channel.js';

/** Messages waiting for one peer. */
export const MAX_QUEUED_MESSAGES_PER_PEER = 4_096;
/** Bytes waiting for one peer: queued messages plus what the socket still buffers. */
export const MAX_QUEUED_BYTES_PER_PEER = 16 * 1024 * 1024;
/** Payload of one frame before it is sealed; a single larger message goes alone. */
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;
export const RECONNECT_BASE_MS = 50;
export const RECONNECT_MAX_MS = 5_000;
export const CONNECT_TIMEOUT_MS = 3_000;
/**
 * Written to, no progress notice since, for this long: the connection is presumed stalled.
 * etcd's peers use the same 5 s; above it, a receiver whose event loop is blocked (a large
 * snapshot being decoded on a slow board) only costs a redial.
 */
export const STALL_TIMEOUT_MS = 5_000;
/** A receiver sends at most this many progress notices per stall timeout while bytes arrive. */
export const PROGRESS_NOTICES_PER_STALL_TIMEOUT = 5;
/**
 * A connection that carried nothing for this long gets an empty frame. Raft followers send
 * each other nothing for long stretches; with it every member hears every live dialer at least
 * this often, which the duplicate-member check relies on (a live process is one heard within
 * DUPLICATE_LIVE_WINDOW_MS), and an idle link that broke is found by the stall check.
 */
export const IDLE_KEEPALIVE_MS = 1_000;
/** Accepted connections, authenticated or not; more are closed on arrival. */
export const MAX_INBOUND_CONNECTIONS = 128;
/**
 * Connections from one address still in their handshake; more from it are closed on arrival. A
 * member dials one at a time (a few may share a loopback or NAT address). Without this bound,
 * one host that knows no key could keep every slot above busy with silent handshakes, and no
 * member could connect.
 */
export const MAX_HANDSHAKES_PER_ADDRESS = 8;
/** Failed inbound handshakes are reported at most this often (with a count of the rest). */
export const HANDSHAKE_FAILURE_REPORT_MS = 10_000;

export interface PeerTransportLimits {
  maxQueuedMessagesPerPeer: number;
  maxQueuedBytesPerPeer: number;
  maxBatchBytes: number;
  reconnectBaseMs: number;
  reconnectMaxMs: number;
  connectTimeoutMs: number;
  handshakeTimeoutMs: number;
  stallTimeoutMs: number;
  maxInboundConnections: number;
  /** Failed inbound handshakes are reported (onReject) at most this often; 0: every one. */
  handshakeFailureReportMs: number;
  maxFrameBytes: number;
  duplicateLiveWindowMs: number;
  idleKeepAliveMs: number;
  /** Bytes of frames still arriving, over all inbound connections (secure-channel.ts PendingFrameBytes). */
  maxInboundPendingBytes: number;
}

/**
 * Four whole frames: a few managers each sending a large batch at once fit many times over, and
 * a Pi's memory is not all held by connections that never finish a frame.
 */
export const MAX_INBOUND_PENDING_BYTES = 4 * MAX_FRAME_BYTES;

export const DEFAULT_PEER_TRANSPORT_LIMITS: Readonly<PeerTransportLimits> = Object.freeze({
  maxQueuedMessagesPerPeer: MAX_QUEUED_MESSAGES_PER_PEER,
  maxQueuedBytesPerPeer: MAX_QUEUED_BYTES_PER_PEER,
  maxBatchBytes: MAX_BATCH_BYTES,
  reconnectBaseMs: RECONNECT_BASE_MS,
  reconnectMaxMs: RECONNECT_MAX_MS,
  connectTimeoutMs: CONNECT_TIMEOUT_MS,
  handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
  stallTimeoutMs: STALL_TIMEOUT_MS,
  maxInboundConnections: MAX_INBOUND_CONNECTIONS,
  handshakeFailureReportMs: HANDSHAKE_FAILURE_REPORT_MS,
  maxFrameBytes: MAX_FRAME_BYTES,
  duplicateLiveWindowMs: DUPLICATE_LIVE_WINDOW_MS,
  idleKeepAliveMs: IDLE_KEEPALIVE_MS,
  maxInboundPendingBytes: MAX_INBOUND_PENDING_BYTES,
});

export interface PeerTransportOptions {
  nodeId: NodeId;
  /** derivePeerKey(secret) from token.ts. */
  peerKey: Uint8Array;
  /** Every authenticated, well-addressed message from a peer. Must not throw. */
  onMessage: (m: Message) => void;
  /** A peer could not be reached (connect failed, connection lost, messages dropped for it). */
  onUnreachable?: (peer: NodeId) => void;
  /** A connection or frame was rejected; for logs and metrics. */
  onReject?: (reason: string, err?: unknown) => void;
  /** [0, 1) source for backoff jitter; injectable so tests are reproducible. */
  random?: () => number;
  limits?: Partial<PeerTransportLimits>;
  /**
   * True for a node removed from the cluster: its connections are answered with
   * REMOVED_NOTICE and closed (etcd's peers answer a removed member 410 Gone).
   */
  isRemoved?: (peer: NodeId) => boolean;
  /** A peer told us, over an authenticated connection, that we were removed from the cluster. */
  onRemoved?: (by: NodeId) => void;
  /** host:port where our peer port is reached, told to every peer we dial ('' or absent: not said). */
  advertise?: string;
  /** A known peer is elsewhere than we dialed (its handshake said so, or gossip); we dial the new address now. */
  onPeerMoved?: (peer: NodeId, address: string, previous: string, source: 'handshake' | 'gossip') => void;
  /** This process's instance id (duplicate-member.ts); a fresh random one if absent. */
  instanceId?: number;
  /** When this process started, on the performance.now() clock (default: when the transport is made). */
  startedAt?: number;
  /**
   * A peer told us, over an authenticated connection, that another live process is this
   * member too and started first: this one must stop taking part.
   */
  onDuplicate?: (by: NodeId, notice: DuplicateNotice) => void;
}

/**
 * The one frame a receiving side ever sends back on a Raft connection: "you were removed from
 * the cluster". Sealed like every frame, so only a holder of the cluster key can say it.
 */
export const REMOVED_NOTICE: Uint8Array = Buffer.from('picloud/member-removed');

/**
 * The receiving side's "this many of your bytes have arrived", sent back on the connection
 * (see Stalls in the file comment): this prefix, then the count as a 64-bit big-endian integer.
 * Sealed, so only the peer that holds the session key can say it.
 */
export const PROGRESS_NOTICE_PREFIX: Uint8Array = Buffer.from('picloud/progress');
const PROGRESS_NOTICE_BYTES = PROGRESS_NOTICE_PREFIX.length + 8;

/** A batch of no messages: the idle keep-alive (any receiver decodes it to nothing). */
const EMPTY_BATCH = encodeMessageBatch([]);

export function encodeProgressNotice(bytesReceived: number): Buffer {
  const b = Buffer.alloc(PROGRESS_NOTICE_BYTES);
  b.set(PROGRESS_NOTICE_PREFIX, 0);
  b.writeBigUInt64BE(BigInt(bytesReceived), PROGRESS_NOTICE_PREFIX.length);
  return b;
}

/** The count a progress notice carries, or undefined if `plain` is not one. */
export function decodeProgressNotice(plain: Uint8Array): number | undefined {
  if (plain.length !== PROGRESS_NOTICE_BYTES || Buffer.compare(plain.subarray(0, PROGRESS_NOTICE_PREFIX.length), PROGRESS_NOTICE_PREFIX) !== 0) return undefined;
  return Number(Buffer.from(plain.buffer, plain.byteOffset, plain.length).readBigUInt64BE(PROGRESS_NOTICE_PREFIX.length));
}

export interface PeerStats {
  address: string;
  connected: boolean;
  queuedMessages: number;
  queuedBytes: number;
  sentMessages: number;
  sentBatches: number;
  droppedQueueFull: number;
  droppedUnreachable: number;
  droppedTooLarge: number;
  connects: number;
  connectFailures: number;
  /** Connections closed because the peer stayed silent while we wrote to it. */
  stalls: number;
}

export interface TransportStats {
  peers: Record<string, PeerStats>;
  receivedMessages: number;
  receivedBatches: number;
  inboundConnections: number;
  /** Connections closed during the handshake (wrong secret, garbage, timeout, replay). */
  rejectedHandshakes: number;
  /** Authenticated connections closed for a bad frame (undecodable, oversized, bad seal). */
  badFrames: number;
  /** Messages whose from/to did not match the connection. */
  misaddressed: number;
  droppedNoPeer: number;
}

/** Full-jitter exponential backoff: uniform in [0, min(max, base * 2^attempt)). */
export function backoffDelayMs(attempt: number, random: () => number, baseMs: number, maxMs: number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

interface Queued {
  m: Message;
  bytes: number;
}

class PeerSender {
  private state: 'idle' | 'connecting' | 'open' | 'backoff' | 'closed' = 'idle';
  private queue: Queued[] = [];
  private queuedBytes = 0;
  private channel: SecureChannel | undefined;
  private socket: Socket | undefined;
  private attempt = 0;
  /** When the current connection was authenticated. */
  private openedAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private flushScheduled = false;
  private waitingDrain = false;
  private reportedUnreachable = false;
  /**
   * Since when bytes we wrote on this connection have been outstanding without a progress
   * notice (restarted by each notice that leaves some outstanding); undefined: none outstanding.
   */
  private unansweredSince: number | undefined;
  /** When a frame last left on this connection (performance.now()). */
  private lastSentAt = 0;
  /** The receiver has sent a progress notice on this connection (it is judged only then). */
  private receiverReportsProgress = false;
  readonly stats = { sentMessages: 0, sentBatches: 0, droppedQueueFull: 0, droppedUnreachable: 0, droppedTooLarge: 0, connects: 0, connectFailures: 0, stalls: 0 };

  constructor(
    readonly id: NodeId,
    readonly addr: HostPort,
    readonly addrText: string,
    private readonly t: PeerTransport,
  ) {}

  start(): void {
    this.connect();
  }

  enqueue(m: Message): void {
    const L = this.t.limits;
    if (this.state === 'closed') return;
    if (this.state === 'backoff') {
      this.stats.droppedUnreachable++;
      this.reportUnreachable();
      return;
    }
    const bytes = estimateMessageBytes(m);
    if (bytes > Math.min(L.maxFrameBytes - GCM_TAG_BYTES, MAX_SEALED_PLAINTEXT_BYTES) - 64) {
      this.stats.droppedTooLarge++;
      return;
    }
    const buffered = this.channel?.bufferedBytes ?? 0;
    if (this.queue.length >= L.maxQueuedMessagesPerPeer || this.queuedBytes + buffered + bytes > L.maxQueuedBytesPerPeer) {
      this.stats.droppedQueueFull++;
      return;
    }
    this.queue.push({ m, bytes });
    this.queuedBytes += bytes;
    if (this.state === 'idle') this.connect();
    else if (this.state === 'open') this.scheduleFlush();
  }

  /**
   * The peer just connected to us and proved who it is, so it is up: a reconnect waiting out
   * its backoff (up to RECONNECT_MAX_MS after a long outage) starts now. Without this, a
   * restarted member could not hear votes or appends from us for seconds, and an election
   * that needed its vote took that long. (Two members that authenticate and then refuse each
   * other's batches, builds mid-upgrade, thus cut each other's backoff at every redial: a
   * limit on it tried here kept a restarted voter waiting for seconds; left so.)
   */
  peerIsUp(): void {
    if (this.state !== 'backoff') return;
    clearTimeout(this.timer);
    this.attempt = 0;
    this.state = 'idle';
    this.reportedUnreachable = false;
    this.connect();
  }

  get isOpen(): boolean {
    return this.state === 'open';
  }

  /** Restarts the stall clock (our own event loop was blocked: the silence may be ours). */
  restartStallClock(now: number): void {
    if (this.unansweredSince !== undefined) this.unansweredSince = now;
  }

  /** An empty frame on a connection idle for idleKeepAliveMs (see IDLE_KEEPALIVE_MS). */
  keepAliveIfIdle(now: number): void {
    if (this.state !== 'open' || this.channel === undefined || this.waitingDrain || this.queue.length > 0) return;
    if (now - this.lastSentAt < this.t.limits.idleKeepAliveMs) return;
    try {
      this.channel.send(EMPTY_BATCH);
    } catch (err) {
      this.onDisconnect(err as Error);
      return;
    }
    this.lastSentAt = now;
    this.unansweredSince ??= now;
  }

  /** True if the connection was closed as stalled (see the file comment); it is being redialed. */
  closeIfStalled(now: number): boolean {
    if (this.state !== 'open' || this.unansweredSince === undefined || !this.receiverReportsProgress) return false;
    const silentMs = now - this.unansweredSince;
    if (silentMs < this.t.limits.stallTimeoutMs) return false;
    this.stats.stalls++;
    this.onDisconnect(new NetError('ERR_PEER_STALLED', `no progress from the peer ${Math.round(silentMs)} ms after writing to it; redialing`));
    return true;
  }

  snapshot(): PeerStats {
    return {
      address: this.addrText,
      connected: this.state === 'open',
      queuedMessages: this.queue.length,
      queuedBytes: this.queuedBytes,
      ...this.stats,
    };
  }

  close(): void {
    this.state = 'closed';
    clearTimeout(this.timer);
    this.dropQueue(false);
    this.channel?.close();
    this.socket?.destroy();
  }

  private reportUnreachable(): void {
    if (this.reportedUnreachable) return;
    this.reportedUnreachable = true;
    this.t.reportUnreachable(this.id);
  }

  private dropQueue(count: boolean): void {
    if (count) this.stats.droppedUnreachable += this.queue.length;
    this.queue = [];
    this.queuedBytes = 0;
  }

  private connect(): void {
    if (this.state === 'closed') return;
    this.state = 'connecting';
    const L = this.t.limits;
    const socket = connect({ host: this.addr.host, port: this.addr.port });
    this.socket = socket;
    // Errors after a failure was already handled (or after close) must not go unhandled.
    socket.on('error', () => undefined);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    const connectTimer = setTimeout(() => socket.destroy(new NetError('ERR_HANDSHAKE_TIMEOUT', 'connect timed out')), L.connectTimeoutMs);
    const failEarly = (err: Error): void => {
      clearTimeout(connectTimer);
      this.onDisconnect(err);
    };
    socket.once('error', failEarly);
    socket.once('connect', () => {
      clearTimeout(connectTimer);
      socket.off('error', failEarly);
      clientHandshake(socket, {
        peerKey: this.t.peerKey,
        purpose: Purpose.Raft,
        nodeId: this.t.nodeId,
        advertise: this.t.advertise,
        expectNodeId: this.id,
        instanceId: this.t.instanceId,
        uptimeMs: () => this.t.uptimeMs(),
        timeoutMs: L.handshakeTimeoutMs,
        maxFrameBytes: L.maxFrameBytes,
      })
        .then((channel) => {
          if (this.state === 'closed' || this.socket !== socket) {
            channel.close();
            return;
          }
          this.channel = channel;
          this.state = 'open';
          this.unansweredSince = undefined;
          this.receiverReportsProgress = false;
          // The backoff starts over once the connection has lasted (onDisconnect), not at the
          // handshake: a peer that authenticates and then closes (a batch it cannot decode, a
          // newer build mid-upgrade) was otherwise redialled ~40 times a second for good.
          this.openedAt = performance.now();
          this.reportedUnreachable = false;
          this.stats.connects++;
          channel.start({
            // The receiving side sends back only progress notices, and one to say we were
            // removed or are a second process of one member.
            onFrame: (plain) => {
              const received = decodeProgressNotice(plain);
              if (received !== undefined) {
                this.receiverReportsProgress = true;
                this.unansweredSince = received >= channel.bytesSent ? undefined : performance.now();
              } else if (Buffer.compare(plain, REMOVED_NOTICE) === 0) {
                this.t.reportRemoved(this.id);
              } else {
                const duplicate = decodeDuplicateNotice(plain);
                if (duplicate !== undefined) this.t.reportDuplicate(this.id, duplicate);
              }
            },
            onClose: (err) => {
              if (this.channel === channel) this.onDisconnect(err ?? new NetError('ERR_CONNECTION_CLOSED', 'peer closed the connection'));
            },
          });
          this.scheduleFlush();
        })
        .catch((err: Error) => this.onDisconnect(err));
    });
  }

  private onDisconnect(err: Error): void {
    if (this.state === 'closed' || this.state === 'backoff') return;
    if (this.state === 'connecting') this.stats.connectFailures++;
    const L = this.t.limits;
    if (this.state === 'open' && performance.now() - this.openedAt >= L.reconnectMaxMs) this.attempt = 0;
    this.t.onReject?.(`peer ${this.id} at ${this.addrText}: ${err.message}`, err);
    this.channel = undefined;
    this.socket?.destroy();
    this.socket = undefined;
    this.waitingDrain = false;
    this.dropQueue(true);
    this.reportUnreachable();
    this.state = 'backoff';
    const delay = backoffDelayMs(this.attempt++, this.t.random, L.reconnectBaseMs, L.reconnectMaxMs);
    this.timer = setTimeout(() => {
      if (this.state !== 'backoff') return;
      this.state = 'idle';
      this.reportedUnreachable = false;
      this.connect();
    }, delay);
  }

  /** Writes what is queued now rather than at the end of the turn (nothing if not connected or waiting for drain). */
  flushNow(): void {
    this.flush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.waitingDrain) return;
    this.flushScheduled = true;
    // setImmediate: everything Raft sends in this turn (one Ready) goes in one write.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    // A flush scheduled before flushNow() filled the socket: wait for 'drain' like the rest.
    if (this.waitingDrain) return;
    const L = this.t.limits;
    while (this.state === 'open' && this.channel !== undefined && this.queue.length > 0) {
      let n = 0;
      let bytes = 0;
      while (n < this.queue.length) {
        const b = this.queue[n]!.bytes;
        if (n > 0 && bytes + b > L.maxBatchBytes) break;
        bytes += b;
        n++;
      }
      const batch = this.queue.splice(0, n);
      this.queuedBytes -= bytes;
      let ok: boolean;
      try {
        ok = this.channel.send(encodeMessageBatch(batch.map((q) => q.m)));
      } catch (err) {
        this.onDisconnect(err as Error);
        return;
      }
      this.stats.sentBatches++;
      this.stats.sentMessages += n;
      this.lastSentAt = performance.now();
      this.unansweredSince ??= this.lastSentAt;
      if (!ok) {
        const channel = this.channel;
        this.waitingDrain = true;
        channel.socket.once('drain', () => {
          this.waitingDrain = false;
          if (this.channel === channel) this.scheduleFlush();
        });
        return;
      }
    }
  }
}

/**
 * The receiving side of one connection: tells the sender how many bytes have arrived (Stalls,
 * in the file comment). A notice at start (which also says "I report progress"), then one when
 * bytes arrive, at most one per `everyMs`; bytes that arrive sooner get a notice at the end of
 * the wait, so the last bytes of a burst are always reported.
 */
class ProgressReporter {
  private lastSent = -Infinity;
  private pending: NodeJS.Timeout | undefined;
  private readonly onData = (): void => this.arrived();

  constructor(
    private readonly channel: SecureChannel,
    private readonly everyMs: number,
  ) {}

  start(): void {
    this.channel.socket.on('data', this.onData);
    this.send();
  }

  stop(): void {
    clearTimeout(this.pending);
    this.pending = undefined;
    this.channel.socket.off('data', this.onData);
  }

  private arrived(): void {
    if (this.pending !== undefined) return; // a notice is due; it will carry these bytes too
    const waitMs = this.lastSent + this.everyMs - performance.now();
    if (waitMs <= 0) this.send();
    else this.pending = setTimeout(() => {
      this.pending = undefined;
      this.send();
    }, waitMs);
  }

  private send(): void {
    if (this.channel.isClosed) return;
    this.lastSent = performance.now();
    this.channel.send(encodeProgressNotice(this.channel.bytesReceived));
  }
}

export class PeerTransport {
  readonly nodeId: NodeId;
  readonly peerKey: Uint8Array;
  readonly limits: PeerTransportLimits;
  readonly random: () => number;
  readonly onReject: PeerTransportOptions['onReject'];
  private readonly onMessage: PeerTransportOptions['onMessage'];
  private readonly onUnreachable: PeerTransportOptions['onUnreachable'];
  private readonly isRemoved: PeerTransportOptions['isRemoved'];
  private readonly onRemoved: PeerTransportOptions['onRemoved'];
  private readonly onPeerMoved: PeerTransportOptions['onPeerMoved'];
  private readonly onDuplicate: PeerTransportOptions['onDuplicate'];
  readonly advertise: string;
  readonly instanceId: number;
  private readonly startedAt: number;
  private readonly peers = new Map<NodeId, PeerSender>();
  /** Addresses peers announced themselves, which win over the embedder's records (see Addresses). */
  private readonly announced = new Map<NodeId, string>();
  private server: Server | undefined;
  private readonly inbound = new Set<Socket>();
  /** Inbound connections still in their handshake, oldest first (closeOldestInHandshake). */
  private readonly inHandshake = new Set<Socket>();
  /** Inbound connections still in their handshake, by remote address (MAX_HANDSHAKES_PER_ADDRESS). */
  private readonly handshakingByAddress = new AddressSlots(MAX_HANDSHAKES_PER_ADDRESS);
  /** Failed inbound handshakes (and failed accepts): anyone can cause them. */
  private readonly handshakeFailures: ThrottledReports;
  /** Shared by the inbound channels: the bytes of their frames still arriving. */
  private readonly inboundPending: PendingFrameBytes;
  /** The authenticated inbound channel of each peer (a newer one replaces an older one) and the process behind it. */
  private readonly inboundByPeer = new Map<NodeId, { channel: SecureChannel; instance: PeerInstance }>();
  private closed = false;
  private stallTimer: NodeJS.Timeout | undefined;
  private readonly stats_ = { receivedMessages: 0, receivedBatches: 0, rejectedHandshakes: 0, badFrames: 0, misaddressed: 0, droppedNoPeer: 0 };

  constructor(opts: PeerTransportOptions) {
    this.nodeId = opts.nodeId;
    this.peerKey = opts.peerKey;
    this.onMessage = opts.onMessage;
    this.onUnreachable = opts.onUnreachable;
    this.onReject = opts.onReject;
    this.isRemoved = opts.isRemoved;
    this.onRemoved = opts.onRemoved;
    this.onPeerMoved = opts.onPeerMoved;
    this.onDuplicate = opts.onDuplicate;
    this.advertise = opts.advertise ?? '';
    this.instanceId = opts.instanceId ?? newInstanceId();
    this.startedAt = opts.startedAt ?? performance.now();
    this.random = opts.random ?? Math.random;
    this.limits = { ...DEFAULT_PEER_TRANSPORT_LIMITS, ...opts.limits };
    this.handshakeFailures = new ThrottledReports(this.limits.handshakeFailureReportMs, (reason, err) => this.onReject?.(reason, err));
    this.inboundPending = new PendingFrameBytes(this.limits.maxInboundPendingBytes);
  }

  /** Starts accepting peer connections. Port 0 picks a free port; the bound address is returned. */
  listen(port: number, host = '127.0.0.1'): Promise<HostPort> {
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        // A failed accept (out of file descriptors) is an 'error' on the server: without a
        // listener it would end the process.
        server.on('error', (err) => this.handshakeFailures.add(`accepting a peer connection: ${err.message}`, err));
        const a = server.address();
        if (a === null || typeof a === 'string') reject(new Error('no address'));
        else resolve({ host: a.address, port: a.port });
      });
    });
  }

  /**
   * Adds (or re-addresses) a peer and starts connecting to it. An address the peer announced
   * itself since it was added wins over `address`.
   */
  addPeer(id: NodeId, address: string): void {
    this.dial(id, this.announced.get(id) ?? address);
  }

  private dial(id: NodeId, address: string): void {
    if (this.closed || id === this.nodeId) return;
    const existing = this.peers.get(id);
    if (existing !== undefined && existing.addrText === address) return;
    let hostPort: HostPort;
    try {
      hostPort = parseHostPort(address);
    } catch (e) {
      // Member records come from the replicated log: throwing here would stop every member
      // that applies one, at every restart. A peer at an address nobody can dial just stays
      // unreached (or at its old address) until its record is updated or it is removed.
      this.onReject?.(`peer ${id}: its address ${JSON.stringify(address)} cannot be dialed (${(e as Error).message}); ${existing === undefined ? 'not dialing it' : `kept dialing ${existing.addrText}`}`);
      return;
    }
    existing?.close();
    const sender = new PeerSender(id, hostPort, address, this);
    this.peers.set(id, sender);
    sender.start();
    if (this.stallTimer === undefined) {
      const periodMs = Math.max(10, Math.min(this.limits.stallTimeoutMs / 4, this.limits.idleKeepAliveMs / 2));
      let lastCheck = performance.now();
      // Judged from setImmediate, after this turn has read the sockets: a progress notice that
      // arrived while our loop was blocked is seen first.
      this.stallTimer = setInterval(() => setImmediate(() => {
        const now = performance.now();
        const late = now - lastCheck > 2 * periodMs;
        lastCheck = now;
        for (const p of this.peers.values()) {
          if (late) p.restartStallClock(now);
          else if (!p.closeIfStalled(now)) p.keepAliveIfIdle(now);
        }
      }), periodMs).unref();
    }
  }

  removePeer(id: NodeId): void {
    this.announced.delete(id);
    this.peers.get(id)?.close();
    this.peers.delete(id);
    this.inboundByPeer.get(id)?.channel.close();
    this.inboundByPeer.delete(id);
  }

  /**
   * Another source (gossip, which carries each manager's address and peer port) says where a
   * known peer is. Taken only while we are not connected to it: a peer we reach is where we
   * dial it, and its own handshake outranks hearsay. This is how members whose addresses all
   * changed at once (every board rebooted onto new DHCP leases) find each other again.
   */
  peerSeenAt(id: NodeId, address: string): void {
    const sender = this.peers.get(id);
    // Connected to us, the peer has told us itself where it is (gossip may not know yet).
    if (sender === undefined || sender.isOpen || this.inboundByPeer.has(id)) return;
    this.peerAnnounced(id, address, undefined, 'gossip');
  }

  /** A known peer's handshake said where it is reached; dial it there if that moved. */
  private peerAnnounced(id: NodeId, address: string, remoteHost: string | undefined, source: 'handshake' | 'gossip' = 'handshake'): void {
    const sender = this.peers.get(id);
    if (address === '' || sender === undefined || sender.addrText === address) return;
    let host: string;
    try {
      host = parseHostPort(address).host;
    } catch {
      return; // the handshake checked it; never trust a peer into throwing here
    }
    // A misconfigured member (told to advertise loopback or a wildcard) must not be dialed
    // there by members on other machines: that would cut it off where it was reachable.
    if (!announcedHostUsable(host, remoteHost)) {
      this.onReject?.(`peer ${id} announced ${address}, which others cannot reach it at (it connected from ${remoteHost ?? 'elsewhere'}); kept dialing ${sender.addrText}`);
      return;
    }
    const previous = sender.addrText;
    this.announced.set(id, address);
    this.dial(id, address);
    this.onPeerMoved?.(id, address, previous, source);
  }

  /** Where a peer is dialed, or undefined for a peer not added. */
  peerAddress(id: NodeId): string | undefined {
    return this.peers.get(id)?.addrText;
  }

  hasPeer(id: NodeId): boolean {
    return this.peers.has(id);
  }

  /** Queues messages for their peers; they leave together at the end of this turn. Never throws. */
  send(messages: readonly Message[]): void {
    for (const m of messages) {
      if (!isWireMessageType(m.type)) continue;
      const peer = this.peers.get(m.to);
      if (peer === undefined) {
        this.stats_.droppedNoPeer++;
        continue;
      }
      peer.enqueue(m);
    }
  }

  /**
   * Writes every peer's queued messages now. For a caller about to start slow synchronous
   * work (a leader's appends before its own log write) that would hold them until the turn ends.
   */
  flushNow(): void {
    for (const p of this.peers.values()) p.flushNow();
  }

  stats(): TransportStats {
    const peers: Record<string, PeerStats> = {};
    for (const [id, p] of this.peers) peers[String(id)] = p.snapshot();
    return { peers, inboundConnections: this.inbound.size, ...this.stats_ };
  }

  /** @internal */
  reportRemoved(by: NodeId): void {
    try {
      this.onRemoved?.(by);
    } catch {
      // The embedder's callback failing must not break the transport.
    }
  }

  /** @internal */
  reportDuplicate(by: NodeId, notice: DuplicateNotice): void {
    try {
      this.onDuplicate?.(by, notice);
    } catch {
      // The embedder's callback failing must not break the transport.
    }
  }

  /** How long this process has been running, as said in our handshakes. */
  uptimeMs(): number {
    return performance.now() - this.startedAt;
  }

  /** @internal */
  reportUnreachable(id: NodeId): void {
    try {
      this.onUnreachable?.(id);
    } catch {
      // The embedder's callback failing must not break the transport.
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.stallTimer);
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
    for (const s of this.inbound) s.destroy();
    this.inbound.clear();
    const server = this.server;
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    // Full: the connection longest in its handshake makes room. Without this, silent connections
    // from 16 addresses (8 each) held every slot while they lasted and no member could connect
    // (the shape a review found on the gossip port); a member's handshake takes a round trip.
    if (!this.closed && this.inbound.size >= this.limits.maxInboundConnections) this.closeOldestInHandshake();
    const hasRoom = !this.closed && this.inbound.size < this.limits.maxInboundConnections;
    const releaseAddress = hasRoom ? this.handshakingByAddress.take(socket.remoteAddress ?? '') : undefined;
    if (releaseAddress === undefined) {
      socket.destroy();
      this.stats_.rejectedHandshakes++;
      return;
    }
    this.inbound.add(socket);
    this.inHandshake.add(socket);
    const handshakeOver = (): void => {
      this.inHandshake.delete(socket);
      releaseAddress();
    };
    socket.on('close', () => {
      handshakeOver();
      this.inbound.delete(socket);
    });
    socket.on('error', () => undefined);
    socket.setNoDelay(true);
    // Read now: a refused handshake destroys the socket, which then forgets its peer's address.
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    serverHandshake(socket, {
      peerKey: this.peerKey,
      purposes: [Purpose.Raft],
      nodeId: this.nodeId,
      timeoutMs: this.limits.handshakeTimeoutMs,
      maxFrameBytes: this.limits.maxFrameBytes,
    }).then(
      ({ channel, hello }) => {
        handshakeOver();
        try {
          this.admitInbound(channel, hello, remote, socket.remoteAddress);
        } catch (err) {
          // Nothing a peer sends may end the process (a throw here would be an unhandled rejection).
          channel.close(err instanceof NetError ? err : new NetError('ERR_INVALID_MESSAGE', `inbound from ${remote}: ${(err as Error).message}`));
          this.onReject?.(`inbound from ${remote}: admitting the channel failed`, err);
        }
      },
      (err: Error) => {
        handshakeOver();
        this.stats_.rejectedHandshakes++;
        this.handshakeFailures.add(`inbound handshake from ${remote}: ${err.message}`, err);
      },
    );
  }

  private closeOldestInHandshake(): void {
    const oldest = this.inHandshake.values().next().value as Socket | undefined;
    if (oldest === undefined) return;
    this.inHandshake.delete(oldest);
    this.inbound.delete(oldest); // its slot now, not at its 'close'
    this.stats_.rejectedHandshakes++;
    oldest.destroy();
  }

  /** An inbound channel whose handshake succeeded: refused, or made the peer's inbound channel. */
  private admitInbound(channel: SecureChannel, hello: ClientHello, remote: string, remoteHost: string | undefined): void {
    if (this.closed || hello.nodeId === 0 || hello.nodeId === this.nodeId) {
      this.stats_.rejectedHandshakes++;
      channel.close(new NetError('ERR_INVALID_MESSAGE', `bad node id ${hello.nodeId}`));
      return;
    }
    const from = hello.nodeId;
    if (this.isRemoved?.(from) === true) {
      this.stats_.rejectedHandshakes++;
      sayAndClose(channel, REMOVED_NOTICE);
      return;
    }
    const now = performance.now();
    const instance: PeerInstance = { instanceId: hello.instanceId, startedAt: now - hello.uptimeMs, lastFrameAt: now, remote };
    const holder = this.inboundByPeer.get(from);
    const verdict = judgeDuplicate(holder?.instance, instance, now, this.limits.duplicateLiveWindowMs);
    if (verdict === 'refuse-newcomer') {
      this.stats_.rejectedHandshakes++;
      this.onReject?.(`peer ${from} dialed from ${remote} as another process than the one connected from ${holder!.instance.remote}, and started later: told to stop`);
      tellDuplicate(channel, holder!.instance, now);
      return;
    }
    if (verdict === 'stop-holder') {
      this.onReject?.(`peer ${from} connected from ${holder!.instance.remote} is another process than the one now dialing from ${remote}, which started first: told to stop`);
      tellDuplicate(holder!.channel, instance, now);
    }
    this.peerAnnounced(from, hello.advertise, remoteHost);
    holder?.channel.close();
    this.inboundByPeer.set(from, { channel, instance });
    this.peers.get(from)?.peerIsUp();
    const progress = new ProgressReporter(channel, this.limits.stallTimeoutMs / PROGRESS_NOTICES_PER_STALL_TIMEOUT);
    channel.limitPendingBytes(this.inboundPending);
    channel.start({
      onFrame: (plain) => {
        instance.lastFrameAt = performance.now();
        this.receive(from, plain);
      },
      onClose: (err) => {
        progress.stop();
        if (this.inboundByPeer.get(from)?.channel === channel) this.inboundByPeer.delete(from);
        if (err !== undefined) {
          this.stats_.badFrames++;
          this.onReject?.(`inbound from peer ${from}: ${err.message}`, err);
        }
      },
    });
    // After start: the channel counts each chunk before the reporter hears of it.
    progress.start();
  }

  private receive(from: NodeId, plain: Buffer): void {
    // Throws NetError on a bad batch: the channel closes with it.
    const messages = decodeMessageBatch(plain);
    this.stats_.receivedBatches++;
    for (const m of messages) {
      if (m.from !== from || m.to !== this.nodeId) {
        this.stats_.misaddressed++;
        continue;
      }
      this.stats_.receivedMessages++;
      try {
        this.onMessage(m);
      } catch (err) {
        this.onReject?.(`onMessage threw for a message from ${from}`, err);
      }
    }
  }
}

/** Tells the process behind `channel` that `other` is the same member and goes on; closes it. */
function tellDuplicate(channel: SecureChannel, other: PeerInstance, now: number): void {
  sayAndClose(channel, encodeDuplicateNotice({ otherRemote: other.remote, otherUptimeMs: now - other.startedAt }));
}

/** Sends the receiving side's one last word on an inbound channel (started or not) and closes it. */
function sayAndClose(channel: SecureChannel, notice: Uint8Array): void {
  // Starting a channel delivers what the peer sent behind its handshake: a bad frame there
  // closes it before the notice can go.
  if (!channel.isClosed && !channel.isStarted) channel.start({ onFrame: () => undefined, onClose: () => undefined });
  if (channel.isClosed) return;
  channel.send(notice);
  channel.close();
}

/**
 * Whether a peer's announced host can be where others dial it: never a wildcard, and loopback
 * only when it connected over loopback itself (several members on one machine).
 */
export function announcedHostUsable(host: string, remoteHost: string | undefined): boolean {
  if (isWildcard(host)) return false;
  return !isLoopbackHost(host) || remoteHost === undefined || isLoopbackHost(remoteHost);
}

function isLoopbackHost(host: string): boolean {
  const h = host.startsWith('::ffff:') ? host.slice(7) : host;
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}
