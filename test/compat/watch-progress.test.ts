/**
 * etcd's --experimental-watch-progress-notify-interval, against etcd 3.4.23 given the same flag:
 * a watch created with progress_notify that hears no events is sent the store's revision every
 * interval (an events-free response); a watch without it is sent nothing.
 */
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ETCD_BIN, startEtcd, startPicloud, type BenchCluster } from '../../bench/kv/clusters.js';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';

type Obj = Record<string, any>;
const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true });
const pkg = (grpc.loadPackageDefinition(def) as any).etcdserverpb;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const INTERVAL = '300ms';
/** How long the watches are listened to: about six intervals. */
const LISTEN_MS = 2_000;

/** Responses after creation of a watch on `key`, with or without progress_notify, until stop(). */
function watch(endpoint: string, key: string, progressNotify: boolean) {
  const client = new pkg.Watch(endpoint, grpc.credentials.createInsecure());
  const stream = client.Watch();
  const responses: Obj[] = [];
  stream.on('data', (r: Obj) => { if (!r.created) responses.push(r); });
  stream.on('error', () => undefined);
  stream.write({ createRequest: { key: Buffer.from(key), progressNotify } });
  return { responses, stop: () => { stream.cancel(); client.close(); } };
}

async function revision(endpoint: string): Promise<number> {
  const kv = new pkg.KV(endpoint, grpc.credentials.createInsecure());
  const r: Obj = await new Promise((resolve, reject) => kv.Range({ key: Buffer.from('x') }, (e: Error | null, res: Obj) => (e ? reject(e) : resolve(res))));
  kv.close();
  return Number(r.header.revision);
}

async function put(endpoint: string, key: string): Promise<void> {
  const kv = new pkg.KV(endpoint, grpc.credentials.createInsecure());
  await new Promise((resolve, reject) => kv.Put({ key: Buffer.from(key), value: Buffer.from('v') }, (e: Error | null, res: Obj) => (e ? reject(e) : resolve(res))));
  kv.close();
}

async function observe(cluster: BenchCluster) {
  const ep = cluster.members[0]!.clientEndpoint;
  await put(ep, 'other');
  const withNotify = watch(ep, 'quiet', true);
  const without = watch(ep, 'quiet', false);
  await sleep(LISTEN_MS);
  const rev = await revision(ep);
  withNotify.stop();
  without.stop();
  return {
    progress: withNotify.responses.filter((r) => r.events.length === 0).map((r) => Number(r.header.revision)),
    other: withNotify.responses.filter((r) => r.events.length > 0).length + without.responses.length,
    rev,
  };
}

t.test('progress notifications every --experimental-watch-progress-notify-interval, as etcd sends them', { skip: existsSync(ETCD_BIN) ? false : 'etcd not installed', timeout: 120_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'picloud-progress-'));
  const clusters: BenchCluster[] = [];
  t.teardown(async () => {
    await Promise.all(clusters.map((c) => c.stop()));
    rmSync(root, { recursive: true, force: true });
  });
  const flag = ['--experimental-watch-progress-notify-interval', INTERVAL];
  clusters.push(await startEtcd({ root, size: 1, etcdArgs: flag }));
  clusters.push(await startPicloud({ root, size: 1, agentArgs: flag }));
  for (const c of clusters) {
    const seen = await observe(c);
    const name = c.system;
    // Six intervals in the window: at least three notifications even on a loaded machine.
    t.ok(seen.progress.length >= 3 && seen.progress.length <= 8, `${name}: ${seen.progress.length} progress notifications in ${LISTEN_MS} ms at ${INTERVAL}`);
    t.ok(seen.progress.every((r) => r === seen.rev), `${name}: each at the store's revision ${seen.rev} (${seen.progress.join(', ')})`);
    t.equal(seen.other, 0, `${name}: nothing to the watch without progress_notify, and no events`);
  }
});
