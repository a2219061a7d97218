// The KvRequest codec: round trips, and fuzzing — random, truncated, mutated, oversized and
// hostile input must give a KvError and nothing else.
import { assertProperty } from '../helpers/property.js';
import t from 'tap';
import fc from 'fast-check';
import { Encoder } from 'cbor-x';
import { decodeKvRequest, encodeKvRequest } from '../../core/kv/codec.js';
import { KvError } from '../../core/kv/errors.js';
import { MAX_REQUEST_BYTES, MAX_TXN_DEPTH } from '../../core/kv/limits.js';
import type { AuthRequest } from '../../core/kv/auth.js';
import type { KvRequest, RequestOp, TxnRequest } from '../../core/kv/types.js';

const bytes = fc.uint8Array({ minLength: 0, maxLength: 12 }).map((u) => Buffer.from(u));
const key = fc.uint8Array({ minLength: 1, maxLength: 8 }).map((u) => Buffer.from(u));
const int = fc.oneof(fc.constant(0), fc.integer({ min: -5, max: 100 }), fc.maxSafeInteger());
const bool = fc.boolean();

const range = fc.record(
  { key, rangeEnd: bytes, limit: int, revision: int, sortOrder: int, sortTarget: int, serializable: bool, keysOnly: bool, countOnly: bool, minModRevision: int },
  { requiredKeys: ['key'] },
);
const put = fc.record({ key, value: bytes, lease: int, prevKv: bool, ignoreValue: bool, ignoreLease: bool }, { requiredKeys: ['key'] });
const del = fc.record({ key, rangeEnd: bytes, prevKv: bool }, { requiredKeys: ['key'] });
const compare = fc.record({ key, result: int, target: int, value: bytes, version: int, modRevision: int, lease: int }, { requiredKeys: ['key'] });

const { txn } = fc.letrec<{ txn: TxnRequest; op: RequestOp }>((tie) => ({
  txn: fc.record(
    {
      compare: fc.array(compare, { maxLength: 3 }),
      success: fc.array(tie('op'), { maxLength: 3 }),
      failure: fc.array(tie('op'), { maxLength: 3 }),
    },
    { requiredKeys: [] },
  ),
  op: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    range.map((r) => ({ requestRange: r })),
    put.map((p) => ({ requestPut: p })),
    del.map((d) => ({ requestDeleteRange: d })),
    tie('txn').map((x) => ({ requestTxn: x })),
  ),
}));

const name = fc.string({ maxLength: 8 });
const authRequest: fc.Arbitrary<AuthRequest> = fc.oneof(
  fc.constant({ authEnable: {} }),
  fc.constant({ authDisable: {} }),
  fc.record({ name, password: bytes, noPassword: bool }, { requiredKeys: ['name'] }).map((userAdd) => ({ userAdd })),
  fc.record({ name }).map((userDelete) => ({ userDelete })),
  fc.record({ name, password: bytes }, { requiredKeys: ['name'] }).map((userChangePassword) => ({ userChangePassword })),
  fc.record({ name, role: name }).map((userGrantRole) => ({ userGrantRole })),
  fc.record({ name, role: name }).map((userRevokeRole) => ({ userRevokeRole })),
  fc.record({ name }).map((roleAdd) => ({ roleAdd })),
  fc.record({ name }).map((roleDelete) => ({ roleDelete })),
  fc.record({ name, permType: int, key: bytes, rangeEnd: bytes }, { requiredKeys: ['name'] }).map((roleGrantPermission) => ({ roleGrantPermission })),
  fc.record({ name, key: bytes, rangeEnd: bytes }, { requiredKeys: ['name'] }).map((roleRevokePermission) => ({ roleRevokePermission })),
);

const request: fc.Arbitrary<KvRequest> = fc
  .tuple(
    fc.oneof(
      range.map((range) => ({ range })),
      put.map((put) => ({ put })),
      del.map((deleteRange) => ({ deleteRange })),
      txn.map((txn) => ({ txn })),
      fc.record({ revision: int, physical: bool }).map((compaction) => ({ compaction })),
      fc.record({ TTL: int, ID: int }).map((leaseGrant) => ({ leaseGrant })),
      fc.record({ ID: int }).map((leaseRevoke) => ({ leaseRevoke })),
      authRequest.map((auth) => ({ auth })),
    ),
    fc.option(name, { nil: undefined }),
    bool,
  )
  .map(([req, user, client]) => ({ ...req, ...(user === undefined ? {} : { user }), ...(client ? { client } : {}) }) as KvRequest);

/** proto3 view: zero values and empty lists/bytes are absent. */
function normalize(v: unknown): unknown {
  if (v instanceof Uint8Array) return v.byteLength === 0 ? undefined : Buffer.from(v).toString('hex');
  if (Array.isArray(v)) return v.length === 0 ? undefined : v.map(normalize);
  if (typeof v === 'object' && v !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v).sort(([a], [c]) => (a < c ? -1 : 1))) {
      const n = normalize(x);
      if (n !== undefined) out[k] = n;
    }
    return out;
  }
  if (v === 0 || v === false || v === '' || v === undefined || v === null) return undefined;
  return v;
}

function onlyKvErrors(input: Uint8Array): void {
  try {
    decodeKvRequest(input);
  } catch (e) {
    if (!(e instanceof KvError)) throw new Error(`non-KvError thrown: ${String(e)}`);
  }
}

t.test('round trip', async (t) => {
  assertProperty(t, 'decode(encode(req)) equals req and re-encodes identically', 
    fc.property(request, (req) => {
      const enc = encodeKvRequest(req);
      const dec = decodeKvRequest(enc);
      const a = normalize(req);
      const c = normalize(dec);
      if (JSON.stringify(a) !== JSON.stringify(c)) throw new Error(`${JSON.stringify(a)} != ${JSON.stringify(c)}`);
      if (!encodeKvRequest(dec).equals(enc)) throw new Error('re-encoding differs');
    }),
    { numRuns: 500, seed: 1 },
  );
});

t.test('random bytes, truncation and mutation only ever give KvError', async (t) => {
  assertProperty(t, 'random bytes: decodeKvRequest throws only KvError', fc.property(fc.uint8Array({ maxLength: 300 }), (u) => onlyKvErrors(u)), { numRuns: 3000, seed: 2 });
  assertProperty(t, 'truncated, mutated and extended encodings: only KvError', 
    fc.property(request, fc.nat(), fc.nat(), fc.integer({ min: 0, max: 255 }), (req, cut, pos, byte) => {
      const enc = encodeKvRequest(req);
      onlyKvErrors(enc.subarray(0, cut % enc.length));
      const m = Buffer.from(enc);
      m[pos % m.length] = byte;
      onlyKvErrors(m);
      onlyKvErrors(Buffer.concat([enc, Buffer.from([byte])]));
    }),
    { numRuns: 1500, seed: 3 },
  );
});

t.test('hostile but well-formed CBOR', async (t) => {
  const raw = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
  const reject = (v: unknown, why: string): void => {
    t.throws(() => decodeKvRequest(raw.encode(v)), { code: 'MALFORMED_REQUEST' }, why);
  };
  reject({ put: { key: Buffer.from('k') }, range: { key: Buffer.from('k') } }, 'two requests');
  reject({}, 'no request');
  reject({ put: { key: 'k' } }, 'string where bytes belong');
  reject({ put: { key: Buffer.from('k'), lease: 2 ** 60 } }, 'beyond 2^53');
  reject({ put: { key: Buffer.from('k'), lease: 1.5 } }, 'not an integer');
  reject({ put: { key: Buffer.from('k'), evil: 1 } }, 'unknown field');
  reject({ put: { key: Buffer.from('k'), prevKv: 1 } }, 'number where a bool belongs');
  reject({ txn: { success: [{ requestPut: { key: Buffer.from('a') }, requestRange: { key: Buffer.from('a') } }] } }, 'two oneof fields');
  reject({ txn: { success: { requestPut: {} } } }, 'map where a list belongs');
  reject([1, 2, 3], 'an array');
  reject({ auth: {} }, 'an auth request naming no change');
  reject({ auth: { roleAdd: { name: Buffer.from('r') } } }, 'bytes where a name belongs');
  reject({ auth: { roleAdd: { name: 'r' }, roleDelete: { name: 'r' } } }, 'two auth changes');
  reject({ user: 'alice' }, 'a user and no request');
  reject({ client: true, user: 'alice' }, 'a client mark and a user and no request');
  reject({ client: 1, put: { key: Buffer.from('k') } }, 'a number for the client mark');
  reject({ user: 7, put: { key: Buffer.from('k') } }, 'a number for the user');
  reject({ put: new Map([['key', Buffer.from('k')]]) }, 'a Map');
  reject({ put: { key: Buffer.from('k'), value: new Date(0) } }, 'a date');
  reject(JSON.parse('{"put":{"key":{"type":"Buffer","data":[1]},"__proto__":{"key":1}}}'), '__proto__');
  // Deep nesting: 100,000 nested arrays, and txns nested beyond the limit.
  const deep = Buffer.concat([Buffer.alloc(100_000, 0x81), Buffer.from([0x01])]);
  t.throws(() => decodeKvRequest(deep), { code: 'MALFORMED_REQUEST' });
  let nested: TxnRequest = {};
  for (let i = 0; i < MAX_TXN_DEPTH * 2; i++) nested = { success: [{ requestTxn: nested }] };
  t.throws(() => encodeKvRequest({ txn: nested }), { code: 'TXN_TOO_DEEP' });
  t.throws(() => decodeKvRequest(raw.encode({ txn: nested })), { code: 'MALFORMED_REQUEST' });
  t.throws(() => decodeKvRequest(Buffer.alloc(0)), { code: 'MALFORMED_REQUEST' });
  t.throws(() => decodeKvRequest('nope' as unknown as Uint8Array), { code: 'MALFORMED_REQUEST' });
});

t.test('size limit', async (t) => {
  t.throws(() => decodeKvRequest(Buffer.alloc(MAX_REQUEST_BYTES + 1)), { code: 'REQUEST_TOO_LARGE' });
  const big = { put: { key: Buffer.from('k'), value: Buffer.alloc(MAX_REQUEST_BYTES) } };
  t.throws(() => encodeKvRequest(big), { code: 'REQUEST_TOO_LARGE', message: 'etcdserver: request is too large' });
});

t.test('lenient encoding of protobufjs-style objects', async (t) => {
  const long = { low: 5, high: 0, toNumber: () => 5 };
  const req = {
    txn: {
      compare: [{ key: new Uint8Array([107]), target: 2, result: 0, modRevision: long, targetUnion: 'modRevision' }],
      success: [{ requestPut: { key: Buffer.from('k'), value: Buffer.from('v'), lease: 0n }, request: 'requestPut' }],
      failure: [],
    },
  } as unknown as KvRequest;
  const dec = decodeKvRequest(encodeKvRequest(req));
  t.same(normalize(dec), {
    txn: { compare: [{ key: '6b', target: 2, modRevision: 5 }], success: [{ requestPut: { key: '6b', value: '76' } }] },
  });
  t.same(normalize(decodeKvRequest(encodeKvRequest({ leaseRevoke: { ID: '123' as unknown as number } }))), { leaseRevoke: { ID: 123 } });
  t.throws(() => encodeKvRequest({ leaseRevoke: { ID: 2n ** 63n as unknown as number } }), { code: 'MALFORMED_REQUEST' });
  t.throws(() => encodeKvRequest({ put: { key: 'k' as unknown as Uint8Array } }), { code: 'MALFORMED_REQUEST' });
});

t.test('apply never throws on a decodable request', async (t) => {
  const { KvStore } = await import('../../core/kv/store.js');
  assertProperty(t, 'apply never throws on decodable requests', 
    fc.property(fc.array(request, { maxLength: 20 }), (reqs) => {
      const store = new KvStore();
      store.apply({ leaseGrant: { TTL: 10, ID: 1 } }, { index: 1, term: 1 });
      store.apply({ put: { key: Buffer.from([0]), value: Buffer.from('v'), lease: 1 } }, { index: 2, term: 1 });
      reqs.forEach((r, i) => store.apply(decodeKvRequest(encodeKvRequest(r)), { index: i + 3, term: 1 }));
    }),
    { numRuns: 400, seed: 4 },
  );
});
