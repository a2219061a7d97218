/**
 * `npm run bench -- leveldb [--ops N] [--batches R]`: the cost of one LevelDB batch of N puts
 * (256-byte values, Raft-log-shaped keys, no fsync) written as an array batch, through the
 * chained batch core/storage uses (level-batch.ts), and as one packed value — CPU per batch
 * of this process (its LevelDB threads included). The reason core/storage writes chained
 * batches; rerun after a classic-level upgrade. Writes bench/out/leveldb.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { writeBatch, type BatchOp } from '../core/storage/level-batch.js';
import { UsageError } from './usage.js';

export const DEFAULT_OPS = 40;
export const DEFAULT_BATCHES = 3_000;
const VALUE_BYTES = 256;

function intArg(argv: string[], flag: string, dflt: number): number {
  const i = argv.indexOf(flag);
  if (i < 0) return dflt;
  const n = Number(argv[i + 1]);
  if (!Number.isInteger(n) || n < 1 || n > 100_000) throw new UsageError(`${flag} must be an integer 1..100000`);
  return n;
}

export async function runLeveldbBench(argv: string[]): Promise<void> {
  const ops = intArg(argv, '--ops', DEFAULT_OPS);
  const batches = intArg(argv, '--batches', DEFAULT_BATCHES);
  const dir = mkdtempSync(join(tmpdir(), 'picloud-bench-leveldb-'));
  const db = new ClassicLevel<Buffer, Buffer>(join(dir, 'db'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db.open();
  const value = Buffer.alloc(VALUE_BYTES, 0x5a);
  let next = 0;
  const key = (i: number): Buffer => {
    const k = Buffer.allocUnsafe(9);
    k[0] = 0x65;
    k.writeBigUInt64BE(BigInt(i), 1);
    return k;
  };
  const puts = (): BatchOp[] => Array.from({ length: ops }, () => ({ type: 'put' as const, key: key(next++), value }));
  const ways: Record<string, () => Promise<void>> = {
    array: () => db.batch(puts(), { sync: false }),
    chained: () => writeBatch(db, puts(), false),
    packed: async () => {
      const start = next;
      next += ops;
      await db.batch([{ type: 'put', key: key(start), value: Buffer.concat(Array.from({ length: ops }, () => value)) }], { sync: false });
    },
  };
  const results: Record<string, { cpuUsPerBatch: number; wallUsPerBatch: number }> = {};
  try {
    // Two rounds, the first to warm up; the second is reported.
    for (let round = 0; round < 2; round++) {
      for (const [name, write] of Object.entries(ways)) {
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        for (let r = 0; r < batches; r++) await write();
        const cpu = process.cpuUsage(cpu0);
        results[name] = { cpuUsPerBatch: (cpu.user + cpu.system) / batches, wallUsPerBatch: ((performance.now() - t0) * 1000) / batches };
      }
    }
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const base = results.array!.cpuUsPerBatch;
  process.stdout.write(`LevelDB batch of ${ops} puts (${VALUE_BYTES} B values), ${batches} batches each\n`);
  process.stdout.write(`way      | CPU us/batch | wall us/batch | CPU vs array\n`);
  for (const [name, r] of Object.entries(results)) {
    process.stdout.write(`${name.padEnd(8)} | ${r.cpuUsPerBatch.toFixed(0).padStart(12)} | ${r.wallUsPerBatch.toFixed(0).padStart(13)} | ${(r.cpuUsPerBatch / base).toFixed(2)}x\n`);
  }
  mkdirSync('bench/out', { recursive: true });
  writeFileSync('bench/out/leveldb.json', `${JSON.stringify({ command: `npm run bench -- leveldb ${argv.join(' ')}`.trim(), date: new Date().toISOString(), ops, batches, valueBytes: VALUE_BYTES, results }, null, 2)}\n`);
}
