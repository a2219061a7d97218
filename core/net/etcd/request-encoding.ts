/**
 * Compressed gRPC requests are refused on the client port, as etcd 3.4 refuses them (it installs
 * no decompressor; measured with etcd 3.4 from apt: UNIMPLEMENTED, `grpc: Decompressor is not
 * installed for grpc-encoding "gzip"`, likewise deflate and snappy).
 *
 * grpc-js would decompress them, and that escapes the bound on held request bytes
 * (request-bytes.ts): a put of 1.5 MiB of zeros gzips to ~1.5 KiB, a message whole in the DATA
 * frame it starts in (nothing reserved), which grpc-js inflates up to its receive limit (2 MiB)
 * and a unary call then holds until its client half-closes. Measured before this refusal: 200
 * such streams on one connection, never half-closed, grew a member's RSS by ~556 MiB.
 *
 * So every response says so in `grpc-accept-encoding` (grpc-js's own say `identity,deflate,gzip`,
 * etcd 3.4's say nothing), the refusal included: a grpc-js client set to compress then sends
 * its later calls uncompressed, where etcd 3.4 refuses every one of them.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream, ServerStreamResponseOptions } from 'node:http2';

const UNIMPLEMENTED = 12;

/** The request encodings the client port takes, as its responses' `grpc-accept-encoding`. */
export const ACCEPTED_REQUEST_ENCODINGS = 'identity';

/** etcd's refusal of a request stream's compression, or undefined when it is not compressed. */
export function compressionRefusal(headers: IncomingHttpHeaders): string | undefined {
  const encoding = headers['grpc-encoding'];
  if (encoding === undefined || encoding === 'identity') return undefined;
  return `grpc: Decompressor is not installed for grpc-encoding "${String(encoding)}"`;
}

/**
 * Answers `stream` with UNIMPLEMENTED and `details` before anything of it is read; what the
 * client still sends is read and dropped, as grpc-js drops the rest of a call it has answered.
 * Headers and trailers apart, not trailers-only: a client reads the accepted encodings from
 * the headers (grpc-js does not from a trailers-only response).
 */
export function refuseCompressed(stream: ServerHttp2Stream, details: string): void {
  stream.on('error', () => undefined);
  if (stream.destroyed) return;
  stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': UNIMPLEMENTED, 'grpc-message': encodeURI(details) }));
  stream.respond({ ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-accept-encoding': ACCEPTED_REQUEST_ENCODINGS }, { waitForTrailers: true });
  stream.end();
  stream.resume();
}

/** Makes grpc-js's responses on `stream` advertise only the encodings taken (its own name gzip and deflate too). */
export function advertiseAcceptedEncodings(stream: ServerHttp2Stream): void {
  const respond = stream.respond;
  stream.respond = function (this: ServerHttp2Stream, headers?: OutgoingHttpHeaders, options?: ServerStreamResponseOptions): void {
    // grpc-js builds a new headers object for each response.
    if (headers?.['grpc-accept-encoding'] !== undefined) headers['grpc-accept-encoding'] = ACCEPTED_REQUEST_ENCODINGS;
    respond.call(this, headers, options);
  };
}
