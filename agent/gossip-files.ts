/**
 * What gossip keeps in the data dir (under gossip/): the keyring, the cluster it belongs to, the
 * incarnation, the peers last seen alive and the reaped members' last incarnations. Read here,
 * apart from the gossip subsystem, so that the command line (agent/config.ts) can tell a node
 * that joined before from a first start.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { MAX_INCARNATION, MAX_NAME_BYTES, MAX_REAPED_MEMBERS } from '../core/gossip/limits.js';
import { parseHostPort } from '../core/net/address.js';

export const GOSSIP_DIR = 'gossip';
export const KEYRING_FILE = 'keyring.json';
/**
 * Beside a keyring this node made from the token it was given to join with, until a join got
 * through (or the keyring changed): such a keyring is replaced when the next start brings
 * another key. A keyring without it (a member's, copied in; one that joined) is never replaced.
 */
export const KEYRING_UNCONFIRMED_FILE = 'keyring-unconfirmed';
/** The public key keyring changes must be signed with (hex), for a restart without a token. */
export const KEYRING_AUTHORITY_FILE = 'keyring-authority';
/** The peers last seen alive, joined again after a restart (as Serf's snapshot rejoins). */
export const PEERS_FILE = 'peers.json';
/** Most remembered peers kept: enough to find the cluster again, few to try at a restart. */
export const REMEMBERED_PEERS_MAX = 32;

/**
 * The reaped members' last incarnations (GossipMachine.reapedMembers()), a JSON array of
 * [name, incarnation] pairs, oldest first: a restarted node still refuses a replayed alive
 * message of a member reaped before the restart.
 */
export const REAPED_FILE = 'reaped.json';
/** The incarnation this node last announced, {"incarnation": N}: a restart starts above it. */
export const INCARNATION_FILE = 'incarnation.json';
/** Larger is damage (the file is about 30 bytes), not read. */
export const MAX_INCARNATION_FILE_BYTES = 4096;
/** Largest reaped.json read: MAX_REAPED_MEMBERS entries with the longest names, JSON-escaped
 * (a name of 128 bytes is at most 6 × 128 characters written as \u escapes). Larger is damage. */
export const MAX_REAPED_FILE_BYTES = MAX_REAPED_MEMBERS * (6 * MAX_NAME_BYTES + 32);

export function gossipDir(dataDir: string): string {
  return join(dataDir, GOSSIP_DIR);
}

/**
 * The peers saved by a previous run (HOST:PORT): a restarted node whose --join seed is down, or
 * that has no --join at all, finds the cluster through them. Damage means none (`warn` says so).
 */
export function loadRememberedPeers(dataDir: string, warn: (message: string) => void = () => undefined): string[] {
  const file = join(gossipDir(dataDir), PEERS_FILE);
  let list: unknown;
  try {
    list = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') warn(`gossip: ignoring unreadable ${file}: ${(err as Error).message}`);
    return [];
  }
  if (!Array.isArray(list)) return [];
  return list.filter((p): p is string => {
    if (typeof p !== 'string') return false;
    try {
      parseHostPort(p);
      return true;
    } catch {
      return false;
    }
  }).slice(0, REMEMBERED_PEERS_MAX);
}

/**
 * The reaped members saved by a previous run, oldest first, at most MAX_REAPED_MEMBERS (the
 * newest). A missing file is a first start; a damaged one (unreadable, too large, not a list)
 * means none, and bad entries are skipped, each case said through `warn`: the node then only
 * loses this protection against replays until it reaps again, so it must not keep it from
 * starting.
 */
export function loadReapedMembers(dataDir: string, warn: (message: string) => void = () => undefined): Array<[string, number]> {
  const file = join(gossipDir(dataDir), REAPED_FILE);
  let list: unknown;
  try {
    const size = statSync(file).size;
    if (size > MAX_REAPED_FILE_BYTES) throw new Error(`${size} bytes, more than the ${MAX_REAPED_FILE_BYTES} it can hold`);
    list = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') warn(`gossip: ignoring unreadable ${file} (reaped members are forgotten): ${(err as Error).message}`);
    return [];
  }
  if (!Array.isArray(list)) {
    warn(`gossip: ignoring ${file}: not a list of [name, incarnation] (reaped members are forgotten)`);
    return [];
  }
  const out = list.filter(
    (e): e is [string, number] =>
      Array.isArray(e) && e.length === 2 && typeof e[0] === 'string' && e[0].length > 0 && Buffer.byteLength(e[0]) <= MAX_NAME_BYTES &&
      Number.isSafeInteger(e[1]) && e[1] >= 0 && e[1] <= MAX_INCARNATION,
  );
  if (out.length < list.length) warn(`gossip: skipped ${list.length - out.length} malformed entries of ${file}`);
  return out.slice(-MAX_REAPED_MEMBERS);
}

/**
 * The incarnation this node last announced. Missing is a first start (0); damaged is said
 * through `warn` and read as 0 too: the node then starts low and refutes, with one above it,
 * the higher incarnation the others still hold for it the first time they gossip it back.
 */
export function loadIncarnation(dataDir: string, warn: (message: string) => void = () => undefined): number {
  const file = join(gossipDir(dataDir), INCARNATION_FILE);
  let v: unknown;
  try {
    const size = statSync(file).size;
    if (size > MAX_INCARNATION_FILE_BYTES) throw new Error(`${size} bytes, more than an incarnation takes`);
    v = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') warn(`gossip: ignoring unreadable ${file} (starting at incarnation 1): ${(err as Error).message}`);
    return 0;
  }
  const inc = (v as { incarnation?: unknown } | null)?.incarnation;
  if (typeof inc === 'number' && Number.isSafeInteger(inc) && inc >= 0) return inc;
  warn(`gossip: ignoring ${file}: no incarnation in it (starting at incarnation 1)`);
  return 0;
}

/**
 * The data dir of a node that joined a cluster before: its gossip keyring (the cluster's keys,
 * which is all gossip needs — not the token) and the peers it saw alive (written only once it
 * saw one). A worker with both restarts without --join or --token, as a Consul or Serf agent
 * restarts on its keyring file and snapshot.
 */
export function joinedBefore(dataDir: string): boolean {
  return existsSync(join(gossipDir(dataDir), KEYRING_FILE)) && loadRememberedPeers(dataDir).length > 0;
}
