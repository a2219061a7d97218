/**
 * Latency samples and their summary (count, percentiles, mean) for the KV benchmark.
 * Pure arithmetic; no timing or I/O of its own.
 */

/** Samples kept per phase at most, so a long phase cannot grow memory without bound. */
export const MAX_LATENCY_SAMPLES = 2_000_000;

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
}

/** Collects latencies in milliseconds; drops samples past MAX_LATENCY_SAMPLES (and counts them). */
export class LatencyRecorder {
  private readonly samplesMs: number[] = [];
  dropped = 0;

  add(latencyMs: number): void {
    if (this.samplesMs.length >= MAX_LATENCY_SAMPLES) {
      this.dropped++;
      return;
    }
    this.samplesMs.push(latencyMs);
  }

  get count(): number {
    return this.samplesMs.length;
  }

  summary(): LatencySummary {
    return summarise(this.samplesMs);
  }
}

/** Nearest-rank percentile of an ascending array (p in 0..100); 0 for an empty array. */
export function percentile(sortedMs: readonly number[], p: number): number {
  if (sortedMs.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sortedMs.length) - 1;
  return sortedMs[Math.min(sortedMs.length - 1, Math.max(0, rank))]!;
}

export function summarise(samplesMs: readonly number[]): LatencySummary {
  if (samplesMs.length === 0) return { count: 0, p50Ms: 0, p99Ms: 0, maxMs: 0, meanMs: 0 };
  const sorted = Float64Array.from(samplesMs).sort();
  const arr = Array.from(sorted);
  let sum = 0;
  for (const x of arr) sum += x;
  return {
    count: arr.length,
    p50Ms: percentile(arr, 50),
    p99Ms: percentile(arr, 99),
    maxMs: arr[arr.length - 1]!,
    meanMs: sum / arr.length,
  };
}

/** Milliseconds since an arbitrary origin, monotonic. */
export function nowMs(): number {
  return performance.now();
}
