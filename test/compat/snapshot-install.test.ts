/**
 * A follower catching up by snapshot, over real processes and disks:
 * - a snapshot whose bytes arrive damaged (one bit flipped in the follower's spool by a test
 *   fixture loaded with `node --import`) is refused before it is installed, the follower keeps
 *   running, and the snapshot sent again is installed;
 * - a follower killed between installing a snapshot and persisting the state restored from it
 *   restarts from the snapshot file (as etcd opens its snapshot db when the backend is behind
 *   it). The crash window is recreated by putting back the applied-state directory from before
 *   the snapshot arrived;
 * - a follower that catches up by snapshot takes the members' quotas from its member table (a
 *   member's quota recorded while it was down, in entries compacted away).
 */
import t from 'tap';
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentCluster, AgentProc, etcdctl, hasEtcdctl, scrapeMetrics } from '../helpers/agents.js';
import { until } from '../helpers/wait.js';

const SNAPSHOT_COUNT = 20;
const SNAPSHOT_CATCHUP_ENTRIES = 5;
const EARLY_KEYS = 10;
const LATE_KEYS = 60;
const CORRUPT_FIRST_SPOOLED_CHUNK = fileURLToPath(new URL('./fixtures/corrupt-first-spooled-chunk.js', import.meta.url));

/** How long each wait for the follower may take. */
const WAIT_MS = 20_000;

/** Keys under snap/ as this member alone sees them (a serializable read, no leader involved). */
function localKeys(cluster: AgentCluster, a: AgentProc): string[] {
  const r = etcdctl(cluster.endpoints([a]), ['get', 'snap/', '--prefix', '--keys-only', '--consistency=s']);
  if (r.status !== 0) throw new Error(`etcdctl get on ${a.name}: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.length > 0).sort();
}

const logs = (a: AgentProc): string => a.log.join('');

t.test('a damaged snapshot is refused and sent again; a crash between installing one and persisting its state is recovered at start', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster(['--tick-ms', '50', '--snapshot-count', String(SNAPSHOT_COUNT), '--snapshot-catchup-entries', String(SNAPSHOT_CATCHUP_ENTRIES)]);
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['s1', 's2', 's3']);
  const [s1, s2, s3] = cluster.agents as [AgentProc, AgentProc, AgentProc];
  const others = cluster.endpoints([s1, s2]);
  for (let i = 0; i < EARLY_KEYS; i++) t.equal(etcdctl(others, ['put', `snap/early/${i}`, 'v']).status, 0);
  await until('s3 to apply the early keys', () => localKeys(cluster, s3).length === EARLY_KEYS, WAIT_MS);

  cluster.kill(s3, 'SIGTERM');
  await cluster.exited(s3);
  const kvDir = join(s3.dataDir, 'kv');
  const oldKv = join(cluster.root, 's3-kv-before-snapshot');
  cpSync(kvDir, oldKv, { recursive: true });

  // Past the compaction window: s3 can only catch up by snapshot.
  for (let i = 0; i < LATE_KEYS; i++) t.equal(etcdctl(others, ['put', `snap/late/${i}`, 'v']).status, 0);
  const expected = localKeys(cluster, s1);
  t.equal(expected.length, EARLY_KEYS + LATE_KEYS, 'the leader side holds every key');
  s3.nodeArgs = ['--import', CORRUPT_FIRST_SPOOLED_CHUNK];
  cluster.start(s3, false);
  await cluster.ready(s3);
  await until('s3 to install a snapshot', () => logs(s3).includes('installed a snapshot received from the leader'), WAIT_MS);
  await until('s3 to catch up', () => localKeys(cluster, s3).length === expected.length, WAIT_MS);
  t.ok(logs(s3).includes('refused a snapshot from the leader') && logs(s3).includes('"code":"ERR_SNAPSHOT_REFUSED"'), 'the damaged snapshot was refused');
  t.equal(logs(s3).split('installed a snapshot received from the leader').length - 1, 1, 'and only the intact one installed');
  t.equal(s3.proc!.exitCode, null, 's3 kept running');
  s3.nodeArgs = undefined;

  cluster.kill(s3);
  await cluster.exited(s3);
  rmSync(kvDir, { recursive: true, force: true });
  cpSync(oldKv, kvDir, { recursive: true });
  s3.log.length = 0;
  cluster.start(s3, false);
  await cluster.ready(s3);
  t.match(logs(s3), /restored the applied state from the stored snapshot/, 'restored from the snapshot file at start');
  t.same(localKeys(cluster, s3), expected, 's3 serves every key again');
});

t.test('a follower that catches up by snapshot takes the members\' quotas from it', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const MiB = 2 ** 20;
  const cluster = new AgentCluster(['--tick-ms', '50', '--snapshot-count', String(SNAPSHOT_COUNT), '--snapshot-catchup-entries', String(SNAPSHOT_CATCHUP_ENTRIES), '--quota-backend-bytes', String(64 * MiB)]);
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['q1', 'q2', 'q3']);
  const [q1, q2, q3] = cluster.agents as [AgentProc, AgentProc, AgentProc];
  const clusterQuotaOn = async (a: AgentProc) => (await scrapeMetrics(a.ports.http)).get('picloud_cluster_quota_bytes');
  cluster.kill(q3, 'SIGTERM');
  t.equal(await cluster.exited(q3), 0);

  // While q3 is down, q2 comes back with a smaller quota and records it; then the log moves
  // past the compaction window, so q3 can learn it only from a snapshot's member table.
  cluster.kill(q2, 'SIGTERM');
  t.equal(await cluster.exited(q2), 0);
  q2.extraArgs = ['--quota-backend-bytes', String(32 * MiB)];
  cluster.start(q2, false);
  await cluster.ready(q2);
  await until('q1 to hold to q2\'s new quota', async () => (await clusterQuotaOn(q1)) === 32 * MiB, WAIT_MS);
  const others = cluster.endpoints([q1, q2]);
  for (let i = 0; i < LATE_KEYS; i++) t.equal(etcdctl(others, ['put', `snap/quota/${i}`, 'v']).status, 0);

  cluster.start(q3, false);
  await cluster.ready(q3);
  await until('q3 to install a snapshot', () => logs(q3).includes('installed a snapshot received from the leader'), WAIT_MS);
  await until('q3 to catch up', () => localKeys(cluster, q3).length === LATE_KEYS, WAIT_MS);
  t.equal(await clusterQuotaOn(q3), 32 * MiB, 'q3 holds to q2\'s quota, which only the snapshot told it');
});

