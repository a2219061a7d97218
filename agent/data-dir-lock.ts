/**
 * One agent per data dir. A second process on a running member's dir would share its gossip
 * files (incarnation, peers, keyring) and, as a worker, run a second copy of the node; a manager's
 * LevelDB stores lock themselves, but only once opened, after the TLS files and gossip state
 * may have been touched. So the agent takes DATA_DIR/agent.lock first: a file naming its pid and
 * that process's start time (/proc/PID/stat), so a lock left by a crashed agent (or a pid since
 * reused by another program) is seen to be stale and taken over at once, with nothing to
 * refresh while running (a lock by timestamps would write the SD card every few seconds and
 * keep a crashed agent's board down until it aged).
 */
import { closeSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const LOCK_FILE = 'agent.lock';
/** A takeover file this old that names no one was left by a start that died writing it. */
const HALF_WRITTEN_MS = 10_000;

/** Another agent holds the data dir, or its lock file could not be written. */
export class DataDirLockError extends Error {
  readonly code = 'DATA_DIR_LOCKED';
  constructor(message: string) {
    super(message);
    this.name = 'DataDirLockError';
  }
}

interface LockOwner {
  pid: number;
  /** The process's start time in clock ticks since boot (Linux), or null where unknown. */
  started: number | null;
}

/** A process's start time from /proc (field 22 of stat, after the command's parenthesised name); null for a zombie (it has exited). */
function startTimeOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return null;
    const started = Number(fields[19]);
    return Number.isSafeInteger(started) ? started : null;
  } catch {
    return null;
  }
}

function alive(owner: LockOwner): boolean {
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false; // ESRCH: no such process
  }
  // The pid is someone's: the same process only if it started when the lock says (an exited
  // agent not yet reaped by its parent has no start time here, so it is not taken for live).
  return owner.started === null || startTimeOf(owner.pid) === owner.started;
}

function readOwner(path: string): LockOwner | undefined {
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockOwner>;
    return Number.isSafeInteger(v.pid) && (v.pid as number) > 0 ? { pid: v.pid as number, started: typeof v.started === 'number' ? v.started : null } : undefined;
  } catch {
    return undefined; // unreadable or half-written: no live owner can be named
  }
}

/** Creates `path` holding `text` unless it exists (false then). */
function createExclusive(path: string, text: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
  return true;
}

function refuseIfHeld(dataDir: string, owner: LockOwner | undefined, how = ''): void {
  if (owner !== undefined && alive(owner)) {
    throw new DataDirLockError(`${dataDir} is in use by another picloud-node (pid ${owner.pid}${how ? `, ${how}` : ''}): one agent per data dir`);
  }
}

/** Takes the data dir's lock for this process; refuses if a live agent holds it. Returns the release. */
export function lockDataDir(dataDir: string): () => void {
  const path = join(dataDir, LOCK_FILE);
  const me: LockOwner = { pid: process.pid, started: startTimeOf(process.pid) };
  const text = JSON.stringify(me) + '\n';
  let created: boolean;
  try {
    created = createExclusive(path, text);
  } catch (e) {
    throw new DataDirLockError(`cannot lock the data dir ${dataDir}: ${(e as Error).message}`);
  }
  if (!created) {
    refuseIfHeld(dataDir, readOwner(path));
    // Stale (its agent is gone). Takeovers go one at a time, behind a second lock taken the same
    // way, and look at the owner again inside it: two starts that both found it stale would
    // otherwise both replace it.
    const takeover = `${path}.takeover`;
    if (!createExclusive(takeover, text)) {
      const taker = readOwner(takeover);
      refuseIfHeld(dataDir, taker, 'starting at the same time');
      // Unreadable: being written this instant, or left half-written by a start that died.
      if (taker === undefined && Date.now() - statSync(takeover).mtimeMs < HALF_WRITTEN_MS) {
        throw new DataDirLockError(`${dataDir} is being taken over by another picloud-node starting at the same time: one agent per data dir`);
      }
      rmSync(takeover, { force: true }); // left by a start that died taking over
      if (!createExclusive(takeover, text)) throw new DataDirLockError(`${dataDir} is being taken over by another picloud-node starting at the same time: one agent per data dir`);
    }
    try {
      refuseIfHeld(dataDir, readOwner(path));
      // Replaced whole, never seen half-written.
      writeFileSync(`${path}.${process.pid}`, text, { mode: 0o600 });
      renameSync(`${path}.${process.pid}`, path);
    } finally {
      rmSync(takeover, { force: true });
    }
  }
  return () => {
    if (readOwner(path)?.pid === process.pid) rmSync(path, { force: true });
  };
}
