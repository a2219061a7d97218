// Not a test (no .test. in the name): measures how long a node takes to reload 1M keys of
// applied MVCC state from LevelDB at restart. Run once by hand:
//   node dist/test/kv/restart-1m.bench.js [keys] [valueBytes]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MvccBackend } from '../../core/storage/mvcc-backend.js';

const KEYS = Number(process.argv[2] ?? 1_000_000);
const VALUE_BYTES = Number(process.argv[3] ?? 256);
const GROUP = 10_000;

const mb = (n: number): string => `${(n / 1024 / 1024).toFixed(0)} MiB`;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'picloud-restart-'));
  try {
    let be = await MvccBackend.open(dir);
    const value = Buffer.alloc(VALUE_BYTES, 0x61);
    let t0 = performance.now();
    for (let i = 0; i < KEYS; i++) {
      // Keys arrive in an order unrelated to key order, as in real workloads.
      const j = (i * 7919) % KEYS;
      const key = Buffer.from(`/registry/pods/ns-${j % 100}/pod-${String(j).padStart(8, '0')}`);
      be.store.apply({ put: { key, value } }, { index: i + 1, term: 1 });
      if ((i + 1) % GROUP === 0) await be.persist();
    }
    await be.persist({ sync: true });
    const writeMs = performance.now() - t0;
    const digest = be.store.digest();
    const rssLoaded = process.memoryUsage().rss;
    await be.close();
    be = undefined as unknown as MvccBackend;
    (globalThis as { gc?: () => void }).gc?.();

    t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const again = await MvccBackend.open(dir);
    const openMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const ok = again.store.digest() === digest;
    console.log(
      JSON.stringify(
        {
          keys: KEYS,
          valueBytes: VALUE_BYTES,
          applyAndPersistMs: Math.round(writeMs),
          restartOpenMs: Math.round(openMs),
          restartCpuMs: Math.round((cpu.user + cpu.system) / 1000),
          loadStats: again.loadStats,
          sameDigest: ok,
          rssAfterWrite: mb(rssLoaded),
          rssAfterReopen: mb(process.memoryUsage().rss),
          revision: again.store.revision,
          appliedIndex: again.store.appliedIndex,
        },
        null,
        2,
      ),
    );
    await again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
