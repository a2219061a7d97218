/**
 * Bounds what a client's request stream can make the member hold in chunks it has not read.
 *
 * node:http2 hands each DATA frame to JavaScript as a view into the buffer of the socket read it
 * came in (up to 64 KiB), not a copy. Flow control bounds a stream's unread DATA bytes to its
 * window, not the memory behind them: while a stream is paused (a request waiting for room,
 * request-bytes.ts; a watch whose client leaves replies unread; keep-alives held back) every
 * 1-byte DATA frame, sent in its own socket read padded with frames nghttp2 ignores, kept a whole
 * read alive — 136 MiB for 3,000 frames on one waiting stream, gigabytes within one window. A
 * request whole but never half-closed kept its read the same way (122 MiB for 2,000 6-byte puts).
 *
 * So a chunk that is a small part of the buffer behind it is copied into one of its own size, and
 * a stream that has more than MAX_UNREAD_CHUNKS chunks pushed while it is not flowing is reset
 * with ENHANCE_YOUR_CALM (RESOURCE_EXHAUSTED): its client is sending DATA frames far smaller than
 * any client sends, faster than they are read.
 */
import { constants, type ServerHttp2Stream } from 'node:http2';

/**
 * Chunks a stream may have pushed while paused before it is reset. A paused keep-alive stream
 * legitimately receives a window's worth of ~15-byte requests (about 4,400); a request stream a
 * few 16 KiB frames.
 */
export const MAX_UNREAD_CHUNKS = 8_192;
/** A chunk using less than 1/COPY_BELOW_SHARE of the buffer behind it is copied. */
const COPY_BELOW_SHARE = 4;

/** Installs the bound on `stream` (call before anything reads it). */
export function boundUnreadChunks(stream: ServerHttp2Stream, maxUnread = MAX_UNREAD_CHUNKS): void {
  const push = stream.push;
  let unread = 0;
  stream.on('resume', () => (unread = 0));
  stream.push = function (chunk: unknown, encoding?: BufferEncoding): boolean {
    if (chunk instanceof Uint8Array && chunk.length > 0) {
      if (stream.readableFlowing !== true && ++unread > maxUnread) {
        if (!stream.destroyed) stream.close(constants.NGHTTP2_ENHANCE_YOUR_CALM);
        return false;
      }
      if (chunk.length * COPY_BELOW_SHARE < chunk.buffer.byteLength) {
        const own = Buffer.allocUnsafeSlow(chunk.length);
        own.set(chunk);
        chunk = own;
      }
    }
    return push.call(this, chunk, encoding);
  };
}
