/**
 * Wire encoding of gossip messages with cbor-x: UDP compound packets (a CBOR array of
 * messages, each a CBOR array `[type, ...fields]`) and TCP stream messages (one CBOR value per
 * frame). Every decoder checks size first, then shape, types and limits of every field, and
 * throws only GossipDecodeError. Also computes encoded sizes without encoding, so the state
 * machine can fill packets up to the UDP budget and the simulator can count bytes cheaply.
 * Encryption and framing are not here (keyring/, core/net/gossip-transport.ts).
 */
import { SIGNATURE_TEXT_CHARS } from '../keyring/authority.js';
import { isIP } from 'node:net';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { Decoder, Encoder } from 'cbor-x';
import { checkCborBounds } from './cbor-bounds.js';
import { GossipDecodeError } from '../errors.js';
import {
  MAX_HOST_BYTES,
  MAX_INCARNATION,
  MAX_MEMBERS,
  MAX_MESSAGES_PER_PACKET,
  MAX_META_BYTES,
  MAX_META_DEPTH,
  MAX_NAME_BYTES,
  MAX_STREAM_FRAME_BYTES,
  MAX_UDP_PACKET_BYTES,
} from '../limits.js';
import {
  MsgType,
  STATUS_BY_CODE,
  STATUS_CODE,
  type AliveMsg,
  type KeyringOpMsg,
  type KeyringOpName,
  type Message,
  type Meta,
  type MetaValue,
  type PushPullEntry,
  type PushPullMsg,
  type StreamMsg,
} from '../types.js';

// Plain CBOR: no record/structure extensions, objects as maps, canonical (minimal) headers.
const encoder = new Encoder({
  useRecords: false,
  mapsAsObjects: true,
  tagUint8Array: false,
  useTag259ForMaps: false,
  variableMapSize: true,
} as ConstructorParameters<typeof Encoder>[0]);
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

const UINT32_MAX = 0xffff_ffff;
const MAX_KEY_TEXT_BYTES = 64; // base64 of a 32-byte key is 44 characters
const MAX_ERROR_TEXT_BYTES = 256;
const MAX_KEYS_IN_REPLY = 64;

// ---------------------------------------------------------------------------------------------
// Sizes

/** Bytes of a CBOR head carrying the value/length n. */
export function cborHeadBytes(n: number): number {
  if (n < 24) return 1;
  if (n < 0x100) return 2;
  if (n < 0x10000) return 3;
  if (n <= UINT32_MAX) return 5;
  return 9;
}

function strBytes(s: string): number {
  // Fast path for ASCII, which names and IP addresses nearly always are.
  let ascii = true;
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) > 0x7f) {
      ascii = false;
      break;
    }
  }
  const len = ascii ? s.length : Buffer.byteLength(s, 'utf8');
  return cborHeadBytes(len) + len;
}

const metaSizes = new WeakMap<object, number>();

/** Encoded size of a metadata map (memoized per object: metadata objects are immutable). */
export function metaSize(meta: Meta): number {
  let size = metaSizes.get(meta);
  if (size === undefined) {
    size = encoder.encode(meta).length;
    metaSizes.set(meta, size);
  }
  return size;
}

/** Encoded size of one message inside a packet. Exact (tested against the encoder). */
export function messageSize(m: Message): number {
  switch (m.t) {
    case MsgType.Ping:
      return 1 + 1 + cborHeadBytes(m.seq) + strBytes(m.target);
    case MsgType.PingReq:
      return 1 + 1 + cborHeadBytes(m.seq) + strBytes(m.target) + strBytes(m.host) + cborHeadBytes(m.port) + 1;
    case MsgType.Ack:
    case MsgType.Nack:
      return 1 + 1 + cborHeadBytes(m.seq);
    case MsgType.Alive:
      return (
        1 + 1 + strBytes(m.name) + cborHeadBytes(m.incarnation) + strBytes(m.host) + cborHeadBytes(m.port) +
        metaSize(m.meta) + cborHeadBytes(m.protocol)
      );
    case MsgType.Suspect:
    case MsgType.Dead:
      return 1 + 1 + strBytes(m.name) + cborHeadBytes(m.incarnation) + strBytes(m.from);
  }
}

/** Encoded size of a compound packet of messages whose sizes sum to `bodyBytes`. */
export function packetSize(count: number, bodyBytes: number): number {
  return cborHeadBytes(count) + bodyBytes;
}

/** Encoded size of one push-pull entry. */
export function pushPullEntrySize(e: PushPullEntry): number {
  return (
    1 + strBytes(e.name) + cborHeadBytes(e.incarnation) + strBytes(e.host) + cborHeadBytes(e.port) + 1 +
    metaSize(e.meta) + cborHeadBytes(e.protocol)
  );
}

/** Encoded size of a push-pull message given the summed size of its entries. */
export function pushPullSize(from: string, count: number, entriesBytes: number): number {
  return 1 + 1 + 1 + strBytes(from) + cborHeadBytes(count) + entriesBytes;
}

// ---------------------------------------------------------------------------------------------
// Encoding

function messageTuple(m: Message): unknown[] {
  switch (m.t) {
    case MsgType.Ping:
      return [m.t, m.seq, m.target];
    case MsgType.PingReq:
      return [m.t, m.seq, m.target, m.host, m.port, m.nack];
    case MsgType.Ack:
    case MsgType.Nack:
      return [m.t, m.seq];
    case MsgType.Alive:
      return [m.t, m.name, m.incarnation, m.host, m.port, m.meta, m.protocol];
    case MsgType.Suspect:
    case MsgType.Dead:
      return [m.t, m.name, m.incarnation, m.from];
  }
}

function entryTuple(e: PushPullEntry): unknown[] {
  return [e.name, e.incarnation, e.host, e.port, STATUS_CODE[e.status], e.meta, e.protocol];
}

/** Encodes a compound UDP packet (plaintext, before sealing). */
export function encodePacket(messages: readonly Message[]): Buffer {
  return encoder.encode(messages.map(messageTuple));
}

/** Encodes one stream message (plaintext, before sealing and framing). */
export function encodeStream(m: StreamMsg): Buffer {
  switch (m.t) {
    case MsgType.StreamPing:
      return encoder.encode([m.t, m.seq, m.target]);
    case MsgType.PushPull:
      // A trailing field, so members from before it (they read the first four) still decode it.
      return encoder.encode(m.keyringVersion === undefined ? [m.t, m.join, m.from, m.states.map(entryTuple)] : [m.t, m.join, m.from, m.states.map(entryTuple), m.keyringVersion]);
    case MsgType.StreamError:
      return encoder.encode([m.t, m.code, m.message]);
    case MsgType.Ack:
      return encoder.encode([m.t, m.seq]);
    case MsgType.KeyringOp:
      // The signature trails, so members from before it (they read the first four) still decode it.
      return encoder.encode(m.sig === undefined ? [m.t, m.op, m.key, m.version] : [m.t, m.op, m.key, m.version, m.sig]);
    case MsgType.KeyringReply:
      return encoder.encode([m.t, m.ok, m.code, m.keys, m.version]);
  }
}

/** Stream frames larger than this are deflated (when that makes them smaller). */
export const STREAM_COMPRESS_MIN_BYTES = 512;
const FRAME_PLAIN = 0;
const FRAME_DEFLATE = 1;

/**
 * The plaintext of one stream frame: a flag byte (0 = CBOR follows, 1 = raw-deflated CBOR
 * follows) and the body. Push-pull states are highly repetitive (metadata keys, name and
 * address prefixes), so deflate shrinks them several-fold; small frames are sent as is.
 */
export function encodeStreamFrame(m: StreamMsg): Buffer {
  const body = encodeStream(m);
  if (body.length >= STREAM_COMPRESS_MIN_BYTES) {
    const z = deflateRawSync(body, { level: 1 });
    if (z.length + 1 < body.length) return Buffer.concat([Buffer.from([FRAME_DEFLATE]), z]);
  }
  return Buffer.concat([Buffer.from([FRAME_PLAIN]), body]);
}

/** Decodes one stream frame's plaintext; inflation is capped at MAX_STREAM_FRAME_BYTES. */
export function decodeStreamFrame(buf: Uint8Array): StreamMsg {
  if (buf.length === 0) throw new GossipDecodeError('GOSSIP_DECODE_TRUNCATED', 'empty stream frame');
  if (buf.length > MAX_STREAM_FRAME_BYTES) {
    throw new GossipDecodeError('GOSSIP_DECODE_OVERSIZED', `stream frame of ${buf.length} bytes exceeds ${MAX_STREAM_FRAME_BYTES}`);
  }
  const flag = buf[0];
  const body = buf.subarray(1);
  if (flag === FRAME_PLAIN) return decodeStream(body);
  if (flag !== FRAME_DEFLATE) malformed(`unknown stream frame flag ${String(flag)}`);
  let inflated: Buffer;
  try {
    inflated = inflateRawSync(body, { maxOutputLength: MAX_STREAM_FRAME_BYTES });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_BUFFER_TOO_LARGE') {
      throw new GossipDecodeError('GOSSIP_DECODE_OVERSIZED', `inflated stream frame exceeds ${MAX_STREAM_FRAME_BYTES} bytes`);
    }
    throw new GossipDecodeError('GOSSIP_DECODE_MALFORMED', `bad deflate data: ${(err as Error).message}`);
  }
  return decodeStream(inflated);
}

/** Encodes metadata alone (used to enforce MAX_META_BYTES before a node announces it). */
export function encodeMeta(meta: Meta): Buffer {
  return encoder.encode(meta);
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** A message type as an error names it: a number, or only what kind of value came (it may be megabytes). */
function describeType(type: unknown): string {
  return typeof type === 'number' ? String(type) : `(a ${Array.isArray(type) ? 'list' : typeof type})`;
}

function malformed(why: string): never {
  throw new GossipDecodeError('GOSSIP_DECODE_MALFORMED', why);
}

function cborDecode(buf: Uint8Array): unknown {
  if (buf.length === 0) throw new GossipDecodeError('GOSSIP_DECODE_TRUNCATED', 'empty input');
  try {
    return decoder.decode(buf);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (/end of (CBOR )?data|outside the bounds|Unexpected end/i.test(msg)) {
      throw new GossipDecodeError('GOSSIP_DECODE_TRUNCATED', `truncated CBOR: ${msg}`);
    }
    throw new GossipDecodeError('GOSSIP_DECODE_MALFORMED', `bad CBOR: ${msg}`);
  }
}

function uint(v: unknown, max: number, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) malformed(`${what} must be an integer in 0..${max}`);
  return v;
}

function text(v: unknown, maxBytes: number, what: string, allowEmpty = false): string {
  if (typeof v !== 'string') malformed(`${what} must be a string`);
  if (!allowEmpty && v.length === 0) malformed(`${what} must not be empty`);
  if (v.length > maxBytes || Buffer.byteLength(v, 'utf8') > maxBytes) malformed(`${what} longer than ${maxBytes} bytes`);
  return v;
}

/**
 * A member's address is an IP, as members advertise it (memberlist carries raw IP bytes): a
 * name would have every node resolve what a key holder chose, on libuv's small thread pool,
 * at each send.
 */
function ipHost(v: unknown): string {
  const host = text(v, MAX_HOST_BYTES, 'host');
  if (isIP(host) === 0) malformed('host must be an IP address');
  return host;
}

/** A node's name: no control characters (names reach log lines, where a newline would forge one). */
function nameText(v: unknown, what: string): string {
  const name = text(v, MAX_NAME_BYTES, what);
  if (CONTROL_CHARS.test(name)) malformed(`${what} must not contain control characters`);
  return name;
}

const CONTROL_CHARS = /[\x00-\x1f\x7f]/;

function bool(v: unknown, what: string): boolean {
  if (typeof v !== 'boolean') malformed(`${what} must be a boolean`);
  return v;
}

function port(v: unknown): number {
  const p = uint(v, 65535, 'port');
  if (p === 0) malformed('port must not be 0');
  return p;
}

function tuple(v: unknown, min: number, what: string): unknown[] {
  if (!Array.isArray(v)) malformed(`${what} must be an array`);
  if (v.length < min) malformed(`${what} has ${v.length} fields, needs ${min}`);
  return v;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Validates a metadata value and returns a clean copy (own enumerable data only). */
function metaValue(v: unknown, depth: number): MetaValue {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) malformed('metadata numbers must be finite');
    return v;
  }
  if (depth >= MAX_META_DEPTH) malformed(`metadata nested deeper than ${MAX_META_DEPTH}`);
  if (Array.isArray(v)) {
    if (v.length > MAX_META_BYTES) malformed('metadata array too long');
    return v.map((x) => metaValue(x, depth + 1));
  }
  if (isPlainObject(v)) return metaObject(v, depth + 1);
  return malformed('metadata values must be JSON-like');
}

function metaObject(v: Record<string, unknown>, depth: number): Meta {
  const keys = Object.keys(v);
  if (keys.length > MAX_META_BYTES) malformed('metadata has too many keys');
  const out: Meta = {};
  for (const k of keys) {
    if (k === '__proto__') malformed('metadata key __proto__ is not allowed');
    out[k] = metaValue(v[k], depth);
  }
  return out;
}

/** Validates untrusted metadata (decoded or from a caller) and enforces MAX_META_BYTES. */
export function checkMeta(v: unknown): Meta {
  if (!isPlainObject(v)) malformed('metadata must be a map');
  const meta = metaObject(v, 0);
  const size = encoder.encode(meta).length;
  if (size > MAX_META_BYTES) throw new GossipDecodeError('GOSSIP_DECODE_OVERSIZED', `metadata is ${size} bytes, limit ${MAX_META_BYTES}`);
  metaSizes.set(meta, size);
  return meta;
}

function decodeMessage(v: unknown): Message {
  const f = tuple(v, 2, 'message');
  const type = f[0];
  switch (type) {
    case MsgType.Ping:
      tuple(f, 3, 'ping');
      return { t: MsgType.Ping, seq: uint(f[1], UINT32_MAX, 'seq'), target: nameText(f[2], 'target') };
    case MsgType.PingReq:
      tuple(f, 6, 'ping-req');
      return {
        t: MsgType.PingReq,
        seq: uint(f[1], UINT32_MAX, 'seq'),
        target: nameText(f[2], 'target'),
        host: ipHost(f[3]),
        port: port(f[4]),
        nack: bool(f[5], 'nack'),
      };
    case MsgType.Ack:
    case MsgType.Nack:
      return { t: type, seq: uint(f[1], UINT32_MAX, 'seq') };
    case MsgType.Alive:
      tuple(f, 7, 'alive');
      return {
        t: MsgType.Alive,
        name: nameText(f[1], 'name'),
        incarnation: uint(f[2], MAX_INCARNATION, 'incarnation'),
        host: ipHost(f[3]),
        port: port(f[4]),
        meta: checkMeta(f[5]),
        protocol: uint(f[6], 255, 'protocol'),
      };
    case MsgType.Suspect:
    case MsgType.Dead:
      tuple(f, 4, 'suspect/dead');
      return {
        t: type,
        name: nameText(f[1], 'name'),
        incarnation: uint(f[2], MAX_INCARNATION, 'incarnation'),
        from: nameText(f[3], 'from'),
      };
    default:
      throw new GossipDecodeError('GOSSIP_DECODE_UNKNOWN_TYPE', `unknown message type ${describeType(type)}`);
  }
}

/** Decodes a compound UDP packet (plaintext). Throws GossipDecodeError only. */
export function decodePacket(buf: Uint8Array): Message[] {
  if (buf.length > MAX_UDP_PACKET_BYTES) {
    throw new GossipDecodeError('GOSSIP_DECODE_OVERSIZED', `packet of ${buf.length} bytes exceeds ${MAX_UDP_PACKET_BYTES}`);
  }
  // A packet is small, but a few kilobytes of tags can still cost seconds (cbor-bounds.ts).
  checkCborBounds(buf);
  const v = cborDecode(buf);
  if (!Array.isArray(v)) malformed('packet must be an array of messages');
  if (v.length === 0) malformed('packet has no messages');
  if (v.length > MAX_MESSAGES_PER_PACKET) {
    throw new GossipDecodeError('GOSSIP_DECODE_OVERSIZED', `packet has ${v.length} messages, limit ${MAX_MESSAGES_PER_PACKET}`);
  }
  return v.map(decodeMessage);
}

function decodeEntry(v: unknown): PushPullEntry {
  const f = tuple(v, 7, 'push-pull entry');
  const code = uint(f[4], STATUS_BY_CODE.length - 1, 'status');
  return {
    name: nameText(f[0], 'name'),
    incarnation: uint(f[1], MAX_INCARNATION, 'incarnation'),
    host: ipHost(f[2]),
    port: port(f[3]),
    status: STATUS_BY_CODE[code]!,
    meta: checkMeta(f[5]),
    protocol: uint(f[6], 255, 'protocol'),
  };
}

const KEYRING_OPS: readonly KeyringOpName[] = ['install', 'use', 'remove', 'list'];

/** Decodes one stream message (plaintext of one frame). Throws GossipDecodeError only. */
export function decodeStream(buf: Uint8Array): StreamMsg {
  if (buf.length > MAX_STREAM_FRAME_BYTES) {
    throw new GossipDecodeError('GOSSIP_DECODE_OVERSIZED', `stream message of ${buf.length} bytes exceeds ${MAX_STREAM_FRAME_BYTES}`);
  }
  // Counted first: what the decode would build is bounded before it is built.
  checkCborBounds(buf);
  const f = tuple(cborDecode(buf), 2, 'stream message');
  const type = f[0];
  switch (type) {
    case MsgType.StreamPing:
      tuple(f, 3, 'stream ping');
      return { t: MsgType.StreamPing, seq: uint(f[1], UINT32_MAX, 'seq'), target: nameText(f[2], 'target') };
    case MsgType.Ack:
      return { t: MsgType.Ack, seq: uint(f[1], UINT32_MAX, 'seq') };
    case MsgType.PushPull: {
      tuple(f, 4, 'push-pull');
      const states = f[3];
      if (!Array.isArray(states)) malformed('push-pull states must be an array');
      if (states.length > MAX_MEMBERS) {
        throw new GossipDecodeError('GOSSIP_DECODE_OVERSIZED', `push-pull has ${states.length} members, limit ${MAX_MEMBERS}`);
      }
      const msg: PushPullMsg = { t: MsgType.PushPull, join: bool(f[1], 'join'), from: nameText(f[2], 'from'), states: states.map(decodeEntry) };
      if (f.length > 4) msg.keyringVersion = uint(f[4], Number.MAX_SAFE_INTEGER, 'keyring version');
      return msg;
    }
    case MsgType.StreamError:
      tuple(f, 3, 'stream error');
      return { t: MsgType.StreamError, code: text(f[1], MAX_ERROR_TEXT_BYTES, 'code'), message: text(f[2], MAX_ERROR_TEXT_BYTES, 'message', true) };
    case MsgType.KeyringOp: {
      // The version is required: an op without one (from before versions) could be a replay.
      tuple(f, 4, 'keyring op');
      const op = f[1];
      if (!KEYRING_OPS.includes(op as KeyringOpName)) malformed('unknown keyring op');
      const msg: KeyringOpMsg = { t: MsgType.KeyringOp, op: op as KeyringOpName, key: text(f[2], MAX_KEY_TEXT_BYTES, 'key', true), version: uint(f[3], Number.MAX_SAFE_INTEGER, 'keyring version') };
      if (f.length > 4) msg.sig = text(f[4], SIGNATURE_TEXT_CHARS, 'keyring change signature');
      return msg;
    }
    case MsgType.KeyringReply: {
      tuple(f, 4, 'keyring reply');
      const keys = f[3];
      if (!Array.isArray(keys) || keys.length > MAX_KEYS_IN_REPLY) malformed('keyring reply keys must be a short array');
      return {
        t: MsgType.KeyringReply,
        ok: bool(f[1], 'ok'),
        code: text(f[2], MAX_ERROR_TEXT_BYTES, 'code', true),
        keys: keys.map((k) => text(k, MAX_KEY_TEXT_BYTES, 'key')),
        // A member from before versions answers without one.
        version: f.length > 4 ? uint(f[4], Number.MAX_SAFE_INTEGER, 'keyring version') : 0,
      };
    }
    default:
      throw new GossipDecodeError('GOSSIP_DECODE_UNKNOWN_TYPE', `unknown stream message type ${describeType(type)}`);
  }
}

/** Builds an alive message; metadata must already have passed checkMeta. */
export function aliveMessage(name: string, incarnation: number, host: string, port: number, meta: Meta, protocol: number): AliveMsg {
  return { t: MsgType.Alive, name, incarnation, host, port, meta, protocol };
}
