/**
 * `picloud-node snapshot save|restore` with bad arguments: exit 2 and a message naming the
 * argument, before any server is dialled or any file written.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from '../helpers/agents.js';

t.test('bad snapshot arguments are refused before anything is dialled or written', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'picloud-snapcli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'snap.db');
  const cases: Array<[string[], RegExp]> = [
    [['save', file, '--endpoints', '127.0.0.1:99999'], /--endpoints: bad address "127\.0\.0\.1:99999"/],
    [['save', file, '--endpoints', '127.0.0.1:2379abc'], /--endpoints: bad address/],
    [['save', file, '--endpoints', 'https://'], /--endpoints: expected \[http:\/\/\|https:\/\/\]HOST:PORT/],
    [['save', dir], /is a directory: give the snapshot file's name/],
    [['save', join(dir, 'missing', 'snap.db')], /missing is not a directory: cannot save/],
    [['save', file, '--data-dir', dir], /snapshot save does not take --data-dir/],
    [['restore', file, '--data-dir', join(dir, 'r'), '--endpoints', 'x'], /snapshot restore does not take --endpoints/],
  ];
  for (const [args, message] of cases) {
    const r = spawnSync(process.execPath, [CLI, 'snapshot', ...args], { encoding: 'utf8', timeout: 20_000 });
    t.equal(r.status, 2, `${args.join(' ')}: exit 2 (${r.stderr.trim()})`);
    t.match(r.stderr, message);
  }
  t.same(readdirSync(dir), [], 'nothing written');
});
