// The Node flags picloud-node runs with (agent/node-flags.ts): every launcher passes the same
// list, V8 honours it, and an agent started without it says so.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NODE_FLAGS, missingNodeFlags } from '../../agent/node-flags.js';
import { freePort } from '../helpers/ports.js';
import { until } from '../helpers/wait.js';

const CLI = join(process.cwd(), 'dist/agent/cli.js');
const FLAGS = NODE_FLAGS.join(' ');

t.test('npm start and the picloud-node bin pass exactly NODE_FLAGS', async (t) => {
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: { start: string }; bin: Record<string, string> };
  t.equal(pkg.scripts.start, `node ${FLAGS} dist/agent/cli.js agent --dev`);
  t.equal(pkg.bin['picloud-node'], 'dist/agent/cli.js');
  const shebang = readFileSync(CLI, 'utf8').split('\n')[0]!;
  t.equal(shebang, `#!/usr/bin/env -S node ${FLAGS}`);
  // What the kernel runs for that line: env splits it (-S) and finds node on the PATH.
  const [interpreter, ...args] = shebang.slice(2).split(' ');
  const r = spawnSync(interpreter!, [...args, CLI, 'version'], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, PATH: `${join(process.execPath, '..')}:${process.env.PATH ?? ''}` } });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^picloud-node \S+ \(node v/);
});

t.test('V8 honours them: the young generation stays within 2 × 4 MiB (and does not without them)', async (t) => {
  const churn = `const v8 = require('v8'); const keep = [];
    for (let i = 0; i < 2e6; i++) { const o = { a: i, b: 'x'.repeat(i % 50) }; if (i % 10 === 0) keep.push(o); }
    process.stdout.write(String(v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size));`;
  const newSpace = (flags: readonly string[]): number => Number(spawnSync(process.execPath, [...flags, '-e', churn], { encoding: 'utf8', timeout: 60_000 }).stdout);
  t.ok(newSpace(NODE_FLAGS) <= 8 * 1024 * 1024, 'with the flags');
  t.ok(newSpace([]) > 8 * 1024 * 1024, 'the default grows past it, so the check above can fail');
});

t.test('missingNodeFlags compares by name', async (t) => {
  t.same(missingNodeFlags([]), [...NODE_FLAGS]);
  t.same(missingNodeFlags([...NODE_FLAGS]), []);
  t.same(missingNodeFlags(['--max-semi-space-size=8']), [], 'another value given on purpose');
  t.same(missingNodeFlags(['--max-old-space-size=4']), [...NODE_FLAGS]);
});

t.test('an agent started without them warns; with them it does not', async (t) => {
  const started = async (flags: readonly string[]): Promise<string> => {
    const dir = mkdtempSync(join(tmpdir(), 'picloud-flags-'));
    const ports = await Promise.all([0, 1, 2, 3].map(() => freePort()));
    const proc = spawn(process.execPath, [...flags, CLI, 'agent', '--name', 'f1', '--data-dir', join(dir, 'f1'), '--bootstrap', '--bind', '127.0.0.1',
      '--client-port', String(ports[0]), '--peer-port', String(ports[1]), '--gossip-port', String(ports[2]), '--http-port', String(ports[3])], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    try {
      await until('the agent started', () => log.includes('"msg":"agent started"') || proc.exitCode !== null, 30_000);
    } finally {
      proc.kill('SIGKILL');
      await new Promise((r) => proc.once('close', r));
      rmSync(dir, { recursive: true, force: true });
    }
    t.match(log, /"msg":"agent started"/, 'it started');
    return log;
  };
  t.match(await started([]), new RegExp(`"missing":\\["${NODE_FLAGS[0]}"\\].*"msg":"node was started without the flags picloud-node runs with`));
  t.notMatch(await started(NODE_FLAGS), /node was started without the flags/);
});
