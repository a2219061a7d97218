/**
 * Opens a LevelDB store (classic-level) so damage is refused rather than repaired in silence.
 *
 * LevelDB's defaults favour starting over stopping: without CURRENT it creates an empty
 * database (deleting the tables it no longer references), and a write-ahead log record that fails
 * its checksum is skipped with a line in the store's own LOG file and nothing else. Either loses
 * acknowledged data on a member that then serves as if whole. So a store that must exist is
 * opened with createIfMissing off, and the LOG LevelDB writes anew at each open is read for the
 * records it dropped. A torn last record (power lost mid-write, never acknowledged) is read as
 * the end of the log by LevelDB, not as a drop, so a power cut does not trip this check.
 */
import { ClassicLevel } from 'classic-level';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { StorageError } from './errors.js';

/** What LevelDB's recovery writes to LOG when it skips data it could not read. */
const DROPPED_DATA = /dropping \d+ bytes|Corruption/;

export interface LevelOpenOptions {
  /** What the store holds, for messages ("the KV store"). */
  what: string;
  /** The data dir says this store was written before: a missing one is damage, not a first start. */
  mustExist: boolean;
}

/**
 * max_open_files of every store this process opens. The descriptors are the process's, shared
 * with its connections, so the agent sets it from its open files budget (agent/open-files.ts)
 * before opening any; LevelDB's own default until then.
 */
let maxOpenFiles = 1_000;

export function setLevelMaxOpenFiles(n: number): void {
  maxOpenFiles = n;
}

export async function openLevel(path: string, opts: LevelOpenOptions): Promise<ClassicLevel<Buffer, Buffer>> {
  const db = new ClassicLevel<Buffer, Buffer>(path, { keyEncoding: 'buffer', valueEncoding: 'buffer', createIfMissing: !opts.mustExist, maxOpenFiles });
  try {
    await db.open();
  } catch (err) {
    // classic-level's message is only "Database failed to open"; LevelDB's reason is the cause.
    const cause = (err as { cause?: Error }).cause?.message ?? (err as Error).message;
    const noCurrent = opts.mustExist && existsSync(path) && !existsSync(join(path, 'CURRENT'));
    const why = noCurrent ? `its CURRENT file is missing, so the store is damaged (${cause})` : cause;
    throw new StorageError('ERR_CORRUPT', `cannot open ${opts.what} (${path}): ${why}`, { cause: err });
  }
  const dropped = droppedOnOpen(path);
  if (dropped !== undefined) {
    await db.close().catch(() => undefined);
    throw new StorageError(
      'ERR_CORRUPT',
      `${opts.what} (${path}) is damaged: LevelDB skipped data it could not read while opening it (${dropped}). ` +
        'Not starting on it: remove the data dir and join the cluster again (or restore a snapshot).',
    );
  }
  return db;
}

/** The first line of this open's LOG that reports skipped data, if any. */
function droppedOnOpen(path: string): string | undefined {
  let log: string;
  try {
    log = readFileSync(join(path, 'LOG'), 'utf8');
  } catch {
    return undefined; // LevelDB could not write its info log: nothing to read
  }
  return log
    .split('\n')
    .find((line) => DROPPED_DATA.test(line))
    ?.replace(/^\S+ \S+ /, '') // LevelDB's timestamp and thread id
    .trim();
}
