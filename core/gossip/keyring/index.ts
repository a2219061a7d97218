/**
 * Gossip encryption: a keyring of AES-256-GCM keys (one primary for sealing, all of them
 * accepted for opening, so keys rotate without downtime), key derivation from the cluster
 * secret with HKDF-SHA256, and the sealed-packet format:
 *
 *   [version 0x01][nonce: 12 random bytes][ciphertext][tag: 16 bytes]
 *
 * The additional authenticated data says whether the bytes are a UDP packet or a TCP stream
 * frame, so one cannot be replayed as the other. Replay of identical bytes is handled by
 * ReplayCache (replay.ts) in the transport. Not here: framing, sockets, persistence.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { GossipError } from '../errors.js';
import { KEY_BYTES, MAX_KEYS, SEAL_OVERHEAD_BYTES } from '../limits.js';

export const SEAL_VERSION = 1;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** What the sealed bytes are; bound into the authentication tag. */
export type SealKind = 'udp' | 'tcp';
const AAD: Record<SealKind, Buffer> = {
  udp: Buffer.from('picloud-gossip-udp-v1'),
  tcp: Buffer.from('picloud-gossip-tcp-v1'),
};

const HKDF_SALT = Buffer.from('picloud/gossip/v1');
const HKDF_INFO = Buffer.from('aes-256-gcm gossip key');

/** The default gossip key of a cluster: HKDF-SHA256 of the cluster secret. */
export function deriveGossipKey(secret: string): Buffer {
  if (typeof secret !== 'string' || secret.length === 0) throw new GossipError('GOSSIP_KEY_INVALID', 'cluster secret must be a non-empty string');
  return Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'utf8'), HKDF_SALT, HKDF_INFO, KEY_BYTES));
}

/** Parses a base64 key (as printed by `keyring list` / `generateKey`). */
export function parseKey(text: string): Buffer {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) {
    throw new GossipError('GOSSIP_KEY_INVALID', 'key must be base64 of 32 bytes');
  }
  const key = Buffer.from(text, 'base64');
  if (key.length !== KEY_BYTES || key.toString('base64') !== text) {
    throw new GossipError('GOSSIP_KEY_INVALID', `key must be base64 of exactly ${KEY_BYTES} bytes`);
  }
  return key;
}

export function generateKey(): string {
  return randomBytes(KEY_BYTES).toString('base64');
}

/** Short, non-secret identifier of a key for logs (first `hexDigits` hex of its SHA-256). */
export function keyFingerprint(key: Buffer, hexDigits = 8): string {
  return createHash('sha256').update(key).digest('hex').slice(0, hexDigits);
}

/**
 * A key as another member lists it to us: "sha256:" and 16 hex digits of its hash, never the key
 * itself (a keyring list needs no signature, so whoever holds the current key could read a new
 * one installed to retire it). 64 bits tell keys apart; they give nothing towards the key.
 */
export function listedKey(keyText: string): string {
  return `sha256:${keyFingerprint(Buffer.from(keyText, 'base64'), 16)}`;
}

export class Keyring {
  /** keys[0] is the primary. */
  private keys: Buffer[];
  /**
   * The Lamport time of the last keyring change this ring took (0: none yet). Cluster-wide
   * changes carry one and only a newer one is applied, so a recorded change replayed later
   * (with a fresh nonce to this member, or after its replay cache forgot it) cannot undo a
   * later rotation. Saved with the keys.
   */
  version = 0;

  constructor(primary: Buffer, accepted: Buffer[] = []) {
    if (primary.length !== KEY_BYTES) throw new GossipError('GOSSIP_KEY_INVALID', `key must be ${KEY_BYTES} bytes`);
    this.keys = [Buffer.from(primary)];
    for (const k of accepted) this.addKey(k);
  }

  static fromSecret(secret: string): Keyring {
    return new Keyring(deriveGossipKey(secret));
  }

  /** Restores a keyring saved with toJSON. */
  static fromJSON(v: unknown): Keyring {
    const o = v as { primary?: unknown; keys?: unknown; version?: unknown };
    if (typeof o !== 'object' || o === null || typeof o.primary !== 'string' || !Array.isArray(o.keys)) {
      throw new GossipError('GOSSIP_KEY_INVALID', 'keyring file must be {"primary": KEY, "keys": [KEY…], "version": N}');
    }
    const primary = parseKey(o.primary);
    const ring = new Keyring(primary, o.keys.map((k) => parseKey(String(k))).filter((k) => !k.equals(primary)));
    // Saved before versions were kept: 0.
    if (o.version !== undefined) {
      if (typeof o.version !== 'number' || !Number.isSafeInteger(o.version) || o.version < 0) {
        throw new GossipError('GOSSIP_KEY_INVALID', 'keyring file version must be a non-negative integer');
      }
      ring.version = o.version;
    }
    return ring;
  }

  toJSON(): { primary: string; keys: string[]; version: number } {
    return { primary: this.keys[0]!.toString('base64'), keys: this.keys.map((k) => k.toString('base64')), version: this.version };
  }

  /** Keys as base64, primary first. */
  list(): string[] {
    return this.keys.map((k) => k.toString('base64'));
  }

  primaryKey(): string {
    return this.keys[0]!.toString('base64');
  }

  /** Adds a key accepted for opening (idempotent). */
  install(keyText: string): void {
    this.addKey(parseKey(keyText));
  }

  /** Makes an installed key the primary (used for sealing from now on). */
  use(keyText: string): void {
    const key = parseKey(keyText);
    const i = this.indexOf(key);
    if (i < 0) throw new GossipError('GOSSIP_KEY_NOT_FOUND', 'key is not installed; install it first');
    const [k] = this.keys.splice(i, 1);
    this.keys.unshift(k!);
  }

  /** Removes an accepted key; the primary cannot be removed. */
  remove(keyText: string): void {
    const key = parseKey(keyText);
    const i = this.indexOf(key);
    if (i < 0) throw new GossipError('GOSSIP_KEY_NOT_FOUND', 'key is not installed');
    if (i === 0) throw new GossipError('GOSSIP_KEY_IS_PRIMARY', 'cannot remove the primary key; use another key first');
    this.keys.splice(i, 1);
  }

  /** Encrypts and authenticates with the primary key. Output is SEAL_OVERHEAD_BYTES longer. */
  seal(plaintext: Uint8Array, kind: SealKind): Buffer {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.keys[0]!, nonce);
    cipher.setAAD(AAD[kind]);
    const body = cipher.update(plaintext);
    const final = cipher.final();
    const tag = cipher.getAuthTag();
    const out = Buffer.concat([Buffer.from([SEAL_VERSION]), nonce, body, final, tag]);
    return out;
  }

  /**
   * Opens sealed bytes with any key of the ring (primary first). Returns null when no key
   * authenticates them (wrong key, tampering, truncation, wrong kind) — the caller counts it.
   */
  open(sealed: Uint8Array, kind: SealKind): Buffer | null {
    if (sealed.length < SEAL_OVERHEAD_BYTES || sealed[0] !== SEAL_VERSION) return null;
    const buf = Buffer.isBuffer(sealed) ? sealed : Buffer.from(sealed.buffer, sealed.byteOffset, sealed.length);
    const nonce = buf.subarray(1, 1 + NONCE_BYTES);
    const body = buf.subarray(1 + NONCE_BYTES, buf.length - TAG_BYTES);
    const tag = buf.subarray(buf.length - TAG_BYTES);
    for (const key of this.keys) {
      try {
        const d = createDecipheriv('aes-256-gcm', key, nonce);
        d.setAAD(AAD[kind]);
        d.setAuthTag(tag);
        const out = Buffer.concat([d.update(body), d.final()]);
        return out;
      } catch {
        // not this key (or forged): try the next one
      }
    }
    return null;
  }

  /** The nonce of sealed bytes (for the replay cache); undefined when too short. */
  static nonceOf(sealed: Uint8Array): Buffer | undefined {
    if (sealed.length < SEAL_OVERHEAD_BYTES) return undefined;
    return Buffer.from(sealed.subarray(1, 1 + NONCE_BYTES));
  }

  private addKey(key: Buffer): void {
    if (key.length !== KEY_BYTES) throw new GossipError('GOSSIP_KEY_INVALID', `key must be ${KEY_BYTES} bytes`);
    if (this.indexOf(key) >= 0) return;
    if (this.keys.length >= MAX_KEYS) throw new GossipError('GOSSIP_KEYRING_FULL', `keyring holds at most ${MAX_KEYS} keys`);
    this.keys.push(Buffer.from(key));
  }

  private indexOf(key: Buffer): number {
    return this.keys.findIndex((k) => k.length === key.length && timingSafeEqual(k, key));
  }
}

export { ReplayCache } from './replay.js';
