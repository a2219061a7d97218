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
  // The watch streams decode each message where it lies in a socket read, into one reused reply.
  const reused = decodeWatchReply(new Uint8Array(0));
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(response, fc.uint8Array({ maxLength: 20 }), fc.uint8Array({ maxLength: 20 }), (o, before, after) => {
        const msg = WatchResponse.encode(WatchResponse.fromObject(o)).finish();
        const want = {
          watchId: o.watchId,
          created: o.created,
          canceled: o.canceled,
          cancelReason: o.cancelReason,
          puts: o.events.filter((e) => e.type === 0).map((e) => e.kv.modRevision),
        };
        // A plain Uint8Array as well as a Buffer (the cancel reason is read as text).
        const whole = JSON.stringify(decodeWatchReply(new Uint8Array(msg)));
        const inPlace = JSON.stringify(decodeWatchReply(Buffer.concat([before, msg, after]), before.length, before.length + msg.length, reused));
        return whole === JSON.stringify(want) && inPlace === whole;
      }),
      { numRuns: 500 },
    ),
  );
});
