/**
 * A member's data dir holds everything auth protects (the key space, the Raft log, the users'
 * password hashes) and the cluster token: only the account running the node may open it, as
 * etcd requires of its --data-dir (0700). Files inside keep LevelDB's modes; a directory no one
 * else can enter is what keeps them private.
 */
import { chmodSync, mkdirSync, statSync } from 'node:fs';

export const PRIVATE_DIR_MODE = 0o700;

/**
 * Creates `dir` (and its parents) private, or makes an existing one private. Returns the mode it
 * had when that was wider (for the caller to say so), undefined otherwise.
 */
export function ensurePrivateDir(dir: string): number | undefined {
  mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  const mode = statSync(dir).mode & 0o777;
  if ((mode & ~PRIVATE_DIR_MODE) === 0) return undefined;
  chmodSync(dir, PRIVATE_DIR_MODE);
  return mode;
}
