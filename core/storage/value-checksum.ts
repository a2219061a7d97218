/**
 * A CRC-32 on every value the stores put in LevelDB, checked when the value is read back.
 *
 * LevelDB checks a table block's checksum only when a read asks it to (verify_checksums, which
 * classic-level does not expose); otherwise a damaged block is caught only if its compression
 * no longer decodes, and a block stored uncompressed (incompressible values: LevelDB keeps a
 * block raw when Snappy saves less than an eighth) is read back as if whole. An SD card that
 * flips bits would have a member load and serve the damage. The checksum covers the LevelDB key
 * with the value, so a value found under another key fails too.
 *
 * Stored: SEALED_MARKER, crc32(key ‖ body) as a big-endian u32, then the body. A value without
 * the marker was written before checksums: none of the stores wrote 0xfe as a value's first
 * byte (MVCC record flags are 0 or 1, the rest protobuf, CBOR or a small u32). A store created
 * with checksums keeps a marker key (`strict`): every value must then carry its checksum, so a
 * damaged marker byte cannot pass a value off as an old one.
 */
import { crc32 } from 'node:zlib';
import { StorageError } from './errors.js';
import type { BatchOp } from './level-batch.js';

export const SEALED_MARKER = 0xfe;
/** Bytes a sealed value adds before its body. */
export const SEAL_BYTES = 5;
/** The value of a store's marker key: every value in it is sealed (the format's version). */
export const STRICT_MARK = Buffer.from([1]);

function checksum(key: Uint8Array, body: Uint8Array): number {
  return crc32(body, crc32(key));
}

/** `body` sealed under `key`, in a new buffer. */
export function seal(key: Uint8Array, body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(SEAL_BYTES + body.byteLength);
  out.set(body, SEAL_BYTES);
  return sealInPlace(key, out);
}

/** A batch put of `value` sealed under `key`. */
export function sealedPut(key: Buffer, value: Uint8Array): BatchOp & { type: 'put' } {
  return { type: 'put', key, value: seal(key, value) };
}

/** Seals a buffer whose body is already at SEAL_BYTES (no copy); returns it. */
export function sealInPlace(key: Uint8Array, out: Buffer): Buffer {
  out[0] = SEALED_MARKER;
  out.writeUInt32BE(checksum(key, out.subarray(SEAL_BYTES)), 1);
  return out;
}

/**
 * The body of a value read under `key`: checked if sealed, as stored if written before
 * checksums (refused when `strict`). Throws StorageError ERR_CORRUPT naming `what`.
 */
export function unseal(key: Uint8Array, stored: Buffer, strict: boolean, what: string): Buffer {
  if (stored.byteLength === 0 || stored[0] !== SEALED_MARKER) {
    if (!strict) return stored;
    throw damaged(what, key, 'has no checksum, in a store whose every value has one');
  }
  if (stored.byteLength < SEAL_BYTES) throw damaged(what, key, 'is shorter than its checksum');
  const body = stored.subarray(SEAL_BYTES);
  if (stored.readUInt32BE(1) !== checksum(key, body)) throw damaged(what, key, 'fails its checksum');
  return body;
}

/** A key that fits none of a strict store's layouts: a damaged key (or a store not ours). */
export function unknownKey(what: string, key: Uint8Array): StorageError {
  return damaged(what, key, 'is stored under a key the store never writes');
}

function damaged(what: string, key: Uint8Array, how: string): StorageError {
  return new StorageError(
    'ERR_CORRUPT',
    `${what} is damaged: the value under key ${Buffer.from(key).toString('hex')} ${how} (the disk returned other bytes than were written). ` +
      'Not starting on it: remove the data dir and join the cluster again (or restore a snapshot).',
  );
}
