/**
 * picloud-node token [--data-dir DIR]: prints the join token of the cluster this data dir
 * belongs to. Read from the data dir (mode 0600), never served over the network.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, defaultDevDataDir } from '../config.js';

export async function run(argv: string[]): Promise<number> {
  let dataDir: string;
  try {
    const { values } = parseArgs({ args: argv, options: { 'data-dir': { type: 'string' } }, strict: true });
    dataDir = values['data-dir'] ?? defaultDevDataDir();
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  let token: string;
  try {
    token = readFileSync(join(dataDir, 'token'), 'utf8').trim();
  } catch {
    throw new ConfigError(`no token in ${dataDir}: is it the --data-dir of a manager that has bootstrapped or joined?`);
  }
  process.stdout.write(token + '\n');
  return 0;
}
