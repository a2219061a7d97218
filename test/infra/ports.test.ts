/**
 * The test port allocator: ports are outside the kernel's ephemeral range, never handed to two
 * processes at once, and a lock left by a dead process is taken over.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { forgetPort, freePort, reservePort } from '../helpers/ports.js';

const PORTS_MODULE = fileURLToPath(new URL('../helpers/ports.js', import.meta.url));
const LOCK_DIR = join(tmpdir(), 'picloud-ports');

t.test('ports are outside the ephemeral range and locked by this process', async (t) => {
  const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number) as [number, number];
  const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()));
  t.equal(new Set(ports).size, ports.length, 'no port handed out twice');
  for (const p of ports) {
    t.ok(p < low || p > high, `${p} outside ${low}-${high}`);
    t.equal(readFileSync(join(LOCK_DIR, String(p)), 'utf8'), String(process.pid));
  }
});

t.test('another process never gets a port this one holds', async (t) => {
  const mine = new Set(await Promise.all(Array.from({ length: 50 }, () => freePort())));
  const script = `import { freePort, reservePort } from ${JSON.stringify(PORTS_MODULE)}; const out = []; for (let i = 0; i < 200; i++) out.push(await freePort()); console.log(JSON.stringify(out));`;
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  t.equal(child.status, 0, child.stderr);
  const theirs = JSON.parse(child.stdout) as number[];
  t.equal(theirs.filter((p) => mine.has(p)).length, 0, 'disjoint from the ports this process holds');
  t.notOk(theirs.some((p) => existsSync(join(LOCK_DIR, String(p))) && readFileSync(join(LOCK_DIR, String(p)), 'utf8') !== String(process.pid)), 'the child released its locks on exit');
});

t.test('a lock held by a dead pid is taken over; one held by a live pid is not', async (t) => {
  mkdirSync(LOCK_DIR, { recursive: true });
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!; // exited by now
  // Ports this process locked first, so no other test process holds them (a neighbouring port
  // may well be another file's, running beside this one).
  const stale = await freePort();
  forgetPort(stale);
  writeFileSync(join(LOCK_DIR, String(stale)), String(dead));
  t.ok(await reservePort(stale), 'the stale lock was taken over');
  t.equal(readFileSync(join(LOCK_DIR, String(stale)), 'utf8'), String(process.pid));

  const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  const taken = await freePort();
  forgetPort(taken);
  t.teardown(() => {
    live.kill('SIGKILL');
    rmSync(join(LOCK_DIR, String(taken)), { force: true });
  });
  writeFileSync(join(LOCK_DIR, String(taken)), String(live.pid));
  t.notOk(await reservePort(taken), 'a live owner keeps its port');
  t.equal(readFileSync(join(LOCK_DIR, String(taken)), 'utf8'), String(live.pid), 'and its lock');
});
