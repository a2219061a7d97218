/**
 * Every port the agent listens on is tried before anything is written (agent/port-check.ts): a
 * port in use, or an address the board does not have, is refused naming the flag, and the data
 * dir is left empty (no member bootstrapped, no cluster joined as a learner that never starts).
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, freePort } from '../helpers/agents.js';

/** Runs `picloud-node agent --bootstrap` on new ports (some overridden) and a new data dir; its exit code and stderr. */
async function bootstrap(t: Test, extra: string[], ports: { client: number; peer: number; gossip: number; http: number }): Promise<{ code: number | null; stderr: string; dataDir: string }> {
  const root = mkdtempSync(join(tmpdir(), 'picloud-ports-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const dataDir = join(root, 'data');
  const args = [CLI, 'agent', '--name', 'p1', '--data-dir', dataDir, '--bootstrap', '--bind', '127.0.0.1', '--client-port', String(ports.client), '--peer-port', String(ports.peer), '--gossip-port', String(ports.gossip), '--http-port', String(ports.http), ...extra];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  clearTimeout(timer);
  return { code, stderr, dataDir };
}

t.test('a port in use or an address the board lacks: refused before the data dir is written', async (t) => {
  const ports = { client: await freePort(), peer: await freePort(), gossip: await freePort(), http: await freePort() };
  const held = createServer();
  await new Promise<void>((resolve) => held.listen(ports.peer, '127.0.0.1', resolve));
  const tcp = await bootstrap(t, [], ports);
  await new Promise<void>((resolve) => held.close(() => resolve()));
  t.equal(tcp.code, 1, 'peer port in use: exit 1');
  t.match(tcp.stderr, new RegExp(`--peer-port ${ports.peer}: 127\\.0\\.0\\.1:${ports.peer} is in use by another program \\(TCP\\)`));
  t.notMatch(tcp.stderr, /\n\s+at /, 'no stack trace');
  t.same(existsSync(tcp.dataDir) ? readdirSync(tcp.dataDir) : [], [], 'nothing written in the data dir');

  const udp = createSocket('udp4');
  await new Promise<void>((resolve) => udp.bind(ports.gossip, '127.0.0.1', resolve));
  const gossip = await bootstrap(t, [], ports);
  udp.close();
  t.equal(gossip.code, 1, 'gossip UDP port in use: exit 1');
  t.match(gossip.stderr, new RegExp(`--gossip-port ${ports.gossip}: 127\\.0\\.0\\.1:${ports.gossip} is in use by another program \\(UDP\\)`));
  t.same(existsSync(gossip.dataDir) ? readdirSync(gossip.dataDir) : [], [], 'nothing written in the data dir');

  // 192.0.2.0/24 is TEST-NET-1: no board has it.
  const absent = await bootstrap(t, ['--bind', '192.0.2.1', '--advertise', '192.0.2.1'], ports);
  t.equal(absent.code, 1, 'an address the board lacks: exit 1');
  t.match(absent.stderr, new RegExp(`--client-port ${ports.client}: 192\\.0\\.2\\.1:${ports.client} cannot be bound: this board has no such address`));
  t.same(existsSync(absent.dataDir) ? readdirSync(absent.dataDir) : [], [], 'nothing written in the data dir');
});
