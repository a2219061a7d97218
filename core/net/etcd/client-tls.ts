/**
 * TLS on the client port, configured as etcd's is: `--cert-file` and `--key-file` serve the
 * port over TLS; `--client-cert-auth` with `--trusted-ca-file` also requires every client to
 * present a certificate that CA signed. One port still serves gRPC and the JSON gateway
 * (client-port-listener.ts sorts the decrypted bytes).
 *
 * With `--client-cert-auth` and auth enabled, a request without a token is the user its
 * certificate names (its subject's common name), as etcd's are (certUser below).
 *
 * A member also dials the leader's client port itself (lease-forwarder.ts). Over TLS it checks
 * the leader's certificate against `--trusted-ca-file`, the certificates in its own `--cert-file`
 * and the system's roots, and presents its own certificate: a cluster whose members share one
 * CA (or one certificate) forwards without more configuration.
 */
import * as grpc from '@grpc/grpc-js';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { TLSSocket, createSecureContext, rootCertificates, type TlsOptions } from 'node:tls';

/** What a member's client port needs for TLS: PEM bytes, read once at start. */
export interface ClientTls {
  cert: Buffer;
  key: Buffer;
  /** CA certificates that sign client certificates (etcd's --trusted-ca-file). */
  ca?: Buffer;
  /** etcd's --client-cert-auth: refuse a client without a certificate `ca` signed (the system's roots without `ca`). */
  clientCertAuth: boolean;
}

/** The URL scheme a member advertises for its client port. */
export const TLS_SCHEME = 'https://';
const PLAIN_SCHEME = 'http://';

/**
 * The member record's client address: host:port for plain gRPC, https://host:port over TLS.
 * A record without a scheme (every record before TLS existed) is plain.
 */
export function clientAddress(hostPort: string, tls: boolean): string {
  return tls ? TLS_SCHEME + hostPort : hostPort;
}

/** The client URL etcd's MemberList shows for a member record's client address. */
export function clientUrl(addr: string): string {
  return addr.startsWith(TLS_SCHEME) ? addr : PLAIN_SCHEME + addr;
}

/** host:port and whether to dial it over TLS, from a member record's client address. */
export function dialTarget(addr: string): { hostPort: string; tls: boolean } {
  return addr.startsWith(TLS_SCHEME) ? { hostPort: addr.slice(TLS_SCHEME.length), tls: true } : { hostPort: addr, tls: false };
}

/**
 * Checks that the PEM bytes make a usable server context, throwing a reason that names the
 * file (by etcd's flag) otherwise. Nothing is listening yet when this runs.
 */
export function checkClientTls(t: ClientTls): void {
  const check = (what: string, fn: () => unknown): void => {
    try {
      fn();
    } catch (e) {
      throw new Error(`${what}: ${(e as Error).message}`);
    }
  };
  check('--cert-file: not a PEM certificate', () => new X509Certificate(t.cert));
  check('--key-file: not a PEM private key', () => createPrivateKey(t.key));
  // A CA file without a certificate would be taken as an empty list of CAs.
  if (t.ca !== undefined) check('--trusted-ca-file: not a PEM certificate', () => new X509Certificate(t.ca!));
  check('--key-file is not the key of --cert-file\'s certificate, or a file is damaged', () => createSecureContext({ cert: t.cert, key: t.key, ca: t.ca }));
}

/**
 * gRPC clients offer only h2. A client that also offers HTTP/1.1 (curl, a browser) is one for
 * the JSON gateway, which HTTP/1.1 reaches (grpc-js would answer its HTTP/2 request with 415).
 * A client that offers neither is refused by TLS itself.
 */
export function chooseProtocol({ protocols }: { protocols: string[] }): string | undefined {
  if (protocols.includes('http/1.1')) return 'http/1.1';
  return protocols.includes('h2') ? 'h2' : undefined;
}

/** Options of the client port's TLS server. */
export function serverTlsOptions(t: ClientTls, handshakeTimeoutMs: number): TlsOptions {
  return {
    cert: t.cert,
    key: t.key,
    ca: t.ca,
    requestCert: t.clientCertAuth,
    rejectUnauthorized: t.clientCertAuth,
    ALPNCallback: chooseProtocol,
    handshakeTimeout: handshakeTimeoutMs,
  };
}

/** The credentials a member dials another member's TLS client port with (see the top). */
export function memberDialCredentials(t: ClientTls): grpc.ChannelCredentials {
  const roots = Buffer.from([t.ca?.toString('latin1') ?? '', t.cert.toString('latin1'), ...rootCertificates].join('\n'), 'latin1');
  return grpc.credentials.createSsl(roots, t.key, t.cert);
}

/**
 * The user a client certificate names: its subject's common name (etcd's AuthInfoFromTLS).
 * Undefined without one, or when the subject holds several (which one would be ambiguous).
 */
export function certificateUser(cert: { subject?: { CN?: string | string[] } } | undefined): string | undefined {
  const cn = cert?.subject?.CN;
  return typeof cn === 'string' && cn !== '' ? cn : undefined;
}

/** Set on a stream that wraps a connection (client-port-listener.ts RelayConnection): the connection. */
export const WRAPPED_CONNECTION = Symbol('picloud.wrappedConnection');

/**
 * The user named by the client certificate of `conn` (a TLS socket, or a stream wrapping one),
 * if the server asked for one and Node verified it against the trusted CA; else undefined.
 */
export function certUser(conn: object | undefined): string | undefined {
  const inner = conn === undefined ? undefined : (conn as { [WRAPPED_CONNECTION]?: object })[WRAPPED_CONNECTION];
  if (inner !== undefined) return certUser(inner);
  if (!(conn instanceof TLSSocket) || !conn.authorized) return undefined;
  return certificateUser(conn.getPeerCertificate());
}
