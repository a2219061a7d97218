import t from 'tap';
import fc from 'fast-check';
import { FrameDecoder, MAX_FRAME_BYTES, encodeFrame } from '../../core/net/frame.js';
import { NetError } from '../../core/net/errors.js';

t.test('frames split at any byte boundary reassemble exactly', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 10 }), fc.array(fc.nat(400), { maxLength: 20 }), (payloads, cuts) => {
      const stream = Buffer.concat(payloads.map((p) => encodeFrame(p)));
      const d = new FrameDecoder(1000);
      const out: Buffer[] = [];
      let pos = 0;
      for (const c of cuts) {
        const end = Math.min(stream.length, pos + c);
        out.push(...d.push(stream.subarray(pos, end)));
        pos = end;
      }
      out.push(...d.push(stream.subarray(pos)));
      d.end();
      return out.length === payloads.length && out.every((f, i) => Buffer.from(payloads[i]!).equals(f));
    }),
    { numRuns: 300 },
  );
});

t.test('a frame at the limit passes, one byte over is refused on its header alone', async (t) => {
  const limit = 1024;
  const d = new FrameDecoder(limit);
  t.equal(d.push(encodeFrame(new Uint8Array(limit))).length, 1);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(limit + 1);
  t.throws(() => d.push(header), { code: 'ERR_FRAME_TOO_LARGE' });
  const big = new FrameDecoder();
  header.writeUInt32BE(MAX_FRAME_BYTES + 1);
  t.throws(() => big.push(header), { code: 'ERR_FRAME_TOO_LARGE' });
  header.writeUInt32BE(0xffffffff);
  t.throws(() => new FrameDecoder().push(header), { code: 'ERR_FRAME_TOO_LARGE' });
});

t.test('truncated stream is reported at end', async (t) => {
  const d = new FrameDecoder(100);
  const f = encodeFrame(new Uint8Array(10));
  t.same(d.push(f.subarray(0, 7)), []);
  t.throws(() => d.end(), { code: 'ERR_FRAME_TRUNCATED' });
  const e = new FrameDecoder(100);
  e.push(f.subarray(0, 2));
  t.throws(() => e.end(), { code: 'ERR_FRAME_TRUNCATED' }, 'inside the header too');
});

t.test('fuzz: random bytes yield frames or a NetError, never anything else', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 8 }), fc.nat(300), (chunks, limit) => {
      const d = new FrameDecoder(limit);
      try {
        for (const c of chunks) for (const f of d.push(c)) if (f.length > limit) return false;
        d.end();
      } catch (err) {
        return err instanceof NetError && (err.code === 'ERR_FRAME_TOO_LARGE' || err.code === 'ERR_FRAME_TRUNCATED');
      }
      return true;
    }),
    { numRuns: 1000 },
  );
});
