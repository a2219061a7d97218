/**
 * Measures the disk under a directory: how long an fsync takes (the floor under every
 * acknowledged write, reported beside put latency by bench/ and in /metrics), and how many
 * bytes one Raft log save costs. Measurements only; nothing here is on a request path.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EntryType } from '../raft/types.js';
import { RaftLogStore } from './raft-log-store.js';

/** Samples per measurement at most, so a slow SD card cannot make a probe run for minutes. */
export const MAX_FSYNC_SAMPLES = 10_000;

export interface FsyncLatency {
  samples: number;
  /** What was synced after each write. */
  method: 'fdatasync' | 'fsync';
  writeBytes: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
}

/** The number of samples a probe takes when asked for `requested`: at least 1, at most the cap. */
export function clampSamples(requested: number): number {
  return Math.min(MAX_FSYNC_SAMPLES, Math.max(1, Math.floor(requested)));
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * Appends `writeBytes` to a scratch file in `dir` and syncs it, `samples` times, timing each
 * sync. fdatasync by default, which is what LevelDB's synced writes use on Linux.
 */
export async function measureFsyncLatency(
  options: { dir?: string; samples?: number; writeBytes?: number; method?: 'fdatasync' | 'fsync' } = {},
): Promise<FsyncLatency> {
  const samples = clampSamples(options.samples ?? 100);
  const writeBytes = options.writeBytes ?? 4096;
  const method = options.method ?? 'fdatasync';
  const scratch = await mkdtemp(join(options.dir ?? process.cwd(), '.fsync-probe-'));
  const fh = await open(join(scratch, 'probe'), 'w');
  const block = Buffer.alloc(writeBytes, 0x5a);
  const times: number[] = [];
  try {
    for (let i = 0; i < samples; i++) {
      await fh.write(block, 0, block.length, i * writeBytes);
      const t0 = process.hrtime.bigint();
      if (method === 'fsync') await fh.sync();
      else await fh.datasync();
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  } finally {
    await fh.close();
    await rm(scratch, { recursive: true, force: true });
  }
  const sorted = [...times].sort((a, b) => a - b);
  return {
    samples,
    method,
    writeBytes,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: sorted[sorted.length - 1]!,
    meanMs: times.reduce((a, b) => a + b, 0) / times.length,
  };
}

/** Bytes this process has caused to be sent to the block device (Linux /proc/self/io), if known. */
export function processWriteBytes(): number | undefined {
  try {
    const m = /^write_bytes:\s*(\d+)/m.exec(readFileSync('/proc/self/io', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export interface SaveCost {
  saves: number;
  valueBytes: number;
  /** Key + value bytes handed to LevelDB per save (entry + hard state). */
  logicalBytesPerSave: number;
  /** Bytes that reached the block device per save (page cache writeback included), if measurable. */
  deviceBytesPerSave: number | undefined;
  /** Mean latency of one sequential synced save. */
  meanSaveMs: number;
}

/**
 * Sequential synced saves of one entry (with `valueBytes` of data) and a hard state, like a
 * follower persisting one put: what one acknowledged write costs in this log.
 */
export async function measureSaveCost(options: { dir?: string; saves?: number; valueBytes?: number } = {}): Promise<SaveCost> {
  const saves = clampSamples(options.saves ?? 200);
  const valueBytes = options.valueBytes ?? 256;
  const scratch = await mkdtemp(join(options.dir ?? process.cwd(), '.save-probe-'));
  const store = await RaftLogStore.open(scratch);
  const data = Buffer.alloc(valueBytes + 32, 0x61); // value plus a put request's framing
  const before = processWriteBytes();
  const t0 = process.hrtime.bigint();
  try {
    for (let i = 1; i <= saves; i++) {
      await store.save({ entries: [{ term: 1, index: i, type: EntryType.Normal, data }], hardState: { term: 1, vote: 1, commit: i } });
    }
  } finally {
    await store.close();
  }
  const elapsedMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const after = processWriteBytes();
  const stats = store.stats();
  await rm(scratch, { recursive: true, force: true });
  return {
    saves,
    valueBytes,
    logicalBytesPerSave: stats.bytesWritten / saves,
    deviceBytesPerSave: before === undefined || after === undefined ? undefined : (after - before) / saves,
    meanSaveMs: elapsedMs / saves,
  };
}
