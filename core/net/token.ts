/**
 * The join tokens and the keys derived from the cluster secret.
 *
 *   PCN1-<digest>-<secret>          the cluster token: managers (and workers, who need less)
 *   PCW1-<digest>-<gossip key><authority key><check>  a worker token: the gossip key alone
 *
 * `secret` is 16..64 random bytes in lowercase hex: whoever holds it is a member. `digest` is
 * the first 16 hex digits of a hash of the peer key derived from the secret: a fingerprint
 * that names the cluster in logs and catches a mistyped token before any connection is made
 * (the secret itself never crosses the network: see handshake.ts). Keys for each use are
 * derived with HKDF-SHA256 under distinct info strings, so one key leaking from one layer does
 * not hand out another. A worker token (Docker Swarm has worker and manager tokens) carries the
 * cluster's gossip key as a manager's keyring holds it, the public half of the key managers
 * sign keyring changes with, and the cluster's digest: a worker holding it gossips, but cannot
 * speak Raft on the peer port, join as a manager, or change the gossip keyring for others. Its
 * 8-hex check catches a mistyped key, which the digest (not derivable from the keys) cannot.
 */
import { createHash, hkdfSync, randomBytes } from 'node:crypto';
import { NetError } from './errors.js';

export const TOKEN_PREFIX = 'PCN1';
export const TOKEN_SECRET_BYTES = 32;
export const MIN_TOKEN_SECRET_BYTES = 16;
export const MAX_TOKEN_SECRET_BYTES = 64;
export const TOKEN_DIGEST_HEX_CHARS = 16;
/** Longest string parseToken looks at, so a pasted file cannot make it work hard. */
export const MAX_TOKEN_CHARS = TOKEN_PREFIX.length + 2 + TOKEN_DIGEST_HEX_CHARS + 2 * MAX_TOKEN_SECRET_BYTES;

const HKDF_SALT = Buffer.from('picloud cluster secret v1');
export const PEER_KEY_INFO = 'picloud peer transport v1';
export const AUTH_TOKEN_KEY_INFO = 'picloud client auth tokens v1';
const PASSPHRASE_INFO = 'picloud passphrase v1';

export const KEYRING_AUTHORITY_INFO = 'picloud gossip keyring authority v1';

export const WORKER_TOKEN_PREFIX = 'PCW1';
export const WORKER_KEY_BYTES = 32;
const WORKER_CHECK_HEX_CHARS = 8;
const WORKER_BODY_HEX_CHARS = 4 * WORKER_KEY_BYTES + WORKER_CHECK_HEX_CHARS;
/** Longest string parseJoinToken (and parseToken, to name a worker token) looks at. */
export const MAX_JOIN_TOKEN_CHARS = Math.max(MAX_TOKEN_CHARS, WORKER_TOKEN_PREFIX.length + 2 + TOKEN_DIGEST_HEX_CHARS + WORKER_BODY_HEX_CHARS);

export interface ParsedToken {
  secret: Uint8Array;
  /** The fingerprint as written in the token (verified against the secret). */
  digest: string;
}

/** What a worker token gives: the cluster's gossip key, who may change it, and the cluster's fingerprint. */
export interface ParsedWorkerToken {
  gossipKey: Buffer;
  /** The public key keyring changes are signed with (core/gossip/keyring/authority.ts). */
  authorityKey: Buffer;
  /** The cluster token's digest, as the manager that printed it had it (not derivable from the key). */
  digest: string;
}

export type JoinToken = ({ kind: 'cluster' } & ParsedToken) | ({ kind: 'worker' } & ParsedWorkerToken);

function hkdf(secret: Uint8Array, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, HKDF_SALT, info, 32));
}

/** Authenticates the peer and join handshakes (32 bytes). */
export function derivePeerKey(secret: Uint8Array): Buffer {
  return hkdf(secret, PEER_KEY_INFO);
}

/** The seed of the Ed25519 key that signs gossip keyring changes (managers hold it; workers its public half). */
export function deriveKeyringAuthoritySeed(secret: Uint8Array): Buffer {
  return hkdf(secret, KEYRING_AUTHORITY_INFO);
}

/** Signs the etcd API's auth tokens, so a token one manager issues is good at every other. */
export function deriveAuthTokenKey(secret: Uint8Array): Buffer {
  return hkdf(secret, AUTH_TOKEN_KEY_INFO);
}

/** The cluster fingerprint carried in the token. */
export function tokenDigest(secret: Uint8Array): string {
  return createHash('sha256').update(derivePeerKey(secret)).digest('hex').slice(0, TOKEN_DIGEST_HEX_CHARS);
}

export function formatToken(secret: Uint8Array): string {
  if (secret.length < MIN_TOKEN_SECRET_BYTES || secret.length > MAX_TOKEN_SECRET_BYTES) {
    throw new NetError('ERR_TOKEN_FORMAT', `a token secret has ${MIN_TOKEN_SECRET_BYTES}..${MAX_TOKEN_SECRET_BYTES} bytes, not ${secret.length}`);
  }
  return `${TOKEN_PREFIX}-${tokenDigest(secret)}-${Buffer.from(secret).toString('hex')}`;
}

/** A new token with a fresh random secret. */
export function generateToken(): string {
  return formatToken(randomBytes(TOKEN_SECRET_BYTES));
}

/**
 * A token from a passphrase an operator chose (`--token my-words` on the first manager, as
 * k3s allows): the secret is a hash of it, so every node given the same words agrees.
 */
export function tokenFromPassphrase(passphrase: string): string {
  if (passphrase.length === 0) throw new NetError('ERR_TOKEN_FORMAT', 'empty passphrase');
  return formatToken(Buffer.from(hkdfSync('sha256', Buffer.from(passphrase, 'utf8'), HKDF_SALT, PASSPHRASE_INFO, TOKEN_SECRET_BYTES)));
}

const HEX = /^[0-9a-f]+$/;

/** The token without surrounding whitespace (a pasted line), refused past the longest one. */
function boundedToken(token: unknown): string {
  // Bounded before trimming, so a pasted file is not scanned whole.
  const s = typeof token === 'string' && token.length <= 2 * MAX_JOIN_TOKEN_CHARS ? token.trim() : undefined;
  if (s === undefined || s.length > MAX_JOIN_TOKEN_CHARS) throw new NetError('ERR_TOKEN_FORMAT', `not a picloud join token: longer than ${MAX_JOIN_TOKEN_CHARS} characters`);
  return s;
}

export function parseToken(token: string): ParsedToken {
  const s = boundedToken(token);
  const parts = s.split('-');
  if (parts.length === 3 && /^PCW\d+$/.test(parts[0]!)) {
    throw new NetError('ERR_TOKEN_WORKER', 'this is a worker token: it joins workers only (--role worker); a manager needs the cluster token (`picloud-node token` on a manager)');
  }
  if (parts.length !== 3 || !/^PCN\d+$/.test(parts[0]!)) {
    throw new NetError('ERR_TOKEN_FORMAT', 'not a picloud join token: expected PCN1-<digest>-<secret> (print one with `picloud-node token`)');
  }
  const [prefix, digest, secretHex] = parts as [string, string, string];
  if (prefix !== TOKEN_PREFIX) {
    throw new NetError('ERR_TOKEN_VERSION', `join token version ${prefix} is not supported (this node reads ${TOKEN_PREFIX})`);
  }
  if (digest.length !== TOKEN_DIGEST_HEX_CHARS || !HEX.test(digest)) {
    throw new NetError('ERR_TOKEN_FORMAT', `join token digest must be ${TOKEN_DIGEST_HEX_CHARS} lowercase hex digits`);
  }
  if (secretHex.length % 2 !== 0 || !HEX.test(secretHex)) {
    throw new NetError('ERR_TOKEN_FORMAT', 'join token secret must be lowercase hex');
  }
  const secret = Buffer.from(secretHex, 'hex');
  if (secret.length < MIN_TOKEN_SECRET_BYTES || secret.length > MAX_TOKEN_SECRET_BYTES) {
    throw new NetError('ERR_TOKEN_FORMAT', `join token secret must have ${MIN_TOKEN_SECRET_BYTES}..${MAX_TOKEN_SECRET_BYTES} bytes, not ${secret.length}`);
  }
  if (tokenDigest(secret) !== digest) {
    throw new NetError('ERR_TOKEN_DIGEST', 'join token digest does not match its secret: the token was mistyped or cut');
  }
  return { secret, digest };
}

function workerCheck(digest: string, gossipKey: Uint8Array, authorityKey: Uint8Array): string {
  return createHash('sha256').update('picloud worker token\0').update(digest).update(gossipKey).update(authorityKey).digest('hex').slice(0, WORKER_CHECK_HEX_CHARS);
}

/**
 * A worker token for the cluster of `digest` whose gossip keyring's primary key is `gossipKey`,
 * and whose keyring changes are signed by the key whose public half is `authorityKey`.
 */
export function formatWorkerToken(digest: string, gossipKey: Uint8Array, authorityKey: Uint8Array): string {
  if (digest.length !== TOKEN_DIGEST_HEX_CHARS || !HEX.test(digest)) throw new NetError('ERR_TOKEN_FORMAT', `a cluster digest is ${TOKEN_DIGEST_HEX_CHARS} lowercase hex digits`);
  for (const [what, k] of [['gossip key', gossipKey], ['authority key', authorityKey]] as const) {
    if (k.length !== WORKER_KEY_BYTES) throw new NetError('ERR_TOKEN_FORMAT', `a ${what} has ${WORKER_KEY_BYTES} bytes, not ${k.length}`);
  }
  const hex = Buffer.concat([gossipKey, authorityKey]).toString('hex');
  return `${WORKER_TOKEN_PREFIX}-${digest}-${hex}${workerCheck(digest, gossipKey, authorityKey)}`;
}

/** Either kind of join token (see the top of this file); NetError when it is neither. */
export function parseJoinToken(token: string): JoinToken {
  const parts = boundedToken(token).split('-');
  if (!/^PCW\d+$/.test(parts[0]!)) return { kind: 'cluster', ...parseToken(token) };
  if (parts.length !== 3) throw new NetError('ERR_TOKEN_FORMAT', 'not a picloud worker token: expected PCW1-<digest>-<keys> (print one with `picloud-node token --worker`)');
  const [prefix, digest, body] = parts as [string, string, string];
  if (prefix !== WORKER_TOKEN_PREFIX) {
    throw new NetError('ERR_TOKEN_VERSION', `worker token version ${prefix} is not supported (this node reads ${WORKER_TOKEN_PREFIX})`);
  }
  if (digest.length !== TOKEN_DIGEST_HEX_CHARS || !HEX.test(digest)) {
    throw new NetError('ERR_TOKEN_FORMAT', `worker token digest must be ${TOKEN_DIGEST_HEX_CHARS} lowercase hex digits`);
  }
  if (body.length !== WORKER_BODY_HEX_CHARS || !HEX.test(body)) {
    throw new NetError('ERR_TOKEN_FORMAT', `worker token keys must be ${WORKER_BODY_HEX_CHARS} lowercase hex digits`);
  }
  const keys = Buffer.from(body.slice(0, 4 * WORKER_KEY_BYTES), 'hex');
  const gossipKey = keys.subarray(0, WORKER_KEY_BYTES);
  const authorityKey = keys.subarray(WORKER_KEY_BYTES);
  if (workerCheck(digest, gossipKey, authorityKey) !== body.slice(4 * WORKER_KEY_BYTES)) {
    throw new NetError('ERR_TOKEN_DIGEST', 'worker token check does not match its keys: the token was mistyped or cut');
  }
  return { kind: 'worker', gossipKey: Buffer.from(gossipKey), authorityKey: Buffer.from(authorityKey), digest };
}
