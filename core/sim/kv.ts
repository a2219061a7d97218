/**
 * The simulator's replicated state machine: a tiny key-value register store with put and
 * compare-and-set (reads are served by ReadIndex, never logged), plus client sessions so a
 * command retried by a client (same clientId and seq) takes effect once and the retry gets
 * the first result — the Raft dissertation's §6.3 duplicate detection.
 *
 * Also the binary codec of the commands carried in log entries. Not responsible for which
 * node applies what, or for snapshots' transport.
 */
import { SimError } from './errors.js';

export const MAX_KEY_BYTES = 64;
export const MAX_VALUE_BYTES = 256;
/** Bytes of the fixed command header: version, op, clientId (u32), seq (u32), key length. */
export const KV_HEADER_BYTES = 11;
const CODEC_VERSION = 1;
const OP_PUT = 1;
const OP_CAS = 2;

export type KvCommand =
  | { op: 'put'; clientId: number; seq: number; key: string; value: string }
  /** expected === null: succeed only when the key is absent. */
  | { op: 'cas'; clientId: number; seq: number; key: string; expected: string | null; value: string };

export type KvResult = { op: 'put' } | { op: 'cas'; ok: boolean };

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export function encodeKvCommand(c: KvCommand): Uint8Array {
  const key = encoder.encode(c.key);
  const value = encoder.encode(c.value);
  const expected = c.op === 'cas' && c.expected !== null ? encoder.encode(c.expected) : undefined;
  if (key.length > MAX_KEY_BYTES) throw new SimError('KV_OP_MALFORMED', `key of ${key.length} bytes > ${MAX_KEY_BYTES}`);
  if (value.length > MAX_VALUE_BYTES || (expected?.length ?? 0) > MAX_VALUE_BYTES) {
    throw new SimError('KV_OP_MALFORMED', `value over ${MAX_VALUE_BYTES} bytes`);
  }
  if (!isU32(c.clientId) || !isU32(c.seq)) throw new SimError('KV_OP_MALFORMED', 'clientId and seq must be u32');
  const casBytes = c.op === 'cas' ? 1 + (expected === undefined ? 0 : 2 + expected.length) : 0;
  const out = new Uint8Array(KV_HEADER_BYTES + key.length + casBytes + 2 + value.length);
  const view = new DataView(out.buffer);
  let p = 0;
  view.setUint8(p++, CODEC_VERSION);
  view.setUint8(p++, c.op === 'put' ? OP_PUT : OP_CAS);
  view.setUint32(p, c.clientId);
  p += 4;
  view.setUint32(p, c.seq);
  p += 4;
  view.setUint8(p++, key.length);
  out.set(key, p);
  p += key.length;
  if (c.op === 'cas') {
    view.setUint8(p++, expected === undefined ? 0 : 1);
    if (expected !== undefined) {
      view.setUint16(p, expected.length);
      p += 2;
      out.set(expected, p);
      p += expected.length;
    }
  }
  view.setUint16(p, value.length);
  p += 2;
  out.set(value, p);
  return out;
}

/** Decodes a command; any malformed, truncated or oversized input throws SimError KV_OP_MALFORMED. */
export function decodeKvCommand(data: Uint8Array): KvCommand {
  const fail = (why: string): never => {
    throw new SimError('KV_OP_MALFORMED', why);
  };
  if (data.length < KV_HEADER_BYTES) fail(`command truncated: ${data.length} bytes`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let p = 0;
  if (view.getUint8(p++) !== CODEC_VERSION) fail('unknown command version');
  const opCode = view.getUint8(p++);
  if (opCode !== OP_PUT && opCode !== OP_CAS) fail(`unknown op ${opCode}`);
  const clientId = view.getUint32(p);
  p += 4;
  const seq = view.getUint32(p);
  p += 4;
  const keyLen = view.getUint8(p++);
  if (keyLen > MAX_KEY_BYTES) fail(`key of ${keyLen} bytes > ${MAX_KEY_BYTES}`);
  const str = (len: number): string => {
    if (p + len > data.length) fail('command truncated');
    let s = '';
    try {
      s = decoder.decode(data.subarray(p, p + len));
    } catch {
      fail('string is not UTF-8');
    }
    p += len;
    return s;
  };
  const u16 = (): number => {
    if (p + 2 > data.length) fail('command truncated');
    const v = view.getUint16(p);
    p += 2;
    if (v > MAX_VALUE_BYTES) fail(`value of ${v} bytes > ${MAX_VALUE_BYTES}`);
    return v;
  };
  const key = str(keyLen);
  let expected: string | null = null;
  if (opCode === OP_CAS) {
    if (p + 1 > data.length) fail('command truncated');
    const has = view.getUint8(p++);
    if (has > 1) fail('bad expected flag');
    if (has === 1) expected = str(u16());
  }
  const value = str(u16());
  if (p !== data.length) fail(`${data.length - p} trailing bytes`);
  return opCode === OP_PUT ? { op: 'put', clientId, seq, key, value } : { op: 'cas', clientId, seq, key, expected, value };
}

function isU32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

interface Session {
  seq: number;
  result: KvResult;
}

/** Size limits of a decoded state-machine snapshot. */
export const MAX_SNAPSHOT_KEYS = 10_000;
export const MAX_SNAPSHOT_SESSIONS = 10_000;

export class KvStateMachine {
  private readonly data = new Map<string, string>();
  private readonly sessions = new Map<number, Session>();

  get(key: string): string | null {
    return this.data.get(key) ?? null;
  }

  /**
   * Applies a command once per (clientId, seq): a retry of the client's latest command gets
   * the recorded result; an older one (the client gave up on it) is ignored and returns undefined.
   */
  apply(c: KvCommand): KvResult | undefined {
    const s = this.sessions.get(c.clientId);
    if (s !== undefined && c.seq <= s.seq) return c.seq === s.seq ? s.result : undefined;
    let result: KvResult;
    if (c.op === 'put') {
      this.data.set(c.key, c.value);
      result = { op: 'put' };
    } else {
      const ok = (this.data.get(c.key) ?? null) === c.expected;
      if (ok) this.data.set(c.key, c.value);
      result = { op: 'cas', ok };
    }
    this.sessions.set(c.clientId, { seq: c.seq, result });
    return result;
  }

  /** The whole state, in a canonical order (sorted), so equal states encode to equal bytes. */
  snapshot(): Uint8Array {
    const data = [...this.data.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const sessions = [...this.sessions.entries()].sort((a, b) => a[0] - b[0]).map(([id, s]) => [id, s.seq, s.result.op === 'put' ? 2 : s.result.ok ? 1 : 0]);
    return encoder.encode(JSON.stringify({ v: 1, data, sessions }));
  }

  /** Rebuild from snapshot(); malformed input throws SimError KV_SNAPSHOT_MALFORMED. */
  static restore(bytes: Uint8Array): KvStateMachine {
    const kv = new KvStateMachine();
    if (bytes.length === 0) return kv; // the empty snapshot of a fresh log
    const fail = (why: string): never => {
      throw new SimError('KV_SNAPSHOT_MALFORMED', why);
    };
    let parsed: unknown;
    try {
      parsed = JSON.parse(decoder.decode(bytes));
    } catch {
      fail('not UTF-8 JSON');
    }
    const o = parsed as { v?: unknown; data?: unknown; sessions?: unknown };
    if (typeof o !== 'object' || o === null || o.v !== 1 || !Array.isArray(o.data) || !Array.isArray(o.sessions)) fail('bad shape');
    const data = o.data as unknown[];
    const sessions = o.sessions as unknown[];
    if (data.length > MAX_SNAPSHOT_KEYS || sessions.length > MAX_SNAPSHOT_SESSIONS) fail('too many keys or sessions');
    for (const kvp of data) {
      if (!Array.isArray(kvp) || kvp.length !== 2 || typeof kvp[0] !== 'string' || typeof kvp[1] !== 'string') fail('bad key/value');
      kv.data.set((kvp as string[])[0]!, (kvp as string[])[1]!);
    }
    for (const s of sessions) {
      if (!Array.isArray(s) || s.length !== 3 || !s.every((x) => Number.isInteger(x))) fail('bad session');
      const [id, seq, r] = s as number[];
      if (r! < 0 || r! > 2) fail('bad session result');
      kv.sessions.set(id!, { seq: seq!, result: r === 2 ? { op: 'put' } : { op: 'cas', ok: r === 1 } });
    }
    return kv;
  }
}
