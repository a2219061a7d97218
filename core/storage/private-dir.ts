/**
 * A member's data dir holds everything auth protects (the key space, the Raft log, the users'
 * password hashes) and the cluster token: only the account running the node may open it, as
 * etcd requires of its --data-dir (0700). Files inside keep LevelDB's modes; a directory no one
 * else can enter is what keeps them private.
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { StorageError } from './errors.js';

export const PRIVATE_DIR_MODE = 0o700;

/**
 * Creates `dir` (and its parents) private, or makes an existing one private. Returns the mode it
 * had when that was wider (for the caller to say so), undefined otherwise.
 *
 * Refused, changing nothing: a path that is not a directory (a mistyped --data-dir naming a file
 * or /dev/null must not be chmod-ed), a directory of another account's (its owner could read or
 * replace the member's data whatever the mode; root may use one, as before, unless it sits in a
 * shared directory such as /tmp, where anyone could have made it first), a shared one (sticky),
 * and one open to others that is neither empty nor a data dir already (--data-dir /etc would
 * otherwise be made 0700; a fresh file system's lost+found does not count).
 */
export function ensurePrivateDir(dir: string): number | undefined {
  try {
    makeDirs(dir, PRIVATE_DIR_MODE);
  } catch (e) {
    throw new StorageError('ERR_INVALID_ARGUMENT', `cannot create the data dir ${dir}: ${(e as Error).message}`);
  }
  const st = statSync(dir);
  if (!st.isDirectory()) throw new StorageError('ERR_INVALID_ARGUMENT', `${dir} is not a directory: give picloud-node a directory of its own (it is made if missing)`);
  const mode = st.mode & 0o777;
  const self = process.getuid?.();
  const sticky = (st.mode & 0o1000) !== 0;
  if (sticky && (mode & ~PRIVATE_DIR_MODE) !== 0) {
    throw new StorageError('ERR_INVALID_ARGUMENT', `${dir} is a shared directory (mode ${(st.mode & 0o7777).toString(8)}): give picloud-node a directory of its own, e.g. ${dir.replace(/\/+$/, '')}/picloud`);
  }
  if (self !== undefined && st.uid !== self && (self !== 0 || inSharedDir(dir))) {
    throw new StorageError('ERR_INVALID_ARGUMENT', `${dir} belongs to another account (uid ${st.uid}, this process runs as uid ${self}), which could read or replace the member's data: give picloud-node a directory of its own`);
  }
  if ((mode & ~PRIVATE_DIR_MODE) === 0) return undefined;
  if (!emptyOrDataDir(dir)) {
    throw new StorageError('ERR_INVALID_ARGUMENT', `${dir} can be read by other accounts (mode ${mode.toString(8)}) and holds other files: give picloud-node a new directory (it is made private), or make this one private yourself (chmod 700 ${dir})`);
  }
  chmodSync(dir, PRIVATE_DIR_MODE);
  return mode;
}

/** What a data dir holds once an agent has started in it (any one will do). */
const DATA_DIR_ENTRIES = ['identity.json', 'token', 'raft', 'kv', 'gossip', 'agent.lock'];

/** Whether `dir`'s parent is sticky and open to all (as /tmp): anyone may have made `dir`. */
function inSharedDir(dir: string): boolean {
  const parent = statSync(dirname(resolve(dir)));
  return (parent.mode & 0o1000) !== 0 && (parent.mode & 0o002) !== 0;
}

function emptyOrDataDir(dir: string): boolean {
  const entries = readdirSync(dir).filter((e) => e !== 'lost+found');
  return entries.length === 0 || entries.some((e) => DATA_DIR_ENTRIES.includes(e));
}

/**
 * mkdir -p, one level at a time: Node's recursive mkdir retries for ever where mkdir answers
 * ENOENT under a parent that exists (/proc, /sys), which hung a node given such a data dir.
 */
function makeDirs(dir: string, mode: number): void {
  const missing: string[] = [];
  for (let p = resolve(dir); !existsSync(p); p = dirname(p)) {
    missing.push(p);
    if (dirname(p) === p) break;
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d, { mode });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}
