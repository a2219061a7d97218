/**
 * The JSON gateway, differentially against a real etcd 3.4's (grpc-gateway on its client port):
 * the generated request sequences of etcd-differential.test.ts, sent as curl would send them
 * (POST /v3/kv/…, snake_case names, bytes in base64, 64-bit integers as strings), to a one-member
 * etcd and a one-member picloud. The HTTP status and the JSON answered must mean the same:
 * compared with fields at their default value left out (grpc-gateway leaves them out; a client
 * reads a missing field as its default), keys in any order, revisions relative to the
 * sequence's start and lease IDs by position.
 */
import t from 'tap';
import fc from 'fast-check';
import { existsSync } from 'node:fs';
import { ETCD_BIN } from '../../bench/kv/clusters.js';
import { arbOp, etcdAndPicloud, LEASES, normalize, opRequest, RANGE_ALL, type Frame, type Op } from '../helpers/etcd-ops.js';

const RUNS = 40;
const CALL_TIMEOUT_MS = 5_000;

const PATHS = {
  Put: '/v3/kv/put',
  Range: '/v3/kv/range',
  DeleteRange: '/v3/kv/deleterange',
  Txn: '/v3/kv/txn',
  Compact: '/v3/kv/compaction',
  LeaseRevoke: '/v3/lease/revoke',
  LeaseTimeToLive: '/v3/lease/timetolive',
  LeaseGrant: '/v3/lease/grant',
} as const;

const snake = (k: string): string => (k === 'ID' || k === 'TTL' ? k : k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase()));

/** A request object as curl users write it. */
function toJson(v: unknown): unknown {
  if (Buffer.isBuffer(v)) return v.toString('base64');
  if (Array.isArray(v)) return v.map(toJson);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [snake(k), toJson(x)]));
  return v;
}

/** Byte fields of the answers, shown as text. */
const BYTES_FIELDS = new Set(['key', 'value', 'range_end']);

/** Without default values (false, 0, "0", "", empty lists and objects), keys sorted, bytes as text. */
function canonical(v: unknown, field = ''): unknown {
  if (typeof v === 'string' && BYTES_FIELDS.has(field)) return Buffer.from(v, 'base64').toString('latin1');
  if (Array.isArray(v)) return v.map((x) => canonical(x, field));
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) {
      const x = canonical((v as Record<string, unknown>)[k], k);
      const isDefault = x === false || x === 0 || x === '0' || x === '' || x === null || (Array.isArray(x) && x.length === 0) || (typeof x === 'object' && x !== null && Object.keys(x).length === 0);
      if (!isDefault) out[k] = x;
    }
    return out;
  }
  return v;
}

async function post(endpoint: string, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
  const r = await fetch(`http://${endpoint}${path}`, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(CALL_TIMEOUT_MS) });
  const text = await r.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = { text };
  }
  return { status: r.status, body: parsed };
}

interface Side {
  name: string;
  endpoint: string;
}

async function openFrame(s: Side, prefix: string): Promise<Frame> {
  const leaseIds: string[] = [];
  for (let i = 0; i < LEASES; i++) {
    const r = await post(s.endpoint, PATHS.LeaseGrant, { TTL: '3600' });
    if (r.status !== 200) throw new Error(`${s.name}: lease grant: ${JSON.stringify(r)}`);
    leaseIds.push((r.body as { ID: string }).ID);
  }
  const r = await post(s.endpoint, PATHS.Range, { key: Buffer.from('\0').toString('base64'), count_only: true });
  if (r.status !== 200) throw new Error(`${s.name}: range: ${JSON.stringify(r)}`);
  return { prefix, base: Number((r.body as { header: { revision: string } }).header.revision), leaseIds };
}

async function closeFrame(s: Side, f: Frame): Promise<void> {
  for (const id of f.leaseIds) await post(s.endpoint, PATHS.LeaseRevoke, { ID: id });
}

async function runSequence(sides: [Side, Side], prefix: string, ops: Op[]): Promise<void> {
  const frames = await Promise.all(sides.map((s) => openFrame(s, prefix)));
  try {
    for (const [i, op] of [...ops, RANGE_ALL].entries()) {
      const answers = await Promise.all(
        sides.map(async (s, j) => {
          const { rpc, req } = opRequest(frames[j]!, op);
          const r = await post(s.endpoint, PATHS[rpc], toJson(req));
          return { status: r.status, body: canonical(normalize(frames[j]!, r.body)) };
        }),
      );
      const [a, b] = answers.map((x) => JSON.stringify(x));
      if (a !== b) throw new Error(`step ${i} ${JSON.stringify(op)}:\n  ${sides[0].name}: ${a}\n  ${sides[1].name}: ${b}`);
    }
  } finally {
    await Promise.all(sides.map((s, j) => closeFrame(s, frames[j]!)));
  }
}

t.test("the JSON gateway answers as etcd 3.4's does", { skip: existsSync(ETCD_BIN) ? false : 'etcd not installed', timeout: 600_000 }, async (t) => {
  const { clusters } = await etcdAndPicloud(t, 1);
  const sides = clusters.map((c) => ({ name: c.system, endpoint: c.members[0]!.clientEndpoint })) as [Side, Side];

  let sequence = 0;
  const result = await fc.check(
    fc.asyncProperty(fc.array(arbOp, { minLength: 1, maxLength: 12 }), async (ops) => {
      sequence += 1;
      await runSequence(sides, `g/${String(sequence).padStart(5, '0')}/`, ops);
    }),
    { numRuns: RUNS, interruptAfterTimeLimit: 300_000 },
  );
  const why = result.failed ? ` — counterexample ${fc.stringify(result.counterexample)} (seed ${result.seed})${result.errorInstance ? `: ${String(result.errorInstance)}` : ''}` : '';
  t.ok(!result.failed, `${result.numRuns} generated sequences answered alike${why}`);
  t.ok(result.numRuns >= RUNS || result.failed, `all ${RUNS} sequences ran (${result.numRuns} did)`);
});

/**
 * Requests at the edges, each sent to both: integers outside their field's range (protobufjs
 * would wrap them: 2^64 + 5 became a compaction at revision 5), and an error grpc-gateway 1.x
 * answers with 412 (FailedPrecondition). Status, gRPC code and message must match.
 */
const EDGE_REQUESTS: ReadonlyArray<readonly [string, string, unknown]> = [
  ['compaction past 2^64', '/v3/kv/compaction', { revision: '18446744073709551621' }],
  ['range at a revision past 2^64', '/v3/kv/range', { key: Buffer.from('a').toString('base64'), revision: '18446744073709551618' }],
  ['range with a limit below -2^63', '/v3/kv/range', { key: Buffer.from('a').toString('base64'), limit: '-9223372036854775809' }],
  ['a uint64 member ID of -1', '/v3/cluster/member/remove', { ID: '-1' }],
  ['a lease ID past 2^63', '/v3/lease/timetolive', { ID: '9223372036854775808' }],
  ['a lease granted twice (FailedPrecondition)', '/v3/lease/grant', { ID: '4242', TTL: '60' }],
];

t.test('edge requests: out-of-range integers and a FailedPrecondition answered as etcd 3.4 answers them', { skip: existsSync(ETCD_BIN) ? false : 'etcd not installed', timeout: 120_000 }, async (t) => {
  const { clusters } = await etcdAndPicloud(t, 1);
  const sides = clusters.map((c) => ({ name: c.system, endpoint: c.members[0]!.clientEndpoint })) as [Side, Side];
  for (const s of sides) t.equal((await post(s.endpoint, PATHS.LeaseGrant, { ID: '4242', TTL: '60' })).status, 200, `${s.name}: lease 4242 granted`);
  for (const [what, path, body] of EDGE_REQUESTS) {
    const [a, b] = await Promise.all(sides.map((s) => post(s.endpoint, path, body)));
    const shape = (r: { status: number; body: unknown }) => [r.status, (r.body as { code?: number }).code, (r.body as { error?: string }).error];
    t.same(shape(b!), shape(a!), `${what}: ${JSON.stringify(shape(a!))}`);
  }
  const range = await Promise.all(sides.map((s) => post(s.endpoint, PATHS.Range, { key: Buffer.from('a').toString('base64'), revision: '1' })));
  t.same(range.map((r) => r.status), [200, 200], 'nothing was compacted on either');
});
