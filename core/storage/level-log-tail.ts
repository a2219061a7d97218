/**
 * Tells a torn tail of a LevelDB write-ahead log from damage inside it, before LevelDB opens it.
 *
 * LevelDB reports a checksum mismatch (and skips the rest of its 32 KiB block) for a record whose
 * header reached the disk but not all of its payload: a power cut mid-write that kept the file's
 * new size but not its last pages, which read back as zeros. That record was never synced, so
 * never acknowledged: dropping it is what recovery should do, and refusing to start (level-open.ts
 * refuses any skipped data) would leave a board down after a pulled plug. Damage anywhere else (a
 * synced record that rotted) must still be refused. Only the newest log can hold a write in
 * progress, nothing LevelDB could read may follow a torn record (not even in the rest of a
 * block it skips unread), and the file ends in zeros from where a write stopped reaching the
 * disk: a sector boundary (SECTOR_BYTES) inside the record, or the end of its header. So a
 * problem is a torn tail when it is in the newest log, nothing readable follows it, and the file
 * ends in such zeros (etcd's WAL repair likewise asks a torn last entry for a zeroed sector). A
 * last record whose bytes changed otherwise is refused. (The applied-state store writes unsynced,
 * so a power cut can tear an older log of it too, between LevelDB's switch to a new log and the
 * flush of the old one's data: refused, which is safe, since replaying the newer log past that
 * gap would not be.)
 *
 * The reading follows LevelDB 1.20's log::Reader (classic-level's, db/log_reader.cc) exactly:
 * which problems it reports, and where it resumes after each.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import CRC32C from 'crc-32/crc32c.js';

const BLOCK = 32_768;
const HEADER = 7;
const enum RecordType {
  Zero = 0,
  Full = 1,
  First = 2,
  Middle = 3,
  Last = 4,
}
const CRC_MASK_DELTA = 0xa282ead8;
/**
 * Writes reach the disk in whole sectors: the zeros a torn log ends in start at a sector boundary
 * (or where the torn record's payload starts). A last batch whose bytes end in zeros from such a
 * boundary passes too: damage inside that one record is then dropped with it.
 */
export const SECTOR_BYTES = 512;

/** One step of LevelDB's physical reader. */
type Physical =
  | { kind: 'record'; type: number; offset: number; length: number }
  /** A record LevelDB reports and skips with the rest of its block (which ends at `blockEnd`). */
  | { kind: 'bad'; offset: number; blockEnd: number; reason: string }
  /** A zero header: skipped with the rest of the block (which ends at `blockEnd`), silently (preallocated space). */
  | { kind: 'zeros'; offset: number; blockEnd: number };

/** A torn last record of the newest log: what LevelDB will drop from it when it opens. */
export interface TornTail {
  /** The store's directory, and the log file's name in it (NNNNNN.log). */
  dir: string;
  file: string;
  /** Where the dropped record starts; the file's size. */
  offset: number;
  size: number;
  reason: string;
}

/** The checksum stored in a record's header: crc32c of its type and payload, masked as LevelDB masks it. */
export function maskedRecordCrc(log: Uint8Array, offset: number, length: number): number {
  const crc = CRC32C.buf(log.subarray(offset + HEADER - 1, offset + HEADER + length)) >>> 0;
  return (((crc >>> 15) | (crc << 17)) + CRC_MASK_DELTA) >>> 0;
}

function checksumOk(log: Buffer, offset: number, length: number): boolean {
  return log.readUInt32LE(offset) === maskedRecordCrc(log, offset, length);
}

/** LevelDB's physical records of one log file, in reading order, until its reader stops. */
function* physicalRecords(log: Buffer): Generator<Physical> {
  for (let block = 0; block < log.length; block += BLOCK) {
    const end = Math.min(block + BLOCK, log.length);
    // The reader knows it is at the end once a read returns less than a block.
    const eof = end - block < BLOCK;
    for (let p = block; end - p >= HEADER; ) {
      const length = log.readUInt16LE(p + 4);
      const type = log[p + 6]!;
      if (p + HEADER + length > end) {
        if (eof) return; // a record cut short by the end of the file: LevelDB's end, silently
        yield { kind: 'bad', offset: p, blockEnd: end, reason: 'bad record length' };
        break;
      }
      if (type === RecordType.Zero && length === 0) {
        yield { kind: 'zeros', offset: p, blockEnd: end };
        break;
      }
      if (!checksumOk(log, p, length)) {
        yield { kind: 'bad', offset: p, blockEnd: end, reason: 'checksum mismatch' };
        break;
      }
      yield { kind: 'record', type, offset: p, length };
      p += HEADER + length;
    }
    if (eof) return;
  }
}

/**
 * Whether a record that passes its checksum starts anywhere in (from, end): the rest of a block
 * LevelDB skipped after a bad record. Its length may be what was damaged, so every offset is tried.
 */
function validRecordWithin(log: Buffer, from: number, end: number): boolean {
  for (let p = from + 1; end - p >= HEADER; p++) {
    const type = log[p + 6]!;
    if (type < RecordType.Full || type > RecordType.Last) continue;
    const length = log.readUInt16LE(p + 4);
    if (p + HEADER + length <= end && checksumOk(log, p, length)) return true;
  }
  return false;
}

export type LogTailVerdict = { kind: 'clean' } | { kind: 'torn'; offset: number; reason: string } | { kind: 'damaged'; reason: string };

/**
 * What LevelDB's reader will make of one log file: nothing to report, a torn tail (the first
 * report, with nothing readable after it), or damage (a readable record after the first report).
 */
export function judgeLogTail(log: Buffer): LogTailVerdict {
  let fragmentStart = -1; // the FIRST fragment of the record being put together, if any
  let problem: { offset: number; reason: string } | undefined;
  for (const r of physicalRecords(log)) {
    if (problem !== undefined) {
      // Anything readable after the first problem: data was lost from the middle, not the end.
      if (r.kind === 'record' || validRecordWithin(log, r.offset, r.blockEnd)) {
        return { kind: 'damaged', reason: `${problem.reason} at byte ${problem.offset}, with records after it` };
      }
      continue;
    }
    if (r.kind === 'zeros') {
      if (fragmentStart >= 0) problem = { offset: fragmentStart, reason: 'error in middle of record' };
      fragmentStart = -1;
      // The rest of the block is skipped unread (silently, or as the problem): a record in it is data.
      if (validRecordWithin(log, r.offset, r.blockEnd)) {
        return { kind: 'damaged', reason: `a zeroed record header at byte ${r.offset}, with records after it` };
      }
    } else if (r.kind === 'bad') {
      problem = { offset: fragmentStart >= 0 ? fragmentStart : r.offset, reason: r.reason };
      fragmentStart = -1;
      // The rest of its block is skipped unread; a record in it is still data after the problem.
      if (validRecordWithin(log, r.offset, r.blockEnd)) return { kind: 'damaged', reason: `${r.reason} at byte ${r.offset}, with records after it` };
    } else if (r.type === RecordType.Full || r.type === RecordType.First) {
      // A readable record while another was unfinished: LevelDB reports the unfinished one.
      if (fragmentStart >= 0) return { kind: 'damaged', reason: `partial record without end at byte ${fragmentStart}` };
      fragmentStart = r.type === RecordType.First ? r.offset : -1;
    } else if (r.type === RecordType.Middle || r.type === RecordType.Last) {
      if (fragmentStart < 0) return { kind: 'damaged', reason: `missing start of fragmented record at byte ${r.offset}` };
      if (r.type === RecordType.Last) fragmentStart = -1;
    } else {
      return { kind: 'damaged', reason: `unknown record type ${r.type} at byte ${r.offset}` };
    }
  }
  if (problem === undefined) return { kind: 'clean' };
  if (!endsInTornZeros(log, problem.offset)) {
    return { kind: 'damaged', reason: `${problem.reason} at byte ${problem.offset} in the last record, and the file does not end in zeros as a torn write leaves it` };
  }
  return { kind: 'torn', ...problem };
}

/** Whether the file ends in zeros from a sector boundary after `recordStart`, or from the end of that record's header. */
function endsInTornZeros(log: Buffer, recordStart: number): boolean {
  let zerosFrom = log.length;
  while (zerosFrom > recordStart && log[zerosFrom - 1] === 0) zerosFrom--;
  if (zerosFrom === log.length) return false;
  if (zerosFrom <= recordStart + HEADER) return true;
  const boundary = Math.ceil(zerosFrom / SECTOR_BYTES) * SECTOR_BYTES;
  return boundary < log.length;
}

/** The newest write-ahead log of the LevelDB store in `dir`, if it has a torn tail. */
export function tornTailOfNewestLog(dir: string): TornTail | undefined {
  let names: string[];
  try {
    names = readdirSync(dir).filter((f) => /^\d+\.log$/.test(f));
  } catch {
    return undefined; // no store yet
  }
  if (names.length === 0) return undefined;
  const newest = names.reduce((a, b) => (Number.parseInt(b, 10) > Number.parseInt(a, 10) ? b : a));
  let log: Buffer;
  try {
    log = readFileSync(join(dir, newest));
  } catch {
    return undefined; // unreadable: LevelDB's open says why
  }
  const verdict = judgeLogTail(log);
  return verdict.kind === 'torn' ? { dir, file: newest, offset: verdict.offset, size: log.length, reason: verdict.reason } : undefined;
}
