/**
 * `picloud-node keyring install|use|remove KEY | list | generate [--local] [--json]
 * [--http HOST:PORT]`: gossip key rotation without downtime. The local agent applies the
 * operation to itself and to every live member over the encrypted gossip stream (like Serf's
 * `keys`), and reports how many members succeeded. Rotation: install the new key everywhere,
 * use it, then remove the old one.
 */
import { parseArgs } from 'node:util';
import { generateKey, parseKey } from '../../core/gossip/keyring/index.js';
import { agentBaseUrl, agentFetch, agentJson, UsageError, type CommandIo } from './members.js';

const USAGE = 'usage: picloud-node keyring install|use|remove KEY | list | generate  [--local] [--json] [--http HOST:PORT (default 127.0.0.1:7480)]';

const stdio: CommandIo = {
  out: (l) => process.stdout.write(l + '\n'),
  err: (l) => process.stderr.write(l + '\n'),
};

interface KeyringResult {
  op: string;
  members: number;
  ok: number;
  errors: Array<{ node: string; code: string; message: string }>;
  keys?: Array<{ key: string; members: number; primaryOn: number }>;
}

const PAST: Record<string, string> = { install: 'installed', use: 'now primary', remove: 'removed' };

export async function run(argv: string[], io: CommandIo = stdio): Promise<number> {
  let values: { json?: boolean; local?: boolean; http?: string; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: { json: { type: 'boolean' }, local: { type: 'boolean' }, http: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: true,
    }));
  } catch (err) {
    io.err(`error: ${(err as Error).message}`);
    io.err(USAGE);
    return 2;
  }
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  const [op, key, ...extra] = positionals;
  try {
    if (op === 'generate') {
      if (key !== undefined) throw new UsageError('generate takes no KEY');
      io.out(generateKey());
      return 0;
    }
    if (op !== 'install' && op !== 'use' && op !== 'remove' && op !== 'list') {
      throw new UsageError(op === undefined ? 'missing operation' : `unknown operation "${op}"`);
    }
    if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
    if (op === 'list' && key !== undefined) throw new UsageError('list takes no KEY');
    if (op !== 'list') {
      if (key === undefined) throw new UsageError(`${op} needs a KEY (base64 of 32 bytes; see "keyring generate")`);
      try {
        parseKey(key);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
    }
    const base = agentBaseUrl(values.http);
    const q = values.local ? '?local=1' : '';
    const res =
      op === 'list'
        ? await agentFetch(base, `/v1/agent/keyring${q}`)
        : await agentFetch(base, `/v1/agent/keyring/${op}${q}`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ key }),
          });
    const r = await agentJson<KeyringResult>(res);
    if (values.json) io.out(JSON.stringify(r, null, 2));
    else if (op === 'list') {
      io.out(`${r.ok} of ${r.members} members answered`);
      for (const k of r.keys ?? []) io.out(`${k.key}  on ${k.members}/${r.ok}${k.primaryOn > 0 ? `  primary on ${k.primaryOn}` : ''}`);
    } else {
      io.out(`key ${PAST[op]} on ${r.ok} of ${r.members} members`);
    }
    if (!values.json) for (const e of r.errors) io.err(`  ${e.node}: ${e.code} ${e.message === e.code ? '' : e.message}`.trimEnd());
    return r.errors.length === 0 ? 0 : 1;
  } catch (err) {
    io.err(`error: ${(err as Error).message}`);
    if (err instanceof UsageError) io.err(USAGE);
    return err instanceof UsageError ? 2 : 1;
  }
}
