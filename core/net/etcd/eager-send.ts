/**
 * Lets a server stream hand all the messages it produces in one turn to HTTP/2 in that turn.
 *
 * grpc-js gives a stream's next message to its HTTP/2 stream only once the previous one has
 * been written (the call's Writable waits for each write's callback), so a watch fan-out of
 * 100 responses on one stream is 100 rounds of nghttp2 and 100 socket writes, and the client
 * 100 reads. This server interceptor (grpc-js's public interceptor API) acknowledges an
 * EagerMessage to the Writable at once and passes the real completion on to the message's
 * own callback: the messages queue on the HTTP/2 stream in order and leave in one write.
 * Flow control stays with the sender, which counts its unsent bytes from those callbacks.
 * Other messages, and every other method, pass through unchanged.
 *
 * EagerFrames goes one step further for responses already encoded: the batch becomes one
 * buffer of gRPC length-prefixed messages and one write on the HTTP/2 stream. grpc-js has no
 * public way to write several messages at once, and passing each through its send path (a
 * Writable write, a copy behind a 5-byte prefix, an HTTP/2 stream write) cost a watch fan-out
 * more CPU than producing the responses; so the interceptor writes the frames itself on the
 * stream grpc-js's own call holds, under the checks that call makes before a write (not
 * cancelled, headers sent, size limit). Where that call is not found as expected (another
 * grpc-js version), or a check fails, each message takes grpc-js's own path instead:
 * slower, never different on the wire. test/net/eager-send.test.ts fails if the direct path
 * stops being taken.
 */
import * as grpc from '@grpc/grpc-js';
import type { ServerHttp2Stream } from 'node:http2';

/** A response whose write completion goes to `sent` instead of holding back the next one. */
export class EagerMessage {
  constructor(
    readonly message: unknown,
    readonly sent: () => void,
  ) {}
}

/** gRPC's message prefix: a compressed-flag byte and a 4-byte big-endian length. */
export const GRPC_MESSAGE_PREFIX_BYTES = 5;

/**
 * Encoded response messages written together: `frames` holds `count` uncompressed gRPC
 * messages, each behind its prefix, the longest `largest` bytes; `sent` runs once all of
 * them are written.
 */
export class EagerFrames {
  constructor(
    readonly frames: Buffer,
    readonly count: number,
    readonly largest: number,
    readonly sent: () => void,
  ) {}

  /** Frames `messages` (for senders holding separate messages, and tests). */
  static of(messages: readonly Buffer[], sent: () => void): EagerFrames {
    let total = 0;
    let largest = 0;
    for (const m of messages) {
      total += GRPC_MESSAGE_PREFIX_BYTES + m.length;
      largest = Math.max(largest, m.length);
    }
    const out = Buffer.allocUnsafe(total);
    let at = 0;
    for (const m of messages) {
      out[at] = 0;
      out.writeUInt32BE(m.length, at + 1);
      out.set(m, at + GRPC_MESSAGE_PREFIX_BYTES);
      at += GRPC_MESSAGE_PREFIX_BYTES + m.length;
    }
    return new EagerFrames(out, messages.length, largest, sent);
  }

  /** The messages, each without its prefix (views into `frames`). */
  messages(): Buffer[] {
    const out: Buffer[] = [];
    for (let at = 0; at + GRPC_MESSAGE_PREFIX_BYTES <= this.frames.length; ) {
      const len = this.frames.readUInt32BE(at + 1);
      out.push(this.frames.subarray(at + GRPC_MESSAGE_PREFIX_BYTES, at + GRPC_MESSAGE_PREFIX_BYTES + len));
      at += GRPC_MESSAGE_PREFIX_BYTES + len;
    }
    return out;
  }
}

/** What the direct path uses of grpc-js's innermost server call (BaseServerInterceptingCall). */
interface GrpcJsStreamCall {
  stream: ServerHttp2Stream;
  metadataSent: boolean;
  maxSendMessageSize: number;
  checkCancelled(): boolean;
  sendStatus(status: { code: grpc.status; details: string; metadata: grpc.Metadata | null }): void;
}

function isStreamCall(c: unknown): c is GrpcJsStreamCall {
  const o = c as Partial<GrpcJsStreamCall> | null;
  return (
    typeof o === 'object' &&
    o !== null &&
    typeof o.stream?.write === 'function' &&
    typeof o.metadataSent === 'boolean' &&
    typeof o.maxSendMessageSize === 'number' &&
    typeof o.checkCancelled === 'function' &&
    typeof o.sendStatus === 'function'
  );
}

/** Counts for tests: how EagerFrames batches were written. */
export const eagerFramesStats = { direct: 0, fallback: 0 };

/**
 * grpc-js's interceptor base class with its default (synchronous, pass-through) responder;
 * only sendMessage differs.
 */
class EagerSendCall extends grpc.ServerInterceptingCall {
  private streamCall: GrpcJsStreamCall | null | undefined;

  constructor(private readonly inner: grpc.ServerInterceptingCallInterface) {
    super(inner);
  }

  override sendMessage(message: unknown, callback: () => void): void {
    if (message instanceof EagerFrames) {
      this.sendFrames(message);
      callback();
    } else if (message instanceof EagerMessage) {
      super.sendMessage(message.message, message.sent);
      callback();
    } else {
      super.sendMessage(message, callback);
    }
  }

  /** grpc-js's call that owns the HTTP/2 stream, found once (null: not this grpc-js's shape). */
  private findStreamCall(): GrpcJsStreamCall | null {
    if (this.streamCall === undefined) {
      let c: unknown = this.inner;
      for (let depth = 0; depth < 8 && c !== undefined && !isStreamCall(c); depth++) c = (c as { nextCall?: unknown }).nextCall;
      this.streamCall = isStreamCall(c) ? c : null;
    }
    return this.streamCall;
  }

  private sendFrames(batch: EagerFrames): void {
    if (batch.count === 0) return batch.sent();
    const call = this.findStreamCall();
    const max = call?.maxSendMessageSize ?? -1;
    if (call === null || !call.metadataSent || (max !== -1 && batch.largest > max)) {
      eagerFramesStats.fallback++;
      const messages = batch.messages();
      for (const [i, m] of messages.entries()) {
        super.sendMessage(m, i === messages.length - 1 ? batch.sent : () => undefined);
        // grpc-js ended the call with RESOURCE_EXHAUSTED: a write after its end would leave
        // the stream errored and the client without a status.
        if (max !== -1 && m.length > max) return;
      }
      return;
    }
    eagerFramesStats.direct++;
    if (call.checkCancelled()) return;
    call.stream.write(batch.frames, (err?: Error | null) => {
      // As grpc-js does for a failed message write: the call ends with INTERNAL.
      if (err) call.sendStatus({ code: grpc.status.INTERNAL, details: 'Internal server error', metadata: null });
      else batch.sent();
    });
  }
}

/** An interceptor that applies eager sends to the methods whose paths are given. */
export function eagerSendInterceptor(paths: readonly string[]): grpc.ServerInterceptor {
  const set = new Set(paths);
  // Other methods get their call back untouched (no extra layer on every unary request);
  // grpc-js chains interceptors through the interface, whatever the declared return type.
  return (method, call) => (set.has(method.path) ? new EagerSendCall(call) : (call as grpc.ServerInterceptingCall));
}
