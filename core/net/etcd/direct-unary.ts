/**
 * Unary gRPC calls answered straight on their HTTP/2 streams, ahead of grpc-js.
 *
 * grpc-js gives every call an intercepting call, a listener chain, a Metadata object built
 * from the headers, a stream decoder, a Duplex-backed call object and deadline bookkeeping, and
 * it ends the stream only from the callback of the response's write, a turn later. Measured on
 * a member at 16 puts in flight, grpc-js and node:http2 made about half of the ~44 KB a put
 * allocates on the leader and most of what survives a scavenge (so most of what its full
 * collections sweep); a bare node:http2 unary server took ~51 µs of CPU a call against
 * grpc-js's ~78. So the etcd server's unary methods (KV, Lease, Cluster, Maintenance, Auth) are
 * read and answered here; streams (Watch, LeaseKeepAlive, Snapshot) stay with grpc-js, and so
 * does a call this path does not take on (a compressed request, a content type grpc-js refuses).
 *
 * On the wire it is grpc-js's answer: the same response headers, trailers and trailers-only
 * errors, the same limits and texts (a message over the receive limit, no request message, a
 * second one, an undecodable one, a bad grpc-timeout, a passed deadline). test/net/direct-unary
 * compares the raw HTTP/2 answers of both paths and fails if the direct path stops being taken.
 *
 * The hook is grpc-js's own 'stream' listener on the HTTP/2 server behind its connection
 * injector (not a public API): hookGrpcStreams replaces it with a dispatcher that passes every
 * other stream to it unchanged, and leaves everything as it was (reporting false) where it does
 * not find that server as expected, as after a grpc-js upgrade.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Http2Server, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { TLSSocket, type PeerCertificate } from 'node:tls';
import { GRPC_MESSAGE_PREFIX_BYTES } from './eager-send.js';
import { UnaryTrailers } from './http2-trailers.js';
import { ACCEPTED_REQUEST_ENCODINGS } from './request-encoding.js';

/** A gRPC status to end a call with (grpc-js's ServerErrorResponse has these two). */
export interface DirectStatus {
  code: number;
  details: string;
}

/**
 * A unary method: `decode` reads a request message as it arrives (throws the status to end the
 * call with, as grpc-js, which decodes each message once whole, before the half-close); `run`
 * runs the request and encodes the response, or rejects with the status.
 */
export interface DirectMethod {
  decode(message: Buffer): object;
  run(request: object, call: DirectCall): Promise<Buffer>;
}

// grpc-js's status codes (grpc.status is a runtime enum; this module needs only these).
const INTERNAL = 13;
const UNIMPLEMENTED = 12;
const RESOURCE_EXHAUSTED = 8;
const DEADLINE_EXCEEDED = 4;

/** grpc-js's response headers and trailers (server-interceptors.ts), kept identical on the wire (the accepted encodings as on grpc-js's path: request-encoding.ts). */
const RESPONSE_HEADERS = {
  ':status': 200,
  'content-type': 'application/grpc+proto',
  'grpc-accept-encoding': ACCEPTED_REQUEST_ENCODINGS,
  'grpc-encoding': 'identity',
};
const END_STREAM = { endStream: true };
const DEADLINE_REGEX = /(\d{1,8})\s*([HMSmun])/;
const DEADLINE_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000_001 };

/** The longest a Node timer waits (longer ones fire at once, with a warning). */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The longest grpc-timeout grpc-js keeps whole: 596 hours (24.8 days) is under 2^31 ms. */
const LONGEST_GRPC_JS_TIMEOUT = '596H';

/**
 * A grpc-timeout that grpc-js would take as already passed (over 2^31 ms: it computes `ms | 0`)
 * is made its longest, 596 hours, before grpc-js reads the headers: a client asking 30 days
 * (grpc-go sends `2592000S`) is not failed with DEADLINE_EXCEEDED at once.
 */
export function clampGrpcTimeout(headers: IncomingHttpHeaders): void {
  const value = headers['grpc-timeout'];
  if (typeof value !== 'string') return;
  const m = DEADLINE_REGEX.exec(value);
  if (m !== null && Number(m[1]) * DEADLINE_UNIT_MS[m[2]!]! > MAX_TIMER_MS) headers['grpc-timeout'] = LONGEST_GRPC_JS_TIMEOUT;
}

const EMPTY = Buffer.alloc(0);
/** grpc-js's test of a text metadata value (metadata.ts isLegalNonBinaryValue). */
const LEGAL_TEXT_VALUE = /^[ -~]*$/;

function ignore(): void {}

/** grpc-js's OK trailers, sent in the same write as the response (http2-trailers.ts). */
const OK_TRAILERS = new UnaryTrailers({ 'grpc-status': 0, 'grpc-message': 'OK' });

/**
 * One unary call on its stream: what a call context reads of it (the grpc-js call's getPeer,
 * metadata, auth context, cancelled flag and deadline, computed the same way), and its answer.
 */
export class DirectCall {
  /** Milliseconds since the epoch, as grpc-js's getDeadline(); Infinity without grpc-timeout. */
  private deadline = Infinity;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private answered = false;
  /** What is kept of the request stream: its first message and a second one (`keptBytes` of it). */
  private kept: Buffer = EMPTY;
  private keptBytes = 0;
  private received = 0;
  /** The lengths the first and second message prefixes announce, once received (-1 before). */
  private firstLength = -1;
  private secondLength = -1;
  /** The next message prefix: where it starts in the request stream, its bytes read so far, its length so far. */
  private prefixAt = 0;
  private prefixBytes = 0;
  private prefixLength = 0;
  private prefixesRead = 0;
  /** The first message, decoded once whole. */
  private request: object | undefined;

  constructor(
    private readonly stream: ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
    private readonly method: DirectMethod,
    private readonly maxMessageBytes: number,
  ) {}

  /**
   * The request's text metadata, read from its headers as grpc-js's Metadata.fromHttp2Headers
   * does: each value as sent, but one with a character gRPC does not allow in text metadata
   * (a tab, a byte over 0x7e) dropped, as grpc-js drops it (a token "to\tk" is no token).
   */
  readonly metadata = {
    get: (key: string): string[] => {
      const v = this.headers[key];
      if (v === undefined) return [];
      if (!Array.isArray(v)) return LEGAL_TEXT_VALUE.test(v) ? [v] : [];
      return v.filter((one) => LEGAL_TEXT_VALUE.test(one));
    },
  };

  get cancelled(): boolean {
    return this.stream.destroyed || this.stream.closed;
  }

  getDeadline(): number {
    return this.deadline;
  }

  getPeer(): string {
    const socket = this.stream.session?.socket;
    if (!socket?.remoteAddress) return 'unknown';
    return socket.remotePort ? `${socket.remoteAddress}:${socket.remotePort}` : socket.remoteAddress;
  }

  getAuthContext(): { transportSecurityType?: string; sslPeerCertificate?: PeerCertificate } {
    const socket = this.stream.session?.socket;
    if (!(socket instanceof TLSSocket) || !socket.authorized) return {};
    const cert = socket.getPeerCertificate();
    return { transportSecurityType: 'ssl', sslPeerCertificate: cert.raw ? cert : undefined };
  }

  /** @internal Reads the request (one message, then the client's half-close) and runs the method. */
  start(): void {
    const stream = this.stream;
    // A stream error comes with 'close', which is all a call needs to know (as in grpc-js).
    stream.once('error', ignore);
    stream.once('close', () => clearTimeout(this.deadlineTimer));
    // Read as metadata, as grpc-js does: the first value, none if it is not legal text.
    const timeout = this.headers['grpc-timeout'] === undefined ? undefined : this.metadata.get('grpc-timeout')[0];
    if (timeout !== undefined) {
      const m = DEADLINE_REGEX.exec(timeout);
      if (m === null) {
        this.fail({ code: INTERNAL, details: `Invalid grpc-timeout value "${timeout}"` });
        return;
      }
      // Exact, where grpc-js's `| 0` turns one over ~24.8 days (2^31 ms) into one already passed.
      this.deadline = Date.now() + Number(m[1]) * DEADLINE_UNIT_MS[m[2]!]!;
      this.armDeadline();
    }
    stream.on('data', (chunk: Buffer) => this.receive(chunk));
    stream.once('end', () => this.halfClosed());
  }

  /** Ends the call at its deadline (in steps: a timer waits at most MAX_TIMER_MS). */
  private armDeadline(): void {
    const left = this.deadline - Date.now();
    this.deadlineTimer =
      left > MAX_TIMER_MS ? setTimeout(() => this.armDeadline(), MAX_TIMER_MS) : setTimeout(() => this.fail({ code: DEADLINE_EXCEEDED, details: 'Deadline exceeded' }), left);
  }

  /** Sends the response message and the OK trailers. */
  reply(message: Buffer): void {
    if (!this.settle()) return;
    const frame = Buffer.allocUnsafe(GRPC_MESSAGE_PREFIX_BYTES + message.length);
    frame[0] = 0;
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, GRPC_MESSAGE_PREFIX_BYTES);
    OK_TRAILERS.respond(this.stream, RESPONSE_HEADERS, frame);
  }

  /** Ends the call with `status`, as a trailers-only response (nothing else has been sent). */
  fail(status: DirectStatus): void {
    if (!this.settle()) return;
    this.stream.respond({ 'grpc-status': status.code, 'grpc-message': encodeURI(status.details), ':status': 200, 'content-type': 'application/grpc+proto' }, END_STREAM);
  }

  /** Whether the call may still be answered; from now on it is answered (once). */
  private settle(): boolean {
    if (this.answered) return false;
    this.answered = true;
    clearTimeout(this.deadlineTimer);
    return !this.cancelled;
  }

  /**
   * A chunk of the request stream, read in grpc-js's order: every message prefix in it first (its
   * decoder throws on one announcing more than the limit while it reads the chunk, whichever
   * message it starts), then each message now whole is decoded (a second one that decodes is
   * refused as a second message). Only the first two messages are held: the call is answered by
   * the time a second one is whole.
   */
  private receive(chunk: Buffer): void {
    if (this.answered || !this.scan(chunk)) return;
    this.keep(chunk);
    this.received += chunk.length;
    this.decodeWhole();
  }

  /** Reads the message prefixes in `chunk`; false once the call is refused for a length over the limit. */
  private scan(chunk: Buffer): boolean {
    for (let at = this.prefixAt + this.prefixBytes - this.received; at < chunk.length; ) {
      // Byte 0 of a prefix is the compressed flag, bytes 1-4 the length (big-endian).
      if (this.prefixBytes > 0) this.prefixLength = this.prefixLength * 256 + chunk[at]!;
      at++;
      if (++this.prefixBytes < GRPC_MESSAGE_PREFIX_BYTES) continue;
      const length = this.prefixLength;
      if (this.prefixesRead === 0) this.firstLength = length;
      else if (this.prefixesRead === 1) this.secondLength = length;
      this.prefixesRead++;
      if (length > this.maxMessageBytes) return this.tooLarge(length);
      this.prefixAt += GRPC_MESSAGE_PREFIX_BYTES + length;
      this.prefixBytes = 0;
      this.prefixLength = 0;
      at = this.prefixAt - this.received;
    }
    return true;
  }

  /** Decodes the messages now whole: the request, then (refusing the call either way) a second one. */
  private decodeWhole(): void {
    if (this.firstLength < 0) return;
    const second = GRPC_MESSAGE_PREFIX_BYTES + this.firstLength;
    if (this.request === undefined && this.received >= second) {
      // The compressed flag is not looked at: without grpc-encoding, grpc-js reads the message
      // as identity whatever the flag says; with one, the call went to grpc-js.
      this.request = this.decoded(this.kept.subarray(GRPC_MESSAGE_PREFIX_BYTES, second));
      if (this.request === undefined) return;
    }
    if (this.secondLength >= 0 && this.received >= second + GRPC_MESSAGE_PREFIX_BYTES + this.secondLength) {
      if (this.decoded(this.kept.subarray(second + GRPC_MESSAGE_PREFIX_BYTES, second + GRPC_MESSAGE_PREFIX_BYTES + this.secondLength)) !== undefined) {
        this.fail({ code: UNIMPLEMENTED, details: `Received a second request message for server streaming method ${String(this.headers[':path'])}` });
      }
    }
  }

  /** `message` decoded, or undefined once the call has been failed with why not. */
  private decoded(message: Buffer): object | undefined {
    try {
      return this.method.decode(message);
    } catch (status) {
      this.fail(status as DirectStatus);
      return undefined;
    }
  }

  /** The bytes that can still matter: up to the end of the first prefix, message, or second message. */
  private keepLimit(): number {
    if (this.firstLength < 0) return GRPC_MESSAGE_PREFIX_BYTES;
    const second = 2 * GRPC_MESSAGE_PREFIX_BYTES + this.firstLength;
    return this.secondLength < 0 ? second : second + this.secondLength;
  }

  /**
   * Keeps what can still matter of `chunk` (keepLimit; the first chunk all of it, as it is,
   * without a copy). The buffer grows by doubling, so a message sent in tiny DATA frames costs
   * each byte a bounded number of copies, not one per frame.
   */
  private keep(chunk: Buffer): void {
    if (this.received === 0) {
      this.kept = chunk;
      this.keptBytes = chunk.length;
      return;
    }
    // Once bytes were dropped, none after them can matter (the limit grows only as prefixes are read).
    if (this.keptBytes !== this.received) return;
    const limit = this.keepLimit();
    const wanted = Math.min(chunk.length, limit - this.keptBytes);
    if (wanted <= 0) return;
    const needed = this.keptBytes + wanted;
    if (needed > this.kept.length) {
      const grown = Buffer.allocUnsafe(Math.max(needed, Math.min(2 * this.kept.length, limit)));
      this.kept.copy(grown, 0, 0, this.keptBytes);
      this.kept = grown;
    }
    chunk.copy(this.kept, this.keptBytes, 0, wanted);
    this.keptBytes = needed;
  }

  private tooLarge(length: number): false {
    this.fail({ code: RESOURCE_EXHAUSTED, details: `Received message larger than max (${length} vs ${this.maxMessageBytes})` });
    return false;
  }

  private halfClosed(): void {
    if (this.answered) return;
    const request = this.request;
    if (request === undefined) {
      this.fail({ code: UNIMPLEMENTED, details: `Received no request message for server streaming method ${String(this.headers[':path'])}` });
      return;
    }
    this.method.run(request, this).then(
      (response) => this.reply(response),
      (status: DirectStatus) => this.fail(status),
    );
  }
}

/** grpc-js's handler of a new HTTP/2 stream. */
export type GrpcStreamHandler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => void;

/**
 * Puts `dispatch` in front of grpc-js on the HTTP/2 server behind `server`'s connection injector
 * (call right after createConnectionInjector): it sees every new stream first and passes to
 * grpc-js's handler what it does not answer itself. Returns false, changing nothing, where
 * grpc-js's server or listener is not found.
 */
export function hookGrpcStreams(server: grpc.Server, dispatch: (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, grpcHandler: GrpcStreamHandler) => void): boolean {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) return false;
  const h2 = [...(servers as Map<Http2Server, unknown>).keys()].at(-1)!;
  const listeners = h2.listeners('stream');
  if (listeners.length !== 1 || typeof h2.on !== 'function') return false;
  const listener = listeners[0] as GrpcStreamHandler;
  const grpcHandler: GrpcStreamHandler = (stream, headers, flags) => listener.call(h2, stream, headers, flags);
  h2.removeListener('stream', listener);
  h2.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => {
    // node:http2 emits a stream a tick after its headers: one its client reset in the same read
    // is closed by then. Nothing is owed to it, and answering would throw (respond() on a closed
    // stream; grpc-js's own answer to an unknown method did, and the process exited).
    if (stream.closed || stream.destroyed) return dropStream(stream);
    dispatch(stream, headers, flags, grpcHandler);
  });
  return true;
}

/**
 * Ends a stream nothing more is owed to. A reset with an error code is emitted as an 'error' a
 * tick later: with no listener, it would end the process.
 */
export function dropStream(stream: ServerHttp2Stream): void {
  stream.on('error', () => undefined);
  stream.destroy();
}

/** The method a stream calls, when this path takes it on: a gRPC content type and no compression. */
export function directMethod(headers: IncomingHttpHeaders, route: (path: string) => DirectMethod | undefined): DirectMethod | undefined {
  const path = headers[':path'];
  if (path === undefined) return undefined;
  const method = route(path);
  if (method === undefined) return undefined;
  const type = headers['content-type'];
  if (typeof type !== 'string' || !type.startsWith('application/grpc')) return undefined;
  const encoding = headers['grpc-encoding'];
  return encoding === undefined || encoding === 'identity' ? method : undefined;
}
