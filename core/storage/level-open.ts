/**
 * Opens a LevelDB store (classic-level) so damage is refused rather than repaired in silence.
 *
 * LevelDB's defaults favour starting over stopping: without CURRENT it creates an empty
 * database (deleting the tables it no longer references), and a write-ahead log record that fails
 * its checksum is skipped with a line in the store's own LOG file and nothing else. Either loses
 * acknowledged data on a member that then serves as if whole. So a store that must exist is
 * opened with createIfMissing off, and the LOG LevelDB writes anew at each open is read for the
 * records it dropped. A last record cut short by a power cut (never acknowledged) is read as the
 * end of the log by LevelDB, not as a drop; one whose payload did not reach the disk though its
 * header did is reported as a drop, and is let through when level-log-tail.ts found it to be the
 * newest log's torn tail before the open (and the owner is told, to log it).
 */
import { ClassicLevel } from 'classic-level';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { StorageError } from './errors.js';
import { tornTailOfNewestLog, type TornTail } from './level-log-tail.js';

/** What LevelDB's recovery writes to LOG when it skips data it could not read. */
const DROPPED_DATA = /dropping \d+ bytes|Corruption/;

export interface LevelOpenOptions {
  /** What the store holds, for messages ("the KV store"). */
  what: string;
  /** The data dir says this store was written before: a missing one is damage, not a first start. */
  mustExist: boolean;
  /** Told of a torn last record that LevelDB dropped from the newest log while opening. */
  onTornTail?: (torn: TornTail) => void;
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
  // Judged before the open: LevelDB replays the log into a table and deletes it while opening.
  const torn = tornTailOfNewestLog(path);
  try {
    await db.open();
  } catch (err) {
    // classic-level's message is only "Database failed to open"; LevelDB's reason is the cause.
    const cause = (err as { cause?: Error }).cause?.message ?? (err as Error).message;
    const noCurrent = opts.mustExist && existsSync(path) && !existsSync(join(path, 'CURRENT'));
    const why = noCurrent ? `its CURRENT file is missing, so the store is damaged (${cause})` : cause;
    throw new StorageError('ERR_CORRUPT', `cannot open ${opts.what} (${path}): ${why}`, { cause: err });
  }
  const drops = dropsOnOpen(path);
  const dropped = drops.find((line) => torn === undefined || !line.includes(`/${torn.file}: dropping `));
  if (dropped !== undefined) {
    await db.close().catch(() => undefined);
    throw new StorageError(
      'ERR_CORRUPT',
      `${opts.what} (${path}) is damaged: LevelDB skipped data it could not read while opening it (${dropped}). ` +
        'Not starting on it: remove the data dir and join the cluster again (or restore a snapshot).',
    );
  }
  if (torn !== undefined && drops.length > 0) opts.onTornTail?.(torn);
  return db;
}

/** The lines of this open's LOG that report skipped data. */
function dropsOnOpen(path: string): string[] {
  let log: string;
  try {
    log = readFileSync(join(path, 'LOG'), 'utf8');
  } catch {
    return []; // LevelDB could not write its info log: nothing to read
  }
  return log
    .split('\n')
    .filter((line) => DROPPED_DATA.test(line))
    .map((line) => line.replace(/^\S+ \S+ /, '').trim()); // LevelDB's timestamp and thread id
}
