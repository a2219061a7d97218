/**
 * The client port's TCP listener: sorts each connection before a server sees it, so that one
 * port serves gRPC (grpc-js), etcd's JSON gateway (HTTP/1) and etcdctl 3.4's URL authorities.
 *
 * etcdctl 3.4's `endpoint status` / `endpoint hashkv` dial each endpoint exactly as written,
 * "http://127.0.0.1:2379" (with `--cluster`, the member list's client URLs, which always carry
 * the scheme); grpc-go sends that string as the HTTP/2 `:authority`. Go's server lets it pass;
 * nghttp2, under Node's HTTP/2, resets the stream (PROTOCOL_ERROR), since an authority holds no
 * "/". Nothing in Node turns that check off, so every client connection is sorted first:
 *
 * - we answer the client's preface with an empty SETTINGS frame (the server preface grpc-go
 *   waits for before it sends a request) and read frames until its first header block is whole
 *   and it has acknowledged our SETTINGS (that ACK is dropped: HTTP/2 did not send those);
 * - a valid authority (every other client): the bytes go back into the socket and the socket to
 *   grpc-js untouched, so the connection costs nothing more from then on;
 * - a URL as authority: the connection runs through a rewriter for its lifetime, which decodes
 *   each header block (HPACK, hpack.js), puts the URL's host:port in `:authority` and re-encodes
 *   the block as literals without indexing, so the server's HPACK table is never involved.
 *
 * A connection that opens with an HTTP/1 request line goes to the JSON gateway (json-gateway.ts),
 * as etcd serves its gateway on the same port; anything else goes to HTTP/2, to be refused there.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket, type TlsOptions } from 'node:tls';
import { WRAPPED_CONNECTION, certUser } from './client-tls.js';
import { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import hpack from 'hpack.js';
import { capConnections, type ConnectionCap } from '../connection-cap.js';

/** Where sorted connections go: grpc-js's connection injector. */
export interface ConnectionSink {
  injectConnection(connection: Duplex): void;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME_HEADER_BYTES = 9;
const enum FrameType {
  Headers = 1,
  Priority = 2,
  Settings = 4,
  WindowUpdate = 8,
  Continuation = 9,
}
const FLAG_ACK = 0x1;
const FLAG_END_STREAM = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
/** An empty SETTINGS frame: every setting at HTTP/2's default until nghttp2 sends its own. */
const EMPTY_SETTINGS = Buffer.from([0, 0, 0, FrameType.Settings, 0, 0, 0, 0, 0]);
/** HTTP/2's default SETTINGS_HEADER_TABLE_SIZE, which our empty SETTINGS leave in force. */
const HEADER_TABLE_BYTES = 4096;
/** HTTP/2's default SETTINGS_MAX_FRAME_SIZE: rewritten header blocks are cut to it. */
const MAX_FRAME_PAYLOAD_BYTES = 16_384;
/**
 * Bytes a connection may send before it is sorted; beyond, it goes to HTTP/2 as it is (closed
 * if it has not acknowledged our SETTINGS yet). A client need not wait for our SETTINGS before
 * its requests (Node's http2 does not): its first flight may hold a whole initial connection
 * window of DATA (65,535 bytes, in frames of 9-byte headers), a first header block of up to
 * MAX_HEADER_BLOCK_BYTES and other streams' header blocks. At 64 KiB, a client starting a
 * large put at once had its connection closed.
 */
export const MAX_SORTING_BYTES = 192 * 1024;
/** A header block larger than this, counting 9 bytes per frame it came in, is refused (the connection is closed). */
export const MAX_HEADER_BLOCK_BYTES = 64 * 1024;
/** A decoded header list larger than this is refused: Node's HTTP/2 default (maxHeaderListSize). */
export const MAX_HEADER_LIST_BYTES = 64 * 1024;
/** Reads a connection may take to be sorted (a client dribbling bytes would make each a copy). */
export const MAX_SORTING_READS = 256;

export interface SortingTimeouts {
  /** A client that has not acknowledged our SETTINGS by then is dropped. */
  settingsAckMs: number;
  /** A client that has, but sends no request by then, goes to HTTP/2 as it is (an idle channel). */
  firstRequestMs: number;
}

export const DEFAULT_SORTING_TIMEOUTS: SortingTimeouts = { settingsAckMs: 10_000, firstRequestMs: 5_000 };

/** The host:port of an authority written as a URL ("http://h:p", "https://h:p/x"), else undefined. */
export function authorityOfUrl(authority: string): string | undefined {
  const m = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(authority);
  return m ? m[1] : undefined;
}

interface Frame {
  type: number;
  flags: number;
  streamId: number;
  /** Offsets in the buffer it was read from. */
  start: number;
  payloadStart: number;
  end: number;
}

function readFrame(buf: Buffer, at: number): Frame | undefined {
  if (buf.length - at < FRAME_HEADER_BYTES) return undefined;
  const length = buf.readUIntBE(at, 3);
  const end = at + FRAME_HEADER_BYTES + length;
  if (end > buf.length) return undefined;
  return { type: buf[at + 3]!, flags: buf[at + 4]!, streamId: buf.readUInt32BE(at + 5) & 0x7fffffff, start: at, payloadStart: at + FRAME_HEADER_BYTES, end };
}

/** A HEADERS frame's header block fragment, without padding and priority fields. */
function headersFragment(buf: Buffer, f: Frame): Buffer {
  let from = f.payloadStart;
  let to = f.end;
  if (f.flags & FLAG_PADDED) {
    if (from >= to) throw new Error('padded HEADERS frame without its pad length');
    to -= buf[from]!;
    from += 1;
  }
  if (f.flags & FLAG_PRIORITY) from += 5;
  if (from > to) throw new Error('HEADERS frame shorter than its padding and priority fields');
  return buf.subarray(from, to);
}

/** Whether a connection's first bytes are an HTTP/1 request line ("maybe": too few bytes yet). */
export function http1Start(buf: Buffer): 'yes' | 'no' | 'maybe' {
  const head = buf.subarray(0, 8).toString('latin1');
  if (/^[A-Z]{3,7} /.test(head)) return 'yes';
  return /^[A-Z]*$/.test(head) && head.length < 8 ? 'maybe' : 'no';
}

/** Decodes header blocks of one connection in order (HPACK keeps state across them). */
class HeaderBlockDecoder {
  private readonly decompressor = hpack.decompressor.create({ table: { maxSize: HEADER_TABLE_BYTES } });
  private error: Error | undefined;

  constructor() {
    this.decompressor.on('error', (e) => (this.error = e));
  }

  decode(block: Buffer): Array<[string, string]> {
    this.decompressor.write(block);
    this.decompressor.execute();
    const headers: Array<[string, string]> = [];
    // Indexed fields make a small block decode to a huge list (an HPACK bomb): bounded as
    // nghttp2 bounds a header list, by RFC 7541's entry size.
    let listBytes = 0;
    for (let h = this.decompressor.read(); h !== null; h = this.decompressor.read()) {
      listBytes += h.name.length + h.value.length + 32;
      if (listBytes > MAX_HEADER_LIST_BYTES) this.error ??= new Error(`header list larger than ${MAX_HEADER_LIST_BYTES} bytes`);
      else headers.push([h.name, h.value]);
    }
    if (this.error) throw this.error;
    return headers;
  }
}

function encodeInteger(out: number[], value: number, prefixBits: number, firstByte: number): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(firstByte | value);
    return;
  }
  out.push(firstByte | max);
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
}

/** A header block of literals without indexing and without Huffman coding (RFC 7541 §6.2.2). */
function encodeLiteralBlock(headers: Array<[string, string]>): Buffer {
  const out: number[] = [];
  for (const [name, value] of headers) {
    out.push(0x00);
    for (const s of [name, value]) {
      const bytes = Buffer.from(s, 'latin1');
      encodeInteger(out, bytes.length, 7, 0x00);
      for (const b of bytes) out.push(b);
    }
  }
  return Buffer.from(out);
}

function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUIntBE(length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return h;
}

/** One header block as HEADERS + CONTINUATION frames no larger than the default frame size. */
function headerFrames(block: Buffer, streamId: number, endStream: boolean): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, first = true; first || at < block.length; first = false) {
    const piece = block.subarray(at, at + MAX_FRAME_PAYLOAD_BYTES);
    at += piece.length;
    const last = at >= block.length;
    const type = first ? FrameType.Headers : FrameType.Continuation;
    const flags = (last ? FLAG_END_HEADERS : 0) | (first && endStream ? FLAG_END_STREAM : 0);
    out.push(frameHeader(piece.length, type, flags, streamId), piece);
  }
  return out;
}

/**
 * The end of the rewritten headers' names, random for each process, so that no client can send
 * them: a call reads them when its peer is "unknown", which a rewritten connection's calls are,
 * but so is a call on any connection once the client has dropped it (its HTTP/2 session has no
 * socket left), and a header with a name known outside would then name that client's peer and
 * user (x-picloud-cert-user: root, then a dropped connection while the call awaited a barrier).
 */
const REWRITTEN_HEADER_SUFFIX = randomBytes(8).toString('hex');

/**
 * The header a rewritten connection's requests carry with the client's address and port:
 * HTTP/2 reads such a connection through a JS stream, which has no address, so gRPC calls on
 * it would all have the peer "unknown" and share what is counted per connection (watchers) or
 * per client (password checks). Any copy the client sends is dropped.
 */
export const REWRITTEN_PEER_HEADER = `x-picloud-peer-${REWRITTEN_HEADER_SUFFIX}`;

/**
 * The header a rewritten connection's requests carry with the user its verified client
 * certificate names (client-tls.ts certUser), for the same reason: grpc-js cannot see the TLS
 * socket behind the JS stream. Any copy the client sends is dropped.
 */
export const REWRITTEN_CERT_USER_HEADER = `x-picloud-cert-user-${REWRITTEN_HEADER_SUFFIX}`;

/**
 * The client-to-server bytes of a connection whose authority is a URL: every header block
 * re-encoded with the URL's host:port as `:authority` (and a request's with `peer` as
 * REWRITTEN_PEER_HEADER, `certUser` as REWRITTEN_CERT_USER_HEADER); every other frame passes
 * unchanged.
 */
export class AuthorityRewriter {
  private pending: Buffer = Buffer.alloc(0);
  private block: { streamId: number; endStream: boolean; fragments: Buffer[]; bytes: number } | undefined;

  private readonly decoder = new HeaderBlockDecoder();

  constructor(
    private readonly peer?: string,
    private readonly certUser?: string,
  ) {}

  /** Feeds client bytes; returns what HTTP/2 gets. Throws on a malformed stream. */
  push(chunk: Buffer): Buffer[] {
    const buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: Buffer[] = [];
    let at = 0;
    for (let f = readFrame(buf, at); f !== undefined; f = readFrame(buf, at)) {
      at = f.end;
      if (this.block !== undefined) {
        if (f.type !== FrameType.Continuation || f.streamId !== this.block.streamId) throw new Error('header block interrupted by another frame');
        this.addFragment(buf.subarray(f.payloadStart, f.end));
      } else if (f.type === FrameType.Headers) {
        this.block = { streamId: f.streamId, endStream: (f.flags & FLAG_END_STREAM) !== 0, fragments: [], bytes: 0 };
        this.addFragment(headersFragment(buf, f));
      } else {
        out.push(buf.subarray(f.start, f.end));
        continue;
      }
      if (f.flags & FLAG_END_HEADERS) out.push(...this.finishBlock());
    }
    // Copied: the rest must not pin the chunk it came in.
    this.pending = Buffer.from(buf.subarray(at));
    if (this.pending.length > MAX_HEADER_BLOCK_BYTES + FRAME_HEADER_BYTES + MAX_FRAME_PAYLOAD_BYTES) throw new Error('frame too large');
    return out;
  }

  private addFragment(fragment: Buffer): void {
    const b = this.block!;
    b.fragments.push(Buffer.from(fragment));
    // Frames count too: empty CONTINUATIONs would otherwise grow the list without limit.
    b.bytes += fragment.length + FRAME_HEADER_BYTES;
    if (b.bytes > MAX_HEADER_BLOCK_BYTES) throw new Error(`header block larger than ${MAX_HEADER_BLOCK_BYTES} bytes`);
  }

  private finishBlock(): Buffer[] {
    const b = this.block!;
    this.block = undefined;
    const headers: [string, string][] = [];
    let request = false;
    for (const [name, value] of this.decoder.decode(Buffer.concat(b.fragments))) {
      if (name === REWRITTEN_PEER_HEADER || name === REWRITTEN_CERT_USER_HEADER) continue;
      if (name === ':method') request = true;
      headers.push([name, name === ':authority' ? (authorityOfUrl(value) ?? value) : value]);
    }
    if (request && this.peer !== undefined) headers.push([REWRITTEN_PEER_HEADER, this.peer]);
    if (request && this.certUser !== undefined) headers.push([REWRITTEN_CERT_USER_HEADER, this.certUser]);
    return headerFrames(encodeLiteralBlock(headers), b.streamId, b.endStream);
  }
}

/**
 * A connection as a JS stream: the bytes already read, then the socket's, each passed through
 * `transform` (the AuthorityRewriter, or nothing); what is written goes to the socket as it is.
 * A JS stream, not the socket, so that HTTP/2 or HTTP/1 reads it through JS and sees the bytes
 * sorting took (given a socket, both read its handle natively and would skip them).
 */
class RelayConnection extends Duplex {
  constructor(
    private readonly socket: Socket,
    buffered: Buffer,
    private readonly transform: (chunk: Buffer) => Buffer[],
  ) {
    super();
    this.feed(buffered);
    socket.on('data', (chunk: Buffer) => this.feed(chunk));
    socket.on('end', () => this.push(null));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy());
    socket.on('timeout', () => this.emit('timeout'));
    socket.resume();
  }

  /** The connection itself, for what only it knows (a TLS client's certificate: client-tls.ts certUser). */
  get [WRAPPED_CONNECTION](): Socket {
    return this.socket;
  }

  // For the JSON gateway's peer names. (grpc-js sees Node's JSStreamSocket around this stream,
  // which has no address: a rewritten connection's calls have the peer "unknown".)
  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }
  get remotePort(): number | undefined {
    return this.socket.remotePort;
  }
  get remoteFamily(): string | undefined {
    return this.socket.remoteFamily;
  }
  get localAddress(): string | undefined {
    return this.socket.localAddress;
  }
  get localPort(): number | undefined {
    return this.socket.localPort;
  }

  /** Node's HTTP/1 server sets its idle and keep-alive timeouts through this. */
  setTimeout(ms: number, callback?: () => void): this {
    this.socket.setTimeout(ms);
    if (callback !== undefined) this.once('timeout', callback);
    return this;
  }

  setKeepAlive(enable?: boolean, initialDelay?: number): this {
    this.socket.setKeepAlive(enable, initialDelay);
    return this;
  }

  private feed(chunk: Buffer): void {
    if (this.destroyed || chunk.length === 0) return;
    try {
      for (const piece of this.transform(chunk)) if (!this.push(piece)) this.socket.pause();
    } catch (err) {
      this.destroy(err as Error);
    }
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.socket.write(chunk, callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.socket.end(callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.socket.destroy();
    callback(err);
  }
}

/** What sorting has learned of a connection so far. */
class ConnectionSorter {
  private buf: Buffer = Buffer.alloc(0);
  private at = 0;
  private settingsSent = false;
  /** The client's acknowledgement of our SETTINGS: [start, end) in buf, dropped at hand-over. */
  private ack: [number, number] | undefined;
  private firstBlock: { streamId: number; fragments: Buffer[] } | undefined;
  /** 'url': the first request's authority is a URL; 'as-is': anything else, or no verdict needed. */
  private verdict: 'url' | 'as-is' | undefined;
  private timer: NodeJS.Timeout;
  private readonly onData = (chunk: Buffer): void => this.receive(chunk);
  private readonly onError = (): void => undefined;

  private readonly onClose = (): void => {
    clearTimeout(this.timer);
    this.done();
  };

  constructor(
    private readonly socket: Socket,
    private readonly sink: ConnectionSink,
    private readonly done: () => void,
    private readonly timeouts: SortingTimeouts,
    private readonly http1: ConnectionSink | undefined,
  ) {
    this.timer = setTimeout(() => socket.destroy(), timeouts.settingsAckMs);
    socket.on('data', this.onData);
    socket.once('close', this.onClose);
    socket.on('error', this.onError);
  }

  private reads = 0;

  private receive(chunk: Buffer): void {
    if (++this.reads > MAX_SORTING_READS) return void this.socket.destroy();
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    if (!this.settingsSent) {
      const n = Math.min(this.buf.length, PREFACE.length);
      if (!this.buf.subarray(0, n).equals(PREFACE.subarray(0, n))) {
        // HTTP/1 goes to the JSON gateway; anything else to HTTP/2, which refuses it.
        const http1 = this.http1 === undefined ? 'no' : http1Start(this.buf);
        if (http1 === 'maybe') return;
        return this.handOver(http1 === 'yes' ? 'http1' : 'as-is');
      }
      if (this.buf.length < PREFACE.length) return;
      this.socket.write(EMPTY_SETTINGS);
      this.settingsSent = true;
      this.at = PREFACE.length;
    }
    for (let f = readFrame(this.buf, this.at); f !== undefined; f = readFrame(this.buf, this.at)) {
      this.at = f.end;
      this.sortFrame(f);
    }
    if (this.ack !== undefined && this.verdict !== undefined) return this.handOver(this.verdict === 'url' ? 'rewrite' : 'as-is');
    if (this.buf.length > MAX_SORTING_BYTES) {
      if (this.ack === undefined) this.socket.destroy();
      else this.handOver('as-is');
    }
  }

  private sortFrame(f: Frame): void {
    if (f.type === FrameType.Settings && (f.flags & FLAG_ACK) !== 0 && this.ack === undefined) {
      this.ack = [f.start, f.end];
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.handOver('as-is'), this.timeouts.firstRequestMs);
      return;
    }
    if (this.verdict !== undefined) return;
    if (this.firstBlock === undefined && f.type === FrameType.Headers) {
      try {
        this.firstBlock = { streamId: f.streamId, fragments: [headersFragment(this.buf, f)] };
      } catch {
        this.verdict = 'as-is';
        return;
      }
    } else if (this.firstBlock !== undefined && f.type === FrameType.Continuation && f.streamId === this.firstBlock.streamId) {
      this.firstBlock.fragments.push(this.buf.subarray(f.payloadStart, f.end));
    } else {
      // Connection-level frames before a request wait with it; anything else (a PING, a
      // frame that breaks a header block) means this connection is not one we must fix.
      const early = f.type === FrameType.Settings || f.type === FrameType.WindowUpdate || f.type === FrameType.Priority;
      if (!early || this.firstBlock !== undefined) this.verdict = 'as-is';
      return;
    }
    if ((f.flags & FLAG_END_HEADERS) !== 0) this.verdict = this.judge(Buffer.concat(this.firstBlock.fragments));
  }

  private judge(block: Buffer): 'url' | 'as-is' {
    try {
      const authority = new HeaderBlockDecoder().decode(block).find(([name]) => name === ':authority');
      return authority !== undefined && authorityOfUrl(authority[1]) !== undefined ? 'url' : 'as-is';
    } catch {
      return 'as-is'; // HTTP/2 answers a bad block with COMPRESSION_ERROR itself
    }
  }

  private handOver(how: 'as-is' | 'rewrite' | 'http1'): void {
    clearTimeout(this.timer);
    this.done();
    this.socket.pause();
    this.socket.removeListener('data', this.onData);
    this.socket.removeListener('close', this.onClose);
    this.socket.removeListener('error', this.onError);
    const bytes = this.ack === undefined ? this.buf : Buffer.concat([this.buf.subarray(0, this.ack[0]), this.buf.subarray(this.ack[1])]);
    if (how === 'rewrite') {
      // The address as grpc-js's getPeer() writes it for a socket it can see.
      const rewriter = new AuthorityRewriter(`${this.socket.remoteAddress ?? ''}:${this.socket.remotePort ?? 0}`, certUser(this.socket));
      const preface = bytes.subarray(0, PREFACE.length);
      let first = true;
      this.sink.injectConnection(new RelayConnection(this.socket, bytes, (chunk) => {
        if (!first) return rewriter.push(chunk);
        first = false;
        return [preface, ...rewriter.push(chunk.subarray(PREFACE.length))];
      }));
    } else if (how === 'http1') {
      // Node's HTTP/1 server is no hot path here (the JSON gateway): a JS stream is fine.
      this.http1!.injectConnection(new RelayConnection(this.socket, bytes, (chunk) => [chunk]));
    } else {
      // HTTP/2 takes bytes already read from the socket's buffer (Node does this for sockets
      // that were read before), then reads the handle natively: no cost from here on.
      if (bytes.length > 0) this.socket.unshift(bytes);
      this.sink.injectConnection(this.socket);
    }
  }
}

/** A TCP listener whose connections are sorted (see the top of this file), then given to `sink`. */
export class SortingListener {
  /** Connections not yet handed over; closed with the listener. */
  private readonly sorting = new Set<Socket>();
  /**
   * TLS connections still in their handshake, by the client's address and port (Node hands
   * over the TLS socket without its TCP socket; the pair names one live connection).
   */
  private readonly handshaking = new Map<string, Socket>();
  private closed = false;

  private constructor(private readonly server: Server) {}

  /**
   * `http1`: where HTTP/1 connections go (the JSON gateway); without it they go to HTTP/2 too.
   * `tls`: serve TLS (client-tls.ts) with the options it gives when a connection arrives (a new
   * object when the certificate changed); the decrypted connection is sorted and handed over.
   */
  static async listen(
    host: string,
    port: number,
    sink: ConnectionSink,
    timeouts = DEFAULT_SORTING_TIMEOUTS,
    http1?: ConnectionSink,
    onError?: (err: Error) => void,
    tls?: () => TlsOptions,
    connections?: ConnectionCap,
  ): Promise<SortingListener> {
    let inUse = tls?.();
    const server = inUse === undefined ? createServer() : createTlsServer(inUse);
    const listener = new SortingListener(server);
    capConnections(server, connections);
    const sort = (socket: Socket): void => {
      listener.sorting.add(socket);
      new ConnectionSorter(socket, sink, () => listener.sorting.delete(socket), timeouts, http1);
    };
    const peerKey = (s: Socket): string => `${s.remoteAddress ?? ''}:${s.remotePort ?? 0}`;
    server.on('connection', (socket: Socket) => {
      socket.setNoDelay(true);
      if (tls === undefined) return sort(socket);
      const key = peerKey(socket);
      listener.handshaking.set(key, socket);
      socket.once('close', () => listener.handshaking.get(key) === socket && listener.handshaking.delete(key));
    });
    if (tls !== undefined) {
      // Ahead of Node's own listener, which starts the handshake with the context set here.
      server.prependListener('connection', () => {
        const now = tls();
        if (now === inUse) return;
        inUse = now;
        (server as TlsServer).setSecureContext(now);
      });
      // Node has checked a required client certificate already (rejectUnauthorized).
      server.on('secureConnection', (socket: TLSSocket) => {
        listener.handshaking.delete(peerKey(socket));
        if (listener.closed) socket.destroy();
        else sort(socket);
      });
      // A failed handshake (no or a wrong certificate, plain text, the handshake timeout): Node
      // only reports it, so the connection is closed here. It is the client's problem, not the
      // listener's.
      server.on('tlsClientError', (_err: Error, socket: TLSSocket) => socket.destroy());
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port }, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
    // An accept error (EMFILE) must not take the process down; the listener keeps listening.
    server.on('error', (err) => onError?.(err));
    return listener;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** Stops accepting and drops connections still being sorted; handed-over ones are HTTP/2's. */
  close(): void {
    this.closed = true;
    this.server.close();
    for (const s of this.sorting) s.destroy();
    this.sorting.clear();
    for (const s of this.handshaking.values()) s.destroy();
    this.handshaking.clear();
  }
}
