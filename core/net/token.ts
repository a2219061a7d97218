/**
 * The join token and the keys derived from its secret.
 *
 *   PCN1-<digest>-<secret>
 *
 * `secret` is 16..64 random bytes in lowercase hex: whoever holds it is a member. `digest` is
 * the first 16 hex digits of a hash of the peer key derived from the secret: a fingerprint
 * that names the cluster in logs and catches a mistyped token before any connection is made
 * (the secret itself never crosses the network: see handshake.ts). Keys for each use are
 * derived with HKDF-SHA256 under distinct info strings, so one key leaking from one layer
 * (say the gossip key from a worker's memory dump of the UDP layer) does not hand out another.
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
export const GOSSIP_KEY_INFO = 'picloud gossip v1';
export const AUTH_TOKEN_KEY_INFO = 'picloud client auth tokens v1';
const PASSPHRASE_INFO = 'picloud passphrase v1';

export interface ParsedToken {
  secret: Uint8Array;
  /** The fingerprint as written in the token (verified against the secret). */
  digest: string;
}

export interface ClusterKeys {
  /** Authenticates the peer and join handshakes (32 bytes). */
  peerKey: Buffer;
  /** Encrypts and authenticates gossip (32 bytes, AES-256-GCM in core/gossip). */
  gossipKey: Buffer;
}

function hkdf(secret: Uint8Array, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, HKDF_SALT, info, 32));
}

export function derivePeerKey(secret: Uint8Array): Buffer {
  return hkdf(secret, PEER_KEY_INFO);
}

export function deriveGossipKey(secret: Uint8Array): Buffer {
  return hkdf(secret, GOSSIP_KEY_INFO);
}

/** Signs the etcd API's auth tokens, so a token one manager issues is good at every other. */
export function deriveAuthTokenKey(secret: Uint8Array): Buffer {
  return hkdf(secret, AUTH_TOKEN_KEY_INFO);
}

export function deriveClusterKeys(secret: Uint8Array): ClusterKeys {
  return { peerKey: derivePeerKey(secret), gossipKey: deriveGossipKey(secret) };
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

export function parseToken(token: string): ParsedToken {
  if (typeof token !== 'string' || token.length > MAX_TOKEN_CHARS) {
    throw new NetError('ERR_TOKEN_FORMAT', `not a picloud join token: longer than ${MAX_TOKEN_CHARS} characters`);
  }
  const s = token.trim();
  const parts = s.split('-');
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
