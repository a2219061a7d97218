/**
 * etcd's `--auto-tls`: the client port over TLS with a self-signed certificate the member makes
 * itself and keeps in its data dir, where etcd keeps its own (`fixtures/client/cert.pem` and
 * `key.pem`). Clients cannot verify it against any CA: etcdctl needs
 * `--insecure-transport=false --insecure-skip-tls-verify` (or `--cacert` naming the file).
 * Other members verify it by the copy the member publishes in its Raft member record
 * (core/net/etcd/member-cert.ts; agent/manager.ts publishes the one served now).
 *
 * As etcd 3.4 does, a pair already there is used again at every start (clients may have pinned
 * it). Unlike etcd, which serves its pair after it expired, a pair that has expired or expires
 * within RENEW_BEFORE_MS is replaced, at start or while running (keepAutoTlsFresh). A pair that
 * cannot be read stops the start with a message naming the file, rather than being silently
 * replaced.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { writeFileDurablySync } from '../core/storage/durable-file.js';
import { ensurePrivateDir } from '../core/storage/private-dir.js';
import { isWildcard } from '../core/net/advertise.js';
import type { ClientTls } from '../core/net/etcd/client-tls.js';

/** Where in the data dir, as etcd: `<data-dir>/fixtures/client/`. */
export const AUTO_TLS_DIR = join('fixtures', 'client');
/** How long a new certificate is valid: etcd's year. */
export const AUTO_TLS_VALID_MS = 365 * 24 * 3600_000;
/** A certificate that expires sooner than this is replaced at start (etcd never replaces its own). */
export const RENEW_BEFORE_MS = 30 * 24 * 3600_000;

/** A pair in the data dir that cannot be used: the start stops (a typed error: its message only). */
export class AutoTlsError extends Error {
  readonly code = 'AUTO_TLS_FILES';
  constructor(message: string) {
    super(message);
    this.name = 'AutoTlsError';
  }
}

/** What --auto-tls keeps of the other client TLS flags (etcd 3.4 drops them; see agent/config.ts). */
export interface AutoTlsRequest {
  ca?: Buffer;
  caFile?: string;
  clientCertAuth: boolean;
}

export interface AutoTls {
  tls: ClientTls & { files: NonNullable<ClientTls['files']> };
  /** Made at this start (and why), or found from an earlier one. */
  made: 'new' | 'expiring' | false;
  fingerprint256: string;
  validTo: string;
  names: string[];
}

/**
 * The names the certificate is for: the address the port is bound to (etcd takes the hosts of
 * --listen-client-urls) and, better than etcd, the one the member advertises; with a wildcard
 * bind (etcd would name 0.0.0.0, which no client dials), loopback and the board's host name.
 */
export function autoTlsNames(bindAddr: string, advertiseAddr: string | undefined, host = hostname()): string[] {
  const names = isWildcard(bindAddr) ? ['127.0.0.1', 'localhost', host] : [bindAddr];
  if (advertiseAddr !== undefined) names.push(advertiseAddr);
  return [...new Set(names.filter((n) => n !== ''))];
}

/** The pair in `dataDir`, made now if absent or expiring. */
export async function loadOrCreateAutoTls(dataDir: string, names: string[], request: AutoTlsRequest, now = Date.now()): Promise<AutoTls> {
  const dir = join(dataDir, AUTO_TLS_DIR);
  const files = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), ...(request.caFile === undefined ? {} : { ca: request.caFile }) };
  const own = (cert: Buffer, key: Buffer): AutoTls['tls'] => ({ cert, key, ca: request.ca, clientCertAuth: request.clientCertAuth, files });
  let made: AutoTls['made'] = 'new';
  // The certificate is written last: without it, no pair was ever served (a first start cut short).
  if (existsSync(files.cert)) {
    const found = readPair(files);
    if (new Date(found.cert.validTo).getTime() - now > RENEW_BEFORE_MS) {
      keepPrivate(files.key);
      return describe(own(found.certPem, found.keyPem), false, found.cert);
    }
    made = 'expiring';
  }
  ensurePrivateDir(join(dataDir, 'fixtures'));
  ensurePrivateDir(dir);
  // Loaded only here: ~2.6 MiB of heap a member without --auto-tls would carry for nothing.
  const { generate } = await import('selfsigned');
  const pems = await generate([{ name: 'organizationName', value: 'picloud' }], {
    // P-256 rather than etcd's P-521: as strong for this, quicker on a Pi, and every TLS client takes it.
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(now - 60_000), // a minute of slack for clients whose clock is behind
    notAfterDate: new Date(now + AUTO_TLS_VALID_MS),
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      // clientAuth too: a member presents it when it dials the leader's client port (lease-forwarder.ts).
      { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
      { name: 'subjectAltName', altNames: names.map((n) => (isIP(n) !== 0 ? { type: 7, ip: n } : { type: 2, value: n })) },
    ],
  });
  writeFileDurablySync(files.key, pems.private, 0o600);
  writeFileDurablySync(files.cert, pems.cert, 0o644);
  const certPem = Buffer.from(pems.cert);
  return describe(own(certPem, Buffer.from(pems.private)), made, new X509Certificate(certPem));
}

function describe(tls: AutoTls['tls'], made: AutoTls['made'], cert: X509Certificate): AutoTls {
  return { tls, made, fingerprint256: cert.fingerprint256, validTo: cert.validTo, names: (cert.subjectAltName ?? '').split(', ').filter((s) => s !== '') };
}

/** The pair as found, or an AutoTlsError naming the file and what to do. */
function readPair(files: { cert: string; key: string }): { cert: X509Certificate; certPem: Buffer; keyPem: Buffer } {
  const remedy = `remove ${files.cert} and ${files.key} to have new ones made (clients that pinned the old certificate need the new one)`;
  const fail = (what: string, e?: unknown): never => {
    throw new AutoTlsError(`--auto-tls: ${what}${e === undefined ? '' : ` (${(e as Error).message})`}: ${remedy}`);
  };
  const read = (f: string): Buffer => {
    try {
      return readFileSync(f);
    } catch (e) {
      return fail(`cannot read ${f}`, e);
    }
  };
  const certPem = read(files.cert);
  const keyPem = read(files.key);
  let cert: X509Certificate | undefined;
  try {
    cert = new X509Certificate(certPem);
  } catch (e) {
    fail(`${files.cert} is not a PEM certificate`, e);
  }
  try {
    createPrivateKey(keyPem);
  } catch (e) {
    fail(`${files.key} is not a PEM private key`, e);
  }
  try {
    createSecureContext({ cert: certPem, key: keyPem });
  } catch (e) {
    fail(`${files.key} is not the key of ${files.cert}`, e);
  }
  return { cert: cert!, certPem, keyPem };
}

/** A key made readable by others (a copy, a restore) is made private again. */
function keepPrivate(keyFile: string): void {
  if ((statSync(keyFile).mode & 0o077) !== 0) chmodSync(keyFile, 0o600);
}

/** How often a running member looks whether its certificate is due for replacement. */
export const RENEW_CHECK_MS = 24 * 3600_000;

/**
 * Replaces the certificate while the member runs, once it is within RENEW_BEFORE_MS of expiring
 * (a board can run for a year without a restart): `renew` is loadOrCreateAutoTls, which writes
 * the new pair over the files; the client port serves files that changed from its next
 * connection on (ClientTlsFiles). A failure is reported and tried again at the next look.
 * Returns the function that stops it.
 */
export function keepAutoTlsFresh(
  renew: () => Promise<AutoTls>,
  report: (outcome: { replaced: AutoTls } | { error: Error }) => void,
  everyMs = RENEW_CHECK_MS,
): () => void {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    renew().then(
      (auto) => {
        if (auto.made !== false) report({ replaced: auto });
      },
      (e: Error) => report({ error: e }),
    ).finally(() => (running = false));
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
