/**
 * The gossip codec: round trips, exact size accounting, and the decoders' contract — any input
 * is either decoded or rejected with a GossipDecodeError (fast-check fuzzing of packets and
 * stream frames: random, truncated, mutated, oversized, deflate bombs).
 */
import { assertProperty } from '../helpers/property.js';
import t from 'tap';
import fc from 'fast-check';
import { deflateRawSync } from 'node:zlib';
import {
  checkMeta,
  decodePacket,
  decodeStream,
  decodeStreamFrame,
  encodePacket,
  encodeStream,
  encodeStreamFrame,
  messageSize,
  packetSize,
  pushPullEntrySize,
  pushPullSize,
} from '../../core/gossip/codec/index.js';
import { GossipDecodeError } from '../../core/gossip/errors.js';
import { LOCAL_CONFIG } from '../../core/gossip/config.js';
import { MAX_INCARNATION, MAX_INCARNATION_STEP, MAX_MEMBERS, MAX_STREAM_FRAME_BYTES } from '../../core/gossip/limits.js';
import { Prng } from '../../core/sim/prng.js';
import { GossipMachine } from '../../core/gossip/machine.js';
import { MsgType, type Message, type Meta, type PushPullEntry, type StreamMsg } from '../../core/gossip/types.js';

const name = fc.string({ minLength: 1, maxLength: 40 });
const host = fc.ipV4();
const port = fc.integer({ min: 1, max: 65535 });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const metaValue: fc.Arbitrary<Meta[string]> = fc.oneof(fc.string({ maxLength: 12 }), fc.integer({ min: -1e6, max: 1e6 }), fc.boolean(), fc.constant(null));
const meta: fc.Arbitrary<Meta> = fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }).filter((k) => k !== '__proto__'), metaValue, { maxKeys: 6 });

const messageArb: fc.Arbitrary<Message> = fc.oneof(
  fc.record({ t: fc.constant(MsgType.Ping as const), seq: u32, target: name }),
  fc.record({ t: fc.constant(MsgType.PingReq as const), seq: u32, target: name, host, port, nack: fc.boolean() }),
  fc.record({ t: fc.constant(MsgType.Ack as const), seq: u32 }),
  fc.record({ t: fc.constant(MsgType.Nack as const), seq: u32 }),
  fc.record({ t: fc.constant(MsgType.Alive as const), name, incarnation: u32, host, port, meta, protocol: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ t: fc.constant(MsgType.Suspect as const), name, incarnation: u32, from: name }),
  fc.record({ t: fc.constant(MsgType.Dead as const), name, incarnation: u32, from: name }),
);

const entryArb: fc.Arbitrary<PushPullEntry> = fc.record({
  name,
  incarnation: u32,
  host,
  port,
  status: fc.constantFrom('alive' as const, 'suspect' as const, 'dead' as const, 'left' as const),
  meta,
  protocol: fc.integer({ min: 0, max: 255 }),
});

function isTypedReject(fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch (e) {
    return e instanceof GossipDecodeError;
  }
}

t.test('packets round-trip and messageSize is exact', async (t) => {
  assertProperty(t, 'round trip and sizes hold', 
    fc.property(fc.array(messageArb, { minLength: 1, maxLength: 30 }), (msgs) => {
      const buf = encodePacket(msgs);
      const body = msgs.reduce((s, m) => s + messageSize(m), 0);
      if (buf.length !== packetSize(msgs.length, body)) return false;
      const back = decodePacket(buf);
      return JSON.stringify(back) === JSON.stringify(msgs.map((m) => ({ ...m })));
    }),
    { numRuns: 300 },
  );
});

t.test('push-pull round-trips and its size is exact', async (t) => {
  assertProperty(t, 'push-pull round trip holds', 
    fc.property(fc.array(entryArb, { maxLength: 20 }), name, fc.boolean(), (states, from, join) => {
      const m: StreamMsg = { t: MsgType.PushPull, join, from, states };
      const buf = encodeStream(m);
      if (buf.length !== GossipMachine.pushPullBytes(m)) return false;
      const sum = states.reduce((s, e) => s + pushPullEntrySize(e), 0);
      if (buf.length !== pushPullSize(from, states.length, sum)) return false;
      return JSON.stringify(decodeStreamFrame(encodeStreamFrame(m))) === JSON.stringify(m);
    }),
    { numRuns: 200 },
  );
});

t.test('every stream message kind round-trips through a frame', async (t) => {
  const msgs: StreamMsg[] = [
    { t: MsgType.StreamPing, seq: 7, target: 'a' },
    { t: MsgType.Ack, seq: 7 },
    { t: MsgType.StreamError, code: 'GOSSIP_NAME_CONFLICT', message: 'taken' },
    { t: MsgType.KeyringOp, op: 'install', key: 'x'.repeat(44), version: 7 },
    { t: MsgType.KeyringOp, op: 'use', key: 'x'.repeat(44), version: 8, sig: 's'.repeat(88) },
    { t: MsgType.KeyringReply, ok: true, code: '', keys: ['k1', 'k2'], version: 7 },
    { t: MsgType.PushPull, join: false, from: 'a', states: [], keyringVersion: 9 },
  ];
  for (const m of msgs) t.same(decodeStreamFrame(encodeStreamFrame(m)), m);
});

t.test("a push-pull's keyring version is a trailing field: absent, it is not made up; present, the first four fields are unchanged", async (t) => {
  const without: StreamMsg = { t: MsgType.PushPull, join: false, from: 'a', states: [] };
  const decoded = decodeStream(encodeStream(without));
  t.notOk('keyringVersion' in decoded, 'no keyring version when none was sent (a member from before it)');
  const { decode } = await import('cbor-x');
  const fields = decode(encodeStream({ ...without, keyringVersion: 9 })) as unknown[];
  // A member from before the field reads the first four (codec tuples are minimum lengths).
  t.same([fields.slice(0, 4), fields.length], [decode(encodeStream(without)), 5]);
  const { Encoder } = await import('cbor-x');
  const enc = new Encoder({ useRecords: false, mapsAsObjects: true });
  t.throws(() => decodeStream(enc.encode([MsgType.PushPull, false, 'a', [], -1])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'a negative keyring version');
  t.throws(() => decodeStream(enc.encode([MsgType.PushPull, false, 'a', [], 2 ** 53])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'one above the largest safe integer');
});

t.test('large push-pull frames are deflated, small ones are not', async (t) => {
  const states: PushPullEntry[] = [];
  for (let i = 0; i < 200; i++) {
    states.push({ name: `node-${i}`, incarnation: 1, host: `10.0.0.${i}`, port: 7946, status: 'alive', meta: { role: 'worker', zone: 'a' }, protocol: 1 });
  }
  const big = encodeStreamFrame({ t: MsgType.PushPull, join: false, from: 'x', states });
  t.equal(big[0], 1, 'flag says deflated');
  t.ok(big.length * 3 < encodeStream({ t: MsgType.PushPull, join: false, from: 'x', states }).length, 'at least 3x smaller');
  t.equal(encodeStreamFrame({ t: MsgType.Ack, seq: 1 })[0], 0, 'small frames stay plain');
});

t.test('fuzz: random bytes are decoded or rejected with a typed error, never anything else', async (t) => {
  assertProperty(t, 'decodePacket: random bytes decode or fail with a typed error', fc.property(fc.uint8Array({ maxLength: 2000 }), (b) => isTypedReject(() => decodePacket(b))), { numRuns: 3000 });
  assertProperty(t, 'decodeStream: random bytes decode or fail with a typed error', fc.property(fc.uint8Array({ maxLength: 2000 }), (b) => isTypedReject(() => decodeStream(b))), { numRuns: 3000 });
  assertProperty(t, 'decodeStreamFrame: random bytes decode or fail with a typed error', fc.property(fc.uint8Array({ maxLength: 2000 }), (b) => isTypedReject(() => decodeStreamFrame(b))), { numRuns: 3000 });
});

t.test('fuzz: truncated and bit-flipped valid packets are rejected with a typed error or decode', async (t) => {
  assertProperty(t, 'packets: truncated or bit-flipped, typed rejection or decode', 
    fc.property(fc.array(messageArb, { minLength: 1, maxLength: 8 }), fc.nat(), fc.nat(), fc.integer({ min: 0, max: 255 }), (msgs, cut, at, xor) => {
      const buf = encodePacket(msgs);
      const truncated = buf.subarray(0, cut % buf.length);
      if (!isTypedReject(() => decodePacket(truncated))) return false;
      const flipped = Buffer.from(buf);
      flipped[at % flipped.length]! ^= xor;
      return isTypedReject(() => decodePacket(flipped));
    }),
    { numRuns: 2000 },
  );
  assertProperty(t, 'push-pull frames: truncated or bit-flipped, typed rejection or decode', 
    fc.property(fc.array(entryArb, { maxLength: 10 }), fc.nat(), fc.nat(), fc.integer({ min: 1, max: 255 }), (states, cut, at, xor) => {
      const frame = encodeStreamFrame({ t: MsgType.PushPull, join: true, from: 'n', states });
      if (!isTypedReject(() => decodeStreamFrame(frame.subarray(0, cut % frame.length)))) return false;
      const flipped = Buffer.from(frame);
      flipped[at % flipped.length]! ^= xor;
      return isTypedReject(() => decodeStreamFrame(flipped));
    }),
    { numRuns: 1000 },
  );
});

t.test('a truncated packet is reported as truncated', async (t) => {
  const buf = encodePacket([{ t: MsgType.Ping, seq: 1000, target: 'node-1' }]);
  t.throws(() => decodePacket(buf.subarray(0, buf.length - 3)), { code: 'GOSSIP_DECODE_TRUNCATED' });
  t.throws(() => decodePacket(new Uint8Array(0)), { code: 'GOSSIP_DECODE_TRUNCATED' });
});

t.test('shape errors are malformed, unknown types are reported', async (t) => {
  const { Encoder } = await import('cbor-x');
  const enc = new Encoder({ useRecords: false, mapsAsObjects: true });
  t.throws(() => decodePacket(enc.encode({ a: 1 })), { code: 'GOSSIP_DECODE_MALFORMED' });
  t.throws(() => decodePacket(enc.encode([])), { code: 'GOSSIP_DECODE_MALFORMED' });
  t.throws(() => decodePacket(enc.encode([[99, 1]])), { code: 'GOSSIP_DECODE_UNKNOWN_TYPE' });
  t.throws(() => decodePacket(enc.encode([[MsgType.Ping, -1, 'a']])), { code: 'GOSSIP_DECODE_MALFORMED' });
  t.throws(() => decodePacket(enc.encode([[MsgType.Ping, 2 ** 32, 'a']])), { code: 'GOSSIP_DECODE_MALFORMED' });
  t.throws(() => decodePacket(enc.encode([[MsgType.PingReq, 1, 'a', 'h', 0, true]])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'port 0');
  t.throws(() => decodePacket(enc.encode([[MsgType.Alive, 'a', 1, 'h', 1, [1, 2], 1]])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'meta must be a map');
  t.throws(() => decodePacket(enc.encode([[MsgType.Alive, 'a', 1, 'h', 1, { x: new Uint8Array(3) }, 1]])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'no binary in meta');
  t.throws(() => decodePacket(enc.encode([[MsgType.Suspect, '', 1, 'b']])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'empty name');
  t.throws(() => decodePacket(enc.encode([[MsgType.Suspect, 'a\nforged log line', 1, 'b']])), { code: 'GOSSIP_DECODE_MALFORMED', message: /control characters/ }, 'a name with a newline (it reaches log lines)');
  t.throws(() => decodePacket(enc.encode([[MsgType.Suspect, 'a', 1, 'b\x1b[31m']])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'a sender name with an escape');
  for (const host of ['evil.example', 'localhost', '10.0.0.1.nip.io']) {
    t.throws(() => decodePacket(enc.encode([[MsgType.Alive, 'a', 1, host, 7946, {}, 1]])), { code: 'GOSSIP_DECODE_MALFORMED', message: /IP address/ }, `an alive at a host name (${host}): every node would resolve it`);
    t.throws(() => decodePacket(enc.encode([[MsgType.PingReq, 1, 'a', host, 7946, true]])), { code: 'GOSSIP_DECODE_MALFORMED' }, `a ping-req to a host name (${host})`);
  }
  t.same((decodePacket(enc.encode([[MsgType.Alive, 'a', 1, 'fd00::7', 7946, {}, 1]]))[0] as { host: string }).host, 'fd00::7', 'IPv6 taken');
  t.throws(() => decodeStream(enc.encode([MsgType.KeyringOp, 'format-disk', '', 1])), { code: 'GOSSIP_DECODE_MALFORMED' });
  t.throws(() => decodeStream(enc.encode([MsgType.KeyringOp, 'use', 'x'.repeat(44)])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'a keyring op without a version (it could be a replay)');
  t.throws(() => decodeStream(enc.encode([MsgType.KeyringOp, 'use', 'x'.repeat(44), -1])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'a negative keyring version');
  t.throws(() => decodeStream(enc.encode([MsgType.KeyringOp, 'use', 'x'.repeat(44), 1, 's'.repeat(89)])), { code: 'GOSSIP_DECODE_MALFORMED', message: /signature longer than 88/ }, 'a signature longer than an Ed25519 one');
  t.throws(() => decodeStream(enc.encode([MsgType.KeyringOp, 'use', 'x'.repeat(44), 1, 5])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'a signature that is no text');
  t.same(decodeStream(enc.encode([MsgType.KeyringReply, true, '', []])), { t: MsgType.KeyringReply, ok: true, code: '', keys: [], version: 0 }, 'a reply without a version reads as 0');
  t.throws(() => decodeStreamFrame(Buffer.from([7, 1, 2])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'unknown frame flag');
  t.throws(() => decodeStreamFrame(Buffer.from([1, 0xff, 0xff, 0xff])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'bad deflate');
});

t.test('metadata is copied clean: prototype keys and non-JSON values are refused', async (t) => {
  const evil = JSON.parse('{"__proto__": {"polluted": true}}') as Meta;
  t.throws(() => checkMeta(evil), { code: 'GOSSIP_DECODE_MALFORMED' });
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched');
  t.throws(() => checkMeta({ n: Number.NaN } as unknown as Meta), { code: 'GOSSIP_DECODE_MALFORMED' });
  t.throws(() => checkMeta(new Map() as unknown as Meta), { code: 'GOSSIP_DECODE_MALFORMED' });
  t.same(checkMeta({ role: 'worker', ports: { http: 7480 }, tags: ['a'] }), { role: 'worker', ports: { http: 7480 }, tags: ['a'] });
});

t.test('a deflate bomb stops at MAX_STREAM_FRAME_BYTES', async (t) => {
  const bomb = deflateRawSync(Buffer.alloc(MAX_STREAM_FRAME_BYTES + 1024));
  t.ok(bomb.length < 64 * 1024, 'the bomb itself is small');
  t.throws(() => decodeStreamFrame(Buffer.concat([Buffer.from([1]), bomb])), { code: 'GOSSIP_DECODE_OVERSIZED' });
});

t.test('push-pull with more than MAX_MEMBERS entries is refused', async (t) => {
  const { Encoder } = await import('cbor-x');
  const enc = new Encoder({ useRecords: false, mapsAsObjects: true });
  const entry = ['n', 1, '10.0.0.1', 7946, 0, {}, 1];
  const ok = enc.encode([MsgType.PushPull, false, 'x', new Array(MAX_MEMBERS).fill(entry)]);
  t.equal((decodeStream(ok) as { states: unknown[] }).states.length, MAX_MEMBERS, 'exactly MAX_MEMBERS is fine');
  const over = enc.encode([MsgType.PushPull, false, 'x', new Array(MAX_MEMBERS + 1).fill(entry)]);
  t.throws(() => decodeStream(over), { code: 'GOSSIP_DECODE_OVERSIZED' });
});

// ---------------------------------------------------------------------------------------------
// Valid-but-hostile input: what a key holder can send once the keyring has opened it.

const hostileInt = fc.oneof(
  fc.constantFrom(0, 1, 5, 6, -1, -0, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 0xffff_ffff, 2 ** 32, MAX_INCARNATION, MAX_INCARNATION + 1, 5 + MAX_INCARNATION_STEP, 6 + MAX_INCARNATION_STEP),
  fc.nat(),
);
const hostileName = fc.oneof(fc.constantFrom('self', 'peer', 'other', '__proto__', 'constructor', 'toString', '', 'n'.repeat(129)), name);
const hostileHost = fc.constantFrom('10.0.0.1', '10.0.0.2', '10.0.0.9', '', '::1', 'h'.repeat(65));
const hostilePort = fc.constantFrom(0, 1, 7946, 7947, 65535, 65536, -1);
const hostileMeta = fc.oneof(
  meta,
  fc.constant({ role: 'r'.repeat(600) }),
  fc.constant(new Map([['a', 1]])),
  fc.constant([1, 2]),
  fc.constant({ deep: { a: { b: { c: { d: { e: 1 } } } } } }),
  fc.constant({ n: Number.NaN }),
  fc.constant(null),
);
const hostileType = fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 99, -1, 'x');
const hostileTuple = fc.oneof(
  fc.tuple(hostileType, hostileInt, hostileName),
  fc.tuple(hostileType, hostileInt, hostileName, hostileHost, hostilePort, fc.boolean()),
  fc.tuple(hostileType, hostileName, hostileInt, hostileHost, hostilePort, hostileMeta, hostileInt),
  fc.tuple(hostileType, hostileName, hostileInt, hostileName),
);
const hostileEntry = fc.tuple(hostileName, hostileInt, hostileHost, hostilePort, fc.constantFrom(0, 1, 2, 3, 4, -1), hostileMeta, hostileInt);

function victim(): GossipMachine {
  const at = (n: string, host: string): PushPullEntry => ({ name: n, incarnation: 5, host, port: 7946, status: 'alive', meta: { role: 'worker' }, protocol: 1 });
  return new GossipMachine({
    name: 'self', address: { host: '10.0.0.1', port: 7946 }, incarnation: 5, config: { ...LOCAL_CONFIG }, random: new Prng(7), nowMs: 0,
    initialMembers: [at('peer', '10.0.0.2'), at('other', '10.0.0.3')],
  });
}

/** Everything the machine sends must still decode, and its state must stay in bounds. */
function outputDecodes(m: GossipMachine, fx: ReturnType<GossipMachine['tick']>): boolean {
  for (const p of fx.packets) decodePacket(encodePacket(p.messages));
  for (const s of fx.streams) decodeStreamFrame(encodeStreamFrame(s.request));
  return m.members().every((x) => Number.isSafeInteger(x.incarnation) && x.incarnation >= 0 && x.incarnation <= MAX_INCARNATION);
}

t.test('fuzz: hostile but decodable messages (after the keyring opened them) never throw in the machine and never make it send what does not decode', async (t) => {
  const { Encoder } = await import('cbor-x');
  const enc = new Encoder({ useRecords: false, mapsAsObjects: true });
  assertProperty(t, 'packets from a key holder',
    fc.property(fc.array(fc.array(hostileTuple, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 6 }), (packets) => {
      const m = victim();
      let now = 1;
      for (const tuples of packets) {
        let msgs: Message[];
        try {
          msgs = decodePacket(enc.encode(tuples));
        } catch (e) {
          if (!(e instanceof GossipDecodeError)) return false;
          continue;
        }
        if (!outputDecodes(m, m.step(msgs, { host: '10.0.0.9', port: 7946 }, now))) return false;
        now += 150;
        if (!outputDecodes(m, m.tick(now))) return false;
      }
      // Each packet moves our incarnation by at most MAX_INCARNATION_STEP + 1.
      return m.incarnation <= 5 + packets.length * (MAX_INCARNATION_STEP + 1) && m.member('self')!.status === 'alive';
    }),
    { numRuns: 1500 },
  );
  assertProperty(t, 'push-pulls from a key holder',
    fc.property(fc.boolean(), hostileName, fc.array(hostileEntry, { maxLength: 12 }), (join, from, entries) => {
      const m = victim();
      let req: StreamMsg;
      try {
        req = decodeStreamFrame(encodeFrameRaw(enc.encode([MsgType.PushPull, join, from, entries])));
      } catch (e) {
        return e instanceof GossipDecodeError;
      }
      const { reply, effects } = m.handleStream(req, 1);
      decodeStreamFrame(encodeStreamFrame(reply));
      return outputDecodes(m, effects) && outputDecodes(m, m.tick(500)) && m.viewSummary().known <= MAX_MEMBERS;
    }),
    { numRuns: 1500 },
  );
  // A CBOR array head may claim any length; cbor-x refuses absurd ones before allocating.
  for (const head of [[0x9a, 0xff, 0xff, 0xff, 0xff], [0x9b, 0, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], [0xba, 0xff, 0xff, 0xff, 0xff]]) {
    t.throws(() => decodePacket(Buffer.from([...head, 0x82, 0x02, 0x01])), GossipDecodeError, `a head claiming a huge count (${Buffer.from(head).toString('hex')}) is a typed error`);
  }
});

/** A plain (flag 0) stream frame around already-encoded CBOR. */
function encodeFrameRaw(cbor: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([0]), cbor]);
}
