/**
 * TLS on the client port, configured as etcd's is: `--cert-file` and `--key-file` serve the
 * port over TLS; `--trusted-ca-file` also requires every client to present a certificate that CA
 * signed (with or without `--client-cert-auth`, as in etcd). One port still serves gRPC and the
 * JSON gateway (client-port-listener.ts sorts the decrypted bytes).
 *
 * With `--client-cert-auth` and auth enabled, a request without a token is the user its
 * certificate names (its subject's common name), as etcd's are (certUser below).
 *
 * A member also dials the leader's client port itself (lease-forwarder.ts), presenting its own
 * certificate. It checks the leader's against `--trusted-ca-file` and the certificates in its
 * own `--cert-file` (a cluster sharing one self-signed certificate needs nothing more); without
 * `--trusted-ca-file`, against its own file and the system's roots, so members whose
 * certificates a private CA signed need `--trusted-ca-file` to forward (checkMemberCanVerify
 * says so at start). A leader whose certificate --auto-tls made (self-signed, its own) published
 * it in its member record, and is trusted by that alone (member-cert.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { TLSSocket, createSecureContext, rootCertificates, type TlsOptions } from 'node:tls';

/** What a member's client port needs for TLS: PEM bytes. */
export interface ClientTls {
  cert: Buffer;
  key: Buffer;
  /** CA certificates that sign client certificates (etcd's --trusted-ca-file): given, clients must present one. */
  ca?: Buffer;
  /** etcd's --client-cert-auth: a client's certificate also names its user when auth is on. */
  clientCertAuth: boolean;
  /** The files the bytes were read from, when they may be read again (ClientTlsFiles). */
  files?: { cert: string; key: string; ca?: string };
}

/** Where the client port's TLS comes from at each new connection: fixed, or files that change. */
export interface ClientTlsSource {
  /** The TLS to use now; the same object until something changed. */
  current(): ClientTls;
}

export function tlsSource(tls: ClientTls | ClientTlsSource): ClientTlsSource {
  return 'current' in tls ? tls : { current: () => tls };
}

/** How often at most a new connection makes ClientTlsFiles look at the files. */
export const TLS_FILES_CHECK_MS = 1_000;

/**
 * The client port's certificate files, read again once they change, as etcd reads them at
 * every handshake: a certificate renewed on disk (by step-ca, certbot or a cron job) is served
 * from the next connection on, without a restart. A new connection looks at the files at most
 * once per `checkMs` (a stat of each; no timer runs while nobody connects). A set that does not
 * make a usable context (a key not yet replaced beside its new certificate) is not taken: the
 * files in use stay, and `onReload` says why; the next change is looked at again.
 */
export class ClientTlsFiles implements ClientTlsSource {
  private tls: ClientTls;
  private stamp: string;
  private checkedAt = -Infinity;

  constructor(
    initial: ClientTls & { files: NonNullable<ClientTls['files']> },
    private readonly onReload: (outcome: { ok: true } | { ok: false; reason: string }) => void = () => undefined,
    private readonly checkMs = TLS_FILES_CHECK_MS,
  ) {
    this.tls = initial;
    // The config read the files before this first stamp: read them again after it, so that a
    // renewal in between is not missed until the next one.
    this.stamp = this.stampNow();
    this.load();
  }

  current(): ClientTls {
    const now = performance.now();
    if (now - this.checkedAt < this.checkMs) return this.tls;
    this.checkedAt = now;
    const stamp = this.stampNow();
    if (stamp === this.stamp) return this.tls;
    this.stamp = stamp;
    this.load();
    return this.tls;
  }

  /** Takes the files' present contents if they make a usable context (and differ); keeps the old ones otherwise. */
  private load(): void {
    const files = this.tls.files!;
    try {
      const next: ClientTls = { cert: readFileSync(files.cert), key: readFileSync(files.key), ca: files.ca === undefined ? undefined : readFileSync(files.ca), clientCertAuth: this.tls.clientCertAuth, files };
      if (next.cert.equals(this.tls.cert) && next.key.equals(this.tls.key) && (next.ca === undefined ? this.tls.ca === undefined : this.tls.ca !== undefined && next.ca.equals(this.tls.ca))) return;
      checkClientTls(next);
      this.tls = next;
      this.onReload({ ok: true });
    } catch (e) {
      this.onReload({ ok: false, reason: (e as Error).message });
    }
  }

  /** Size, change time and inode of each file: a rename over it changes the inode. */
  private stampNow(): string {
    const { cert, key, ca } = this.tls.files!;
    return [cert, key, ca].map((f) => {
      if (f === undefined) return '';
      const st = statSync(f, { throwIfNoEntry: false });
      return st === undefined ? 'missing' : `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    }).join('|');
  }
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

/** Whether the port refuses clients without a certificate the trusted CA signed (etcd's rule). */
export function requiresClientCerts(t: ClientTls): boolean {
  return t.clientCertAuth || t.ca !== undefined;
}

/** Options of the client port's TLS server. */
export function serverTlsOptions(t: ClientTls, handshakeTimeoutMs: number): TlsOptions {
  return {
    cert: t.cert,
    key: t.key,
    ca: t.ca,
    // As etcd: a trusted CA alone already requires client certificates it signed;
    // --client-cert-auth also makes a certificate name its user (certUser).
    requestCert: requiresClientCerts(t),
    rejectUnauthorized: requiresClientCerts(t),
    ALPNCallback: chooseProtocol,
    handshakeTimeout: handshakeTimeoutMs,
  };
}

/** The credentials a member dials another member's TLS client port with (see the top). */
export function memberDialCredentials(t: ClientTls): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(Buffer.from(memberRoots(t).join('\n'), 'latin1'), t.key, t.cert);
}

/** What a member trusts in another member's certificate, as PEM blocks (see the top). */
function memberRoots(t: ClientTls): string[] {
  return [...(t.ca === undefined ? rootCertificates : pemCertificates(t.ca)), ...pemCertificates(t.cert)];
}

function pemCertificates(pem: Buffer): string[] {
  return pem.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
}

/**
 * Why another member could not verify this member's certificate when forwarding to it (see
 * the top), or undefined if it can: nothing it trusts issued it, or it does not name the
 * address the member advertises. A look at what the certificates say, without a connection.
 * A self-signed certificate passes: members that share it trust it as it is.
 */
export function checkMemberCanVerify(t: ClientTls, advertisedHost: string): string | undefined {
  const file = pemCertificates(t.cert).map((p) => new X509Certificate(p));
  const leaf = file[0];
  if (leaf === undefined) return 'the --cert-file holds no certificate';
  const anchors = (t.ca === undefined ? rootCertificates : pemCertificates(t.ca)).map((p) => new X509Certificate(p));
  const issuedBy = (c: X509Certificate, by: X509Certificate): boolean => c.checkIssued(by) && c.verify(by.publicKey);
  // Up through the file's own chain (another member has the same file's CAs) to an anchor.
  let at: X509Certificate | undefined = leaf;
  let trusted = false;
  for (let hops = 0; at !== undefined && hops < 8 && !trusted; hops++) {
    const cur: X509Certificate = at;
    trusted = issuedBy(cur, cur) || anchors.some((a) => a.raw.equals(cur.raw) || issuedBy(cur, a));
    at = file.find((c) => !c.raw.equals(cur.raw) && issuedBy(cur, c));
  }
  if (!trusted) {
    return t.ca === undefined
      ? 'no system CA issued it: give --trusted-ca-file (the CA that signed the members\' certificates)'
      : 'the --trusted-ca-file did not issue it';
  }
  const named = isIP(advertisedHost) !== 0 ? leaf.checkIP(advertisedHost) : leaf.checkHost(advertisedHost);
  return named === undefined ? `it does not name ${advertisedHost}, the address this member advertises` : undefined;
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
