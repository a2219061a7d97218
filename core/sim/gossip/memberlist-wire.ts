/**
 * Sizes of hashicorp/memberlist's messages on the wire, for the bandwidth model: its structs
 * as msgpack maps keyed by field name (go-msgpack's default for structs), its compound-packet
 * framing, its LZW compression (compress/lzw, LSB order, 8-bit literals — on by default in
 * DefaultLANConfig, used for a UDP packet only when it shrinks it and always for push-pull
 * streams) and its AES-GCM overhead. Byte-exact to within a few bytes; used only by the model.
 */

// ---------------------------------------------------------------------------------------------
// A minimal msgpack writer (old-spec raw strings, as go-msgpack writes []byte and string).

type MpValue = number | string | Uint8Array | MpValue[] | { [k: string]: MpValue } | boolean;

function writeMp(v: MpValue, out: number[]): void {
  if (typeof v === 'boolean') {
    out.push(v ? 0xc3 : 0xc2);
  } else if (typeof v === 'number') {
    if (v < 128) out.push(v);
    else if (v < 0x100) out.push(0xcc, v);
    else if (v < 0x10000) out.push(0xcd, v >> 8, v & 255);
    else out.push(0xce, (v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
  } else if (typeof v === 'string' || v instanceof Uint8Array) {
    const bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
    if (bytes.length < 32) out.push(0xa0 | bytes.length);
    else if (bytes.length < 0x10000) out.push(0xda, bytes.length >> 8, bytes.length & 255);
    else out.push(0xdb, (bytes.length >>> 24) & 255, (bytes.length >>> 16) & 255, (bytes.length >>> 8) & 255, bytes.length & 255);
    for (const b of bytes) out.push(b);
  } else if (Array.isArray(v)) {
    if (v.length < 16) out.push(0x90 | v.length);
    else out.push(0xdc, v.length >> 8, v.length & 255);
    for (const x of v) writeMp(x, out);
  } else {
    const keys = Object.keys(v);
    if (keys.length < 16) out.push(0x80 | keys.length);
    else out.push(0xde, keys.length >> 8, keys.length & 255);
    for (const k of keys) {
      writeMp(k, out);
      writeMp(v[k]!, out);
    }
  }
}

export function msgpack(v: MpValue): Uint8Array {
  const out: number[] = [];
  writeMp(v, out);
  return Uint8Array.from(out);
}

// ---------------------------------------------------------------------------------------------
// LZW as Go's compress/lzw Writer emits it (LSB, litWidth 8, codes up to 12 bits).

/** Size in bytes of the LZW encoding of data. */
export function lzwSize(data: Uint8Array): number {
  const clear = 256;
  const maxCode = (1 << 12) - 1;
  let width = 9;
  let hi = clear + 1;
  let overflow = clear << 1;
  let bits = 0;
  let table = new Map<number, number>();
  const emit = (): void => {
    bits += width;
  };
  const incHi = (): boolean => {
    hi++;
    if (hi === overflow) {
      width++;
      overflow <<= 1;
    }
    if (hi === maxCode) {
      emit(); // clear code
      width = 9;
      hi = clear + 1;
      overflow = clear << 1;
      table = new Map();
      return false;
    }
    return true;
  };
  if (data.length === 0) return 0;
  emit(); // Go sends a clear code first
  let saved = data[0]!;
  for (let i = 1; i < data.length; i++) {
    const lit = data[i]!;
    const key = saved * 256 + lit;
    const hit = table.get(key);
    if (hit !== undefined) {
      saved = hit;
      continue;
    }
    emit();
    saved = lit;
    if (incHi()) table.set(key, hi);
  }
  emit(); // saved code
  incHi();
  emit(); // eof
  return Math.ceil(bits / 8);
}

// ---------------------------------------------------------------------------------------------
// memberlist's messages.

/** AES-GCM v1 overhead (version + nonce + tag), as picloud's. */
export const MEMBERLIST_ENCRYPT_OVERHEAD = 1 + 12 + 16;
/** Stream framing: encryptMsg type byte + 4-byte length. */
export const MEMBERLIST_STREAM_HEADER = 1 + 4;

const vsn = Uint8Array.from([1, 5, 2, 0, 0, 0]);
const ip = (host: string): Uint8Array => Uint8Array.from(host.split('.').map(Number));

export interface MemberlistSample {
  name: string;
  host: string;
  /** Encoded node metadata (Serf encodes tags as msgpack; our CBOR meta is about the same size). */
  meta: Uint8Array;
}

/** One message with its type byte, as memberlist puts it in a packet. */
function typed(type: number, body: MpValue): Uint8Array {
  const b = msgpack(body);
  const out = new Uint8Array(b.length + 1);
  out[0] = type;
  out.set(b, 1);
  return out;
}

export function memberlistPing(s: MemberlistSample, seq: number): Uint8Array {
  return typed(0, { SeqNo: seq, Node: s.name, SourceAddr: ip(s.host), SourcePort: 7946, SourceNode: s.name });
}
export function memberlistIndirectPing(s: MemberlistSample, seq: number): Uint8Array {
  return typed(1, { SeqNo: seq, Target: ip(s.host), Port: 7946, Node: s.name, Nack: true, SourceAddr: ip(s.host), SourcePort: 7946, SourceNode: s.name });
}
export function memberlistAck(seq: number): Uint8Array {
  return typed(2, { SeqNo: seq, Payload: new Uint8Array(0) });
}
export function memberlistSuspect(s: MemberlistSample, inc: number): Uint8Array {
  return typed(3, { Incarnation: inc, Node: s.name, From: s.name });
}
export function memberlistAlive(s: MemberlistSample, inc: number): Uint8Array {
  return typed(4, { Incarnation: inc, Node: s.name, Addr: ip(s.host), Port: 7946, Meta: s.meta, Vsn: vsn });
}
export function memberlistDead(s: MemberlistSample, inc: number): Uint8Array {
  return typed(5, { Incarnation: inc, Node: s.name, From: s.name });
}

/** A UDP packet of memberlist: compound framing when several messages, LZW if it helps, sealed. */
export function memberlistPacketSize(msgs: Uint8Array[]): number {
  let body: Uint8Array;
  if (msgs.length === 1) body = msgs[0]!;
  else {
    const parts: number[] = [7, msgs.length]; // compoundMsg, count
    for (const m of msgs) parts.push(m.length >> 8, m.length & 255);
    body = Uint8Array.from([...parts, ...msgs.flatMap((m) => [...m])]);
  }
  const compressed = lzwSize(body) + 1 + msgpack({ Algo: 0, Buf: new Uint8Array(0) }).length + 3;
  return Math.min(body.length, compressed) + MEMBERLIST_ENCRYPT_OVERHEAD;
}

/** One push-pull message (header + n node states), LZW-compressed and sealed as memberlist sends it. */
export function memberlistPushPullSize(samples: MemberlistSample[]): number {
  const parts: number[] = [6]; // pushPullMsg
  for (const b of msgpack({ Nodes: samples.length, UserStateLen: 0, Join: false })) parts.push(b);
  for (const s of samples) {
    for (const b of msgpack({ Name: s.name, Addr: ip(s.host), Port: 7946, Meta: s.meta, Incarnation: 1, State: 0, Vsn: vsn })) parts.push(b);
  }
  const raw = Uint8Array.from(parts);
  const lz = lzwSize(raw);
  const wrapped = 1 + msgpack({ Algo: 0, Buf: new Uint8Array(0) }).length + (lz < 0x10000 ? 2 : 4) + lz;
  return wrapped + MEMBERLIST_STREAM_HEADER + MEMBERLIST_ENCRYPT_OVERHEAD;
}
