/**
 * A member's data dir holds everything auth protects (the key space, the Raft log, the users'
 * password hashes) and the cluster token: only the account running the node may open it, as
 * etcd requires of its --data-dir (0700). Files inside keep LevelDB's modes; a directory no one
 * else can enter is what keeps them private.
 */
import { chmodSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { StorageError } from './errors.js';

export const PRIVATE_DIR_MODE = 0o700;

/**
 * Creates `dir` (and its parents) private, or makes an existing one private. Returns the mode it
 * had when that was wider (for the caller to say so), undefined otherwise.
 */
export function ensurePrivateDir(dir: string): number | undefined {
  try {
    makeDirs(dir, PRIVATE_DIR_MODE);
  } catch (e) {
    throw new StorageError('ERR_INVALID_ARGUMENT', `cannot create the data dir ${dir}: ${(e as Error).message}`);
  }
  const st = statSync(dir);
  const mode = st.mode & 0o777;
  if ((mode & ~PRIVATE_DIR_MODE) === 0) return undefined;
  // A shared directory (/tmp: sticky, or another account's) is not made private under its users.
  const owner = process.getuid?.();
  if ((st.mode & 0o1000) !== 0 || (owner !== undefined && owner !== 0 && st.uid !== owner)) {
    throw new StorageError('ERR_INVALID_ARGUMENT', `${dir} is a shared directory (mode ${(st.mode & 0o7777).toString(8)}, owner uid ${st.uid}): give picloud-node a directory of its own, e.g. ${dir.replace(/\/+$/, '')}/picloud`);
  }
  chmodSync(dir, PRIVATE_DIR_MODE);
  return mode;
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
