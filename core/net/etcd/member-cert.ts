/**
 * A member's published client-port certificate: how followers verify an `--auto-tls` leader.
 *
 * Each --auto-tls member makes its own self-signed certificate (agent/auto-tls.ts), which no CA
 * vouches for. The member publishes it (the PEM) in its Raft member record, as it records its
 * addresses and quota (manager-node.ts recordOwnMember): only a member holding the cluster
 * token's secret can propose through the peer transport, so the record is as trustworthy as
 * the cluster. A member forwarding to the leader (lease-forwarder.ts) then trusts exactly that
 * certificate for that leader — the one the leader holds the key of — instead of a CA.
 *
 * A record is written by whichever member version proposed it and read by every other, so
 * both sides are lenient: a value that is not a usable certificate is recorded as it came (the
 * same on every member) and, when read, refused with a reason; the forwarder then dials as it
 * did before certificates were published (and says why).
 */
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { type PeerCertificate } from 'node:tls';

/** The most characters recorded (a P-256 self-signed certificate's PEM is ~700). */
export const MAX_PUBLISHED_CERT_CHARS = 8 * 1024;

/**
 * What a member record keeps of a record change's `clientCert`: absent, the record's earlier
 * one (an older member, or `etcdctl member update`, does not speak of it); '' takes it away
 * (the member no longer runs --auto-tls); any other value that is not a string of bounded
 * length takes it away too. Runs where records are applied: the same on every member.
 */
export function recordedClientCert(value: unknown, previous: string | undefined): string | undefined {
  if (value === undefined) return previous;
  if (typeof value !== 'string' || value === '' || value.length > MAX_PUBLISHED_CERT_CHARS) return undefined;
  return value;
}

/** A published certificate a member may be trusted with: one self-signed certificate. */
export interface PinnedCert {
  pem: Buffer;
  fingerprint256: string;
}

/** The published certificate to trust, or why it cannot be (a damaged or hostile record). */
export function pinnedCert(published: string): PinnedCert | { reason: string } {
  const blocks = published.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length !== 1) return { reason: `the published certificate holds ${blocks.length} PEM certificates, not one` };
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(blocks[0]!);
  } catch (e) {
    return { reason: `the published certificate cannot be read (${(e as Error).message})` };
  }
  // Trusted as its own root: only a self-signed one verifies that way. (Not checkIssued: it
  // wants the keyCertSign usage, which an --auto-tls certificate, like etcd's, does not have.)
  if (cert.subject !== cert.issuer || !cert.verify(cert.publicKey)) return { reason: 'the published certificate is not self-signed' };
  return { pem: Buffer.from(blocks[0]!, 'latin1'), fingerprint256: cert.fingerprint256 };
}

/**
 * Credentials that accept the member at the other end only if it presents `pin` (this member
 * presents `own`, its client-port pair, if it has one). The names in the certificate are not
 * checked: the pin names the member better than an address does, and an --auto-tls certificate
 * made with a wildcard bind does not name the address the member advertises.
 */
export function pinnedDialCredentials(pin: PinnedCert, own?: { key: Buffer; cert: Buffer }): grpc.ChannelCredentials {
  const checkServerIdentity = (_host: string, cert: PeerCertificate): Error | undefined =>
    cert.fingerprint256 === pin.fingerprint256 ? undefined : new Error(`the member presented certificate ${cert.fingerprint256}, not the one it published (${pin.fingerprint256})`);
  return grpc.credentials.createSsl(pin.pem, own?.key ?? null, own?.cert ?? null, { checkServerIdentity });
}
