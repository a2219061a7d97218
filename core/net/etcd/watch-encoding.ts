/**
 * Watch responses carrying events, encoded for the wire without proto-loader's per-message
 * object mapping. With thousands of watchers of one key every watcher's WatchResponse holds
 * the same events under the same header and differs only in watch_id, so each event is
 * encoded once (cached on the store's KeyValue object, which is immutable once an event
 * holds it and shared by every watcher's copy of the event), the header once per revision,
 * and a response is assembled from encoded fields (protobuf decoders accept fields
 * concatenated in any order; these go in field-number order as protobufjs writes them).
 */
import protobuf from 'protobufjs';
import { etcdType } from '../proto-files.js';
import * as cv from './convert.js';
import type { KeyValue, ResponseHeader, WatchEvent } from './service.js';

const EventProto = etcdType('mvccpb.Event');
const HeaderProto = etcdType('etcdserverpb.ResponseHeader');

// WatchResponse field tags (etcdserverpb/rpc.proto): (field number << 3) | wire type.
const TAG_HEADER = (1 << 3) | 2;
const TAG_WATCH_ID = (2 << 3) | 0;
const TAG_EVENTS = (11 << 3) | 2;

interface EncodedEvent {
  type: WatchEvent['type'];
  prevKv: KeyValue | undefined;
  bytes: Uint8Array;
}

/** At most two entries per KeyValue: the event with and without prev_kv. */
const encodedEvents = new WeakMap<KeyValue, EncodedEvent[]>();

/** One event's mvccpb.Event bytes, encoded on first use and shared by every watcher after. */
export function encodeEvent(e: WatchEvent): Uint8Array {
  let list = encodedEvents.get(e.kv);
  if (list !== undefined) {
    for (const c of list) if (c.type === e.type && c.prevKv === e.prevKv) return c.bytes;
  } else {
    encodedEvents.set(e.kv, (list = []));
  }
  const bytes = EventProto.encode(EventProto.fromObject(cv.event(e))).finish();
  list.push({ type: e.type, prevKv: e.prevKv, bytes });
  return bytes;
}

let lastHeader: { h: ResponseHeader; bytes: Uint8Array } | undefined;

function sameHeader(a: ResponseHeader, b: ResponseHeader): boolean {
  return a.revision === b.revision && a.raftTerm === b.raftTerm && a.memberId === b.memberId && a.clusterId === b.clusterId;
}

/** The header's bytes; consecutive responses of one revision (a fan-out) share one encoding. */
function encodeHeader(h: ResponseHeader): Uint8Array {
  if (lastHeader === undefined || !sameHeader(lastHeader.h, h)) {
    lastHeader = { h: { ...h }, bytes: HeaderProto.encode(HeaderProto.fromObject(cv.header(h))).finish() };
  }
  return lastHeader.bytes;
}

/** A WatchResponse {header, watch_id, events} ready to be written as one gRPC message. */
export function encodeEventsResponse(watchId: number, header: ResponseHeader, events: readonly WatchEvent[]): Buffer {
  const w = protobuf.Writer.create();
  w.uint32(TAG_HEADER).bytes(encodeHeader(header));
  w.uint32(TAG_WATCH_ID).int64(watchId);
  for (const e of events) w.uint32(TAG_EVENTS).bytes(encodeEvent(e));
  const out = w.finish();
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
}
