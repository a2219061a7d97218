/**
 * Real UDP + TCP transport for gossip, on one port number: UDP datagrams carry sealed compound
 * packets, TCP connections carry exactly one sealed request frame and one sealed reply frame
 * (push-pull, fallback ping, keyring operations). Everything is authenticated with the keyring
 * (AES-256-GCM) before it is decoded; whatever fails — oversized, unauthenticated, replayed,
 * malformed — is dropped and counted, never thrown. Knows nothing of the protocol itself.
 */
import { AddressSlots } from './address-slots.js';
import { JOIN_PEEK_TIMEOUT_MS, MAX_JOIN_CONNECTIONS, PeekingByAddress, peekJoinMagic } from './join.js';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, connect, isIPv6, type Server, type Socket } from 'node:net';
import { decodePacket, decodeStreamFrame, encodeStreamFrame } from '../gossip/codec/index.js';
import { GossipError } from '../gossip/errors.js';
import { Keyring, ReplayCache } from '../gossip/keyring/index.js';
import {
  MAX_INBOUND_STREAMS,
  MAX_INBOUND_STREAMS_PER_ADDRESS,
  MAX_STREAM_FRAME_BYTES,
  MAX_UDP_PACKET_BYTES,
  SEAL_OVERHEAD_BYTES,
  STREAM_FRAME_HEADER_BYTES,
} from '../gossip/limits.js';
import type { Address, Message, StreamMsg } from '../gossip/types.js';

export interface TransportStats {
  packetsIn: number;
  packetsOut: number;
  bytesIn: number;
  bytesOut: number;
  /** Datagrams or frames no key of the keyring authenticates (wrong key, forged, corrupted). */
  authFailures: number;
  /** Authenticated datagrams or frames seen before (same nonce). */
  replayed: number;
  /** Authenticated but undecodable. */
  malformed: number;
  /** Larger than MAX_UDP_PACKET_BYTES / MAX_STREAM_FRAME_BYTES. */
  oversized: number;
  streamsIn: number;
  streamsOut: number;
  /** Inbound connections refused because MAX_INBOUND_STREAMS (or MAX_INBOUND_STREAMS_PER_ADDRESS, or join.ts MAX_PEEKING_PER_ADDRESS) were busy. */
  streamsRefused: number;
  /** Outbound requests that failed (refused, timed out, bad reply). */
  streamFailures: number;
  sendErrors: number;
}

export interface GossipTransportOptions {
  bindHost: string;
  /** 0 picks a free port (the same number for UDP and TCP). */
  bindPort: number;
  keyring: Keyring;
  onPacket(messages: Message[], from: Address): void;
  /** Serves one inbound stream request; the returned message is sent back. */
  onStream(request: StreamMsg, from: Address): StreamMsg | Promise<StreamMsg>;
  /** Idle limit for an inbound connection to deliver its request. */
  streamIdleTimeoutMs?: number;
  /**
   * Whole-life limit of an inbound connection (reading the request, answering it), however
   * busy it is: the node passes its tcpTimeoutMs, as memberlist sets TCPTimeout as the
   * connection's deadline. Without it, a sender without the key that trickles one byte before
   * each idle timeout holds a slot for ever, and MAX_INBOUND_STREAMS of them stop every
   * push-pull, join and TCP fallback ping.
   */
  streamDeadlineMs?: number;
}

const DEFAULT_STREAM_IDLE_TIMEOUT_MS = 10_000;
const DEFAULT_STREAM_DEADLINE_MS = 10_000;
/**
 * Bytes of inbound stream frames being read at once, over all connections. A frame can only be
 * authenticated once whole, so without a shared bound anyone reaching the port could make the
 * node hold MAX_INBOUND_STREAMS × MAX_STREAM_FRAME_BYTES (and the RSS stays after). Two whole
 * frames at once: real push-pulls are far smaller than one. Counted as bytes arrive, not as
 * announced: two silent connections announcing 8 MiB frames took the whole budget, and every
 * push-pull, join and TCP ping was refused while they stayed.
 */
export const MAX_PENDING_INBOUND_FRAME_BYTES = 2 * MAX_STREAM_FRAME_BYTES;
/** The part of that budget the frames from one address may hold: one whole frame. */
export const MAX_PENDING_INBOUND_FRAME_BYTES_PER_ADDRESS = MAX_STREAM_FRAME_BYTES;
/** Connections not yet authenticated at once (admitUnauthenticated): the oldest is closed past this. */
export const MAX_UNAUTHENTICATED_CONNECTIONS = 32;

export class GossipTransport {
  readonly stats: TransportStats = {
    packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0, authFailures: 0, replayed: 0, malformed: 0,
    oversized: 0, streamsIn: 0, streamsOut: 0, streamsRefused: 0, streamFailures: 0, sendErrors: 0,
  };
  private readonly replay = new ReplayCache();
  private activeInbound = 0;
  /** Inbound streams open per remote address (MAX_INBOUND_STREAMS_PER_ADDRESS); entries at 0 are deleted. */
  private readonly inboundByAddress = new AddressSlots(MAX_INBOUND_STREAMS_PER_ADDRESS);
  /** Connections not yet authenticated, oldest first, each with what closes it and frees its slot at once (admitUnauthenticated). */
  private readonly unauthenticated = new Map<Socket, () => void>();
  /** Connections still to send their first bytes, by address (join.ts MAX_PEEKING_PER_ADDRESS). */
  private readonly peeking = new PeekingByAddress(() => this.stats.streamsRefused++);
  /** Bytes of inbound frames being read now (MAX_PENDING_INBOUND_FRAME_BYTES), and by address (entries at 0 deleted). */
  private pendingFrameBytes = 0;
  private readonly pendingFrameBytesByAddress = new Map<string, number>();
  private readonly sockets = new Set<Socket>();
  private closed = false;
  /** Join connections (JOIN_STREAM_MAGIC) on this port go here; see setJoinHandler. */
  private joinHandler: ((sock: Socket, onAuthenticated: () => void) => void) | undefined;

  private constructor(
    private readonly opts: GossipTransportOptions,
    private readonly udp: UdpSocket,
    private readonly tcp: Server,
    readonly port: number,
  ) {}

  static async listen(opts: GossipTransportOptions): Promise<GossipTransport> {
    const family = isIPv6(opts.bindHost) ? 'udp6' : 'udp4';
    // With port 0, take a free TCP port first, then the same number for UDP (retry if taken).
    for (let attempt = 0; attempt < 20; attempt++) {
      const tcp = createServer();
      // Never reached before the bounds that close the oldest unauthenticated connection.
      tcp.maxConnections = MAX_UNAUTHENTICATED_CONNECTIONS + MAX_INBOUND_STREAMS + MAX_JOIN_CONNECTIONS + 8;
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen({ host: opts.bindHost, port: opts.bindPort, exclusive: true }, () => resolve());
      });
      const port = (tcp.address() as { port: number }).port;
      const udp = createSocket({ type: family });
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once('error', reject);
          udp.bind({ address: opts.bindHost, port, exclusive: true }, () => resolve());
        });
      } catch (err) {
        udp.close();
        await new Promise<void>((r) => tcp.close(() => r()));
        if (opts.bindPort === 0 && (err as NodeJS.ErrnoException).code === 'EADDRINUSE') continue;
        throw err;
      }
      const t = new GossipTransport(opts, udp, tcp, port);
      t.wire();
      return t;
    }
    throw new GossipError('GOSSIP_STREAM_FAILED', 'could not find a free port for UDP and TCP');
  }

  /** Seals and sends one packet (plaintext = an encoded compound packet). */
  sendPacket(to: Address, plaintext: Uint8Array): void {
    if (this.closed) return;
    const sealed = this.opts.keyring.seal(plaintext, 'udp');
    this.stats.packetsOut++;
    this.stats.bytesOut += sealed.length;
    this.udp.send(sealed, to.port, to.host, (err) => {
      if (err) this.stats.sendErrors++;
    });
  }

  /** One request/reply exchange over TCP. Rejects with a GossipError. */
  request(to: Address, msg: StreamMsg, timeoutMs: number): Promise<StreamMsg> {
    if (this.closed) return Promise.reject(new GossipError('GOSSIP_STOPPED', 'transport closed'));
    this.stats.streamsOut++;
    return new Promise<StreamMsg>((resolve, reject) => {
      const sock = connect({ host: to.host, port: to.port });
      this.sockets.add(sock);
      let settled = false;
      const done = (err: GossipError | undefined, reply?: StreamMsg): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.sockets.delete(sock);
        sock.destroy();
        if (err) {
          this.stats.streamFailures++;
          reject(err);
        } else resolve(reply!);
      };
      const timer = setTimeout(
        () => done(new GossipError('GOSSIP_STREAM_TIMEOUT', `no reply from ${to.host}:${to.port} within ${timeoutMs} ms`)),
        Math.max(1, timeoutMs),
      );
      sock.on('error', (e) => done(new GossipError('GOSSIP_STREAM_FAILED', `stream to ${to.host}:${to.port}: ${e.message}`)));
      sock.on('close', () => done(new GossipError('GOSSIP_STREAM_FAILED', `stream to ${to.host}:${to.port} closed without a reply`)));
      sock.on('connect', () => {
        const frame = this.frame(msg);
        this.stats.bytesOut += frame.length;
        sock.write(frame);
      });
      readFrame(sock, (err, sealed) => {
        if (err) return done(err);
        const reply = this.openFrame(sealed!);
        if (reply instanceof GossipError) return done(reply);
        done(undefined, reply);
      });
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sockets) s.destroy();
    await Promise.all([
      new Promise<void>((r) => this.udp.close(() => r())),
      new Promise<void>((r) => this.tcp.close(() => r())),
    ]);
  }

  // -------------------------------------------------------------------------------------------

  /**
   * Share this port's TCP side with the Raft join handshake (DESIGN.md: --join targets the
   * gossip port): connections starting with JOIN_STREAM_MAGIC are handed to `handler`.
   */
  setJoinHandler(handler: ((sock: Socket, onAuthenticated: () => void) => void) | undefined): void {
    this.joinHandler = handler;
  }

  private wire(): void {
    this.udp.on('message', (buf, rinfo) => this.onDatagram(buf, { host: rinfo.address, port: rinfo.port }));
    this.udp.on('error', () => {
      this.stats.sendErrors++;
    });
    this.tcp.on('connection', (sock) => {
      this.admitUnauthenticated(sock);
      if (!this.joinHandler) return this.onConnection(sock);
      sock.on('error', () => undefined);
      const handler = this.joinHandler;
      const authenticated = (): void => void this.unauthenticated.delete(sock);
      peekJoinMagic(sock, (isJoin) => (isJoin ? handler(sock, authenticated) : this.onConnection(sock)), JOIN_PEEK_TIMEOUT_MS, this.peeking);
    });
    this.tcp.on('error', () => {
      this.stats.streamFailures++;
    });
  }

  private onDatagram(buf: Buffer, from: Address): void {
    this.stats.packetsIn++;
    this.stats.bytesIn += buf.length;
    if (buf.length > MAX_UDP_PACKET_BYTES) {
      this.stats.oversized++;
      return;
    }
    const plain = this.opts.keyring.open(buf, 'udp');
    if (!plain) {
      this.stats.authFailures++;
      return;
    }
    if (!this.replay.admit(Keyring.nonceOf(buf)!)) {
      this.stats.replayed++;
      return;
    }
    let messages: Message[];
    try {
      messages = decodePacket(plain);
    } catch {
      this.stats.malformed++;
      return;
    }
    this.opts.onPacket(messages, from);
  }

  /**
   * Counts a new connection as not yet authenticated until its first frame opens (a gossip
   * stream) or its join handshake succeeds; past MAX_UNAUTHENTICATED_CONNECTIONS the oldest such
   * connection is closed. Silent connections from many addresses (each holds at most 8) took
   * every slot of the port while they lasted, so no board could join (found by a review); a real
   * client authenticates within a round trip, so it is never the oldest for long.
   */
  private admitUnauthenticated(sock: Socket): void {
    if (this.unauthenticated.size >= MAX_UNAUTHENTICATED_CONNECTIONS) {
      const [oldest, close] = this.unauthenticated.entries().next().value as [Socket, () => void];
      this.unauthenticated.delete(oldest);
      this.stats.streamsRefused++;
      close();
    }
    this.unauthenticated.set(sock, () => sock.destroy());
    sock.once('close', () => this.unauthenticated.delete(sock));
  }

  private onConnection(sock: Socket): void {
    const source = sock.remoteAddress ?? '';
    // Connections from our own address come from this machine (other nodes of it, tools).
    const counted = source !== '' && source !== sock.localAddress;
    const hasRoom = !this.closed && this.activeInbound < MAX_INBOUND_STREAMS;
    const releaseSource = !hasRoom ? undefined : counted ? this.inboundByAddress.take(source) : () => undefined;
    if (releaseSource === undefined) {
      this.stats.streamsRefused++;
      sock.destroy();
      return;
    }
    this.activeInbound++;
    this.stats.streamsIn++;
    this.sockets.add(sock);
    let finished = false;
    let reserved = 0;
    const host = sock.remoteAddress ?? '';
    const release = (): void => {
      if (reserved === 0) return;
      this.pendingFrameBytes -= reserved;
      const left = (this.pendingFrameBytesByAddress.get(host) ?? 0) - reserved;
      if (left > 0) this.pendingFrameBytesByAddress.set(host, left);
      else this.pendingFrameBytesByAddress.delete(host);
      reserved = 0;
    };
    const deadline = setTimeout(() => finish(), this.opts.streamDeadlineMs ?? DEFAULT_STREAM_DEADLINE_MS);
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      release();
      this.activeInbound--;
      releaseSource();
      this.sockets.delete(sock);
      sock.destroy();
    };
    // Closed as the oldest unauthenticated connection: its stream slot is free before the next one is counted.
    if (this.unauthenticated.has(sock)) this.unauthenticated.set(sock, finish);
    sock.setTimeout(this.opts.streamIdleTimeoutMs ?? DEFAULT_STREAM_IDLE_TIMEOUT_MS, finish);
    sock.on('error', finish);
    sock.on('close', finish);
    const from: Address = { host, port: sock.remotePort ?? 0 };
    const reserve = (bytes: number): boolean => {
      const fromHere = this.pendingFrameBytesByAddress.get(host) ?? 0;
      if (this.pendingFrameBytes + bytes > MAX_PENDING_INBOUND_FRAME_BYTES || fromHere + bytes > MAX_PENDING_INBOUND_FRAME_BYTES_PER_ADDRESS) return false;
      this.pendingFrameBytes += bytes;
      this.pendingFrameBytesByAddress.set(host, fromHere + bytes);
      reserved += bytes;
      return true;
    };
    const onFrame = (err: GossipError | undefined, sealed?: Buffer): void => {
      release(); // whole (or failed): no longer being read
      if (err) {
        if (err.code === 'GOSSIP_STREAM_TOO_LARGE') this.stats.oversized++;
        else if (err.code === 'GOSSIP_STREAM_BUSY') this.stats.streamsRefused++;
        else if (err.code === 'GOSSIP_DECODE_MALFORMED') this.stats.malformed++;
        finish();
        return;
      }
      const req = this.openFrame(sealed!);
      if (req instanceof GossipError) {
        finish();
        return;
      }
      this.unauthenticated.delete(sock);
      Promise.resolve()
        .then(() => this.opts.onStream(req, from))
        .then((reply) => {
          if (finished) return;
          const frame = this.frame(reply);
          this.stats.bytesOut += frame.length;
          sock.end(frame);
        })
        .catch(() => finish());
    };
    readFrame(sock, onFrame, reserve);
  }

  private frame(msg: StreamMsg): Buffer {
    const sealed = this.opts.keyring.seal(encodeStreamFrame(msg), 'tcp');
    const head = Buffer.alloc(STREAM_FRAME_HEADER_BYTES);
    head.writeUInt32BE(sealed.length, 0);
    return Buffer.concat([head, sealed]);
  }

  /** Authenticates, replay-checks and decodes a sealed frame; counts and returns an error otherwise. */
  private openFrame(sealed: Buffer): StreamMsg | GossipError {
    this.stats.bytesIn += sealed.length + STREAM_FRAME_HEADER_BYTES;
    const plain = this.opts.keyring.open(sealed, 'tcp');
    if (!plain) {
      this.stats.authFailures++;
      return new GossipError('GOSSIP_AUTH_FAILED', 'stream frame failed authentication');
    }
    if (!this.replay.admit(Keyring.nonceOf(sealed)!)) {
      this.stats.replayed++;
      return new GossipError('GOSSIP_REPLAYED', 'stream frame replayed');
    }
    try {
      return decodeStreamFrame(plain);
    } catch (err) {
      if ((err as GossipError).code === 'GOSSIP_DECODE_OVERSIZED') this.stats.oversized++;
      else this.stats.malformed++;
      return err as GossipError;
    }
  }
}

/**
 * Reads one length-prefixed frame from a socket and calls back once with its bytes, or with
 * GOSSIP_STREAM_TOO_LARGE / GOSSIP_STREAM_FAILED. Stops listening after the frame. `reserve` is
 * asked for the frame's bytes as they arrive (GOSSIP_STREAM_BUSY when it says no).
 */
export function readFrame(sock: Socket, cb: (err: GossipError | undefined, frame?: Buffer) => void, reserve: (bytes: number) => boolean = () => true): void {
  const chunks: Buffer[] = [];
  let have = 0;
  let need = -1;
  let done = false;
  let reservedUpTo = 0;
  const finish = (err: GossipError | undefined, frame?: Buffer): void => {
    if (done) return;
    done = true;
    sock.off('data', onData);
    sock.off('end', onEnd);
    cb(err, frame);
  };
  const onData = (chunk: Buffer): void => {
    chunks.push(chunk);
    have += chunk.length;
    if (need < 0 && have >= STREAM_FRAME_HEADER_BYTES) {
      const all = Buffer.concat(chunks);
      chunks.length = 0;
      chunks.push(all);
      need = all.readUInt32BE(0);
      if (need > MAX_STREAM_FRAME_BYTES) {
        finish(new GossipError('GOSSIP_STREAM_TOO_LARGE', `stream frame of ${need} bytes refused (limit ${MAX_STREAM_FRAME_BYTES})`));
        return;
      }
      if (need < SEAL_OVERHEAD_BYTES) {
        finish(new GossipError('GOSSIP_DECODE_MALFORMED', `stream frame of ${need} bytes is too short to be sealed`));
        return;
      }
    }
    if (need >= 0) {
      const held = Math.min(have, STREAM_FRAME_HEADER_BYTES + need);
      if (!reserve(held - reservedUpTo)) {
        finish(new GossipError('GOSSIP_STREAM_BUSY', `stream frame of ${need} bytes refused: other frames are being read`));
        return;
      }
      reservedUpTo = held;
    }
    if (need >= 0 && have >= STREAM_FRAME_HEADER_BYTES + need) {
      const all = Buffer.concat(chunks);
      finish(undefined, all.subarray(STREAM_FRAME_HEADER_BYTES, STREAM_FRAME_HEADER_BYTES + need));
    }
  };
  const onEnd = (): void => finish(new GossipError('GOSSIP_STREAM_FAILED', 'stream ended before a whole frame arrived'));
  sock.on('data', onData);
  sock.on('end', onEnd);
}
