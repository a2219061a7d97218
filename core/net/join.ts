/**
 * The join handshake: a new node dials a member (`--join HOST:PORT`, the gossip port's TCP
 * side until membership lands), proves it holds the cluster secret with the same PSK
 * handshake as the peer port, and asks to be added as a learner with its addresses. The
 * server hands the request to a callback (the agent proposes the Raft conf change) and sends
 * back the new member id and the member list. One request per connection.
 */
import { AddressSlots } from './address-slots.js';
import { ThrottledReports } from './throttled-reports.js';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type protobuf from 'protobufjs';
import { parseHostPort, type HostPort } from './address.js';
import { NetError } from './errors.js';
import { HANDSHAKE_TIMEOUT_MS, Purpose, clientHandshake, serverHandshake } from './handshake.js';
import { peerType } from './proto-files.js';

/** Client side: connect, handshake, and the server's answer (which may wait on a Raft commit). */
export const JOIN_TIMEOUT_MS = 30_000;
/** Server side: how long onJoin may take before the joiner is told to retry. */
export const JOIN_HANDLER_TIMEOUT_MS = 25_000;
export const MAX_JOIN_FRAME_BYTES = 256 * 1024;
export const MAX_JOIN_CONNECTIONS = 32;
/**
 * Join connections from one address at once. A joiner holds one (a few boards may share a NAT
 * address). Without this bound, one host that knows no key could keep all MAX_JOIN_CONNECTIONS
 * busy with silent handshakes, and no board could join.
 */
export const MAX_JOIN_CONNECTIONS_PER_ADDRESS = 8;
export const MAX_MEMBER_NAME_CHARS = 253;
/**
 * A member name as `picloud-node agent --name` takes it (agent/config.ts): a join request naming
 * anything else comes from no agent, and is refused before the member list is consulted.
 */
export const MEMBER_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
export const MAX_ADDRESS_CHARS = 300;
export const MAX_JOIN_MEMBERS = 1_024;
/**
 * Sent first on every join connection, so a listener shared with gossip's TCP side can tell
 * a join from a gossip stream: read as a gossip frame length it is ~1.3 GB, far above any
 * valid frame, so the two can never be confused.
 */
export const JOIN_STREAM_MAGIC = Buffer.from('PCJ1', 'latin1');

/** How long a connection may take to send its first 4 bytes before it is closed. */
export const JOIN_PEEK_TIMEOUT_MS = 5_000;

/**
 * Connections from one address that have not yet sent their first 4 bytes, at once. They come
 * before any authentication and each waits up to JOIN_PEEK_TIMEOUT_MS: without this bound one
 * host that knows no key kept the listener's every slot (64 on the gossip port) with silent
 * connections, re-opened every 5 s, and no board could join (found by a crash hunt). A real
 * client sends its bytes at once, so it holds a slot for a moment.
 */
export const MAX_PEEKING_PER_ADDRESS = 8;

/** Counts the connections waiting in peekJoinMagic by remote address (MAX_PEEKING_PER_ADDRESS). */
export class PeekingByAddress {
  private readonly slots = new AddressSlots(MAX_PEEKING_PER_ADDRESS);
  refused = 0;

  constructor(private readonly onRefused?: () => void) {}

  /**
   * Takes a slot for `socket`'s address, given back when `route` runs or the socket closes;
   * false (the socket destroyed) when its address has none left. Connections from the
   * listener's own address come from this machine (other nodes of it, tools) and are not counted.
   */
  admit(socket: Socket): { admitted: false } | { admitted: true; release: () => void } {
    const source = socket.remoteAddress ?? '';
    if (source === '' || source === socket.localAddress) return { admitted: true, release: () => undefined };
    const release = this.slots.take(source);
    if (release === undefined) {
      this.refused++;
      this.onRefused?.();
      socket.destroy();
      return { admitted: false };
    }
    socket.once('close', release);
    return { admitted: true, release };
  }
}

/**
 * Wait for the first bytes of `socket`: calls `route(isJoin)` once 4 bytes arrived, with the
 * magic (if any) consumed and every other byte put back for the next reader. A connection that
 * has not sent them within `timeoutMs` is closed: these come before any authentication, and
 * silent ones would otherwise hold the listener's connection slots (and block joins) for good.
 */
export function peekJoinMagic(socket: Socket, route: (isJoin: boolean) => void, timeoutMs = JOIN_PEEK_TIMEOUT_MS, peeking?: PeekingByAddress): void {
  const slot = peeking?.admit(socket) ?? { admitted: true, release: () => undefined };
  if (!slot.admitted) return;
  let buf = Buffer.alloc(0);
  const timer = setTimeout(() => {
    socket.off('data', onData);
    socket.destroy();
  }, timeoutMs);
  socket.once('close', () => clearTimeout(timer));
  const onData = (chunk: Buffer): void => {
    buf = Buffer.concat([buf, chunk]);
    if (buf.length < JOIN_STREAM_MAGIC.length) return;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.pause();
    const isJoin = buf.subarray(0, JOIN_STREAM_MAGIC.length).equals(JOIN_STREAM_MAGIC);
    const rest = isJoin ? buf.subarray(JOIN_STREAM_MAGIC.length) : buf;
    if (rest.length > 0) socket.unshift(rest);
    slot.release();
    route(isJoin);
    socket.resume();
  };
  socket.on('data', onData);
}

export interface JoinRequest {
  name: string;
  /** host:port other managers reach this node's peer port at. */
  peerAddr: string;
  /** host:port of this node's client (etcd API) port. */
  clientAddr: string;
  /** The joiner's own space quota (bytes of history its memory can hold); absent: not said. */
  quotaBytes?: number;
  /** One value for every retry of one join (absent: an older joiner): retries get one member. */
  joinId?: string;
}

/** A join id's length limit (the joiner sends 16 hex digits). */
export const MAX_JOIN_ID_CHARS = 64;

export interface JoinMember {
  id: number;
  name: string;
  peerAddr: string;
  clientAddr: string;
  /** The member's own space quota (so a joiner holds to the cluster's smallest from its first write); absent: not on record. */
  quotaBytes?: number;
}

export interface JoinResult {
  memberId: number;
  members: JoinMember[];
}

export type JoinHandler = (req: JoinRequest & { remoteAddress: string }) => Promise<JoinResult>;

let types: { req: protobuf.Type; resp: protobuf.Type } | undefined;
function t(): NonNullable<typeof types> {
  types ??= { req: peerType('picloud.peer.JoinRequest'), resp: peerType('picloud.peer.JoinResponse') };
  return types;
}

function decode(type: protobuf.Type, data: Uint8Array, what: string): Record<string, unknown> {
  try {
    return type.decode(data) as unknown as Record<string, unknown>;
  } catch (err) {
    throw new NetError('ERR_DECODE', `malformed ${what}: ${(err as Error).message}`, { cause: err });
  }
}

function str(v: unknown, max: number, what: string): string {
  const s = typeof v === 'string' ? v : '';
  if (s.length > max) throw new NetError('ERR_INVALID_MESSAGE', `${what} longer than ${max} characters`);
  return s;
}

function id(v: unknown, what: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  if (v !== null && typeof v === 'object' && 'high' in v && 'low' in v) {
    const { high, low } = v as { high: number; low: number };
    if (high >>> 0 < 0x200000) return (high >>> 0) * 0x1_0000_0000 + (low >>> 0);
  }
  throw new NetError('ERR_INVALID_MESSAGE', `bad ${what}`);
}

/** A uint64 field that may be unset: undefined for 0 (not said), else the number (refused beyond 2^53). */
function optionalCount(v: unknown, what: string): number | undefined {
  const n = id(v ?? 0, what);
  return n > 0 ? n : undefined;
}

export function encodeJoinRequest(r: JoinRequest): Uint8Array {
  return t().req.encode(r).finish();
}

export function decodeJoinRequest(data: Uint8Array): JoinRequest {
  const o = decode(t().req, data, 'JoinRequest');
  const r: JoinRequest = {
    name: str(o.name, MAX_MEMBER_NAME_CHARS, 'name'),
    peerAddr: str(o.peerAddr, MAX_ADDRESS_CHARS, 'peer address'),
    clientAddr: str(o.clientAddr, MAX_ADDRESS_CHARS, 'client address'),
  };
  const quotaBytes = optionalCount(o.quotaBytes, 'quota');
  if (quotaBytes !== undefined) r.quotaBytes = quotaBytes;
  const joinId = str(o.joinId, MAX_JOIN_ID_CHARS, 'join id');
  if (joinId !== '') r.joinId = joinId;
  if (r.name === '') throw new NetError('ERR_INVALID_MESSAGE', 'join request without a name');
  if (!MEMBER_NAME_PATTERN.test(r.name)) throw new NetError('ERR_INVALID_MESSAGE', `join request names ${JSON.stringify(r.name.slice(0, 70))}: a member name is 1-63 letters, digits, '.', '_' or '-'`);
  try {
    parseHostPort(r.peerAddr);
  } catch (err) {
    throw new NetError('ERR_INVALID_MESSAGE', `join request peer address: ${(err as Error).message}`);
  }
  return r;
}

/** The join server refused, for a reason (its code, e.g. NAME_CONFLICT) a joiner may act on. */
export class JoinRefusedError extends NetError {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super('ERR_JOIN_REFUSED', message);
  }
}

export type JoinResponse = { ok: true; result: JoinResult } | { ok: false; code: string; message: string };

export function encodeJoinResponse(r: JoinResponse): Uint8Array {
  if (r.ok) return t().resp.encode({ memberId: r.result.memberId, members: r.result.members }).finish();
  return t().resp.encode({ error: r.message || 'refused', errorCode: r.code }).finish();
}

export function decodeJoinResponse(data: Uint8Array): JoinResponse {
  const o = decode(t().resp, data, 'JoinResponse');
  const error = str(o.error, 4096, 'error');
  if (error !== '') return { ok: false, code: str(o.errorCode, 64, 'error code'), message: error };
  const members = Array.isArray(o.members) ? (o.members as Record<string, unknown>[]) : [];
  if (members.length > MAX_JOIN_MEMBERS) throw new NetError('ERR_INVALID_MESSAGE', `more than ${MAX_JOIN_MEMBERS} members`);
  const memberId = id(o.memberId, 'member id');
  if (memberId === 0) throw new NetError('ERR_INVALID_MESSAGE', 'join response without a member id');
  return {
    ok: true,
    result: {
      memberId,
      members: members.map((m) => {
        const member: JoinMember = {
          id: id(m.id, 'member id'),
          name: str(m.name, MAX_MEMBER_NAME_CHARS, 'member name'),
          peerAddr: str(m.peerAddr, MAX_ADDRESS_CHARS, 'peer address'),
          clientAddr: str(m.clientAddr, MAX_ADDRESS_CHARS, 'client address'),
        };
        const quotaBytes = optionalCount(m.quotaBytes, 'member quota');
        if (quotaBytes !== undefined) member.quotaBytes = quotaBytes;
        return member;
      }),
    },
  };
}

export interface JoinServerOptions {
  peerKey: Uint8Array;
  onJoin: JoinHandler;
  port: number;
  host?: string;
  handshakeTimeoutMs?: number;
  handlerTimeoutMs?: number;
  /** Refused joins and failed join handshakes, at most one report per `rejectReportMs`. */
  onReject?: (reason: string, err?: unknown) => void;
  /** Default JOIN_REJECT_REPORT_MS; 0: every one. */
  rejectReportMs?: number;
}

/** Anyone who reaches the port can make a join fail: one report per 10 s, as the peer port's. */
export const JOIN_REJECT_REPORT_MS = 10_000;

export class JoinServer {
  private readonly sockets = new Set<Socket>();
  /** Open join connections by remote address (MAX_JOIN_CONNECTIONS_PER_ADDRESS). */
  private readonly connectionsByAddress = new AddressSlots(MAX_JOIN_CONNECTIONS_PER_ADDRESS);
  readonly stats = { accepted: 0, rejectedHandshakes: 0, joined: 0, refused: 0 };
  private readonly rejections: ThrottledReports;

  private constructor(
    private readonly server: Server | undefined,
    readonly address: HostPort | undefined,
    private readonly opts: JoinServerOptions,
  ) {
    this.rejections = new ThrottledReports(opts.rejectReportMs ?? JOIN_REJECT_REPORT_MS, (reason, err) => opts.onReject?.(reason, err));
    // A failed accept (out of file descriptors) must not end the process.
    server?.on('error', (err) => this.rejections.add(`accepting a join connection: ${err.message}`, err));
  }

  /** A join server with no listener of its own: connections come through handleConnection. */
  static detached(opts: Omit<JoinServerOptions, 'port' | 'host'>): JoinServer {
    return new JoinServer(undefined, undefined, { ...opts, port: 0 });
  }

  static listen(opts: JoinServerOptions): Promise<JoinServer> {
    let js: JoinServer | undefined;
    const peeking = new PeekingByAddress();
    const server = createServer((socket) => {
      socket.on('error', () => undefined);
      peekJoinMagic(socket, (isJoin) => (isJoin ? js?.accept(socket) : socket.destroy()), JOIN_PEEK_TIMEOUT_MS, peeking);
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port, opts.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        const a = server.address();
        if (a === null || typeof a === 'string') return reject(new Error('no address'));
        js = new JoinServer(server, { host: a.address, port: a.port }, opts);
        resolve(js);
      });
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /**
   * Serves one join connection accepted elsewhere: the gossip port's TCP listener peeks
   * JOIN_STREAM_MAGIC (peekJoinMagic) and hands the socket over with the magic consumed.
   */
  handleConnection(socket: Socket, onAuthenticated?: () => void): void {
    this.accept(socket, onAuthenticated);
  }

  /** `onAuthenticated`: the joiner proved it holds the token (its handshake succeeded). */
  private accept(socket: Socket, onAuthenticated?: () => void): void {
    const release = this.sockets.size < MAX_JOIN_CONNECTIONS ? this.connectionsByAddress.take(socket.remoteAddress ?? '') : undefined;
    if (release === undefined) {
      socket.destroy();
      this.stats.rejectedHandshakes++;
      return;
    }
    this.stats.accepted++;
    this.sockets.add(socket);
    socket.on('close', () => {
      this.sockets.delete(socket);
      release();
    });
    socket.on('error', () => undefined);
    const remoteAddress = `${socket.remoteAddress}:${socket.remotePort}`;
    serverHandshake(socket, {
      peerKey: this.opts.peerKey,
      purposes: [Purpose.Join],
      timeoutMs: this.opts.handshakeTimeoutMs,
      maxFrameBytes: MAX_JOIN_FRAME_BYTES,
    }).then(
      ({ channel }) => {
        onAuthenticated?.();
        let answered = false;
        // The joiner gets the rest of the join budget to send its one request.
        const idle = setTimeout(() => channel.close(new NetError('ERR_JOIN_TIMEOUT', 'no join request')), HANDSHAKE_TIMEOUT_MS);
        channel.start({
          onFrame: (plain) => {
            if (answered) return;
            answered = true;
            clearTimeout(idle);
            const req = decodeJoinRequest(plain); // throws: channel closes
            void this.answer(req, remoteAddress).then((resp) => {
              if (channel.isClosed) return;
              channel.send(encodeJoinResponse(resp));
              channel.close();
            });
          },
          onClose: (err) => {
            clearTimeout(idle);
            if (err !== undefined) this.rejections.add(`join from ${remoteAddress}: ${err.message}`, err);
          },
        });
      },
      (err: Error) => {
        this.stats.rejectedHandshakes++;
        this.rejections.add(`join handshake from ${remoteAddress}: ${err.message}`, err);
      },
    );
  }

  private async answer(req: JoinRequest, remoteAddress: string): Promise<JoinResponse> {
    const limitMs = this.opts.handlerTimeoutMs ?? JOIN_HANDLER_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = await Promise.race([
        this.opts.onJoin({ ...req, remoteAddress }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new NetError('ERR_JOIN_TIMEOUT', `join not completed in ${limitMs} ms; retry`)), limitMs);
        }),
      ]);
      this.stats.joined++;
      return { ok: true, result };
    } catch (err) {
      this.stats.refused++;
      const e = err as { code?: unknown; message?: unknown };
      return { ok: false, code: typeof e.code === 'string' ? e.code : 'ERR_JOIN_REFUSED', message: String(e.message ?? err) };
    } finally {
      clearTimeout(timer);
    }
  }
}

export interface JoinClusterOptions {
  /** host:port of a member's join listener. */
  address: string;
  peerKey: Uint8Array;
  request: JoinRequest;
  timeoutMs?: number;
  /** Port used when `address` has none (the gossip port). */
  defaultPort?: number;
}

/**
 * Asks a member to add this node as a learner. Rejects with NetError: ERR_AUTH_FAILED (the
 * other side does not hold our secret), ERR_JOIN_REFUSED (the cluster said no; the message
 * says why), ERR_JOIN_TIMEOUT, or a connection error.
 */
export function joinCluster(opts: JoinClusterOptions): Promise<JoinResult> {
  const { host, port } = parseHostPort(opts.address, opts.defaultPort);
  const timeoutMs = opts.timeoutMs ?? JOIN_TIMEOUT_MS;
  return new Promise<JoinResult>((resolve, reject) => {
    const socket = connect({ host, port });
    socket.on('error', () => undefined);
    let done = false;
    const finish = (err: Error | undefined, result?: JoinResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err !== undefined) reject(err);
      else resolve(result!);
    };
    const timer = setTimeout(() => finish(new NetError('ERR_JOIN_TIMEOUT', `no join answer from ${opts.address} in ${timeoutMs} ms`)), timeoutMs);
    socket.once('error', (err) => finish(new NetError('ERR_CONNECTION_CLOSED', `cannot reach ${opts.address}: ${err.message}`, { cause: err })));
    socket.once('connect', () => {
      socket.write(JOIN_STREAM_MAGIC);
      clientHandshake(socket, { peerKey: opts.peerKey, purpose: Purpose.Join, timeoutMs, maxFrameBytes: MAX_JOIN_FRAME_BYTES }).then(
        (channel) => {
          channel.start({
            onFrame: (plain) => {
              const resp = decodeJoinResponse(plain);
              if (resp.ok) finish(undefined, resp.result);
              else finish(new JoinRefusedError(resp.code, `${opts.address} refused the join: ${resp.message} (${resp.code})`));
            },
            onClose: (err) => finish(err ?? new NetError('ERR_CONNECTION_CLOSED', `${opts.address} closed the join connection without an answer`)),
          });
          channel.send(encodeJoinRequest(opts.request));
        },
        (err: Error) => finish(err),
      );
    });
  });
}
