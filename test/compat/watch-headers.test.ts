/**
 * Watch responses' header revisions and a clean stop, picloud against etcd 3.4.23 (one member
 * each, the same requests over plain gRPC):
 * - a watch from a past revision whose history takes more than one response (picloud cuts at
 *   about 1 MiB, etcd at 1000 revisions: here it sends one) has every events response at the
 *   store's revision (etcd's catch-up answers carry it), not at its last event's; the created
 *   response too; then live events at their own revision, while other clients write other keys
 *   (the store's revision has moved on by the time they are sent);
 * - SIGTERM right after a put is acknowledged: the watcher gets the put's event, then the stream
 *   ends with a status clients take as "resume elsewhere" (etcd's connection drops; picloud
 *   sends UNAVAILABLE), never OK, which ends a clientv3 watch for good.
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

/** The history the watch catches up over: 3.2 MB, more than one of picloud's responses. */
const PUTS = 200;
const VALUE = 'v'.repeat(16 * 1024);
const CLIENT_OPTIONS = { 'grpc.max_receive_message_length': 64 << 20 };
/** Then clients writing at once, one of them to the watched key. */
const LIVE_WRITERS = 4;
const LIVE_PUTS = 25;

interface Seen {
  /** Per response after the created one: its header revision and its events' revisions. */
  responses: Array<{ header: number; events: number[] }>;
  created: number;
  /** The store's revision when the watch was created (nothing is written while it catches up). */
  storeRevision: number;
  /** The live events responses. */
  live: Array<{ header: number; events: number[] }>;
  /** After SIGTERM: the put's event reached the watcher, and how the stream ended. */
  lastPutSeen: boolean;
  end: { code: number; details: string };
}

/**
 * The ends after which clientv3 opens the watch again (on another member) rather than ending it
 * for good: its isHaltErr lets these two through. An OK end reaches it as io.EOF, which halts.
 * (etcd's connection drops; grpc-js reports UNAVAILABLE or, when it reads a reset stream, INTERNAL.)
 */
const RESUMED_AFTER = [grpc.status.UNAVAILABLE, grpc.status.INTERNAL];

async function observe(cluster: BenchCluster): Promise<Seen> {
  const member = cluster.members[0]!;
  const ep = member.clientEndpoint;
  const kv = new pkg.KV(ep, grpc.credentials.createInsecure());
  const put = async (key: string, value: string): Promise<number> => {
    const r: Obj = await new Promise((resolve, reject) => kv.Put({ key: Buffer.from(key), value: Buffer.from(value) }, (e: Error | null, res: Obj) => (e ? reject(e) : resolve(res))));
    return Number(r.header.revision);
  };
  const first = await put('k', VALUE);
  for (let i = 1; i < PUTS; i++) await put('k', VALUE);
  const storeRevision = await put('other', 'x');

  const client = new pkg.Watch(ep, grpc.credentials.createInsecure(), CLIENT_OPTIONS);
  const stream = client.Watch();
  const responses: Obj[] = [];
  let created: Obj | undefined;
  stream.on('data', (r: Obj) => (r.created ? (created = r) : responses.push(r)));
  stream.on('error', () => undefined);
  const ended = new Promise<grpc.StatusObject>((r) => stream.on('status', r));
  stream.write({ createRequest: { key: Buffer.from('k'), startRevision: String(first) } });
  const eventCount = (): number => responses.reduce((n, r) => n + r.events.length, 0);
  for (const end = Date.now() + 10_000; eventCount() < PUTS && Date.now() < end; ) await sleep(20);
  const caughtUp = responses.length;
  // Live: the watched key among others written at the same time (picloud applies them in batches).
  const writers = Array.from({ length: LIVE_WRITERS }, () => new pkg.KV(ep, grpc.credentials.createInsecure()));
  await Promise.all(writers.map(async (w, i) => {
    for (let j = 0; j < LIVE_PUTS; j++) {
      await new Promise((resolve, reject) => w.Put({ key: Buffer.from(i === 0 ? 'k' : `busy${i}`), value: Buffer.from('live') }, (e: Error | null) => (e ? reject(e) : resolve(undefined))));
    }
  }));
  for (const w of writers) w.close();
  for (const end = Date.now() + 5_000; eventCount() < PUTS + LIVE_PUTS && Date.now() < end; ) await sleep(20);
  const summary = (r: Obj): { header: number; events: number[] } => ({ header: Number(r.header.revision), events: r.events.map((e: Obj) => Number(e.kv.modRevision)) });
  const live = responses.slice(caughtUp).map(summary);

  const lastRevision = await put('k', 'last');
  member.proc.kill('SIGTERM');
  let timer: ReturnType<typeof setTimeout> | undefined;
  const status = await Promise.race([ended, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), 15_000)))]);
  clearTimeout(timer);
  stream.cancel();
  client.close();
  kv.close();
  return {
    responses: responses.slice(0, caughtUp).map(summary),
    created: Number(created?.header.revision),
    storeRevision,
    live,
    lastPutSeen: responses.some((r) => r.events.some((e: Obj) => Number(e.kv.modRevision) === lastRevision)),
    end: { code: status?.code ?? -1, details: status?.details ?? 'none within 15 s' },
  };
}

t.test("watch headers and a clean stop, as etcd's", { skip: existsSync(ETCD_BIN) ? false : 'etcd not installed', timeout: 120_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'picloud-watch-headers-'));
  const clusters: BenchCluster[] = [];
  t.teardown(async () => {
    await Promise.all(clusters.map((c) => c.stop()));
    rmSync(root, { recursive: true, force: true });
  });
  for (const start of [startEtcd, startPicloud]) {
    const cluster = await start({ root, size: 1 });
    clusters.push(cluster);
    const seen = await observe(cluster);
    const name = cluster.system;
    t.equal(seen.responses.reduce((n, r) => n + r.events.length, 0), PUTS, `${name}: the history's ${PUTS} events, in ${seen.responses.length} response(s)`);
    t.equal(seen.created, seen.storeRevision, `${name}: created at the store's revision`);
    t.same(
      seen.responses.map((r) => r.header),
      seen.responses.map(() => seen.storeRevision),
      `${name}: every catch-up response at the store's revision ${seen.storeRevision} (last events: ${seen.responses.map((r) => r.events.at(-1)).join(', ')})`,
    );
    t.equal(seen.live.reduce((n, r) => n + r.events.length, 0), LIVE_PUTS, `${name}: the ${LIVE_PUTS} live events`);
    const ahead = seen.live.filter((r) => r.header !== r.events.at(-1));
    t.same(ahead, [], `${name}: each live response at its last event's revision, while ${LIVE_WRITERS - 1} other clients write other keys`);
    t.ok(seen.lastPutSeen, `${name}: SIGTERM after a put is acknowledged: the watcher has its event`);
    t.ok(RESUMED_AFTER.includes(seen.end.code), `${name}: then the stream ends with a status clientv3 resumes after (code ${seen.end.code}: ${seen.end.details})`);
  }
});
