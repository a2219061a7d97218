/**
 * The credentials of the etcd API's Auth service: password hashes and auth tokens.
 *
 * Passwords are hashed with scrypt (Node's crypto, no dependency) on the member a request
 * enters, before it is proposed: the Raft log, snapshots and data dirs hold only the hash,
 * in the self-describing form "scrypt$<log2 N>$<r>$<p>$<salt>$<hash>" (base64), so the cost can
 * be raised later without breaking stored users. etcd uses bcrypt; the hashes are picloud's own.
 *
 * Tokens are stateless and signed (etcd's "jwt" token kind, not its in-memory "simple" one):
 *   <user, base64url>.<auth revision at issue>.<expiry, unix seconds>.<HMAC-SHA256, base64url>
 * with a key derived from the cluster secret (core/net/token.ts), so a token issued by one
 * manager is good at every other, and nothing is replicated per login. The auth revision lets
 * the state void a token: a password change, a user's deletion and re-creation or auth being
 * switched off and on again make every token issued before it invalid (AuthState).
 */
import { Address4, Address6 } from 'ip-address';
import { createHmac, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { EtcdError } from '../net/etcd/errors.js';

/** etcd's default --auth-token-ttl. */
export const AUTH_TOKEN_TTL_SECONDS = 300;
/** scrypt cost: 2^14 × 8 × 128 B = 16 MiB and 54–72 ms per hash on this x86 VM (measured 2026-12-05); more on a Pi (not measured). */
const SCRYPT_LOG2_N = 14;
const SCRYPT_R = 8;
const SCRYPT_P = 1;
const SCRYPT_KEY_BYTES = 32;
const SALT_BYTES = 16;
/** Longest password hashed: beyond it a request is refused rather than hashed (etcd: none; bcrypt cuts at 72 bytes). */
export const MAX_PASSWORD_BYTES = 1024;
/** Longest token looked at. */
const MAX_TOKEN_CHARS = 2048;

/**
 * Hashes waiting for their turn. One runs at a time: scrypt runs on libuv's thread pool, which
 * the Raft log's and the state's disk writes share, so a burst of logins (or someone guessing
 * passwords) takes at most one of its threads and cannot delay an fsync into an election.
 */
export const MAX_WAITING_HASHES = 64;
/**
 * Of which one client address may hold this many, so that one client guessing passwords (or
 * stuck in a login loop) cannot keep everyone else from logging in.
 */
export const MAX_WAITING_HASHES_PER_CLIENT = 4;
let hashing: Promise<unknown> = Promise.resolve();
let waiting = 0;
const waitingByClient = new Map<string, number>();

function scryptAsync(password: Buffer, salt: Buffer, logN: number, r: number, p: number, client: string): Promise<Buffer> {
  if (waiting >= MAX_WAITING_HASHES) return Promise.reject(new EtcdError('TOO_MANY_REQUESTS', 'too many password checks waiting'));
  const mine = waitingByClient.get(client) ?? 0;
  if (mine >= MAX_WAITING_HASHES_PER_CLIENT) return Promise.reject(new EtcdError('TOO_MANY_REQUESTS', 'too many password checks waiting from this client'));
  waitingByClient.set(client, mine + 1);
  waiting++;
  const opts: ScryptOptions = { N: 2 ** logN, r, p, maxmem: 256 * 2 ** logN * r + 1024 * 1024 };
  const run = (): Promise<Buffer> =>
    new Promise<Buffer>((resolve, reject) => scrypt(password, salt, SCRYPT_KEY_BYTES, opts, (err, key) => (err ? reject(err) : resolve(key))));
  const result = hashing.then(run, run);
  hashing = result.catch(() => undefined);
  return result.finally(() => {
    waiting--;
    const left = (waitingByClient.get(client) ?? 1) - 1;
    if (left > 0) waitingByClient.set(client, left);
    else waitingByClient.delete(client);
  });
}

/**
 * Whose share a check is, from a client port peer ("ipv4:10.0.0.5:51234", "ipv6:[::1]:5",
 * "10.0.0.5:51234"): the IPv4 address, or the /64 an IPv6 address is in (one host holds a
 * whole /64 and picks new addresses in it at will, SLAAC privacy addresses).
 */
export function clientAddress(peer: string): string {
  const bare = peer.replace(/^ipv[46]:/, '');
  const cut = bare.lastIndexOf(':');
  const host = (cut > 0 ? bare.slice(0, cut) : bare).replace(/^\[|\]$/g, '').replace(/^::ffff:/, '');
  if (!Address6.isValid(host) || Address4.isValid(host)) return host;
  return `${new Address6(`${host}/64`).startAddress().correctForm()}/64`;
}

/** `client`: whose share of the queue the hash takes (clientAddress). */
export async function hashPassword(password: string, client = ''): Promise<Buffer> {
  const salt = randomBytes(SALT_BYTES);
  const key = await scryptAsync(Buffer.from(password, 'utf8'), salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, client);
  return Buffer.from(`scrypt$${SCRYPT_LOG2_N}$${SCRYPT_R}$${SCRYPT_P}$${salt.toString('base64')}$${key.toString('base64')}`, 'utf8');
}

/** Does `password` match the stored hash? False for an empty or unreadable hash. */
export async function verifyPassword(password: string, stored: Uint8Array, client = ''): Promise<boolean> {
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) return false;
  const parts = Buffer.from(stored).toString('utf8').split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [logN, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  // Bounds on what a stored hash may ask for, so a corrupt one cannot exhaust memory.
  if (!(logN >= 10 && logN <= 20 && r >= 1 && r <= 32 && p >= 1 && p <= 16)) return false;
  const salt = Buffer.from(parts[4]!, 'base64');
  const want = Buffer.from(parts[5]!, 'base64');
  if (want.length !== SCRYPT_KEY_BYTES) return false;
  const got = await scryptAsync(Buffer.from(password, 'utf8'), salt, logN, r, p, client);
  return timingSafeEqual(got, want);
}

export interface TokenClaims {
  user: string;
  /** The auth revision when the token was issued. */
  revision: number;
}

/**
 * Issues and checks tokens. A token is good for the TTL after it was issued and, on a member
 * that sees it used, for the TTL after its last use there (etcd's tokens slide the same way on
 * each member), so a client in steady use is not sent back to Authenticate every five minutes.
 */
export class AuthTokens {
  /** Last use of each token seen here (ms); entries older than the TTL are dropped as found. */
  private readonly lastUse = new Map<string, number>();
  private nextSweep = 0;

  constructor(
    private readonly key: Uint8Array,
    private readonly ttlSeconds = AUTH_TOKEN_TTL_SECONDS,
    private readonly now: () => number = Date.now,
  ) {}

  private mac(body: string): string {
    return createHmac('sha256', this.key).update(body).digest('base64url');
  }

  issue(user: string, revision: number): string {
    const expires = Math.floor(this.now() / 1000) + this.ttlSeconds;
    const body = `${Buffer.from(user, 'utf8').toString('base64url')}.${revision}.${expires}`;
    return `${body}.${this.mac(body)}`;
  }

  /** The token's user and revision, or undefined when it is forged, malformed or expired. */
  verify(token: string): TokenClaims | undefined {
    if (token.length > MAX_TOKEN_CHARS) return undefined;
    const parts = token.split('.');
    if (parts.length !== 4) return undefined;
    const [user, rev, expires, mac] = parts as [string, string, string, string];
    const want = Buffer.from(this.mac(`${user}.${rev}.${expires}`));
    const got = Buffer.from(mac);
    if (got.length !== want.length || !timingSafeEqual(got, want)) return undefined;
    if (!/^\d{1,15}$/.test(rev) || !/^\d{1,15}$/.test(expires)) return undefined;
    const now = this.now();
    const ttlMs = this.ttlSeconds * 1000;
    const used = this.lastUse.get(token);
    if (Number(expires) * 1000 <= now && (used === undefined || used + ttlMs <= now)) return undefined;
    this.lastUse.set(token, now);
    this.sweep(now, ttlMs);
    return { user: Buffer.from(user, 'base64url').toString('utf8'), revision: Number(rev) };
  }

  private sweep(now: number, ttlMs: number): void {
    if (now < this.nextSweep) return;
    this.nextSweep = now + ttlMs;
    for (const [t, used] of this.lastUse) if (used + ttlMs <= now) this.lastUse.delete(t);
  }
}
