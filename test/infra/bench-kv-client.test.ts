/**
 * The benchmark's watch reader (bench/kv/client.ts decodeWatchReply) reads only some fields of
 * a WatchResponse by hand; here it must agree with protobufjs' full decode on every message a
 * benchmark can meet, or the watch numbers would count the wrong events.
 */
import t from 'tap';
import fc from 'fast-check';
import { decodeWatchReply } from '../../bench/kv/client.js';
import { etcdType } from '../../core/net/proto-files.js';

const WatchResponse = etcdType('etcdserverpb.WatchResponse');
const rev = fc.nat(2 ** 32 - 1);
const kv = fc.record({ key: fc.uint8Array({ maxLength: 40 }), createRevision: rev, modRevision: rev, version: rev, value: fc.uint8Array({ maxLength: 300 }), lease: rev });
const event = fc.record({ type: fc.constantFrom(0, 1), kv, prevKv: fc.option(kv, { nil: undefined }) });
const response = fc.record({
  header: fc.record({ clusterId: rev, memberId: rev, revision: rev, raftTerm: rev }),
  watchId: fc.oneof(fc.constant(-1), fc.nat(100_000)),
  created: fc.boolean(),
  canceled: fc.boolean(),
  compactRevision: rev,
  cancelReason: fc.string({ maxLength: 60 }),
  fragment: fc.boolean(),
  events: fc.array(event, { maxLength: 5 }),
});

t.test('decodeWatchReply reads what a full decode reads', async (t) => {
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(response, (o) => {
        const got = decodeWatchReply(WatchResponse.encode(WatchResponse.fromObject(o)).finish());
        const want = {
          watchId: String(o.watchId),
          created: o.created,
          canceled: o.canceled,
          cancelReason: o.cancelReason,
          puts: o.events.filter((e) => e.type === 0).map((e) => String(e.kv.modRevision)),
        };
        return JSON.stringify(got) === JSON.stringify(want);
      }),
      { numRuns: 500 },
    ),
  );
});
