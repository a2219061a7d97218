/**
 * `npm run bench -- sim [--seeds N] [--first S]` (or `node dist/bench/sim.js`): how many
 * simulator seeds run per minute — 5 nodes, 10,000 ticks, all faults, the default options of
 * `npm run sim` — on one and on two worker threads (the target is ≥ 300 seeds/min on 2 cores).
 * Prints a table and writes bench/out/sim.json. Every seed must also pass: a violation here is
 * a bug report, not a slow run.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import { runSeed } from '../core/sim/cluster.js';
import { UsageError } from './usage.js';

/** The throughput the issue asks for on 2 cores. */
export const TARGET_SEEDS_PER_MINUTE = 300;
const DEFAULT_SEEDS_PER_WORKER = 40;

interface SeedTiming {
  seed: number;
  ms: number;
  ok: boolean;
  events: number;
  messages: number;
}

interface Row {
  workers: number;
  seeds: number;
  wallSeconds: number;
  seedsPerMinute: number;
  msPerSeedP50: number;
  msPerSeedP95: number;
  eventsPerSecond: number;
  messagesPerSeedMean: number;
  violations: number;
}

function timeSeed(seed: number): SeedTiming {
  const t0 = performance.now();
  const r = runSeed(seed, { nodes: 5, ticks: 10_000, faults: 'all' });
  return { seed, ms: performance.now() - t0, ok: r.ok, events: r.stats.events, messages: r.stats.messagesSent };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
}

async function measure(workers: number, seeds: number, first: number): Promise<Row> {
  const timings: SeedTiming[] = [];
  let next = first;
  const end = first + seeds;
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    let live = workers;
    for (let i = 0; i < workers; i++) {
      const w = new Worker(new URL(import.meta.url));
      const feed = (): void => {
        if (next < end) w.postMessage(next++);
        else void w.terminate();
      };
      w.on('message', (t: SeedTiming) => {
        timings.push(t);
        feed();
      });
      w.on('error', reject);
      w.on('exit', () => {
        if (--live === 0) resolve();
      });
      feed();
    }
  });
  const wallMs = performance.now() - t0;
  const ms = timings.map((t) => t.ms).sort((a, b) => a - b);
  const events = timings.reduce((s, t) => s + t.events, 0);
  return {
    workers,
    seeds,
    wallSeconds: round(wallMs / 1000, 2),
    seedsPerMinute: round((seeds / wallMs) * 60_000, 0),
    msPerSeedP50: round(percentile(ms, 0.5), 0),
    msPerSeedP95: round(percentile(ms, 0.95), 0),
    eventsPerSecond: round(events / (wallMs / 1000), 0),
    messagesPerSeedMean: round(timings.reduce((s, t) => s + t.messages, 0) / seeds, 0),
    violations: timings.filter((t) => !t.ok).length,
  };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export async function runSimBench(argv: string[]): Promise<void> {
  const arg = (name: string): number | undefined => {
    const i = argv.indexOf(`--${name}`);
    const n = i >= 0 ? Number(argv[i + 1]) : undefined;
    if (n !== undefined && !(Number.isInteger(n) && n > 0)) throw new UsageError(`--${name} needs a positive integer`);
    return n;
  };
  const perWorker = arg('seeds') ?? DEFAULT_SEEDS_PER_WORKER;
  const first = arg('first') ?? 1;
  const rows: Row[] = [];
  for (const workers of [1, 2]) rows.push(await measure(workers, perWorker * workers, first));
  const header = ['workers', 'seeds', 'wall s', 'seeds/min', 'ms/seed p50', 'ms/seed p95', 'events/s', 'msgs/seed', 'violations'];
  const table = rows.map((r) => [r.workers, r.seeds, r.wallSeconds, r.seedsPerMinute, r.msPerSeedP50, r.msPerSeedP95, r.eventsPerSecond, r.messagesPerSeedMean, r.violations].map(String));
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  for (const line of [header, ...table]) process.stdout.write(line.map((x, i) => x.padStart(widths[i]!)).join('  ') + '\n');
  const best = rows[rows.length - 1]!;
  process.stdout.write(`2 workers: ${best.seedsPerMinute} seeds/min (target ${TARGET_SEEDS_PER_MINUTE}) ${best.seedsPerMinute >= TARGET_SEEDS_PER_MINUTE ? 'met' : 'NOT met'}\n`);
  mkdirSync('bench/out', { recursive: true });
  writeFileSync(
    'bench/out/sim.json',
    JSON.stringify(
      {
        suite: 'sim',
        date: new Date().toISOString(),
        node: process.version,
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model ?? 'unknown',
        scenario: { nodes: 5, ticks: 10_000, faults: 'all', firstSeed: first },
        targetSeedsPerMinute: TARGET_SEEDS_PER_MINUTE,
        rows,
      },
      null,
      2,
    ) + '\n',
  );
}

if (!isMainThread) {
  parentPort!.on('message', (seed: number) => parentPort!.postMessage(timeSeed(seed)));
} else if (process.argv[1] !== undefined && /bench[/\\]sim\.js$/.test(process.argv[1])) {
  runSimBench(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
