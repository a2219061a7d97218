/**
 * Who may change the cluster's gossip keyring. Every member holds the gossip key, workers too,
 * so the key alone cannot say who asked for a change: a change sent to other members is signed
 * with an Ed25519 key derived from the cluster secret (managers hold it; core/net/token.ts
 * derives the seed), and a member that knows the public half (from the secret, or from a
 * worker token) takes only signed changes. Without an authority (tests, data dirs from before
 * it) changes are taken from any key holder, as Serf and Consul take them.
 *
 * The signature covers the op, the key and the change's Lamport version, so a recorded change
 * cannot be turned into another one, and its replay is refused as stale by the version.
 */
import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { GossipError } from '../errors.js';
import type { KeyringOpName } from '../types.js';

export const AUTHORITY_KEY_BYTES = 32;
/** An Ed25519 signature as base64 text (gossip's CBOR carries no byte strings). */
export const SIGNATURE_TEXT_CHARS = 88;

// DER prefixes that wrap a raw Ed25519 seed (PKCS#8) and public key (SPKI), RFC 8410.
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');
const DOMAIN = Buffer.from('picloud gossip keyring change v1\0');

export interface KeyringChange {
  op: Exclude<KeyringOpName, 'list'>;
  key: string;
  version: number;
}

export interface KeyringAuthority {
  /** The public key (raw, 32 bytes) changes are checked against. */
  readonly publicKey: Buffer;
  /** Signs a change; undefined on a member that may not make changes for others (a worker token). */
  readonly sign: ((change: KeyringChange) => string) | undefined;
  verify(change: KeyringChange, signature: string | undefined): boolean;
}

function payload(c: KeyringChange): Buffer {
  return Buffer.concat([DOMAIN, Buffer.from(`${c.op}\0${c.key}\0${c.version}`, 'utf8')]);
}

function checker(publicKey: Buffer): (change: KeyringChange, signature: string | undefined) => boolean {
  const key: KeyObject = createPublicKey({ key: Buffer.concat([SPKI_ED25519, publicKey]), format: 'der', type: 'spki' });
  return (change, signature) => {
    if (typeof signature !== 'string' || signature.length !== SIGNATURE_TEXT_CHARS) return false;
    const sig = Buffer.from(signature, 'base64');
    return sig.length === 64 && verify(null, payload(change), key, sig);
  };
}

/** The authority of a member holding the signing seed (a manager). */
export function signingAuthority(seed: Buffer): KeyringAuthority {
  if (seed.length !== AUTHORITY_KEY_BYTES) throw new GossipError('GOSSIP_KEY_INVALID', `an authority seed has ${AUTHORITY_KEY_BYTES} bytes`);
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  const publicKey = Buffer.from(spki.subarray(spki.length - AUTHORITY_KEY_BYTES));
  return { publicKey, sign: (change) => sign(null, payload(change), privateKey).toString('base64'), verify: checker(publicKey) };
}

/** The authority of a member that only checks changes (a worker holding a worker token). */
export function checkingAuthority(publicKey: Buffer): KeyringAuthority {
  if (publicKey.length !== AUTHORITY_KEY_BYTES) throw new GossipError('GOSSIP_KEY_INVALID', `an authority public key has ${AUTHORITY_KEY_BYTES} bytes`);
  return { publicKey: Buffer.from(publicKey), sign: undefined, verify: checker(publicKey) };
}
