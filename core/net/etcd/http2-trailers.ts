/**
 * A unary gRPC answer (HEADERS, one DATA, trailers) handed to the socket in one write, as etcd's
 * Go server sends it.
 *
 * node:http2 alone sends it in two writes. A stream that waits for trailers stays writable until
 * the write of its last DATA has completed (node:http2 skips its early shutdown, the one that lets
 * a last DATA frame carry END_STREAM, for such streams), so nghttp2 finds the end of the data only
 * in a later send; and sendTrailers submits the trailers from a setImmediate after that ("so we
 * don't do it on nghttp2 stack"). The client woke twice and its call ended a median 0.3 ms after
 * the DATA (p99 3 ms on a busy leader; etcd's trailers arrive with the DATA).
 *
 * So where node:http2 is one whose internals were read for this (INLINE_NODE_MAJORS: the same in
 * 20, 22 and 24), two of them are used: the stream's JS flag that skips the early shutdown is
 * cleared after respond() (node:http2 clears it itself when it submits trailers), and the trailers
 * are submitted from 'wantTrailers', which is emitted inside nghttp2's read of the last DATA,
 * through the stream's native handle (nghttp2.h allows it: "nghttp2_submit_trailer() can be
 * called inside this callback"). HEADERS, DATA and trailers then come out of one nghttp2 send.
 * The frames are the same either way; elsewhere node:http2's public way is taken.
 * test/net/http2-trailers.test.ts fails if the one-write path stops being taken.
 */
import type { OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';

/** Node majors whose node:http2 internals are as described (lib/internal/http2/core.js and util.js read, and tested). */
const INLINE_NODE_MAJORS: ReadonlySet<number> = new Set([20, 22, 24]);
/** node:http2's STREAM_FLAGS_HAS_TRAILERS (lib/internal/http2/core.js). */
const HAS_TRAILERS_FLAG = 0x20;

interface NativeStreamHandle {
  trailers(list: NativeHeaderList): number;
}
/** node:http2's header list for its native handle: `name\0value\0flags` per field, and the count. */
type NativeHeaderList = [string, number];

/** The symbols node:http2 keeps a stream's native handle and state under (null: not found, or a Node not checked). */
let keys: { handle: symbol; state: symbol } | null | undefined;

function internalKeys(stream: ServerHttp2Stream): { handle: symbol; state: symbol } | null {
  if (keys === undefined) {
    const symbols = Object.getOwnPropertySymbols(stream);
    const handle = symbols.find((k) => k.description === 'kHandle');
    const state = symbols.find((k) => k.description === 'state');
    const major = Number(process.versions.node.split('.')[0]);
    keys = INLINE_NODE_MAJORS.has(major) && handle !== undefined && state !== undefined ? { handle, state } : null;
  }
  return keys;
}

/** The stream's native handle, if it is as described (undefined: not, or destroyed). */
function nativeHandle(stream: ServerHttp2Stream): NativeStreamHandle | undefined {
  const k = internalKeys(stream);
  const handle = k === null ? undefined : ((stream as unknown as Record<symbol, unknown>)[k.handle] as Partial<NativeStreamHandle> | undefined);
  return typeof handle?.trailers === 'function' ? (handle as NativeStreamHandle) : undefined;
}

/** The stream's JS state, if both it and the native handle are as described (undefined otherwise). */
function streamState(stream: ServerHttp2Stream): { flags: number } | undefined {
  const k = internalKeys(stream);
  const state = k === null ? undefined : ((stream as unknown as Record<symbol, unknown>)[k.state] as { flags?: unknown } | undefined);
  return typeof state?.flags === 'number' && nativeHandle(stream) !== undefined ? (state as { flags: number }) : undefined;
}

/**
 * `headers` as node:http2's header-list builder makes them for its native handle (mapToHeaders in
 * 20, buildNgHeaderString in 24): lowercase names, values as strings, flags NGHTTP2_NV_FLAG_NONE.
 */
function nativeHeaderList(headers: Trailers): NativeHeaderList {
  const fields = Object.entries(headers).map(([name, value]) => {
    // What node:http2 would refuse or send otherwise (a pseudo-header, a NUL that would shift the fields) is not taken.
    if (!/^[a-z0-9-]+$/.test(name) || String(value).includes('\0')) throw new TypeError(`trailer ${JSON.stringify(name)} not sendable this way`);
    return `${name}\0${String(value)}\0\0`;
  });
  return [fields.join(''), fields.length];
}

/** Trailer fields: lowercase token names, single string or number values. */
export type Trailers = Readonly<Record<string, string | number>>;

/** Counts for tests: how trailers were sent. */
export const trailersStats = { inline: 0, deferred: 0 };

/** Trailers to end unary answers with, prepared once for both ways of sending them. */
export class UnaryTrailers {
  /** 'wantTrailers' listeners, made once (called with the stream as `this`). */
  private readonly submitInline: (this: ServerHttp2Stream) => void;
  private readonly submitDeferred: (this: ServerHttp2Stream) => void;

  /** `inline: false` always takes node:http2's public way (for tests). */
  constructor(
    trailers: Trailers,
    private readonly options: { inline?: boolean } = {},
  ) {
    const list = nativeHeaderList(trailers);
    this.submitInline = function (this: ServerHttp2Stream): void {
      const ret = nativeHandle(this)?.trailers(list) ?? -1;
      // What node:http2 does when nghttp2 refuses trailers, but not from inside nghttp2's callback.
      if (ret < 0) setImmediate(() => this.destroy(new Error(`HTTP/2 trailers refused (nghttp2 error ${ret})`)));
    };
    this.submitDeferred = function (this: ServerHttp2Stream): void {
      this.sendTrailers({ ...trailers });
    };
  }

  /** Sends `headers`, `body` as the only DATA, then the trailers. */
  respond(stream: ServerHttp2Stream, headers: OutgoingHttpHeaders, body: Buffer): void {
    stream.respond(headers, WAIT_FOR_TRAILERS);
    const state = this.options.inline === false ? undefined : streamState(stream);
    if (state === undefined) {
      trailersStats.deferred++;
      stream.once('wantTrailers', this.submitDeferred);
    } else {
      trailersStats.inline++;
      state.flags &= ~HAS_TRAILERS_FLAG;
      stream.once('wantTrailers', this.submitInline);
      stream.destroy = destroyOnceWritten;
    }
    stream.end(body);
  }
}

const WAIT_FOR_TRAILERS = { waitForTrailers: true };

type Destroy = (this: ServerHttp2Stream, error?: Error | null, callback?: (error: Error | null) => void) => ServerHttp2Stream;

/**
 * A stream answered in one write is closed by nghttp2 in the send that writes its DATA, and
 * node:http2 (20, 22 and 24 alike) destroys it there, before that DATA's write has completed;
 * its Writable then builds, when the write completes, an ERR_STREAM_DESTROYED with a stack trace
 * that nobody reads (errorBuffer): 3.4% of a busy leader's CPU samples at 256 in flight. So that one
 * destroy (no error, the stream closed cleanly by nghttp2, a write in flight) is held back: once
 * the write completes node:http2 finishes the stream and destroys it itself; the check phase
 * destroys it anyway if it has not (an answer whose socket write went asynchronous then costs
 * the error as before). Every other destroy (an error, a reset, a stream still open when its
 * session is torn down) goes at once.
 */
const destroyOnceWritten: Destroy = function (error, callback) {
  if (error != null || callback !== undefined || this.writableLength === 0 || !this.closed || this.rstCode !== 0) return prototypeDestroy(this, error, callback);
  setImmediate(prototypeDestroy, this);
  return this;
};

function prototypeDestroy(stream: ServerHttp2Stream, error?: Error | null, callback?: (error: Error | null) => void): ServerHttp2Stream {
  return (Object.getPrototypeOf(stream) as { destroy: Destroy }).destroy.call(stream, error, callback);
}
