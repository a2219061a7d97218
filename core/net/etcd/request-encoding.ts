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
 */
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';

const UNIMPLEMENTED = 12;

/** etcd's refusal of a request stream's compression, or undefined when it is not compressed. */
export function compressionRefusal(headers: IncomingHttpHeaders): string | undefined {
  const encoding = headers['grpc-encoding'];
  if (encoding === undefined || encoding === 'identity') return undefined;
  return `grpc: Decompressor is not installed for grpc-encoding "${String(encoding)}"`;
}

/**
 * Answers `stream` with UNIMPLEMENTED and `details` before anything of it is read (a
 * trailers-only response); what the client still sends is read and dropped, as grpc-js drops
 * the rest of a call it has answered.
 */
export function refuseCompressed(stream: ServerHttp2Stream, details: string): void {
  stream.on('error', () => undefined);
  if (stream.destroyed) return;
  stream.respond({ ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-status': UNIMPLEMENTED, 'grpc-message': encodeURI(details) }, { endStream: true });
  stream.resume();
}
