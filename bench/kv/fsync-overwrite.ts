/**
 * A second, informational disk anchor: fdatasync after overwriting 4 KiB inside a file that
 * is already allocated and synced, as etcd's WAL does (it preallocates 64 MB segments). The
 * core probe (measureFsyncLatency) appends, so each sync also commits the file's new size
 * to the journal; this one does not, and is the floor under a preallocated log.
 */
import { mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { summarise, type LatencySummary } from './stats.js';

export const OVERWRITE_BLOCK_BYTES = 4096;
/** Samples at most, whatever is asked. */
export const MAX_OVERWRITE_SAMPLES = 10_000;

export async function measureOverwriteFdatasync(dir: string, samples: number): Promise<LatencySummary> {
  const n = Math.min(MAX_OVERWRITE_SAMPLES, Math.max(1, Math.floor(samples)));
  const scratch = await mkdtemp(join(dir, '.fsync-overwrite-'));
  const fh = await open(join(scratch, 'probe'), 'w+');
  const block = Buffer.alloc(OVERWRITE_BLOCK_BYTES, 0x5a);
  const times: number[] = [];
  try {
    await fh.write(Buffer.alloc(n * OVERWRITE_BLOCK_BYTES), 0, n * OVERWRITE_BLOCK_BYTES, 0);
    await fh.sync();
    for (let i = 0; i < n; i++) {
      await fh.write(block, 0, block.length, i * OVERWRITE_BLOCK_BYTES);
      const t0 = performance.now();
      await fh.datasync();
      times.push(performance.now() - t0);
    }
  } finally {
    await fh.close();
    await rm(scratch, { recursive: true, force: true });
  }
  return summarise(times);
}
