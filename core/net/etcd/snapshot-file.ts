/**
 * The framing of snapshots served on Maintenance.Snapshot, which etcdctl 3.4 insists on:
 * `snapshot save` refuses a file unless its size % 512 == 32 (a body of whole 512-byte
 * sectors followed by the body's SHA-256, as etcd sends). Our body is
 *
 *   data || zero padding || u64be(data length)      (a multiple of 512 bytes)
 *
 * so a restore can find where the data ends. readSnapshotFile() checks a saved file and says
 * how many leading bytes are the backend's snapshot.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';

export const SNAPSHOT_SECTOR_BYTES = 512;
export const SNAPSHOT_HASH_BYTES = 32;
const LENGTH_BYTES = 8;

/** Body length (data + padding + length field) for `dataBytes` of data. */
export function framedBodyBytes(dataBytes: number): number {
  return Math.ceil((dataBytes + LENGTH_BYTES) / SNAPSHOT_SECTOR_BYTES) * SNAPSHOT_SECTOR_BYTES;
}

/** Total bytes a client receives for `dataBytes` of data. */
export function framedSnapshotBytes(dataBytes: number): number {
  return framedBodyBytes(dataBytes) + SNAPSHOT_HASH_BYTES;
}

/**
 * What follows the data: padding and length (fed into `hash`, which has seen the data), then
 * the digest. Returned as two pieces so each can be sent as it is.
 */
export function snapshotTrailer(dataBytes: number, hash: Hash): { tail: Buffer; digest: Buffer } {
  const tail = Buffer.alloc(framedBodyBytes(dataBytes) - dataBytes);
  tail.writeBigUInt64BE(BigInt(dataBytes), tail.length - LENGTH_BYTES);
  hash.update(tail);
  return { tail, digest: hash.digest() };
}

export class SnapshotFileError extends Error {
  readonly code = 'ERR_SNAPSHOT_FILE';
  constructor(message: string) {
    super(message);
    this.name = 'SnapshotFileError';
  }
}

/** Checks a file written by `etcdctl snapshot save` from picloud; returns the data's length. */
/** bbolt's meta page magic (etcd's own snapshot files are bbolt databases), after the 16-byte page header. */
const BBOLT_MAGIC = 0xed0cdaed;
const BBOLT_MAGIC_OFFSET = 16;

export async function readSnapshotFile(path: string): Promise<{ dataBytes: number }> {
  const size = (await stat(path)).size;
  for await (const head of createReadStream(path, { start: BBOLT_MAGIC_OFFSET, end: BBOLT_MAGIC_OFFSET + 3 })) {
    if ((head as Buffer).length === 4 && (head as Buffer).readUInt32LE(0) === BBOLT_MAGIC) {
      throw new SnapshotFileError(`${path} is an etcd (bbolt) snapshot: picloud restores its own snapshots only (etcdctl snapshot save against a picloud member makes one)`);
    }
  }
  if (size % SNAPSHOT_SECTOR_BYTES !== SNAPSHOT_HASH_BYTES || size < SNAPSHOT_SECTOR_BYTES + SNAPSHOT_HASH_BYTES) {
    throw new SnapshotFileError(`${path}: ${size} bytes is not a picloud snapshot (size % 512 must be 32)`);
  }
  const bodyBytes = size - SNAPSHOT_HASH_BYTES;
  const hash = createHash('sha256');
  let lengthField: Buffer | undefined;
  for await (const piece of createReadStream(path, { start: 0, end: bodyBytes - 1 })) hash.update(piece as Buffer);
  for await (const piece of createReadStream(path, { start: bodyBytes - LENGTH_BYTES, end: bodyBytes - 1 })) lengthField = piece as Buffer;
  const digest: Buffer[] = [];
  for await (const piece of createReadStream(path, { start: bodyBytes })) digest.push(piece as Buffer);
  if (!hash.digest().equals(Buffer.concat(digest))) throw new SnapshotFileError(`${path}: SHA-256 mismatch, the file is damaged`);
  const dataBytes = Number(lengthField!.readBigUInt64BE(0));
  if (framedBodyBytes(dataBytes) !== bodyBytes) throw new SnapshotFileError(`${path}: length field ${dataBytes} does not fit the file`);
  return { dataBytes };
}
