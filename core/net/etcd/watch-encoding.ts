/**
 * Watch responses carrying events, encoded for the wire without the generic per-message
 * object mapping. With thousands of watchers of one key every watcher's WatchResponse holds
 * the same events under the same header and differs only in watch_id, so each event is
 * encoded once (cached on the store's KeyValue object, which is immutable once an event
 * holds it and shared by every watcher's copy of the event), the header once per revision,
 * and a response is assembled from encoded fields (protobuf decoders accept fields
 * concatenated in any order; these go in field-number order as protobufjs writes them).
 */
import protobuf from 'protobufjs';
import { etcdType } from '../proto-files.js';
import { GRPC_MESSAGE_PREFIX_BYTES } from './eager-send.js';
import * as cv from './convert.js';
import type { KeyValue, ResponseHeader, WatchEvent } from './service.js';

const EventProto = etcdType('mvccpb.Event');
const HeaderProto = etcdType('etcdserverpb.ResponseHeader');

// WatchResponse field tags (etcdserverpb/rpc.proto): (field number << 3) | wire type.
const TAG_HEADER = (1 << 3) | 2;
const TAG_WATCH_ID = (2 << 3) | 0;
const TAG_FRAGMENT = (7 << 3) | 0;
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

/**
 * The fields every watcher's response of one fan-out shares: the header and the events, as
 * encoded bytes. Watchers of one revision receive arrays holding the same event objects, so
 * the last result is reused while the header and the events are the same objects.
 */
let lastShared: { header: ResponseHeader; events: readonly WatchEvent[]; head: Uint8Array; tail: Uint8Array } | undefined;

function sharedFields(header: ResponseHeader, events: readonly WatchEvent[]): { head: Uint8Array; tail: Uint8Array } {
  const last = lastShared;
  if (last !== undefined && sameHeader(last.header, header) && sameElements(last.events, events)) return last;
  const head = protobuf.Writer.create().uint32(TAG_HEADER).bytes(encodeHeader(header)).finish();
  const w = protobuf.Writer.create();
  for (const e of events) w.uint32(TAG_EVENTS).bytes(encodeEvent(e));
  lastShared = { header: { ...header }, events, head, tail: w.finish() };
  return lastShared;
}

/** Same length, same elements by identity (the watchers of a fan-out hold arrays of the same event objects). */
export function sameElements<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Bytes of `n` as a protobuf varint (int64 semantics: a negative id takes ten bytes). */
function writeVarint(out: Buffer, at: number, n: number): number {
  if (n >= 0 && n <= 0x7fffffff) {
    while (n > 0x7f) {
      out[at++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    out[at++] = n;
    return at;
  }
  let v = BigInt.asUintN(64, BigInt(n));
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) byte |= 0x80;
    out[at++] = byte;
  } while (v !== 0n);
  return at;
}

/** Length of `n` as a protobuf varint (int64 semantics, as writeVarint). */
function varintBytes(n: number): number {
  if (n < 0) return 10;
  let k = 1;
  for (; n >= 0x80; k++) n = Math.floor(n / 0x80);
  return k;
}

/** Room for a watch_id varint: ten bytes hold any int64. */
const WATCH_ID_MAX_BYTES = 10;
/** The fragment field, when set: its tag and a one-byte true. */
const FRAGMENT_BYTES = 2;

/** One watcher's events response: its watch_id and the fan-out's header and events. */
export interface EventsResponse {
  watchId: number;
  header: ResponseHeader;
  events: readonly WatchEvent[];
  /** More of the same response follows (etcd's fragment flag; see fragmentEvents). */
  fragment?: boolean;
}

/**
 * At least the bytes the response takes as a gRPC message, prefix included (exact but for the
 * watch_id's varint, counted at its longest). Encodes the fan-out's shared fields if they are new.
 */
export function eventsResponseBytes(header: ResponseHeader, events: readonly WatchEvent[], fragment = false): number {
  const { head, tail } = sharedFields(header, events);
  return GRPC_MESSAGE_PREFIX_BYTES + head.length + 1 + WATCH_ID_MAX_BYTES + (fragment ? FRAGMENT_BYTES : 0) + tail.length;
}

/**
 * etcd's sendFragments, for a watch created with fragment=true: when the response carrying
 * `events` would take `maxBytes` or more encoded (etcd: its max request bytes plus gRPC
 * overhead), the events are cut into runs whose responses, fragment flag included, each stay
 * below it (a run holds one event at least, however large). A client with the default 4 MiB
 * receive limit could not take a larger revision whole. Returns [events] when no cut is needed;
 * every run but the last goes out with fragment=true.
 */
export function fragmentEvents(watchId: number, header: ResponseHeader, events: readonly WatchEvent[], maxBytes: number): (readonly WatchEvent[])[] {
  if (events.length < 2) return [events];
  // Sizes from the cached encodings: no copy of a large response is built just to measure it.
  const fieldBytes = (b: Uint8Array): number => 1 + varintBytes(b.length) + b.length;
  const fields = events.map((e) => fieldBytes(encodeEvent(e)));
  const base = fieldBytes(encodeHeader(header)) + 1 + varintBytes(watchId);
  if (fields.reduce((a, b) => a + b, base) < maxBytes) return [events];
  const runs: (readonly WatchEvent[])[] = [];
  let start = 0;
  let bytes = base + FRAGMENT_BYTES;
  for (let i = 0; i < events.length; i++) {
    if (i > start && bytes + fields[i]! >= maxBytes) {
      runs.push(events.slice(start, i));
      start = i;
      bytes = base + FRAGMENT_BYTES;
    }
    bytes += fields[i]!;
  }
  runs.push(events.slice(start));
  return runs;
}

/** Writes a WatchResponse {header, watch_id, fragment, events} at `at` (field-number order, as protobufjs writes it); returns the end. */
function writeResponse(out: Buffer, at: number, r: EventsResponse): number {
  const { head, tail } = sharedFields(r.header, r.events);
  out.set(head, at);
  at += head.length;
  out[at++] = TAG_WATCH_ID;
  at = writeVarint(out, at, r.watchId);
  if (r.fragment === true) {
    out[at++] = TAG_FRAGMENT;
    out[at++] = 1;
  }
  out.set(tail, at);
  return at + tail.length;
}

/**
 * Responses written one after another as gRPC messages (each behind its 5-byte prefix) in one
 * buffer, ready for one HTTP/2 write: the watchers of a fan-out share the encoded header and
 * events and differ in watch_id, so each costs two copies and a varint, and no buffer of its own.
 * Written into `scratch` when it is large enough (a buffer whose last write has completed: a
 * fan-out's buffer is tens of kilobytes, each a new allocation outside the heap otherwise);
 * `buffer` is the whole buffer used, for reuse the same way. Only the first `count` responses
 * are written.
 */
export function encodeEventsFrames(
  responses: readonly EventsResponse[],
  scratch?: Buffer,
  count: number = responses.length,
): { frames: Buffer; largest: number; buffer: Buffer } {
  let bound = 0;
  for (let i = 0; i < count; i++) bound += eventsResponseBytes(responses[i]!.header, responses[i]!.events, responses[i]!.fragment);
  const out = scratch !== undefined && scratch.length >= bound ? scratch : Buffer.allocUnsafe(bound);
  let at = 0;
  let largest = 0;
  for (let i = 0; i < count; i++) {
    const r = responses[i]!;
    const start = at + GRPC_MESSAGE_PREFIX_BYTES;
    const end = writeResponse(out, start, r);
    out[at] = 0;
    out.writeUInt32BE(end - start, at + 1);
    largest = Math.max(largest, end - start);
    at = end;
  }
  return { frames: out.subarray(0, at), largest, buffer: out };
}
