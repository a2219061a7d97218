/**
 * What a learner answers its clients, against a real etcd 3.4's learner: every RPC of the etcd
 * API (unary calls, the Watch, LeaseKeepAlive and Snapshot streams, and a few JSON gateway
 * paths) sent once to the learner of a voter + learner etcd and of a voter + learner picloud.
 * etcd 3.4 serves a learner's Status and serializable Ranges and refuses everything else with
 * UNAVAILABLE "etcdserver: rpc not supported for learner" (so clientv3 moves to another
 * endpoint); the table of outcomes must be that one on etcd and the same on picloud. Clients
 * nobody here wrote must then fare on picloud's learner as on etcd's: the npm etcd3 client (on
 * the learner alone, and on the learner and the voter, where its pool moves refused calls on)
 * and Debian's python3-etcd3. Then the learner is promoted, and must serve what it refused
 * (reads, writes, watches) at once.
 */
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { Etcd3 } from 'etcd3';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import { ETCD_BIN } from '../../bench/kv/clusters.js';
import { etcdctlAsync, hasEtcdctl } from '../helpers/agents.js';
import { etcdAndPicloudLearners, type WithLearner } from '../helpers/learners.js';
import { until } from '../helpers/wait.js';
import { findPython } from '../helpers/python.js';

const CALL_DEADLINE_MS = 5_000;
/** How long a promoted learner may take to apply its promotion and serve. */
const PROMOTED_SERVES_MS = 10_000;

const REFUSED = `${grpc.status.UNAVAILABLE} etcdserver: rpc not supported for learner`;
const SERVED = 'ok';
const HTTP_REFUSED = '503 etcdserver: rpc not supported for learner';

type Obj = Record<string, unknown>;
type Unary = (req: Obj, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: Obj) => void) => void;
type Client = grpc.Client & Record<string, Unary> & {
  Watch(): grpc.ClientDuplexStream<Obj, Obj>;
  LeaseKeepAlive(): grpc.ClientDuplexStream<Obj, Obj>;
  Snapshot(req: Obj): grpc.ClientReadableStream<Obj>;
};
type Services = Record<'KV' | 'Watch' | 'Lease' | 'Cluster' | 'Maintenance' | 'Auth', Client>;

function connect(endpoint: string): Services {
  const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true, oneofs: true });
  const pb = (grpc.loadPackageDefinition(def) as any).etcdserverpb;
  const creds = grpc.credentials.createInsecure();
  const names = ['KV', 'Watch', 'Lease', 'Cluster', 'Maintenance', 'Auth'] as const;
  return Object.fromEntries(names.map((n) => [n, new pb[n](endpoint, creds)])) as Services;
}

const outcome = (err: { code?: number; details?: string } | null): string => (err === null ? SERVED : `${err.code} ${err.details}`);

function unary(s: Services, service: keyof Services, method: string, req: Obj): Promise<string> {
  return new Promise((resolve) => {
    const c = s[service];
    c[method]!.call(c, req, new grpc.Metadata(), { deadline: Date.now() + CALL_DEADLINE_MS }, (err) => resolve(outcome(err)));
  });
}

/** A stream's outcome: served once its first response arrives, else the status it ended with. */
function firstResponse(stream: grpc.ClientReadableStream<Obj> | grpc.ClientDuplexStream<Obj, Obj>): Promise<string> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      stream.cancel();
      resolve('no answer');
    }, CALL_DEADLINE_MS);
    const done = (v: string): void => {
      clearTimeout(timer);
      resolve(v);
    };
    stream.once('data', () => {
      done(SERVED);
      stream.cancel();
    });
    stream.once('error', (e: grpc.ServiceError) => done(outcome(e)));
    stream.once('end', () => done('ended'));
  });
}

/** An HTTP status and, for an error, its message (grpc-gateway's unary and stream error bodies). */
async function gateway(endpoint: string, path: string, body?: Obj): Promise<string> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), CALL_DEADLINE_MS);
  try {
    const r = await fetch(`http://${endpoint}${path}`, { method: body === undefined ? 'GET' : 'POST', body: body === undefined ? undefined : JSON.stringify(body), signal: ctl.signal });
    if (r.status === 200) {
      await r.body?.cancel(); // a watch stays open
      return String(r.status);
    }
    const e = (await r.json()) as { error?: string | { message?: string } };
    return `${r.status} ${typeof e.error === 'string' ? e.error : e.error?.message}`;
  } finally {
    clearTimeout(timer);
  }
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const key = Buffer.from('learner-key');
const UNKNOWN_ID = '4660'; // 0x1234: no member, no lease

/** Every row: what etcd 3.4.23's learner answered (measured with etcdctl, grpc and curl). */
const TABLE: Array<[string, string, (s: Services, endpoint: string) => Promise<string>]> = [
  ['KV.Range (linearizable)', REFUSED, (s) => unary(s, 'KV', 'Range', { key })],
  ['KV.Range (serializable)', SERVED, (s) => unary(s, 'KV', 'Range', { key, serializable: true })],
  ['KV.Put', REFUSED, (s) => unary(s, 'KV', 'Put', { key, value: Buffer.from('v') })],
  ['KV.DeleteRange', REFUSED, (s) => unary(s, 'KV', 'DeleteRange', { key })],
  ['KV.Txn (read-only)', REFUSED, (s) => unary(s, 'KV', 'Txn', { success: [{ requestRange: { key, serializable: true } }] })],
  ['KV.Txn (writes)', REFUSED, (s) => unary(s, 'KV', 'Txn', { success: [{ requestPut: { key, value: Buffer.from('t') } }] })],
  ['KV.Compact', REFUSED, (s) => unary(s, 'KV', 'Compact', { revision: '1' })],
  ['Lease.LeaseGrant', REFUSED, (s) => unary(s, 'Lease', 'LeaseGrant', { TTL: '60' })],
  ['Lease.LeaseRevoke', REFUSED, (s) => unary(s, 'Lease', 'LeaseRevoke', { ID: UNKNOWN_ID })],
  ['Lease.LeaseTimeToLive', REFUSED, (s) => unary(s, 'Lease', 'LeaseTimeToLive', { ID: UNKNOWN_ID })],
  ['Lease.LeaseLeases', REFUSED, (s) => unary(s, 'Lease', 'LeaseLeases', {})],
  ['Cluster.MemberList', REFUSED, (s) => unary(s, 'Cluster', 'MemberList', {})],
  ['Cluster.MemberAdd', REFUSED, (s) => unary(s, 'Cluster', 'MemberAdd', { peerURLs: ['http://127.0.0.1:1'], isLearner: true })],
  ['Cluster.MemberRemove', REFUSED, (s) => unary(s, 'Cluster', 'MemberRemove', { ID: UNKNOWN_ID })],
  ['Cluster.MemberUpdate', REFUSED, (s) => unary(s, 'Cluster', 'MemberUpdate', { ID: UNKNOWN_ID, peerURLs: ['http://127.0.0.1:1'] })],
  ['Cluster.MemberPromote', REFUSED, (s) => unary(s, 'Cluster', 'MemberPromote', { ID: UNKNOWN_ID })],
  ['Maintenance.Status', SERVED, (s) => unary(s, 'Maintenance', 'Status', {})],
  ['Maintenance.Alarm (get)', REFUSED, (s) => unary(s, 'Maintenance', 'Alarm', { action: 'GET' })],
  ['Maintenance.Hash', REFUSED, (s) => unary(s, 'Maintenance', 'Hash', {})],
  ['Maintenance.HashKV', REFUSED, (s) => unary(s, 'Maintenance', 'HashKV', {})],
  ['Maintenance.Defragment', REFUSED, (s) => unary(s, 'Maintenance', 'Defragment', {})],
  ['Maintenance.MoveLeader', REFUSED, (s) => unary(s, 'Maintenance', 'MoveLeader', { targetID: UNKNOWN_ID })],
  ['Auth.Authenticate', REFUSED, (s) => unary(s, 'Auth', 'Authenticate', { name: 'root', password: 'x' })],
  ['Auth.UserList', REFUSED, (s) => unary(s, 'Auth', 'UserList', {})],
  ['Auth.RoleList', REFUSED, (s) => unary(s, 'Auth', 'RoleList', {})],
  ['Auth.AuthEnable', REFUSED, (s) => unary(s, 'Auth', 'AuthEnable', {})],
  [
    'Watch (stream)',
    REFUSED,
    (s) => {
      const w = s.Watch.Watch();
      w.write({ createRequest: { key } });
      return firstResponse(w);
    },
  ],
  [
    'LeaseKeepAlive (stream)',
    REFUSED,
    (s) => {
      const k = s.Lease.LeaseKeepAlive();
      k.write({ ID: UNKNOWN_ID });
      return firstResponse(k);
    },
  ],
  ['Snapshot (stream)', REFUSED, (s) => firstResponse(s.Maintenance.Snapshot({}))],
  ['POST /v3/kv/range (serializable)', '200', (_s, e) => gateway(e, '/v3/kv/range', { key: b64('learner-key'), serializable: true })],
  ['POST /v3/kv/put', HTTP_REFUSED, (_s, e) => gateway(e, '/v3/kv/put', { key: b64('learner-key'), value: b64('v') })],
  ['POST /v3/watch', HTTP_REFUSED, (_s, e) => gateway(e, '/v3/watch', { create_request: { key: b64('learner-key') } })],
  ['GET /health', '200', (_s, e) => gateway(e, '/health')],
];

/**
 * RPCs picloud serves that etcd 3.4 does not know (UNIMPLEMENTED there, learner or not): refused
 * on a learner as etcd 3.5, which has them, refuses them (the same isRPCSupportedForLearner).
 */
const PICLOUD_ONLY: typeof TABLE = [['Auth.AuthStatus', REFUSED, (s) => unary(s, 'Auth', 'AuthStatus', {})]];

async function learnerTable(side: WithLearner, rows: typeof TABLE): Promise<Record<string, string>> {
  const s = connect(side.learner);
  try {
    const out: Record<string, string> = {};
    // One at a time: a refused write must not race a read of the same key.
    for (const [name, , probe] of rows) out[name] = await probe(s, side.learner);
    return out;
  } finally {
    for (const c of Object.values(s)) c.close();
  }
}

/**
 * What clients nobody here wrote make of a learner: the npm etcd3 client against the learner
 * alone (each call's outcome: its error class and message, or what it read) and against the
 * learner and the voter (its pool moves a refused call to another host), and Debian's
 * python3-etcd3 (gRPC C-core) against the learner alone. Keys under `prefix`.
 */
async function clientsOnLearner(side: WithLearner, prefix: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const caught = (p: Promise<unknown>): Promise<string> => p.then((v) => `ok ${JSON.stringify(v)}`, (e: Error) => `${e.constructor.name}: ${e.message}`);
  // A client per call: the pool's circuit breaker would otherwise answer the later calls itself.
  const onLearner = async (call: (c: Etcd3) => Promise<unknown>): Promise<string> => {
    const c = new Etcd3({ hosts: [side.learner] });
    try {
      return await caught(call(c));
    } finally {
      c.close();
    }
  };
  out['etcd3, learner alone: put'] = await onLearner((c) => c.put(`${prefix}a`).value('1').exec());
  out['etcd3, learner alone: get'] = await onLearner((c) => c.get(`${prefix}a`).string());
  out['etcd3, learner alone: serializable get'] = await onLearner((c) => c.get(`${prefix}a`).serializable(true).string());
  // The learner and the voter, the client's own retries and breaker: a refusal the pool treats
  // as a host's failure moves the call on to the voter.
  const both = new Etcd3({ hosts: [side.learner, side.voter] });
  try {
    const puts = await Promise.all(Array.from({ length: 6 }, (_, i) => caught(both.put(`${prefix}b${i}`).value('1').then(() => 'put'))));
    out['etcd3, learner and voter: six puts'] = [...new Set(puts)].join(' | ');
  } finally {
    both.close();
  }
  if (PYTHON !== undefined) {
    const [host, port] = side.learner.split(':');
    const py = spawnSync(PYTHON, ['-c', PYTHON_ON_LEARNER, host!, port!, prefix], { encoding: 'utf8', timeout: 30_000 });
    out['python3-etcd3, learner alone'] = py.status === 0 ? py.stdout.trim() : `exit ${py.status ?? py.signal}: ${py.stderr.slice(-500)}`;
  }
  return out;
}

/** python3-etcd3 on a learner: a put, a default get, a serializable get, a status; each outcome. */
const PYTHON_ON_LEARNER = `
import sys, etcd3
c = etcd3.client(host=sys.argv[1], port=int(sys.argv[2]), timeout=5)
def run(name, f):
    try:
        r = f()
        print(name, 'ok', r)
    except Exception as e:
        print(name, type(e).__name__, str(e).strip())
run('put', lambda: c.put(sys.argv[3] + 'p', 'v') is not None)
run('get', lambda: c.get(sys.argv[3] + 'p')[0])
run('serializable get', lambda: c.get(sys.argv[3] + 'p', serializable=True)[0])
run('status', lambda: c.status().raft_term > 0)
`;

const PYTHON = findPython('etcd3');

/** Promotes the learner through its voter, once the leader takes it as caught up. */
async function promote(side: WithLearner): Promise<void> {
  const r = await until(`${side.system}: learner promoted`, async () => {
    const p = await etcdctlAsync(side.voter, ['member', 'promote', side.learnerId]);
    return (p.status === 0 || !/in sync with leader/.test(p.stderr)) && p;
  });
  if (r.status !== 0) throw new Error(`${side.system}: member promote: ${r.stderr}`);
}

const skip = !hasEtcdctl() ? 'etcdctl not installed' : !existsSync(ETCD_BIN) ? `no etcd at ${ETCD_BIN}` : false;

t.test("a learner answers its clients as etcd 3.4's does, and a promoted one serves everything at once", { skip }, async (t) => {
  const [etcd, picloud] = await etcdAndPicloudLearners(t);
  const expected = Object.fromEntries(TABLE.map(([name, want]) => [name, want]));
  const [etcdSeen, picloudSeen] = await Promise.all([learnerTable(etcd, TABLE), learnerTable(picloud, [...TABLE, ...PICLOUD_ONLY])]);
  t.same(etcdSeen, expected, "etcd 3.4's learner answers as measured");
  for (const [name] of TABLE) t.equal(picloudSeen[name], etcdSeen[name], `picloud's learner: ${name}`);
  for (const [name, want] of PICLOUD_ONLY) t.equal(picloudSeen[name], want, `picloud's learner: ${name} (not in etcd 3.4)`);
  const [etcdClients, picloudClients] = await Promise.all([clientsOnLearner(etcd, 'clients/'), clientsOnLearner(picloud, 'clients/')]);
  t.match(etcdClients['etcd3, learner alone: put'], /not supported for learner/, "npm etcd3: a put on etcd's learner alone is refused");
  t.equal(etcdClients['etcd3, learner and voter: six puts'], 'ok "put"', "npm etcd3 with etcd's learner and voter: every put served");
  if (PYTHON !== undefined) t.match(etcdClients['python3-etcd3, learner alone'], /^put \w+.*\nget .*\nserializable get ok None\nstatus .+$/, "python3-etcd3 ran each call on etcd's learner (a serializable get served)");
  t.comment(`what the clients saw on etcd's learner: ${JSON.stringify(etcdClients, null, 1)}`);
  for (const name of Object.keys(etcdClients)) t.equal(picloudClients[name], etcdClients[name], `${name}: as with etcd 3.4's learner`);

  await Promise.all([promote(etcd), promote(picloud)]);
  for (const side of [etcd, picloud]) {
    const s = connect(side.learner);
    try {
      // Its promotion reaches the learner when it applies it: a moment after the leader's.
      const served = await until(
        `${side.system}: the promoted learner serves a linearizable read`,
        async () => ((await unary(s, 'KV', 'Range', { key })) === SERVED ? SERVED : false),
        PROMOTED_SERVES_MS,
      ).catch((e: Error) => e.message);
      t.equal(served, SERVED, `${side.system}: promoted, a linearizable read is served`);
      t.equal(await unary(s, 'KV', 'Put', { key, value: Buffer.from('voter') }), SERVED, `${side.system}: promoted, a put is served`);
      t.equal(await unary(s, 'Cluster', 'MemberList', {}), SERVED, `${side.system}: promoted, member list is served`);
      const w = s.Watch.Watch();
      w.write({ createRequest: { key } });
      t.equal(await firstResponse(w), SERVED, `${side.system}: promoted, a watch is created`);
    } finally {
      for (const c of Object.values(s)) c.close();
    }
  }
});
