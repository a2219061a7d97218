/**
 * A torn last record of a LevelDB write-ahead log is dropped at open; damage before it is still
 * refused (core/storage/level-log-tail.ts, level-open.ts).
 *
 * On real stores: batches written by LevelDB, then the newest log damaged as a power cut leaves
 * it (its last pages zeros, the file's size kept) or as bit rot does (a byte changed before the
 * end), then opened through openLevel. On logs built here by a model of LevelDB's writer
 * (log_writer.cc: 32 KiB blocks, FULL/FIRST/MIDDLE/LAST fragments, zero trailers), properties
 * for any records: a whole log is clean, a torn last record is a torn tail at its start (when the
 * file ends in zeros), and a changed byte in any record but the last is damage.
 */
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { ClassicLevel } from 'classic-level';
import CRC32C from 'crc-32/crc32c.js';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { judgeLogTail, SECTOR_BYTES, type TornTail } from '../../core/storage/level-log-tail.js';
import { openLevel } from '../../core/storage/level-open.js';
import { StorageError } from '../../core/storage/errors.js';

const BLOCK = 32_768;
const HEADER = 7;

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'picloud-logtail-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes each batch with LevelDB (one log record each) and closes the store, leaving them in its log. */
async function writeBatches(dir: string, batches: [key: string, value: Buffer][][]): Promise<void> {
  const db = new ClassicLevel<string, Buffer>(dir, { valueEncoding: 'buffer' });
  await db.open();
  for (const b of batches) await db.batch(b.map(([key, value]) => ({ type: 'put' as const, key, value })));
  await db.close();
}

function newestLog(dir: string): string {
  const logs = readdirSync(dir).filter((f) => /^\d+\.log$/.test(f));
  return join(dir, logs.sort((a, b) => Number.parseInt(b, 10) - Number.parseInt(a, 10))[0]!);
}

/** Rewrites bytes [from, to) of a file with zeros, keeping its size: pages that never reached the disk. */
function zeroRange(path: string, from: number, to: number): void {
  const bytes = readFileSync(path);
  bytes.fill(0, from, to);
  writeFileSync(path, bytes);
}

function changeByte(path: string, at: number): void {
  const bytes = readFileSync(path);
  bytes[at] = bytes[at]! ^ 0x5a;
  writeFileSync(path, bytes);
}

/** Opens the store as the agent does; the torn tails it was told of. */
async function reopen(dir: string): Promise<{ db: ClassicLevel<Buffer, Buffer>; torn: TornTail[] }> {
  const torn: TornTail[] = [];
  const db = await openLevel(dir, { what: 'the test store', mustExist: true, onTornTail: (x) => torn.push(x) });
  return { db, torn };
}

async function has(db: ClassicLevel<Buffer, Buffer>, key: string): Promise<boolean> {
  return (await db.get(Buffer.from(key))) !== undefined;
}

/** Batches of one put each, `size` bytes of value (random, or ending in 32 zeros), keys b0..b{n-1}. */
function smallBatches(n: number, size: number, zeroEnd = false): [string, Buffer][][] {
  const value = (): Buffer => (zeroEnd ? Buffer.concat([randomBytes(size - 32), Buffer.alloc(32)]) : randomBytes(size));
  return Array.from({ length: n }, (_, i) => [[`b${i}`, value()] as [string, Buffer]]);
}

t.test('LevelDB logs read as clean, and a torn last record as a torn tail that the open drops', async (t) => {
  const dir = await tempDir(t);
  await writeBatches(dir, smallBatches(40, 1_000));
  const log = newestLog(dir);
  t.same(judgeLogTail(readFileSync(log)), { kind: 'clean' }, 'a whole log written by LevelDB is clean (the checksums agree)');
  const size = statSync(log).size;
  // The last sectors of the last record's value never reached the disk.
  zeroRange(log, Math.ceil((size - 600) / SECTOR_BYTES) * SECTOR_BYTES, size);
  const { db, torn } = await reopen(dir);
  t.teardown(() => db.close());
  t.equal(torn.length, 1, 'the owner is told once');
  t.equal(torn[0]!.file, log.slice(dir.length + 1));
  t.equal(torn[0]!.reason, 'checksum mismatch');
  // The last record is one FULL fragment: 7 header bytes, then the batch.
  t.ok(size - torn[0]!.offset > 1_000 && size - torn[0]!.offset < 1_100, `the torn record starts at ${torn[0]!.offset} of ${size}`);
  t.notOk(await has(db, 'b39'), 'the torn batch is gone');
  const lost: string[] = [];
  for (let i = 0; i < 39; i++) if (!(await has(db, `b${i}`))) lost.push(`b${i}`);
  t.same(lost, [], 'every batch before it is there');
});

t.test('a torn record spanning blocks is dropped whole: a bad last fragment, or every block from its second on lost', async (t) => {
  for (const how of ['last fragment', 'blocks from the second'] as const) {
    const dir = await tempDir(t);
    await writeBatches(dir, [...smallBatches(10, 500), [['big', randomBytes(100_000)]]]);
    const log = newestLog(dir);
    const size = statSync(log).size;
    if (how === 'last fragment') zeroRange(log, size - 5_000, size);
    else zeroRange(log, BLOCK, size); // the 100 KB record's MIDDLE and LAST fragments
    const { db, torn } = await reopen(dir);
    t.equal(torn.length, 1, `${how}: a torn tail`);
    t.ok(torn[0]!.offset < BLOCK && size - torn[0]!.offset > 100_000, `${how}: dropped from the record's first fragment (${torn[0]!.offset})`);
    t.notOk(await has(db, 'big'), `${how}: the torn batch is gone`);
    t.ok((await has(db, 'b0')) && (await has(db, 'b9')), `${how}: the batches before it are there`);
    await db.close();
  }
});

/** The open's refusal, or undefined if it opened. */
async function refusal(dir: string): Promise<string | undefined> {
  try {
    const { db } = await reopen(dir);
    await db.close();
    return undefined;
  } catch (err) {
    return err instanceof StorageError ? err.message : String(err);
  }
}

t.test('damage is refused: a changed byte or length with records after it, a changed last record, a lost block', async (t) => {
  for (const how of ['payload of an early record', 'length of the next-to-last record'] as const) {
    const dir = await tempDir(t);
    // Values ending in zeros, so the log does too: only the record after the damage tells it from a tear.
    await writeBatches(dir, smallBatches(10, 200, true));
    const log = newestLog(dir);
    const bytes = readFileSync(log);
    const recordBytes = bytes.length / 10;
    t.ok(Number.isInteger(recordBytes) && bytes.readUInt16LE(4) + HEADER === recordBytes, `${how}: ten records of ${recordBytes} bytes in one block`);
    // Byte 4 of a header is its length's low byte; the next-to-last record shares its block with the last,
    // so once its length is wrong LevelDB skips the last (a synced one, for all anyone knows) unread.
    changeByte(log, how === 'payload of an early record' ? 2 * recordBytes + 50 : 8 * recordBytes + 4);
    const verdict = judgeLogTail(readFileSync(log));
    t.equal(verdict.kind, 'damaged', `${how}: judged damage (${JSON.stringify(verdict)})`);
    t.match(await refusal(dir), /LevelDB skipped data it could not read/, `${how}: the open refuses it`);
  }
  // Zeros from a sector boundary, however few: a torn write; zeros that start elsewhere: refused.
  for (const aligned of [true, false]) {
    const dir = await tempDir(t);
    await writeBatches(dir, smallBatches(10, 2_000));
    const log = newestLog(dir);
    const size = statSync(log).size;
    const boundary = Math.floor((size - 1) / SECTOR_BYTES) * SECTOR_BYTES;
    t.ok(size - boundary > 10, 'the last sector holds more than ten bytes');
    // The last sector zeroed from its start (lost), or only its last ten bytes (changed).
    zeroRange(log, aligned ? boundary : size - 10, size);
    const verdict = judgeLogTail(readFileSync(log)).kind;
    t.equal(verdict, aligned ? 'torn' : 'damaged', `zeros ${aligned ? 'from a sector boundary' : 'in the last ten bytes only'}: ${verdict}`);
    if (aligned) {
      const { db, torn } = await reopen(dir);
      t.equal(torn.length, 1, 'a torn tail: opened, the last batch dropped');
      await db.close();
    } else t.match(await refusal(dir), /LevelDB skipped data it could not read/, 'refused');
  }
  // The last record's bytes changed, the file not ending in zeros: bit rot, not a torn write.
  {
    const dir = await tempDir(t);
    await writeBatches(dir, smallBatches(10, 200));
    const log = newestLog(dir);
    changeByte(log, statSync(log).size - 20);
    t.equal(judgeLogTail(readFileSync(log)).kind, 'damaged', 'a changed byte in the last record: judged damage');
    t.match(await refusal(dir), /LevelDB skipped data it could not read/, 'a changed byte in the last record: the open refuses it');
  }
  // A block lost inside a record whose later blocks are there: a page lost after it was synced, or
  // pages written out of order before a power cut; the two cannot be told apart, so it is refused.
  const dir = await tempDir(t);
  await writeBatches(dir, [...smallBatches(10, 500), [['big', Buffer.concat([randomBytes(100_000), Buffer.alloc(32)])]]]);
  const log = newestLog(dir);
  zeroRange(log, BLOCK, 2 * BLOCK);
  t.equal(judgeLogTail(readFileSync(log)).kind, 'damaged', 'a lost middle block: judged damage');
  t.match(await refusal(dir), /LevelDB skipped data it could not read/, 'a lost middle block: the open refuses it');
});

// ---- logs built by a model of LevelDB's writer ----

function maskedCrc(type: number, payload: Uint8Array): number {
  const crc = CRC32C.buf(payload, CRC32C.buf(Uint8Array.of(type))) >>> 0;
  return (((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0;
}

/** A log holding `records` as LevelDB's log::Writer lays them out; where each record and each of its fragments starts. */
function buildLog(records: Uint8Array[]): { log: Buffer; starts: number[]; fragments: { record: number; at: number; length: number }[] } {
  const parts: Buffer[] = [];
  const starts: number[] = [];
  const fragments: { record: number; at: number; length: number }[] = [];
  let pos = 0;
  records.forEach((record, index) => {
    let left = record.length;
    let at = 0;
    let begin = true;
    do {
      const leftover = BLOCK - (pos % BLOCK);
      if (leftover < HEADER) {
        parts.push(Buffer.alloc(leftover)); // the block's trailer
        pos += leftover;
      }
      if (begin) starts.push(pos);
      const length = Math.min(left, BLOCK - (pos % BLOCK) - HEADER);
      const end = length === left;
      const type = begin && end ? 1 : begin ? 2 : end ? 4 : 3;
      const fragment = record.subarray(at, at + length);
      const header = Buffer.alloc(HEADER);
      header.writeUInt32LE(maskedCrc(type, fragment), 0);
      header.writeUInt16LE(length, 4);
      header[6] = type;
      parts.push(header, Buffer.from(fragment));
      fragments.push({ record: index, at: pos, length: HEADER + length });
      pos += HEADER + length;
      at += length;
      left -= length;
      begin = false;
    } while (left > 0);
  });
  return { log: Buffer.concat(parts), starts, fragments };
}

/** Records of 1..70,000 bytes (some spanning blocks), never holding a zero byte (zeros are what a tear leaves). */
const recordsArb = fc.array(
  fc.record({ size: fc.integer({ min: 1, max: 70_000 }), seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }) }).map(({ size, seed }) => {
    const r = new Uint8Array(size);
    let x = seed;
    for (let i = 0; i < size; i++) {
      x = (Math.imul(x, 1_103_515_245) + 12_345) >>> 0;
      r[i] = 1 + ((x >>> 16) % 255);
    }
    return r;
  }),
  { minLength: 1, maxLength: 8 },
);

t.test('model logs: whole ones are clean', (t) => {
  t.doesNotThrow(() => fc.assert(fc.property(recordsArb, (records) => judgeLogTail(buildLog(records).log).kind === 'clean'), { numRuns: 60 }), '60 logs, all clean');
  t.end();
});

t.test('model logs: a tear anywhere in the last record (zeros to the end, or the file cut) is read to the end or a torn tail at its start', (t) => {
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(recordsArb, fc.double({ min: 0, max: 1, noNaN: true }), fc.boolean(), (records, where, cut) => {
        const { log, starts } = buildLog(records);
        const last = starts[starts.length - 1]!;
        const from = last + Math.floor(where * (log.length - last - 1));
        const torn = cut ? log.subarray(0, from) : Buffer.from(log).fill(0, from);
        const verdict = judgeLogTail(torn);
        if (verdict.kind === 'clean') return true;
        if (verdict.kind === 'torn') return verdict.offset === last;
        // Refused only for zeros that start neither at a sector boundary nor where the payload does.
        const boundaryInZeros = Math.ceil(from / SECTOR_BYTES) * SECTOR_BYTES < log.length;
        return !cut && from > last + 7 && !boundaryInZeros;
      }),
      { numRuns: 200 },
    ),
    '200 tears',
  );
  t.end();
});

t.test('model logs: a changed byte in any record but the last is never taken for a torn tail', (t) => {
  let unseen = 0;
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(recordsArb.filter((r) => r.length >= 2), fc.nat(), fc.double({ min: 0, max: 1, noNaN: true }), (given, which, where) => {
        // The last record ends in zeros, as a torn log does: only what follows the damage tells it from a tear.
        const records = [...given.slice(0, -1), new Uint8Array([...given[given.length - 1]!, ...new Uint8Array(32)])];
        const { log, fragments } = buildLog(records);
        const candidates = fragments.filter((f) => f.record < records.length - 1);
        const f = candidates[which % candidates.length]!;
        const at = f.at + Math.floor(where * f.length);
        const damaged = Buffer.from(log);
        damaged[at] = damaged[at]! ^ 0x5a;
        const verdict = judgeLogTail(damaged);
        if (verdict.kind === 'damaged') return true;
        // LevelDB's own blind spot: a length that now runs past the end of the file's last, short
        // block reads as the end of the log, reported to nobody (so nothing for the open to refuse).
        const lastShortBlock = log.length % BLOCK !== 0 && Math.floor(at / BLOCK) === Math.floor(log.length / BLOCK);
        if (verdict.kind === 'clean' && lastShortBlock && (at - f.at === 4 || at - f.at === 5)) {
          unseen++;
          return true;
        }
        return false;
      }),
      { numRuns: 300 },
    ),
    '300 changed bytes, each judged damage or read by LevelDB itself as the end of the log',
  );
  t.comment(`${unseen} of them read by LevelDB itself as the end of the log (nothing reported for the open to refuse)`);
  t.end();
});

t.test('model logs: a zeroed header whose skipped block holds a record is damage, even with a torn tail after', (t) => {
  const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);
  // R spans blocks 0 and 1; S follows it in block 1; T, the last, is torn.
  const { log, starts, fragments } = buildLog([fill(40_000, 7), fill(1_000, 8), fill(2_000, 9)]);
  const rLast = fragments.filter((f) => f.record === 0).at(-1)!;
  t.equal(rLast.at, BLOCK, "R's last fragment starts block 1");
  const damaged = Buffer.from(log);
  damaged.fill(0, rLast.at, rLast.at + 7); // its header zeroed: LevelDB skips the rest of block 1, S with it
  damaged.fill(0, Math.ceil((starts[2]! + 100) / SECTOR_BYTES) * SECTOR_BYTES); // and T torn
  t.equal(judgeLogTail(damaged).kind, 'damaged', 'S, a whole record in the skipped block, makes it damage');
  t.end();
});

t.test('model logs: any bytes are judged without throwing', (t) => {
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3 * BLOCK }), (bytes) => {
        judgeLogTail(Buffer.from(bytes));
      }),
      { numRuns: 300 },
    ),
    '300 random files',
  );
  t.end();
});
