import t from 'tap';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as cv from '../../core/net/etcd/convert.js';
import { EtcdError } from '../../core/net/etcd/errors.js';
import { framedSnapshotBytes, readSnapshotFile, snapshotTrailer, SNAPSHOT_HASH_BYTES } from '../../core/net/etcd/snapshot-file.js';

t.test('int64 conversion: exact below 2^53, clamped revisions, unaliased ids', async (t) => {
  t.equal(cv.int64('9007199254740991'), 2 ** 53 - 1);
  t.equal(cv.int64('9223372036854775807'), Number.MAX_SAFE_INTEGER, 'revision clamps (a future revision)');
  t.equal(cv.int64('-9223372036854775808'), -Number.MAX_SAFE_INTEGER);
  t.equal(cv.int64(undefined), 0);
  t.equal(cv.int64('garbage'), 0);
  t.equal(cv.id64('9007199254740991'), 2 ** 53 - 1);
  t.equal(cv.id64('9007199254740992'), cv.UNREPRESENTABLE_ID, '2^53 is not representable exactly');
  t.equal(cv.id64('0010'), 10, 'leading zeros are fine');
  t.throws(() => cv.leaseGrantRequest({ TTL: '5', ID: '9007199254740993' }), { code: 'INVALID_ARGUMENT' });
});

t.test('id64 is exact for every int64 written as protobuf text, with or without leading zeros and sign', async (t) => {
  const limit = BigInt(Number.MAX_SAFE_INTEGER);
  fc.assert(
    fc.property(fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n), fc.nat(3), fc.boolean(), (b, zeros, plus) => {
      const digits = '0'.repeat(zeros) + (b < 0n ? -b : b).toString();
      const text = (b < 0n ? '-' : plus ? '+' : '') + digits;
      const safe = b >= -limit && b <= limit;
      return cv.isSafeInt64(text) === safe && cv.id64(text) === (safe ? Number(b) : cv.UNREPRESENTABLE_ID);
    }),
    { numRuns: 5000 },
  );
  t.equal(cv.id64('999999999999999'), 999_999_999_999_999, '15 digits: the no-BigInt path');
  t.equal(cv.id64('9999999999999999'), cv.UNREPRESENTABLE_ID, '16 digits, above 2^53');
});

t.test('fuzz: request converters throw only EtcdError on any object shape', async (t) => {
  const anyValue = fc.anything({ withTypedArray: true, maxDepth: 3 });
  const fields = fc.dictionary(
    fc.constantFrom('key', 'rangeEnd', 'value', 'limit', 'revision', 'sortOrder', 'sortTarget', 'lease', 'ignoreValue', 'ignoreLease', 'compare', 'success', 'failure', 'requestPut', 'requestRange', 'requestTxn', 'filters', 'target', 'result', 'ID', 'TTL', 'action', 'alarm', 'memberID', 'startRevision'),
    fc.oneof(anyValue, fc.constant(Buffer.from('k')), fc.constant('9223372036854775807'), fc.array(fc.dictionary(fc.constantFrom('requestPut', 'requestTxn', 'key', 'target'), anyValue), { maxLength: 3 })),
  );
  const converters: ((o: Record<string, unknown>) => unknown)[] = [
    cv.rangeRequest, cv.putRequest, cv.deleteRangeRequest, (o) => cv.txnRequest(o), (o) => cv.watchCreateRequest(o, 0), cv.leaseGrantRequest, cv.alarmRequest,
  ];
  fc.assert(
    fc.property(fields, (o) => {
      for (const f of converters) {
        try {
          f(o);
        } catch (err) {
          if (!(err instanceof EtcdError)) return false;
        }
      }
      return true;
    }),
    { numRuns: 2000 },
  );
});

t.test('snapshot framing: size % 512 == 32, checksum and length verified', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'picloud-snapfile-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const n of [0, 1, 503, 504, 505, 512, 100_000]) {
    const data = Buffer.alloc(n, 7);
    const h = createHash('sha256').update(data);
    const { tail, digest } = snapshotTrailer(n, h);
    const file = Buffer.concat([data, tail, digest]);
    t.equal(file.length, framedSnapshotBytes(n));
    t.equal(file.length % 512, SNAPSHOT_HASH_BYTES, `${n} bytes frame to ${file.length}`);
    const path = join(dir, `s${n}`);
    await writeFile(path, file);
    t.same(await readSnapshotFile(path), { dataBytes: n });
    file[0] ^= 1;
    await writeFile(path, file);
    await t.rejects(readSnapshotFile(path), { code: 'ERR_SNAPSHOT_FILE', message: /SHA-256 mismatch/ });
  }
  await writeFile(join(dir, 'bad'), Buffer.alloc(100));
  await t.rejects(readSnapshotFile(join(dir, 'bad')), { code: 'ERR_SNAPSHOT_FILE', message: /size % 512 must be 32/ });
});

t.test("a txn's inner responses carry only their revision, as etcd 3.4's do (etcdctl txn -w json shows them)", async (t) => {
  const hdr = (revision: number) => ({ clusterId: 7, memberId: 8, revision, raftTerm: 2 });
  const kv = { key: Buffer.from('k'), createRevision: 2, modRevision: 3, version: 1, value: Buffer.from('v'), lease: 0 };
  const out = cv.txnResponse({
    header: hdr(5),
    succeeded: true,
    responses: [
      { op: 'range', response: { header: hdr(4), kvs: [kv], more: false, count: 1 } },
      { op: 'put', response: { header: hdr(5) } },
      { op: 'deleteRange', response: { header: hdr(5), deleted: 0, prevKvs: [] } },
      { op: 'txn', response: { header: hdr(0), succeeded: false, responses: [] } },
    ],
  });
  t.same(out.header, hdr(5), 'the outer header is whole');
  const inner = (out.responses as Array<Record<string, { header: unknown }>>).map((r) => Object.values(r)[0]!.header);
  t.strictSame(inner, [{ revision: 4 }, { revision: 5 }, { revision: 5 }, { revision: 0 }]);
});
