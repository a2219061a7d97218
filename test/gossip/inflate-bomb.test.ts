/**
 * Deflated stream frames from a key holder: inflation stops at MAX_STREAM_FRAME_BYTES (zlib's
 * maxOutputLength in decodeStreamFrame) instead of running the whole expansion and refusing
 * the result, so a 1 MB frame that would expand to 1 GiB costs no more memory than a legal
 * frame. Measured by the process's peak resident memory (getrusage's maxRSS), not by time:
 * this file runs alone in its process so the peak before the bomb is the baseline. And the
 * largest legal push-pull (6.5 MiB of CBOR) still decodes.
 */
import t from 'tap';
import { constants, deflateRawSync, inflateRawSync } from 'node:zlib';
import { checkMeta, decodePacket, decodeStream, decodeStreamFrame, encodeStream, encodeStreamFrame } from '../../core/gossip/codec/index.js';
import { MAX_MEMBERS, MAX_META_BYTES, MAX_NAME_BYTES, MAX_STREAM_FRAME_BYTES } from '../../core/gossip/limits.js';
import { MsgType, type PushPullEntry, type PushPullMsg } from '../../core/gossip/types.js';
import { MAX_STREAM_CONTAINERS, MAX_STREAM_ITEMS, checkCborBounds } from '../../core/gossip/codec/cbor-bounds.js';

const MiB = 1024 * 1024;

/**
 * Raw deflate data expanding to `expandedBytes` zeros, built without holding them: one 8 MiB
 * piece flushed to a byte boundary (not final), repeated, then an empty final block.
 */
function zerosBomb(expandedBytes: number): Buffer {
  const piece = deflateRawSync(Buffer.alloc(8 * MiB), { level: 9, finishFlush: constants.Z_SYNC_FLUSH });
  const pieces = Math.ceil(expandedBytes / (8 * MiB));
  return Buffer.concat([...new Array<Buffer>(pieces).fill(piece), deflateRawSync(Buffer.alloc(0))]);
}

t.test('a deflate bomb is cut off at MAX_STREAM_FRAME_BYTES while inflating, not after', async (t) => {
  t.equal(inflateRawSync(zerosBomb(24 * MiB)).length, 24 * MiB, 'the bomb is well-formed deflate (a 24 MiB one checked whole)');
  const bomb = zerosBomb(1024 * MiB);
  t.ok(bomb.length < MAX_STREAM_FRAME_BYTES / 4, `a ${(bomb.length / MiB).toFixed(1)} MiB frame body that expands to 1 GiB`);
  const before = process.resourceUsage().maxRSS;
  t.throws(() => decodeStreamFrame(Buffer.concat([Buffer.from([1]), bomb])), { code: 'GOSSIP_DECODE_OVERSIZED' });
  const grewMiB = (process.resourceUsage().maxRSS - before) / 1024;
  // Inflating it whole would take over 1 GiB (twice that while the pieces are joined).
  t.ok(grewMiB < 128, `peak memory grew by ${grewMiB.toFixed(0)} MiB`);
});

t.test('frames of millions of tiny CBOR items are refused before cbor-x builds them', async (t) => {
  // Found by a crash hunt: an 8 KiB frame inflating to 8 MiB of empty arrays took 1.4 s and
  // ~340 MB; 32 of them stopped a member for minutes. Now counted first (cbor-bounds.ts).
  const empties = (n: number): Buffer => Buffer.alloc(n, 0x80);
  const u32 = (major: number, n: number): Buffer => Buffer.from([(major << 5) | 26, n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
  const eightM = 8 * MiB - 16;
  const bombs: Array<[string, Buffer, RegExp]> = [
    ['one array declared with 8M empty arrays', Buffer.concat([u32(4, eightM), empties(eightM)]), /CBOR array of \d+ entries/],
    ['an indefinite array of 8M empty arrays', Buffer.concat([Buffer.from([0x9f]), empties(eightM), Buffer.from([0xff])]), /CBOR array of \d+ entries/],
    ['8M empty arrays in lists within the length limit', Buffer.concat([u32(4, 1000), ...Array.from({ length: 1000 }, () => Buffer.concat([u32(4, 8000), empties(8000)]))]), /more than \d+ CBOR maps and lists/],
    ['2.5M two-letter strings in lists within the length limit', Buffer.concat([u32(4, 1000), ...Array.from({ length: 1000 }, () => Buffer.concat([u32(4, 2500), Buffer.from('bab'.repeat(2500), 'latin1')]))]), /more than \d+ CBOR items/],
    ['nested deeper than any message', Buffer.concat([Buffer.alloc(64, 0x81), Buffer.from([0x80])]), /nested deeper/],
  ];
  const before = process.resourceUsage().maxRSS;
  for (const [what, cbor, message] of bombs) {
    const frame = Buffer.concat([Buffer.from([1]), deflateRawSync(cbor)]);
    t.ok(frame.length < 64 * 1024, `${what}: a ${(frame.length / 1024).toFixed(0)} KiB frame`);
    t.throws(() => decodeStreamFrame(frame), { code: 'GOSSIP_DECODE_OVERSIZED', message }, what);
  }
  const grewMiB = (process.resourceUsage().maxRSS - before) / 1024;
  t.ok(grewMiB < 64, `peak memory grew by ${grewMiB.toFixed(0)} MiB (the first bomb cost ~340 MB decoded)`);

  // The most a message within the limits can make cbor-x build, measured: MAX_STREAM_CONTAINERS
  // empty lists, then MAX_STREAM_ITEMS two-letter strings.
  const atLimit = (perList: number, item: Buffer, lists: number): Buffer => Buffer.concat([u32(4, lists), ...Array.from({ length: lists }, () => Buffer.concat([u32(4, perList), Buffer.concat(Array.from({ length: perList }, () => item))]))]);
  const containers = atLimit(MAX_STREAM_CONTAINERS / 20 - 2, Buffer.from([0x80]), 20);
  const strings = atLimit(MAX_STREAM_ITEMS / 256 - 2, Buffer.from([0x62, 0x61, 0x62]), 256);
  for (const [what, cbor] of [['empty lists', containers], ['two-letter strings', strings]] as const) {
    const started = performance.now();
    const peakBefore = process.resourceUsage().maxRSS;
    t.throws(
      () => decodeStreamFrame(Buffer.concat([Buffer.from([1]), deflateRawSync(cbor)])),
      { code: 'GOSSIP_DECODE_UNKNOWN_TYPE', message: 'unknown stream message type (a list)' },
      `${what} at the limits: decoded, then refused as no message, in a short error (it named every item before)`,
    );
    t.comment(`${what} within the limits: ${(performance.now() - started).toFixed(0)} ms, peak memory +${((process.resourceUsage().maxRSS - peakBefore) / 1024).toFixed(0)} MiB`);
  }
});

t.test('tags and byte strings, which gossip never sends, are refused in streams and UDP packets alike', async (t) => {
  // Found by a review of the walk: cbor-x gives tags meaning. A bignum (tag 2) of 200 KB took
  // 99 s (built a byte at a time); shared values (tags 28/29) of 5 KB made metadata that the
  // metadata check copied out of memory; tag 27 builds Error objects with stack traces.
  const bignum = Buffer.concat([Buffer.from([0xc2, 0x5a, 0x00, 0x03, 0x0d, 0x40]), Buffer.alloc(200_000, 0xff)]);
  const shared = Buffer.from([0x82, 0xd8, 0x1c, 0x80, 0xd8, 0x1d, 0x00]); // [28([]), 29(0)]
  const errorTag = Buffer.from([0xd8, 0x1b, 0x82, 0x65, ...Buffer.from('Error'), 0x61, 0x78]);
  const bytes = Buffer.from([0x81, 0x41, 0x00]);
  for (const [what, cbor] of [['a bignum tag', bignum], ['shared-value tags', shared], ['an Error tag', errorTag], ['a byte string', bytes]] as const) {
    t.throws(() => decodeStream(cbor), { code: 'GOSSIP_DECODE_MALFORMED', message: /which gossip never sends/ }, `${what} in a stream message`);
    t.throws(() => decodePacket(cbor.subarray(0, 9000)), { code: 'GOSSIP_DECODE_MALFORMED' }, `${what} in a UDP packet`);
  }
});

t.test('the walk steps over text strings, definite and in chunks, and stops at their end', async (t) => {
  t.doesNotThrow(() => checkCborBounds(Buffer.from([0x82, 0x63, 0x61, 0x62, 0x63, 0x01])), 'a definite text string, then an item after it');
  t.doesNotThrow(() => checkCborBounds(Buffer.from([0x82, 0x7f, 0x61, 0x61, 0x62, 0x62, 0x63, 0xff, 0x01])), 'an indefinite text string in two chunks, then an item after it');
  t.throws(() => checkCborBounds(Buffer.from([0x82, 0x65, 0x61, 0x62])), { code: 'GOSSIP_DECODE_TRUNCATED' }, 'a text string longer than what is left');
  t.throws(() => checkCborBounds(Buffer.from([0x7f, 0x65, 0x61, 0xff])), { code: 'GOSSIP_DECODE_TRUNCATED' }, 'a chunk longer than what is left');
  t.throws(() => checkCborBounds(Buffer.from([0x7f, 0x41, 0x61, 0xff])), { code: 'GOSSIP_DECODE_MALFORMED' }, 'a byte-string chunk in a text string');
  // The item after a string is read where the string ends: a walk that did not step over its
  // bytes would read them as items ('a' = 0x61 is a text header) and miscount.
  t.throws(() => checkCborBounds(Buffer.from([0x82, 0x62, 0x61, 0x61])), { code: 'GOSSIP_DECODE_TRUNCATED' }, 'an array of two with only one item');
});

t.test('the deepest metadata checkMeta allows, and metadata of ~90 items on every one of MAX_MEMBERS members, pass the walk', async (t) => {
  // Found by the same review: the depth bound was one level short, and every push-pull holding
  // a member with metadata {tags: {a: {b: {c: [1]}}}} was refused.
  const entry = (i: number, meta: PushPullEntry['meta']): PushPullEntry => ({ name: `n${i}`, incarnation: 1, host: '10.0.0.1', port: 7946, status: 'alive', meta, protocol: 1 });
  const deep = { role: 'worker', tags: { a: { b: { c: [1] } } } };
  t.same(checkMeta(deep), deep, 'the metadata check takes it');
  const one = decodeStream(encodeStream({ t: MsgType.PushPull, join: false, from: 'x', states: [entry(0, deep)] })) as PushPullMsg;
  t.same(one.states[0]!.meta, deep);
  const dense = { role: 'worker', ports: { client: 2379, peer: 2380, http: 7480 }, tags: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`t${i}`, i])) };
  const all = decodeStream(encodeStream({ t: MsgType.PushPull, join: false, from: 'x', states: Array.from({ length: MAX_MEMBERS }, (_, i) => entry(i, dense)) })) as PushPullMsg;
  t.equal(all.states.length, MAX_MEMBERS);
});

t.test('the largest legal push-pull (MAX_MEMBERS members, longest names, metadata near MAX_META_BYTES) decodes', async (t) => {
  const states: PushPullEntry[] = [];
  for (let i = 0; i < MAX_MEMBERS; i++) {
    const name = `${String(i).padStart(5, '0')}-${'n'.repeat(MAX_NAME_BYTES - 6)}`;
    const host = `fd00:1234:5678:9abc:def0:1234:${(i >> 8).toString(16)}:${(i & 255).toString(16)}`;
    states.push({ name, incarnation: 2 ** 40 + i, host, port: 7946, status: 'alive', meta: { blob: String(i).padEnd(MAX_META_BYTES - 20, 'm') }, protocol: 1 });
  }
  const msg: PushPullMsg = { t: MsgType.PushPull, join: false, from: 'x', states };
  const plainBytes = encodeStream(msg).length;
  t.ok(plainBytes > 6 * MiB && plainBytes < MAX_STREAM_FRAME_BYTES, `${(plainBytes / MiB).toFixed(2)} MiB of CBOR`);
  const frame = encodeStreamFrame(msg);
  t.equal(frame[0], 1, 'sent deflated');
  const back = decodeStreamFrame(frame) as PushPullMsg;
  t.equal(back.states.length, MAX_MEMBERS);
  t.same(back.states[MAX_MEMBERS - 1], states[MAX_MEMBERS - 1], 'the last member intact');
});
