/**
 * `snapshot restore`: turns a snapshot file saved from the client port (etcdctl or
 * `picloud-node snapshot save`) into the KV state of a fresh data dir. Starting an agent on
 * that dir with --bootstrap founds a new one-member cluster holding the restored data
 * (etcd's restore semantics: the old membership is not carried over).
 */
import { ensurePrivateDir } from '../storage/private-dir.js';
import { createReadStream, existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { MvccBackend } from '../storage/mvcc-backend.js';
import { fsyncDirSync, writeFileDurablySync } from '../storage/durable-file.js';
import { readSnapshotFile } from '../net/etcd/snapshot-file.js';

/**
 * Written once a restore is complete: the data dir holds a restored snapshot for --bootstrap
 * (without it, state with no identity.json is a damaged data dir). Removed once the member
 * founded on it has its identity.
 */
export const RESTORED_MARKER = 'restored-snapshot';
/**
 * Written before a restore writes anything else, removed once RESTORED_MARKER is: a data dir
 * holding it is a restore cut short, which the agent refuses (its store could look like an
 * interrupted first bootstrap, and found an empty cluster) and a new restore starts over.
 */
export const RESTORING_MARKER = 'restoring-snapshot';

export class RestoreError extends Error {
  readonly code = 'RESTORE_REFUSED';
}

export async function restoreSnapshotFile(file: string, dataDir: string): Promise<{ revision: number; appliedIndex: number; keys: number }> {
  const restoring = join(dataDir, RESTORING_MARKER);
  if (existsSync(restoring) && !existsSync(join(dataDir, 'identity.json'))) {
    // A restore cut short (or finished but for removing this marker): done again from the start.
    rmSync(join(dataDir, 'kv'), { recursive: true, force: true });
    rmSync(join(dataDir, RESTORED_MARKER), { force: true });
    rmSync(restoring, { force: true });
  }
  if (existsSync(join(dataDir, 'identity.json')) || existsSync(join(dataDir, 'kv'))) {
    throw new RestoreError(`${dataDir} already holds a member's data; restore into a new directory`);
  }
  // As etcdctl's restore: into a new (or empty) directory only, never mixed into someone's files.
  if (existsSync(dataDir) && readdirSync(dataDir).length > 0) throw new RestoreError(`${dataDir} is not empty; restore into a new directory`);
  const { dataBytes } = await readSnapshotFile(file);
  ensurePrivateDir(dataDir); // the restored users and key space are no one else's to read
  writeFileDurablySync(restoring, `${JSON.stringify({ file })}\n`, 0o600);
  const backend = await MvccBackend.open(join(dataDir, 'kv'));
  try {
    const image = dataBytes > 0 ? createReadStream(file, { start: 0, end: dataBytes - 1 }) : [];
    await backend.store.restore(image as AsyncIterable<Uint8Array>);
    await backend.persist({ sync: true });
    writeFileDurablySync(join(dataDir, RESTORED_MARKER), `${JSON.stringify({ file, revision: backend.store.revision })}\n`, 0o600);
    rmSync(restoring);
    fsyncDirSync(dataDir);
    return { revision: backend.store.revision, appliedIndex: backend.store.appliedIndex, keys: backend.store.keyCount };
  } finally {
    await backend.close();
  }
}
