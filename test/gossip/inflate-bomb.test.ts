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
import { decodeStreamFrame, encodeStream, encodeStreamFrame } from '../../core/gossip/codec/index.js';
import { MAX_MEMBERS, MAX_META_BYTES, MAX_NAME_BYTES, MAX_STREAM_FRAME_BYTES } from '../../core/gossip/limits.js';
import { MsgType, type PushPullEntry, type PushPullMsg } from '../../core/gossip/types.js';
import { MAX_STREAM_ITEMS } from '../../core/gossip/codec/cbor-bounds.js';

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
    ['8M empty arrays in lists within the length limit', Buffer.concat([u32(4, 1000), ...Array.from({ length: 1000 }, () => Buffer.concat([u32(4, 8000), empties(8000)]))]), /more than \d+ CBOR items/],
    ['nested deeper than any message', Buffer.concat([Buffer.alloc(64, 0x81), Buffer.from([0x80])]), /nested deeper/],
  ];
  const before = process.resourceUsage().maxRSS;
  for (const [what, cbor, message] of bombs) {
    const frame = Buffer.concat([Buffer.from([1]), deflateRawSync(cbor)]);
    t.ok(frame.length < 64 * 1024, `${what}: a ${(frame.length / 1024).toFixed(0)} KiB frame`);
    t.throws(() => decodeStreamFrame(frame), { code: 'GOSSIP_DECODE_OVERSIZED', message }, what);
  }
  const grewMiB = (process.resourceUsage().maxRSS - before) / 1024;
  t.ok(grewMiB < 64, `peak memory grew by ${grewMiB.toFixed(0)} MiB (each bomb cost ~340 MB decoded)`);

  // The most a message within the limits can make cbor-x build: MAX_STREAM_ITEMS items.
  const perList = MAX_STREAM_ITEMS / 100 - 1;
  const atLimit = Buffer.concat([u32(4, 99), ...Array.from({ length: 99 }, () => Buffer.concat([u32(4, perList), empties(perList)]))]);
  const started = performance.now();
  const peakBefore = process.resourceUsage().maxRSS;
  t.throws(
    () => decodeStreamFrame(Buffer.concat([Buffer.from([1]), deflateRawSync(atLimit)])),
    { code: 'GOSSIP_DECODE_UNKNOWN_TYPE', message: 'unknown stream message type (a list)' },
    'decoded, then refused as no message, in a short error (it named every item before)',
  );
  t.comment(`${MAX_STREAM_ITEMS} items within the limits: ${(performance.now() - started).toFixed(0)} ms, peak memory +${((process.resourceUsage().maxRSS - peakBefore) / 1024).toFixed(0)} MiB`);
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
