/**
 * Snapshot streams cannot use up a member's file descriptors either (agent/open-files.ts counts
 * connections, not the spool file each Maintenance.Snapshot call opens). An agent runs under an
 * open files limit of 1,024; one client connection opens 1,100 Snapshot streams (HTTP/2 allows
 * 4,096 per connection) and reads none of them, so each spool stays open; then 1 MB puts go
 * through another connection, which makes LevelDB open new files. Each member must stay up and
 * answer them; the streams beyond the member's bound are refused (etcd's "too many requests").
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { AgentCluster } from '../helpers/agents.js';
import { SimpleKv } from '../helpers/kv-client.js';
import { until } from '../helpers/wait.js';
import { SNAPSHOT_SPOOL_PREFIX } from '../../core/api/etcd-backend.js';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';

const AGENT_LIMIT = 1_024;
const STREAMS = 1_100;
const BIG_PUTS = 30;
const BIG_VALUE = 'v'.repeat(1_000_000);

const unavailable = spawnSync('prlimit', ['--version']).status !== 0 ? 'prlimit not installed (util-linux)' : undefined;

type MaintenanceClient = grpc.Client & { Snapshot: (req: object) => grpc.ClientReadableStream<unknown> };

function maintenanceClient(endpoint: string): MaintenanceClient {
  const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { etcdserverpb: { Maintenance: new (a: string, c: grpc.ChannelCredentials) => MaintenanceClient } };
  return new pkg.etcdserverpb.Maintenance(endpoint, grpc.credentials.createInsecure());
}

t.test('unread Snapshot streams on one connection neither stop the member nor its writes', { skip: unavailable ?? false, timeout: 120_000 }, async (t) => {
  const cluster = new AgentCluster();
  const snapshots: grpc.ClientReadableStream<unknown>[] = [];
  const client = { m: undefined as MaintenanceClient | undefined };
  t.teardown(async () => {
    for (const s of snapshots) s.cancel();
    client.m?.close();
    await cluster.stopAll();
  });
  const a = await cluster.add('snapfd1');
  a.wrap = ['prlimit', `--nofile=${AGENT_LIMIT}:${AGENT_LIMIT}`];
  await cluster.startAdded();

  const kv = new SimpleKv(cluster.endpoints(), 10_000);
  t.teardown(() => kv.close());
  // Larger than a stream's HTTP/2 window: an unread snapshot stays open on its spool file.
  for (let i = 0; i < 3; i++) await kv.put(`seed/${i}`, BIG_VALUE);

  client.m = maintenanceClient(cluster.endpoints());
  let firstData = 0;
  let refused = 0;
  let failed = 0;
  let otherErrors = '';
  for (let i = 0; i < STREAMS; i++) {
    const s = client.m.Snapshot({});
    let got = false;
    s.on('data', () => {
      if (!got) firstData++;
      got = true;
      s.pause(); // read nothing more: the member's write waits, its spool file stays open
    });
    s.on('error', (e: grpc.ServiceError) => {
      if (e.code === grpc.status.RESOURCE_EXHAUSTED) refused++;
      else if (e.code !== grpc.status.CANCELLED) {
        failed++;
        otherErrors = `${e.code} ${e.details}`;
      }
    });
    snapshots.push(s);
  }
  await until('every Snapshot stream has begun or been refused', () => (firstData + refused + failed >= STREAMS || a.proc!.exitCode !== null ? true : undefined), 60_000);
  t.comment(`${firstData} streams begun, ${refused} refused, ${failed} failed otherwise (${otherErrors || 'none'})`);
  // Each stream has its own spool file (they were named by the millisecond: streams begun in
  // the same one wrote, read and removed one file).
  const spools = readdirSync(a.dataDir).filter((f) => f.startsWith(SNAPSHOT_SPOOL_PREFIX));
  t.equal(spools.length, firstData, `one spool file per open Snapshot stream (${spools.length} for ${firstData})`);

  const { answered, failure } = await kv.putsUntilFailure('big/', 5, BIG_PUTS, BIG_VALUE);
  t.equal(a.proc!.exitCode, null, `the member is still running${a.proc!.exitCode === null ? '' : `: ${a.log.join('').slice(-600)}`}`);
  t.equal(answered, BIG_PUTS, `every 1 MB put was answered${failure === '' ? '' : ` (failed: ${failure})`}`);
  t.notMatch(a.log.join(''), /EMFILE|Too many open files/, 'the member never ran out of descriptors');
  t.ok(refused > 0, 'the Snapshot streams beyond the bound were refused');
  t.equal(failed, 0, `no Snapshot stream failed otherwise${failed === 0 ? '' : ` (${otherErrors})`}`);

  for (const s of snapshots) s.cancel();
  // Once the streams are gone a snapshot is served again.
  const whole = await until('a snapshot is served once the streams are gone', async () => {
    const out = await new Promise<number | undefined>((resolve) => {
      let bytes = 0;
      const s = client.m!.Snapshot({});
      s.on('data', (r: { blob: Buffer }) => (bytes += r.blob.length));
      s.on('end', () => resolve(bytes));
      s.on('error', () => resolve(undefined));
    });
    return out;
  }, 30_000);
  t.ok(whole > 3_000_000, `a whole snapshot came (${whole} bytes)`);

  // A stop while Snapshot streams are still unread removes their spools (a copy of the store each).
  const spoolFiles = (): string[] => readdirSync(a.dataDir).filter((f) => f.startsWith(SNAPSHOT_SPOOL_PREFIX));
  for (let i = 0; i < 2; i++) {
    const s = client.m.Snapshot({});
    s.on('data', () => s.pause());
    s.on('error', () => undefined);
    snapshots.push(s);
  }
  await until('two unread streams hold spools', () => (spoolFiles().length >= 2 ? true : undefined), 30_000);
  cluster.kill(a, 'SIGTERM');
  t.equal(await cluster.exited(a), 0, 'the member stopped');
  t.same(spoolFiles(), [], 'and left no spool behind');
});
