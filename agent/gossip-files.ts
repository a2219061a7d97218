/**
 * What gossip keeps in the data dir (under gossip/): the keyring, the cluster it belongs to, the
 * incarnation and the peers last seen alive. Read here, apart from the gossip subsystem, so that
 * the command line (agent/config.ts) can tell a node that joined before from a first start.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseHostPort } from '../core/net/address.js';

export const GOSSIP_DIR = 'gossip';
export const KEYRING_FILE = 'keyring.json';
/** The peers last seen alive, joined again after a restart (as Serf's snapshot rejoins). */
export const PEERS_FILE = 'peers.json';
/** Most remembered peers kept: enough to find the cluster again, few to try at a restart. */
export const REMEMBERED_PEERS_MAX = 32;

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
 * The data dir of a node that joined a cluster before: its gossip keyring (the cluster's keys,
 * which is all gossip needs — not the token) and the peers it saw alive (written only once it
 * saw one). A worker with both restarts without --join or --token, as a Consul or Serf agent
 * restarts on its keyring file and snapshot.
 */
export function joinedBefore(dataDir: string): boolean {
  return existsSync(join(gossipDir(dataDir), KEYRING_FILE)) && loadRememberedPeers(dataDir).length > 0;
}
