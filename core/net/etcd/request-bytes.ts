/**
 * A bound on the request bytes the client port holds for gRPC messages not yet whole.
 *
 * Both unary paths (direct-unary.ts and grpc-js) read a request stream as it arrives and keep a
 * message until its last byte is in, and Node gives HTTP/2 flow-control credit back as the
 * bytes are read: nothing stopped a client from starting messages it never finishes. Measured
 * before this module: one connection, 200 streams each sending 2 MiB of a message announced 10
 * bytes longer, grew a member's RSS by ~0.5 GiB (etcd 3.4.23 by 435 MiB), held until the
 * client left; a connection may open MAX_CONCURRENT_STREAMS of them.
 *
 * Here each message's announced length is reserved as its prefix arrives (a stream's message
 * whole in the DATA it started in needs nothing: its call takes it at once; a single request,
 * unary or server-streaming, stays reserved until the client half-closes, as its call holds it
 * that long), against the member's and the connection's bounds. A stream
 * whose message does not fit stops being read (stream.pause(): HTTP/2 flow control then stops
 * its client once the stream's window is used) until a reservation is released; past
 * `waitingStreams` such streams, a further one is reset with ENHANCE_YOUR_CALM, which gRPC
 * clients report as RESOURCE_EXHAUSTED. What a member holds for unfinished messages is then at
 * most `memberBytes`, plus a flow-control window (and a DATA frame read past it) per waiting stream.
 * Reserving a whole message before its body is read, never part of one, is what keeps streams
 * from holding halves of the room each while all wait for more (the connection's bound is
 * raised to one largest message for that reason).
 *
 * Room goes in arrival order, so that a large message cannot be passed for ever by a run of small
 * ones: a message waiting for the member's room holds back every later one, a message waiting
 * only for its connection's room holds back the later ones on that connection (another
 * connection's are not held up by it, until the member's room would not hold it either). A
 * message whole in the chunk that holds its prefix is not held back: its bytes are already in.
 */
import { constants, type ServerHttp2Stream } from 'node:http2';
import { GRPC_MESSAGE_PREFIX_BYTES } from './eager-send.js';

export interface RequestBytesLimits {
  /** Announced bytes of unfinished messages, all connections together. */
  memberBytes: number;
  /** The same, one connection (at least one largest message). */
  connectionBytes: number;
  /** Streams stopped until their message fits, all connections together; a further one is reset. */
  waitingStreams: number;
  /** How fast a reserved message must arrive (MIN_REQUEST_BYTES_PER_SEC; see requestDeadlineMs). */
  minBytesPerSec?: number;
  /** The least time a reserved message has, however small (MIN_REQUEST_DEADLINE_MS). */
  minDeadlineMs?: number;
}

/** ~40 of etcd's largest requests (1.5 MiB) arriving at once; a Pi has 1-8 GiB. */
export const MAX_HELD_REQUEST_BYTES = 64 * 1024 * 1024;
/** Four of etcd's largest requests arriving at once on one connection. */
export const MAX_HELD_REQUEST_BYTES_PER_CONNECTION = 8 * 1024 * 1024;
/** Each may hold up to its HTTP/2 window (64 KiB) while stopped: 256 of them, 16 MiB. */
export const MAX_WAITING_REQUEST_STREAMS = 256;
/**
 * A reservation is room others wait for: a client that announces a large message and then sends
 * it a byte at a time would hold it for as long as it likes (26 such gateway bodies held the
 * whole member's room: every large request waited). So a reserved message must be whole (a
 * single request: half-closed) within its size at this rate, or MIN_REQUEST_DEADLINE_MS if that
 * is longer, or its stream is reset (its connection closed, on the gateway): 48 s for etcd's
 * largest request, well within reach of a board on slow Wi-Fi.
 */
export const MIN_REQUEST_BYTES_PER_SEC = 32 * 1024;
export const MIN_REQUEST_DEADLINE_MS = 10_000;

/** The bounds of one client port, and the streams waiting for room under them. */
export class RequestBytesBudget {
  private held = 0;
  private readonly heldByConnection = new Map<object, number>();
  /** In arrival order: room goes to them in that order (see the module's comment). */
  private readonly waiting = new Set<Waiter>();
  private readonly waitingByConnection = new Map<object, number>();
  private readonly limits: RequestBytesLimits;
  /** Streams reset (and gateway requests refused) for want of room: `waitingStreams` already waiting, or a whole single request that did not fit. */
  refusedStreams = 0;
  /** Streams reset (gateway connections closed) because a reserved message came too slowly. */
  tooSlowStreams = 0;

  /**
   * `maxMessageBytes`: the receive limit (a longer message is refused by the call itself, not
   * reserved); `largestBytes`: the most one request may reserve (the JSON gateway's bodies are
   * larger), which both bounds are raised to, so that each request fits once the others are gone.
   */
  constructor(
    limits: RequestBytesLimits,
    readonly maxMessageBytes: number,
    largestBytes = maxMessageBytes,
  ) {
    const connectionBytes = Math.max(limits.connectionBytes, maxMessageBytes, largestBytes);
    this.limits = { ...limits, connectionBytes, memberBytes: Math.max(limits.memberBytes, connectionBytes) };
  }

  /** How long a message of `bytes` may take to arrive once reserved (MIN_REQUEST_BYTES_PER_SEC). */
  deadlineMs(bytes: number): number {
    const rate = this.limits.minBytesPerSec ?? MIN_REQUEST_BYTES_PER_SEC;
    return Math.max(this.limits.minDeadlineMs ?? MIN_REQUEST_DEADLINE_MS, (bytes / rate) * 1000);
  }

  /** Announced bytes reserved for unfinished messages now. */
  get heldBytes(): number {
    return this.held;
  }

  /** Streams stopped now until their message fits. */
  get waitingStreams(): number {
    return this.waiting.size;
  }

  /**
   * Reads `stream`'s gRPC framing beside its call (before the call's own 'data' listener is
   * added). `singleRequest`: the method takes one request message (unary, server-streaming),
   * which its call holds from when it is whole until the client half-closes: it stays reserved
   * until then, and a stream whose whole message finds no room is reset at once (its bytes
   * are in; waiting would hold them).
   */
  watch(stream: ServerHttp2Stream, singleRequest = false): void {
    const connection = stream.session;
    if (connection === undefined) return;
    new MessageReader(this, stream, connection, singleRequest).start();
  }

  /**
   * `bytes` for a request body on `connection` (the JSON gateway's): reserved now or once room
   * is returned (`admitted` true), or refused because too many are waiting (false). release()
   * returns the room, or gives up the wait (`admitted` then settles false).
   */
  reserve(connection: object, bytes: number): Reservation {
    const r = new Reservation(this, connection, bytes);
    if (this.tryReserveInTurn(connection, bytes)) r.admit();
    else if (!this.enqueue(r)) r.refuse();
    return r;
  }

  /** @internal Reserves `bytes` if they fit, whoever waits (for bytes already in). */
  tryReserve(connection: object, bytes: number): boolean {
    const onConnection = this.heldByConnection.get(connection) ?? 0;
    if (this.held + bytes > this.limits.memberBytes || onConnection + bytes > this.limits.connectionBytes) return false;
    this.held += bytes;
    this.heldByConnection.set(connection, onConnection + bytes);
    return true;
  }

  /** @internal Reserves `bytes` for a new message if they fit and no earlier message waits ahead of it. */
  tryReserveInTurn(connection: object, bytes: number): boolean {
    if (this.waiting.size > 0 && (this.waitingByConnection.has(connection) || this.held + this.largestFirstInLine() > this.limits.memberBytes)) return false;
    return this.tryReserve(connection, bytes);
  }

  /** @internal Returns a reservation, and gives the room to the streams waiting that now fit. */
  release(connection: object, bytes: number): void {
    this.held -= bytes;
    const onConnection = this.heldByConnection.get(connection)! - bytes;
    if (onConnection === 0) this.heldByConnection.delete(connection);
    else this.heldByConnection.set(connection, onConnection);
    if (this.waiting.size > 0) this.admitWaiting();
  }

  /**
   * Gives room to the waiting messages in arrival order. Only the first waiting on its connection
   * can go; one of those that lacks the member's room stops the pass (later ones wait behind it),
   * one that lacks only its connection's room is passed over until the member's room would not
   * hold it either.
   */
  private admitWaiting(): void {
    let passedOver: Set<object> | undefined;
    let largestPassedOver = 0;
    for (const waiter of this.waiting) {
      if (passedOver?.has(waiter.connection)) continue;
      if (this.held + largestPassedOver > this.limits.memberBytes) return;
      if (waiter.admitIfRoom()) {
        this.forget(waiter);
      } else if (this.held + waiter.waitingBytes > this.limits.memberBytes) {
        return;
      } else {
        (passedOver ??= new Set()).add(waiter.connection);
        largestPassedOver = Math.max(largestPassedOver, waiter.waitingBytes);
      }
    }
  }

  /** The largest message among those first in line on their connection (which lacks the member's room first). */
  private largestFirstInLine(): number {
    let largest = 0;
    const seen = new Set<object>();
    for (const waiter of this.waiting) {
      if (seen.has(waiter.connection)) continue;
      seen.add(waiter.connection);
      largest = Math.max(largest, waiter.waitingBytes);
    }
    return largest;
  }

  /** @internal A stream stopped until its message fits; false when too many are waiting already. */
  enqueue(waiter: Waiter): boolean {
    if (this.waiting.size >= this.limits.waitingStreams) {
      this.refusedStreams++;
      return false;
    }
    this.waiting.add(waiter);
    this.waitingByConnection.set(waiter.connection, (this.waitingByConnection.get(waiter.connection) ?? 0) + 1);
    return true;
  }

  /** @internal A waiting stream gone, or its message whole before room was found. */
  dequeue(waiter: Waiter): void {
    if (!this.waiting.has(waiter)) return;
    this.forget(waiter);
    // Those behind it may go now.
    this.admitWaiting();
  }

  private forget(waiter: Waiter): void {
    this.waiting.delete(waiter);
    const onConnection = this.waitingByConnection.get(waiter.connection)! - 1;
    if (onConnection === 0) this.waitingByConnection.delete(waiter.connection);
    else this.waitingByConnection.set(waiter.connection, onConnection);
  }
}

/** What waits for room: it takes its reservation and goes on (true), or waits on. */
interface Waiter {
  readonly connection: object;
  /** The bytes it waits to reserve. */
  readonly waitingBytes: number;
  admitIfRoom(): boolean;
}

/** A reservation for one request body (reserve()). */
export class Reservation implements Waiter {
  readonly admitted: Promise<boolean>;
  private settle!: (admitted: boolean) => void;
  private state: 'waiting' | 'held' | 'done' = 'waiting';

  constructor(
    private readonly budget: RequestBytesBudget,
    readonly connection: object,
    private readonly bytes: number,
  ) {
    this.admitted = new Promise((resolve) => (this.settle = resolve));
  }

  get waitingBytes(): number {
    return this.bytes;
  }

  /** @internal */
  admit(): void {
    this.state = 'held';
    this.settle(true);
  }

  /** @internal */
  refuse(): void {
    this.state = 'done';
    this.settle(false);
  }

  admitIfRoom(): boolean {
    if (!this.budget.tryReserve(this.connection, this.bytes)) return false;
    this.admit();
    return true;
  }

  release(): void {
    if (this.state === 'held') this.budget.release(this.connection, this.bytes);
    else if (this.state === 'waiting') this.budget.dequeue(this);
    this.refuse();
  }
}

/**
 * One request stream's message boundaries, and its reservations: the message it is inside (a
 * stream's messages are handed to its call as they are whole), or for a single request every
 * message until the half-close (the call holds them until then).
 */
class MessageReader implements Waiter {
  /** Bytes of the stream read so far. */
  private received = 0;
  /** Where the body of the message being received ends in the stream; -1 while reading a prefix. */
  private bodyEnd = -1;
  private bodyLength = 0;
  private prefixBytes = 0;
  private prefixLength = 0;
  /** Bytes reserved by this stream now. */
  private reserved = 0;
  /** The message being received has its reservation. */
  private admitted = false;
  private isWaiting = false;
  /** A single request's messages whole in the chunk being read, reserved at its end. */
  private wholeUnreserved = 0;
  private done = false;
  /** Runs while this stream holds a reservation it has not finished with (MIN_REQUEST_BYTES_PER_SEC). */
  private deadline: NodeJS.Timeout | undefined;

  constructor(
    private readonly budget: RequestBytesBudget,
    private readonly stream: ServerHttp2Stream,
    readonly connection: object,
    private readonly singleRequest: boolean,
  ) {}

  get waitingBytes(): number {
    return this.bodyLength;
  }

  start(): void {
    this.stream.on('data', (chunk: Buffer) => this.read(chunk));
    this.stream.once('close', () => this.stop());
    if (this.singleRequest) this.stream.once('end', () => this.stop());
  }

  /** A waiting stream's message fits now: reserve it and read on (true), or keep waiting. */
  admitIfRoom(): boolean {
    if (!this.reserve(this.bodyLength)) return false;
    this.admitted = true;
    this.isWaiting = false;
    this.startDeadline(this.bodyLength);
    if (!this.stream.destroyed) this.stream.resume();
    return true;
  }

  private read(chunk: Buffer): void {
    if (this.done) return;
    const base = this.received;
    this.received += chunk.length;
    for (let at = 0; at < chunk.length; ) {
      if (this.bodyEnd >= 0) {
        if (this.bodyEnd > this.received) break; // the rest of the chunk is body
        at = this.bodyEnd - base;
        this.messageWhole();
        continue;
      }
      // Byte 0 of a prefix is the compressed flag, bytes 1-4 the length (big-endian).
      if (this.prefixBytes > 0) this.prefixLength = this.prefixLength * 256 + chunk[at]!;
      at++;
      if (++this.prefixBytes < GRPC_MESSAGE_PREFIX_BYTES) continue;
      if (this.prefixLength > this.budget.maxMessageBytes) return this.stop(); // the call refuses it
      this.bodyLength = this.prefixLength;
      this.bodyEnd = base + at + this.bodyLength;
      this.admitted = false;
      this.prefixBytes = 0;
      this.prefixLength = 0;
    }
    if (this.bodyEnd > this.received && !this.admitted && !this.isWaiting) this.admit();
    // The call may have resumed the stream (grpc-js reads on once it has passed a message up).
    else if (this.isWaiting) this.stream.pause();
    // A single request whole in this chunk is held by its call until the half-close: its bytes
    // are in, so when it does not fit the stream is reset rather than left waiting.
    if (this.wholeUnreserved > 0 && !this.done) {
      const bytes = this.wholeUnreserved;
      this.wholeUnreserved = 0;
      if (!this.reserve(bytes)) {
        this.budget.refusedStreams++;
        this.refuse();
      } else {
        this.startDeadline(bytes);
      }
    }
  }

  /** The message goes on past this chunk: reserve it, or stop reading until it fits, or reset. */
  private admit(): void {
    if (this.budget.tryReserveInTurn(this.connection, this.bodyLength)) {
      this.reserved += this.bodyLength;
      this.admitted = true;
      this.startDeadline(this.bodyLength);
    } else if (this.budget.enqueue(this)) {
      this.isWaiting = true;
      this.stream.pause();
    } else {
      this.refuse();
    }
  }

  private messageWhole(): void {
    this.bodyEnd = -1;
    if (this.isWaiting) {
      // Whole before room was found: grpc-js resumed the stream to read on (and pauses it
      // again as it sees fit); this message needs no room to arrive any more.
      this.isWaiting = false;
      this.budget.dequeue(this);
    }
    if (this.admitted) {
      this.admitted = false;
      // A stream's message goes to its call now; a single request's stays held until the half-close.
      if (!this.singleRequest) {
        this.unreserve(this.bodyLength);
        this.clearDeadline();
      }
    } else if (this.singleRequest) {
      this.wholeUnreserved += this.bodyLength;
    }
  }

  private reserve(bytes: number): boolean {
    if (!this.budget.tryReserve(this.connection, bytes)) return false;
    this.reserved += bytes;
    return true;
  }

  private unreserve(bytes: number): void {
    if (bytes === 0) return;
    this.reserved -= bytes;
    this.budget.release(this.connection, bytes);
  }

  private refuse(): void {
    this.stop();
    this.stream.close(constants.NGHTTP2_ENHANCE_YOUR_CALM);
  }

  /**
   * A reservation taken: the message (a single request: up to its half-close) must come within
   * its deadline, else the stream is reset. One clock per stream: a single request's later
   * reservations run on the first one's.
   */
  private startDeadline(bytes: number): void {
    if (this.deadline !== undefined || this.done) return;
    this.deadline = setTimeout(() => {
      this.deadline = undefined;
      if (this.done) return;
      this.budget.tooSlowStreams++;
      this.refuse();
    }, this.budget.deadlineMs(bytes));
    this.deadline.unref();
  }

  private clearDeadline(): void {
    clearTimeout(this.deadline);
    this.deadline = undefined;
  }

  /** The stream is closed, half-closed (a single request) or refused: nothing more is reserved for it. */
  private stop(): void {
    if (this.done) return;
    this.done = true;
    this.clearDeadline();
    if (this.isWaiting) this.budget.dequeue(this);
    this.isWaiting = false;
    this.unreserve(this.reserved);
  }
}
