import t from 'tap';
import fc from 'fast-check';
import * as protoLoader from '@grpc/proto-loader';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import * as cv from '../../core/net/etcd/convert.js';
import type { KeyValue, ResponseHeader, WatchEvent } from '../../core/net/etcd/service.js';
import { encodeEvent, encodeEventsFrames, fragmentEvents } from '../../core/net/etcd/watch-encoding.js';
import { GRPC_MESSAGE_PREFIX_BYTES } from '../../core/net/etcd/eager-send.js';
import { GRPC_OVERHEAD_BYTES, MAX_REQUEST_BYTES } from '../../core/net/etcd/server.js';

// What the server did before (and still does for other responses): proto-loader with the server's options.
const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true, oneofs: true });
const watchMethod = (def['etcdserverpb.Watch'] as protoLoader.ServiceDefinition).Watch!;
const viaObjects = (watchId: number, h: ResponseHeader, events: WatchEvent[], fragment = false): Buffer =>
  watchMethod.responseSerialize({ header: cv.header(h), watchId, fragment, events: events.map(cv.event) });
const decode = (b: Buffer): unknown => watchMethod.responseDeserialize(b);
/** One watcher's response as the server encodes it, without its gRPC prefix. */
const encodeEventsResponse = (watchId: number, header: ResponseHeader, events: WatchEvent[]): Buffer =>
  encodeEventsFrames([{ watchId, header, events }]).frames.subarray(GRPC_MESSAGE_PREFIX_BYTES);

const u53 = fc.oneof(fc.nat(1000), fc.maxSafeNat());
const bytes = fc.uint8Array({ maxLength: 300 });
const kvArb: fc.Arbitrary<KeyValue> = fc.record({ key: bytes, createRevision: u53, modRevision: u53, version: u53, value: bytes, lease: u53 });
const eventArb: fc.Arbitrary<WatchEvent> = fc.record(
  { type: fc.constantFrom('PUT' as const, 'DELETE' as const), kv: kvArb, prevKv: kvArb },
  { requiredKeys: ['type', 'kv'] },
);
const headerArb: fc.Arbitrary<ResponseHeader> = fc.record({ clusterId: u53, memberId: u53, revision: u53, raftTerm: u53 });
const watchIdArb = fc.oneof(fc.constant(-1), fc.nat(10_000), fc.maxSafeNat());

t.test('an encoded watch response decodes exactly as the object-mapped one does', async (t) => {
  fc.assert(
    fc.property(watchIdArb, headerArb, fc.array(eventArb, { maxLength: 4 }), (id, h, events) => {
      t.same(decode(encodeEventsResponse(id, h, events)), decode(viaObjects(id, h, events)));
    }),
    { numRuns: 300 },
  );
});

t.test('a fan-out: watchers of one revision (fresh arrays of the same events) share the encoding, each with its own watch_id', async (t) => {
  fc.assert(
    fc.property(fc.array(watchIdArb, { minLength: 2, maxLength: 5 }), headerArb, fc.array(eventArb, { maxLength: 3 }), (ids, h, events) => {
      for (const id of ids) t.same(decode(encodeEventsResponse(id, { ...h }, [...events])), decode(viaObjects(id, h, events)));
      // Same length, other event objects: not served from the shared bytes.
      const others = events.map((e) => ({ ...e, kv: { ...e.kv, value: Buffer.concat([Buffer.from(e.kv.value), Buffer.from('x')]) } }));
      t.same(decode(encodeEventsResponse(ids[0]!, h, others)), decode(viaObjects(ids[0]!, h, others)));
    }),
    { numRuns: 200 },
  );
});

t.test('one encoding per event, shared by every watcher; prev_kv and type keep theirs apart', async (t) => {
  const kv: KeyValue = { key: Buffer.from('k'), createRevision: 2, modRevision: 7, version: 3, value: Buffer.from('v'), lease: 0 };
  const prev: KeyValue = { ...kv, modRevision: 6, version: 2, value: Buffer.from('old') };
  const bare = encodeEvent({ type: 'PUT', kv });
  t.equal(encodeEvent({ type: 'PUT', kv }), bare, 'a second watcher gets the same bytes');
  const withPrev = encodeEvent({ type: 'PUT', kv, prevKv: prev });
  t.not(withPrev, bare);
  t.ok(withPrev.length > bare.length);
  t.equal(encodeEvent({ type: 'PUT', kv, prevKv: prev }), withPrev);
  t.not(encodeEvent({ type: 'DELETE', kv }), bare, 'a different type is not served from the cache');
  // Two responses of the same revision differ only in watch_id.
  const h: ResponseHeader = { clusterId: 1, memberId: 2, revision: 7, raftTerm: 3 };
  const a = decode(encodeEventsResponse(1, h, [{ type: 'PUT', kv }])) as { watchId: string; header: { revision: string } };
  const b = decode(encodeEventsResponse(2, { ...h, revision: 8 }, [{ type: 'PUT', kv }])) as typeof a;
  t.equal(a.watchId, '1');
  t.equal(b.watchId, '2');
  t.equal(a.header.revision, '7');
  t.equal(b.header.revision, '8', 'a new header is encoded when the revision moves on');
});

t.test('encodeEventsFrames: the responses as gRPC messages in one buffer, each decoding as its own encoding does', async (t) => {
  const item = fc.record({ watchId: watchIdArb, header: headerArb, events: fc.array(eventArb, { maxLength: 3 }) });
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.array(item, { maxLength: 6 }), fc.option(fc.nat(8192), { nil: undefined }), fc.option(fc.nat(6), { nil: undefined }), (all, scratchBytes, count) => {
        // A reused buffer holds the last batch's bytes: whatever it held must not show through.
        const scratch = scratchBytes === undefined ? undefined : Buffer.alloc(scratchBytes, 0xa5);
        // With a count, only that many of the responses (a stream's reused slots beyond it are stale).
        const n = Math.min(count ?? all.length, all.length);
        const items = all.slice(0, n);
        const { frames, largest, buffer } = count === undefined ? encodeEventsFrames(all, scratch) : encodeEventsFrames(all, scratch, n);
        if (scratch !== undefined && scratch.length >= frames.length + 11 * items.length && buffer !== scratch) return false;
        const messages: Buffer[] = [];
        for (let at = 0; at < frames.length; ) {
          if (frames[at] !== 0 || at + GRPC_MESSAGE_PREFIX_BYTES > frames.length) return false;
          const len = frames.readUInt32BE(at + 1);
          messages.push(frames.subarray(at + GRPC_MESSAGE_PREFIX_BYTES, at + GRPC_MESSAGE_PREFIX_BYTES + len));
          at += GRPC_MESSAGE_PREFIX_BYTES + len;
        }
        if (messages.length !== items.length) return false;
        if (largest !== messages.reduce((m, b) => Math.max(m, b.length), 0)) return false;
        return items.every((r, i) => JSON.stringify(decode(messages[i]!)) === JSON.stringify(decode(viaObjects(r.watchId, r.header, [...r.events]))));
      }),
      { numRuns: 300 },
    ),
  );
});

t.test("fragmentEvents: etcd's sendFragments, each piece below the limit, together the response's events", async (t) => {
  const big = fc.record({ key: bytes, createRevision: u53, modRevision: u53, version: u53, value: fc.uint8Array({ maxLength: 3000 }), lease: u53 });
  const ev = fc.record({ type: fc.constantFrom('PUT' as const, 'DELETE' as const), kv: big, prevKv: big }, { requiredKeys: ['type', 'kv'] });
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(watchIdArb, headerArb, fc.array(ev, { maxLength: 12 }), fc.integer({ min: 50, max: 4_000 }), (id, h, events, max) => {
        const runs = fragmentEvents(id, h, events, max);
        if (runs.flat().length !== events.length || !runs.flat().every((e, i) => e === events[i])) return false;
        const whole = encodeEventsResponse(id, h, events);
        if (whole.length < max || events.length < 2) return runs.length === 1 && runs[0] === events;
        const { frames } = encodeEventsFrames(runs.map((r, i) => ({ watchId: id, header: h, events: r, fragment: i < runs.length - 1 })));
        let at = 0;
        for (let i = 0; i < runs.length; i++) {
          const len = frames.readUInt32BE(at + 1);
          const m = frames.subarray(at + GRPC_MESSAGE_PREFIX_BYTES, at + GRPC_MESSAGE_PREFIX_BYTES + len);
          at += GRPC_MESSAGE_PREFIX_BYTES + len;
          const more = i < runs.length - 1;
          const r = decode(m) as { fragment: boolean };
          if (r.fragment !== more) return false;
          if (JSON.stringify(r) !== JSON.stringify(decode(viaObjects(id, h, [...runs[i]!], more)))) return false;
          if (runs[i]!.length === 0 || (runs[i]!.length > 1 && m.length >= max)) return false;
          // As full as etcd makes it: one more event would have reached the limit.
          if (more && encodeEventsFrames([{ watchId: id, header: h, events: [...runs[i]!, runs[i + 1]![0]!], fragment: true }]).frames.length - GRPC_MESSAGE_PREFIX_BYTES < max) return false;
        }
        return at === frames.length;
      }),
      { numRuns: 300 },
    ),
  );
});

t.test('fragmentEvents: five 1 MB deletes with prev_kv go in 2+2+1 events, as etcd 3.4 sends them', async (t) => {
  const h: ResponseHeader = { clusterId: 1, memberId: 2, revision: 9, raftTerm: 3 };
  const events: WatchEvent[] = Array.from({ length: 5 }, (_, i) => ({
    type: 'DELETE',
    kv: { key: Buffer.from(`k${i}`), createRevision: 0, modRevision: 9, version: 0, value: Buffer.alloc(0), lease: 0 },
    prevKv: { key: Buffer.from(`k${i}`), createRevision: 2 + i, modRevision: 2 + i, version: 1, value: Buffer.alloc(1_000_000, 0x61), lease: 0 },
  }));
  const runs = fragmentEvents(0, h, events, MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES);
  t.same(runs.map((r) => r.length), [2, 2, 1]);
  t.equal(fragmentEvents(0, h, events.slice(0, 2), MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES).length, 1, 'two fit in one response');
});
