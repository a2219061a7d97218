/**
 * ManagerEtcdBackend's watches behind the real gRPC server, on a member stand-in whose read
 * barrier the test controls (a real KvStore and WatchHub; the rest of ManagerNode is not needed):
 * a watch's events wait for its second auth check at a caught-up member (etcd-backend.ts), and
 * what that hold must not do: cancel a reading client as "too slow" while the member applies a
 * backlog, or pass a congested stream's send buffer; and a progress answer never claims a
 * revision whose events a watch has not sent, nor goes back below what the stream has sent or
 * below a watch's start.
 */
import t, { type Test } from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ManagerEtcdBackend } from '../../core/api/etcd-backend.js';
import type { ManagerNode } from '../../core/api/manager-node.js';
import { WatchHub, type WatchHubOptions } from '../../core/kv/watch.js';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import { generateToken } from '../../core/net/token.js';
import { Node } from '../kv/helpers.js';

type Obj = Record<string, unknown>;
const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true, oneofs: true });
const Watch = (grpc.loadPackageDefinition(def) as any).etcdserverpb.Watch as new (addr: string, creds: grpc.ChannelCredentials, opts?: object) => grpc.Client & {
  Watch(): grpc.ClientDuplexStream<Obj, Obj>;
};

/** A member stand-in around a real KvStore and WatchHub, whose read barrier is `barrier()`. */
function standIn(kvNode: Node, barrier: () => Promise<void>, hubOptions: WatchHubOptions = {}): ManagerNode {
  const member = {
    store: kvNode.store,
    watchHub: new WatchHub(kvNode.store, hubOptions),
    linearizableBarrier: barrier,
    driver: { node: { raft: { term: 1 } } },
    id: 1,
    clusterId: 2,
    token: generateToken(),
    opts: {},
  };
  return member as unknown as ManagerNode;
}

/** A member stand-in, its backend behind a real server, and one Watch stream to it. */
async function setup(t: Test, hubOptions: WatchHubOptions = {}) {
  const kvNode = Node.create();
  let barrier: () => Promise<void> = () => Promise.resolve();
  const backend = new ManagerEtcdBackend(standIn(kvNode, () => barrier(), hubOptions));
  const server = await EtcdGrpcServer.start({ backend, port: 0 });
  const client = new Watch(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': 64 << 20 });
  const stream = client.Watch();
  const got: Obj[] = [];
  stream.on('data', (d: Obj) => got.push(d));
  /** How the stream ended: its status. */
  const ended = new Promise<grpc.StatusObject>((r) => stream.on('status', r));
  stream.on('error', () => undefined);
  let closing: Promise<void> | undefined;
  const closeServer = (): Promise<void> => (closing ??= server.close(200));
  t.teardown(async () => {
    stream.cancel();
    client.close();
    backend.close();
    await closeServer();
  });
  const until = async (f: (g: Obj[]) => boolean, ms = 5_000): Promise<boolean> => {
    for (const end = Date.now() + ms; !f(got); await new Promise((r) => setTimeout(r, 10))) if (Date.now() > end) return false;
    return true;
  };
  /** From now on read barriers wait (the member is applying a backlog); the result ends the wait. */
  const holdBarrier = (): (() => void) => {
    let caughtUp: () => void = () => undefined;
    const round = new Promise<void>((r) => (caughtUp = r));
    barrier = () => round;
    return () => caughtUp();
  };
  return { kvNode, stream, got, until, holdBarrier, setBarrier: (f: () => Promise<void>) => (barrier = f), closeServer, ended };
}

const eventCount = (got: Obj[]): number => got.reduce((n, r) => n + (r.events as unknown[]).length, 0);
const revisionOf = (r: Obj | undefined): number => Number((r?.header as Obj | undefined)?.revision);

t.test('a watch held while the member applies a backlog gets all of it afterwards, not a "too slow" cancel', async (t) => {
  const { kvNode, stream, got, until, holdBarrier } = await setup(t);
  const caughtUp = holdBarrier();
  stream.write({ createRequest: { key: Buffer.from('hot') } });
  await until((g) => g.some((r) => r.created === true));
  const puts = 4_200; // more than the hub buffers for one watcher (WATCH_BUFFER_EVENTS_MAX)
  for (let i = 0; i < puts; i++) kvNode.put('hot', `v${i}`);
  caughtUp();
  await until((g) => eventCount(g) >= puts || g.some((r) => r.canceled === true), 10_000);
  t.notOk(got.some((r) => r.canceled === true), 'not canceled');
  t.equal(eventCount(got), puts, 'every put since the watch was created');
});

t.test('a progress request waits for what a held watch holds, and is answered at once when it holds nothing (no leader needed)', async (t) => {
  const { kvNode, stream, got, until, setBarrier } = await setup(t);
  let leader = false;
  setBarrier(() => (leader ? Promise.resolve() : Promise.reject(new Error('no leader'))));
  kvNode.put('x', 'before');
  stream.write({ createRequest: { key: Buffer.from('x') } });
  await until((g) => g.some((r) => r.created === true));
  const created = revisionOf(got.find((r) => r.created === true));
  stream.write({ progressRequest: {} });
  t.ok(await until((g) => g.some((r) => r.watchId === '-1'), 2_000), 'answered without a leader');
  t.equal(revisionOf(got.find((r) => r.watchId === '-1')), created, 'at the revision the watch was created at');
  kvNode.put('x', 'after'); // applied here while the watch is still held
  stream.write({ progressRequest: {} });
  await new Promise((r) => setTimeout(r, 300));
  t.equal(got.filter((r) => r.watchId === '-1').length, 1, 'not answered while the held watch has not sent the put');
  leader = true; // the next barrier round succeeds: the watch is released
  t.ok(await until((g) => g.filter((r) => r.watchId === '-1').length === 2, 3_000), 'answered once it has');
  const answer = got.filter((r) => r.watchId === '-1')[1];
  const event = got.findIndex((r) => (r.events as unknown[]).length > 0);
  t.ok(event >= 0 && event < got.indexOf(answer!), 'after the event');
  t.equal(revisionOf(answer), kvNode.store.revision, 'at the revision asked at');
});

t.test('a progress answer never claims a revision whose event a catching-up watch has not sent', async (t) => {
  // The hub's catch-up steps run when the test says (schedule), ten revisions at a time.
  const steps: (() => void)[] = [];
  const { kvNode, stream, got, until } = await setup(t, { syncRevisionsPerStep: 10, schedule: (fn) => steps.push(fn) });
  for (let i = 0; i < 50; i++) kvNode.put(`a${i}`, 'x');
  kvNode.put('k1', 'v'); // the only event of the range, at the end of the history
  const eventRevision = kvNode.store.revision;
  stream.write({ createRequest: { key: Buffer.from('k'), rangeEnd: Buffer.from('l'), startRevision: 1 } });
  await until((g) => g.some((r) => r.created === true));
  await new Promise((r) => setTimeout(r, 50)); // released after its (immediate) barrier
  stream.write({ progressRequest: {} });
  await until((g) => g.some((r) => r.watchId === '-1'), 2_000);
  while (steps.length > 0) steps.shift()!();
  await until((g) => eventCount(g) > 0, 2_000);
  const progress = got.find((r) => r.watchId === '-1');
  const event = got.findIndex((r) => (r.events as unknown[]).length > 0);
  t.ok(progress, 'answered');
  t.ok(got.indexOf(progress!) > event, 'the answer waits for the event');
  t.equal(revisionOf(progress), eventRevision, 'and claims the revision asked at, never less than was sent');
  t.equal(eventCount(got), 1, 'and the event arrives');
});

t.test('a progress answer is not below an event the stream sent before it (one applied after the request)', async (t) => {
  const { kvNode, stream, got, until, holdBarrier } = await setup(t);
  const caughtUp = holdBarrier();
  stream.write({ createRequest: { key: Buffer.from('x') } });
  await until((g) => g.some((r) => r.created === true));
  kvNode.put('x', 'one');
  stream.write({ progressRequest: {} });
  await new Promise((r) => setTimeout(r, 100));
  kvNode.put('x', 'two'); // applied after the request, while the held watch has sent nothing
  caughtUp();
  t.ok(await until((g) => g.some((r) => r.watchId === '-1'), 3_000), 'answered');
  const answer = got.findIndex((r) => r.watchId === '-1');
  const sentBefore = got.slice(0, answer).flatMap((r) => (r.events as Array<{ kv: { modRevision: string } }>).map((e) => Number(e.kv.modRevision)));
  t.ok(revisionOf(got[answer]) >= Math.max(0, ...sentBefore), `answered at ${revisionOf(got[answer])}, after events of revisions ${sentBefore.join(', ')}`);
});

t.test("a progress answer is not below the header of a catch-up's events response sent before it (a key not watched, written after the request)", async (t) => {
  const { kvNode, stream, got, until, holdBarrier } = await setup(t);
  kvNode.put('x', 'one');
  const caughtUp = holdBarrier();
  stream.write({ createRequest: { key: Buffer.from('x'), startRevision: 1 } });
  await until((g) => g.some((r) => r.created === true));
  stream.write({ progressRequest: {} });
  await new Promise((r) => setTimeout(r, 100));
  kvNode.put('y', 'two'); // applied after the request: the catch-up's response is sent at its revision
  caughtUp();
  t.ok(await until((g) => g.some((r) => r.watchId === '-1'), 3_000), 'answered');
  const answer = got.findIndex((r) => r.watchId === '-1');
  const headersBefore = got.slice(0, answer).map(revisionOf);
  t.same(headersBefore.slice(-1), [kvNode.store.revision], 'the events response is at the store\'s revision');
  t.ok(revisionOf(got[answer]) >= Math.max(...headersBefore), `answered at ${revisionOf(got[answer])}, after headers ${headersBefore.join(', ')}`);
});

t.test('a progress answer is not below the header of a "created" response sent before it', async (t) => {
  // A watch catching up over revisions none of which it matches lags and sends nothing; the
  // hub's catch-up steps run when the test says.
  const steps: (() => void)[] = [];
  const { kvNode, stream, got, until } = await setup(t, { syncRevisionsPerStep: 10, schedule: (fn) => steps.push(fn) });
  for (let i = 0; i < 50; i++) kvNode.put(`a${i}`, 'x');
  stream.write({ createRequest: { key: Buffer.from('k'), rangeEnd: Buffer.from('l'), startRevision: 1 } });
  await until((g) => g.some((r) => r.created === true));
  await new Promise((r) => setTimeout(r, 50)); // released after its (immediate) barrier
  stream.write({ progressRequest: {} });
  await new Promise((r) => setTimeout(r, 50));
  kvNode.put('y', 'later'); // after the request
  stream.write({ createRequest: { key: Buffer.from('z') } });
  await until((g) => g.filter((r) => r.created === true).length === 2);
  while (steps.length > 0) steps.shift()!();
  t.ok(await until((g) => g.some((r) => r.watchId === '-1'), 2_000), 'answered');
  const answer = got.findIndex((r) => r.watchId === '-1');
  const headersBefore = got.slice(0, answer).map(revisionOf);
  t.ok(revisionOf(got[answer]) >= Math.max(...headersBefore), `answered at ${revisionOf(got[answer])}, after headers ${headersBefore.join(', ')}`);
});

t.test('a server shutting down sends the events applied in the same turn, then ends the stream with UNAVAILABLE, as etcd\'s connection drops', async (t) => {
  const { kvNode, stream, got, until, closeServer, ended } = await setup(t);
  stream.write({ createRequest: { key: Buffer.from('x') } });
  await until((g) => g.some((r) => r.created === true));
  await new Promise((r) => setTimeout(r, 50)); // released after its (immediate) barrier
  kvNode.put('x', 'last');
  const closed = closeServer(); // in the turn that applied it
  const status = await ended;
  await closed;
  t.same(got.flatMap((r) => (r.events as Array<{ kv: { value: Buffer } }>).map((e) => e.kv.value.toString())), ['last'], 'the event reached the watcher');
  t.same([status.code, status.details], [grpc.status.UNAVAILABLE, 'etcdserver: server stopped'], 'then the stream ended: clients resume elsewhere (an OK end halts clientv3\'s watch)');
});

t.test('a progress answer is never below the revision before a watch\'s start (a watch resumed at a member behind the last one)', async (t) => {
  const { kvNode, stream, got, until } = await setup(t);
  kvNode.put('x', 'one');
  const start = kvNode.store.revision + 3; // the client has seen everything before it elsewhere
  stream.write({ createRequest: { key: Buffer.from('x'), startRevision: start } });
  await until((g) => g.some((r) => r.created === true));
  stream.write({ progressRequest: {} });
  await new Promise((r) => setTimeout(r, 300));
  t.same(got.filter((r) => r.watchId === '-1').map(revisionOf), [], `no answer while this member is below revision ${start - 1}`);
  kvNode.put('y', 'two');
  kvNode.put('y', 'three');
  t.ok(await until((g) => g.some((r) => r.watchId === '-1'), 2_000), 'answered once it has reached it');
  t.equal(revisionOf(got.find((r) => r.watchId === '-1')), start - 1, 'at that revision');
});

t.test("a backlog larger than the stream's send buffer reaches a reading client whole, other watches untouched", async (t) => {
  const { kvNode, stream, got, until, holdBarrier } = await setup(t);
  stream.write({ createRequest: { key: Buffer.from('calm'), watchId: '7' } });
  await until((g) => g.some((r) => r.created === true && r.watchId === '7'));
  const caughtUp = holdBarrier();
  stream.write({ createRequest: { key: Buffer.from('big'), watchId: '8' } });
  await until((g) => g.some((r) => r.created === true && r.watchId === '8'));
  const puts = 1_200;
  const value = 'v'.repeat(8 * 1024); // 9.6 MB in all, past MAX_WATCH_STREAM_BUFFER_BYTES
  for (let i = 0; i < puts; i++) kvNode.put('big', value);
  caughtUp();
  await until((g) => eventCount(g) >= puts || g.some((r) => r.canceled === true), 20_000);
  t.notOk(got.some((r) => r.canceled === true), `nothing canceled (${JSON.stringify(got.find((r) => r.canceled === true)?.cancelReason)})`);
  t.equal(eventCount(got), puts, 'every event of the backlog');
  kvNode.put('calm', 'still here');
  t.ok(await until((g) => g.some((r) => r.watchId === '7' && (r.events as unknown[]).length > 0)), 'the other watch still delivers');
});

t.test('a fan-out to many watches of a stream whose client reads slowly waits for it, not a "too slow" cancel past the send buffer', async (t) => {
  const { kvNode, stream, got, until } = await setup(t);
  const watches = 100;
  for (let i = 0; i < watches; i++) stream.write({ createRequest: { key: Buffer.from('fan') } });
  await until((g) => g.filter((r) => r.created === true).length === watches);
  stream.pause(); // reads nothing for now: HTTP/2 flow control holds the member's writes
  const puts = 12;
  const value = 'v'.repeat(8 * 1024); // 100 watches × 8 KiB a revision: ~10 MB in all, past the stream's 8 MiB
  for (let i = 0; i < puts; i++) {
    kvNode.put('fan', value);
    await new Promise((r) => setTimeout(r, 20)); // each revision's fan-out pumped on its own
  }
  await new Promise((r) => setTimeout(r, 200));
  stream.resume();
  await until((g) => eventCount(g) >= watches * puts || g.some((r) => r.canceled === true), 20_000);
  t.notOk(got.some((r) => r.canceled === true), `nothing canceled (${JSON.stringify(got.find((r) => r.canceled === true)?.cancelReason)})`);
  t.equal(eventCount(got), watches * puts, 'every event to every watch');
  const perWatch = new Map<string, number[]>();
  for (const r of got) for (const e of r.events as Obj[]) perWatch.set(String(r.watchId), [...(perWatch.get(String(r.watchId)) ?? []), Number((e.kv as Obj).modRevision)]);
  t.ok([...perWatch.values()].every((revs) => revs.length === puts && revs.every((v, i) => i === 0 || v > revs[i - 1]!)), 'each watch: every revision once, in order');
});

t.test('a compaction applied while a watch from now is held takes none of its events', async (t) => {
  const { kvNode, stream, got, until, holdBarrier } = await setup(t);
  const caughtUp = holdBarrier();
  stream.write({ createRequest: { key: Buffer.from('c') } });
  await until((g) => g.some((r) => r.created === true));
  kvNode.put('c', 'one');
  kvNode.put('c', 'two');
  kvNode.apply({ compaction: { revision: kvNode.store.revision, physical: false } }); // in the backlog being applied
  caughtUp();
  await until((g) => eventCount(g) >= 2 || g.some((r) => r.canceled === true), 3_000);
  t.notOk(got.some((r) => r.canceled === true), 'not canceled as compacted (etcd would not)');
  t.equal(eventCount(got), 2, 'both puts');
});

t.test('a watch whose sink resumes other watches while the ready ones are pumped loses no wake-up of theirs', async (t) => {
  // The backend pumps every ready watch in one microtask. A pump that schedules two others
  // (here through resume(), as the server does when a congested stream drains) must not
  // overwrite the ones still waiting in that list.
  const kvNode = Node.create();
  const backend = new ManagerEtcdBackend(standIn(kvNode, () => Promise.resolve()));
  t.teardown(() => backend.close());
  const request = (key: string, watchId: number) => ({ key: Buffer.from(key), rangeEnd: Buffer.alloc(0), startRevision: 0, progressNotify: false, filters: [], prevKv: false, watchId, fragment: false });
  const quiet = { events: () => undefined, progress: () => undefined, cancel: () => undefined, congested: () => false };
  const idle = [backend.watch(request('other', 1), quiet), backend.watch(request('other', 2), quiet)];
  const received = new Map<number, number>();
  const watched = [10, 11, 12, 13].map((id) =>
    backend.watch(request('k', id), {
      ...quiet,
      events: (evs) => {
        received.set(id, (received.get(id) ?? 0) + evs.length);
        for (const h of idle) h.resume();
      },
    }),
  );
  await new Promise((r) => setTimeout(r, 20)); // every watch released after its read barrier
  // Twice: the two lists take turns, so the second fan-out runs on the other one.
  for (const round of [1, 2]) {
    kvNode.put('k', `v${round}`);
    await new Promise((r) => setTimeout(r, 50));
    t.same([...received.entries()].sort((a, b) => a[0] - b[0]), [10, 11, 12, 13].map((id) => [id, round]), `every watch of k got put ${round}`);
  }
  for (const h of [...idle, ...watched]) h.cancel();
});
