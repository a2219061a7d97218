/**
 * picloud-node token [--data-dir DIR] [--worker]: prints the join token of the cluster this data
 * dir belongs to. Read from the data dir (mode 0600), never served over the network.
 *
 * --worker prints a worker token instead: the gossip key the manager's keyring seals with now
 * and the public key keyring changes are signed with (core/net/token.ts). A worker joined with
 * it gossips but cannot speak Raft, become a manager, or change the keyring for others. Rotating the gossip key (`keyring install`, `use`, `remove` of the old one) is what
 * retires a worker token: the next `token --worker` prints the new one.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Keyring } from '../../core/gossip/keyring/index.js';
import { formatWorkerToken, parseToken } from '../../core/net/token.js';
import { ConfigError, defaultDevDataDir } from '../config.js';
import { GOSSIP_DIR, KEYRING_FILE } from '../gossip-files.js';
import { clusterKeyringAuthority } from '../gossip-subsystem.js';

export async function run(argv: string[]): Promise<number> {
  let dataDir: string;
  let worker: boolean;
  try {
    const { values } = parseArgs({ args: argv, options: { 'data-dir': { type: 'string' }, worker: { type: 'boolean' } }, strict: true });
    dataDir = values['data-dir'] ?? defaultDevDataDir();
    worker = values.worker ?? false;
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  let token: string;
  try {
    token = readFileSync(join(dataDir, 'token'), 'utf8').trim();
  } catch {
    throw new ConfigError(`no token in ${dataDir}: is it the --data-dir of a manager that has bootstrapped or joined?`);
  }
  let digest: string;
  try {
    digest = parseToken(token).digest;
  } catch (e) {
    throw new ConfigError(`the token in ${dataDir} is damaged (${(e as Error).message})`);
  }
  if (worker) token = formatWorkerToken(digest, currentGossipKey(dataDir), clusterKeyringAuthority(token).publicKey);
  process.stdout.write(token + '\n');
  return 0;
}

/** The key the manager's gossip keyring seals with now (the keyring it saved). */
function currentGossipKey(dataDir: string): Buffer {
  const file = join(dataDir, GOSSIP_DIR, KEYRING_FILE);
  try {
    return Buffer.from(Keyring.fromJSON(JSON.parse(readFileSync(file, 'utf8'))).primaryKey(), 'base64');
  } catch (e) {
    throw new ConfigError(`no readable gossip keyring in ${file} (${(e as Error).message}): start this manager once, so that it joins gossip`);
  }
}
