/**
 * `node --max-semi-space-size=4 dist/bench/kv/scavenge-history.js [PRELOAD] [KEYS] [compact]`:
 * one in-process member (no network, no other process), PRELOAD puts at 64 in flight over KEYS
 * keys, optionally compacted to the last revision, then 10 s of puts at 16 in flight, reporting
 * the young-generation collections (scavenges) of that window. Made to find why a member's
 * scavenges took longer the more history it kept (2.0–2.3 ms fresh, 2.9–3.2 ms with 250,000
 * revisions over 100,000 keys): V8 walks every old-space page on each scavenge, so the history's
 * values went off the V8 heap (core/kv/value-arena.ts; since then 1.85 and 2.10 ms; bench/RESULTS.md,
 * "Values off the V8 heap").
 */
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { withInProcessMember } from './in-process.js';
import { runProbe } from './probe.js';

const MEASURE_MS = 10_000;
const WARMUP_MS = 5_000;

async function main(): Promise<void> {
  const preload = Number(process.argv[2] ?? 0);
  const keys = Number(process.argv[3] ?? 100_000);
  const compact = process.argv[4] === 'compact';
  if (!(Number.isInteger(preload) && preload >= 0 && preload <= 5_000_000)) throw new Error('PRELOAD must be 0..5000000');
  if (!(Number.isInteger(keys) && keys >= 1 && keys <= 5_000_000)) throw new Error('KEYS must be 1..5000000');
  await withInProcessMember('scavenge', async (node, backend) => {
    const value = Buffer.alloc(256, 0x61);
    const put = (key: string) => backend.put({ key: Buffer.from(key), value, lease: 0, prevKv: false, ignoreValue: false, ignoreLease: false });
    const loop = async (inFlight: number, count: number, ms: number, prefix: string, keyspace: number): Promise<number> => {
      let n = 0;
      const end = performance.now() + ms;
      await Promise.all(Array.from({ length: inFlight }, async () => {
        while (n < count && performance.now() < end) await put(`${prefix}/${n++ % keyspace}`);
      }));
      return n;
    };
    await loop(64, preload, 600_000, 'preload', keys);
    if (compact) await backend.compact({ revision: node.store.revision, physical: true });
    await loop(16, Number.MAX_SAFE_INTEGER, WARMUP_MS, 'warm', 100_000);
    const pauses: number[] = [];
    const observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) if ((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) pauses.push(e.duration);
    });
    observer.observe({ entryTypes: ['gc'] });
    const puts = await loop(16, Number.MAX_SAFE_INTEGER, MEASURE_MS, 'put16', 100_000);
    await new Promise((r) => setTimeout(r, 20));
    observer.disconnect();
    const mean = pauses.reduce((a, b) => a + b, 0) / pauses.length;
    process.stdout.write(
      `${preload} revisions over ${keys} keys${compact ? ', compacted' : ''}: ${puts} puts at 16 in flight in ${MEASURE_MS / 1000} s, ` +
        `${pauses.length} scavenges, mean ${mean.toFixed(2)} ms, max ${Math.max(...pauses).toFixed(1)} ms; heap used ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB\n`,
    );
  });
}

runProbe(main);
