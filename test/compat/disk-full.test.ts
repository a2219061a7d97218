/**
 * A full disk on one member, as a Raspberry Pi's SD card fills up: three agents, one with its
 * data dir on a small tmpfs, under writes until that disk is full. The member must stop by
 * itself with a clear fatal log line and exit code 1 (as etcd exits on a failed WAL write), not
 * crash with a stack trace; the other two keep serving; and once the disk has room again the
 * member starts, catches up and holds every acknowledged write (endpoint hashkv alike on all).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentCluster, hasEtcdctl, hashKvOfEachAgent } from '../helpers/agents.js';
import { SimpleKv } from '../helpers/kv-client.js';

/** Small enough to fill in seconds, large enough for a member to start and join. */
const SMALL_DISK = '24m';
const BIG_DISK = '512m';
/** Incompressible (LevelDB compresses with Snappy): the small disk fills after ~150 puts. */
const VALUE = randomBytes(75_000).toString('base64');
/** How long the writes may take to fill the small disk, and the member to stop after that. */
const FILL_DEADLINE_MS = 60_000;

function mount(args: string[]): { ok: boolean; err: string } {
  const r = spawnSync('mount', args, { encoding: 'utf8', timeout: 10_000 });
  return { ok: r.status === 0, err: (r.stderr ?? '') + (r.error?.message ?? '') };
}

function unavailable(): string | undefined {
  if (!hasEtcdctl()) return 'etcdctl not installed';
  if (process.getuid?.() !== 0) return 'mounting a small tmpfs needs root';
  const probe = mkdtempSync(join(tmpdir(), 'picloud-mount-probe-'));
  const r = mount(['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', probe]);
  if (r.ok) spawnSync('umount', [probe]);
  rmdirSync(probe);
  return r.ok ? undefined : `cannot mount tmpfs: ${r.err.trim()}`;
}

const why = unavailable();

t.test('a member whose disk fills stops cleanly, the others serve on, and it recovers once there is room', { skip: why ?? false }, async (t) => {
  const disk = mkdtempSync(join(tmpdir(), 'picloud-small-disk-'));
  const mounted = mount(['-t', 'tmpfs', '-o', `size=${SMALL_DISK}`, 'tmpfs', disk]);
  const cluster = new AgentCluster(['--tick-ms', '50', '--election-ticks', '10']);
  t.teardown(async () => {
    await cluster.stopAll();
    spawnSync('umount', [disk]);
    try {
      rmdirSync(disk);
    } catch {
      // still mounted (umount failed): leave it rather than fail the teardown
    }
  });
  if (!t.ok(mounted.ok, `a ${SMALL_DISK} tmpfs at ${disk}${mounted.ok ? '' : `: ${mounted.err}`}`)) return;
  const first = await cluster.add('f1');
  const second = await cluster.add('f2');
  const small = await cluster.add('f3');
  small.dataDir = join(disk, 'f3');
  cluster.start(first, true);
  await cluster.ready(first);
  cluster.token = readFileSync(join(first.dataDir, 'token'), 'utf8').trim();
  for (const a of [second, small]) cluster.start(a, false);
  for (const a of [second, small]) await cluster.ready(a);
  await cluster.waitVoters(3);
  const kv = new SimpleKv(`127.0.0.1:${first.ports.client}`, 10_000);
  t.teardown(() => kv.close());

  // Write until the small member has stopped (and a little more: the others must serve on).
  const acked: string[] = [];
  let exitCode: number | null | undefined;
  const exited = cluster.exited(small, FILL_DEADLINE_MS).then(
    (c) => (exitCode = c),
    () => (exitCode = undefined),
  );
  const fillStarted = Date.now();
  for (let i = 0; exitCode === undefined && Date.now() - fillStarted < FILL_DEADLINE_MS; i++) {
    await kv.put(`big/${i}`, VALUE);
    acked.push(`big/${i}`);
  }
  await exited;
  t.equal(exitCode, 1, `the member on the full disk exited with code 1 after ${acked.length} acknowledged puts of 100 kB`);
  const log = small.log.join('');
  t.match(log, /"level":60[^\n]*writing the (Raft log|applied state) failed[^\n]*(No space left on device|ENOSPC)/, 'it said why, in a fatal log line');
  t.notMatch(log, /triggerUncaughtException|UnhandledPromiseRejection|^\s+at /m, 'and did not crash with a stack trace');
  let afterAcked = 0;
  for (let i = 0; i < 20; i++) {
    try {
      await kv.put(`after/${i}`, 'x');
      acked.push(`after/${i}`);
      afterAcked++;
    } catch {
      // counted below
    }
  }
  t.equal(afterAcked, 20, 'the two others kept acknowledging writes (20 of 20 puts after it stopped)');

  t.ok(mount(['-o', `remount,size=${BIG_DISK}`, disk]).ok, `the disk grown to ${BIG_DISK}`);
  cluster.start(small, false);
  await cluster.ready(small, 30_000);
  const end = await hashKvOfEachAgent(cluster, [], 30_000);
  t.equal(new Set(end.revisions).size, 1, `restarted, it caught up to the others' revision (${end.revisions.join(', ')})`);
  t.equal(new Set(end.hashes).size, 1, `and hashes its key space as they do (${end.hashes.join(', ')})`);
  const onSmall = new SimpleKv(`127.0.0.1:${small.ports.client}`, 10_000);
  t.teardown(() => onSmall.close());
  let missing = 0;
  for (const k of acked) if ((await onSmall.get(k)) === null) missing++;
  t.equal(missing, 0, `all ${acked.length} acknowledged keys read back through it`);
});
