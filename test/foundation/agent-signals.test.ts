/**
 * Signals are heard from the start (agent/cli.ts): SIGTERM or SIGINT while the agent is still
 * starting (here a join retried against a seed that never answers) exits at once with a log line
 * and 128 + the signal's number, not silently by the signal; a no-argument call prints the usage
 * on stderr.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateToken } from '../../core/net/token.js';
import { CLI, freePort } from '../helpers/agents.js';

t.test('a signal while the agent is starting (joining) ends it at once, saying so', async (t) => {
  for (const [signal, code] of [['SIGTERM', 143], ['SIGINT', 130]] as const) {
    const root = mkdtempSync(join(tmpdir(), 'picloud-signals-'));
    t.teardown(() => rmSync(root, { recursive: true, force: true }));
    const [client, peer, gossip, http, seed] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
    const child = spawn(process.execPath, [CLI, 'agent', '--name', 'j1', '--data-dir', join(root, 'data'), '--bind', '127.0.0.1', '--join', `127.0.0.1:${seed}`, '--token', generateToken(), '--client-port', String(client), '--peer-port', String(peer), '--gossip-port', String(gossip), '--http-port', String(http)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const closed = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('close', (c, s) => resolve([c, s])));
    // Joining: the seed refuses, the join is retried.
    const deadline = Date.now() + 15_000;
    while (!/join|retry/i.test(stderr) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const sent = Date.now();
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    const [exitCode, bySignal] = await closed;
    clearTimeout(timer);
    t.equal(bySignal, null, `${signal}: not killed by the signal`);
    t.equal(exitCode, code, `${signal}: exit ${code}`);
    t.ok(Date.now() - sent < 5_000, `${signal}: at once (${Date.now() - sent} ms)`);
    t.match(stderr, new RegExp(`"signal":"${signal}".*signal while starting: exiting now`), `${signal}: the log says so`);
  }
});

t.test('no arguments: the usage on stderr, exit 2', async (t) => {
  const r = spawnSync(process.execPath, [CLI], { encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 2);
  t.equal(r.stdout, '');
  t.match(r.stderr, /^usage: picloud-node <command>/);
});
