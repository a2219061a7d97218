/**
 * What the benchmark reads about a member process from Linux /proc: resident memory and
 * bytes written. Returns undefined when the process is gone or /proc is not there.
 */
import { readFileSync } from 'node:fs';

/** VmRSS of a process in KiB. */
export function rssKiB(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s*(\d+)\s*kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export interface IoCounters {
  /** Bytes the process caused to be sent to the block device (pages dirtied, O_DIRECT). */
  writeBytes: number;
  /** Bytes passed to write-like system calls, page cache or not. */
  wcharBytes: number;
}

export function ioCounters(pid: number): IoCounters | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/io`, 'utf8');
    const wb = /^write_bytes:\s*(\d+)/m.exec(text);
    const wc = /^wchar:\s*(\d+)/m.exec(text);
    if (!wb || !wc) return undefined;
    return { writeBytes: Number(wb[1]), wcharBytes: Number(wc[1]) };
  } catch {
    return undefined;
  }
}

/** Sum of the counters of several processes; undefined if any is unreadable. */
export function sumIo(pids: readonly number[]): IoCounters | undefined {
  let writeBytes = 0;
  let wcharBytes = 0;
  for (const pid of pids) {
    const c = ioCounters(pid);
    if (!c) return undefined;
    writeBytes += c.writeBytes;
    wcharBytes += c.wcharBytes;
  }
  return { writeBytes, wcharBytes };
}

/**
 * Samples the RSS of a set of processes at a fixed interval and keeps each one's maximum,
 * so "RSS under load" is the peak seen while load ran, not one lucky reading.
 */
export class RssSampler {
  readonly peakKiB: Map<number, number> = new Map();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly pids: readonly number[],
    private readonly intervalMs = RSS_SAMPLE_INTERVAL_MS,
  ) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): number[] {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    return this.pids.map((p) => this.peakKiB.get(p) ?? 0);
  }

  private sample(): void {
    for (const pid of this.pids) {
      const r = rssKiB(pid);
      if (r !== undefined) this.peakKiB.set(pid, Math.max(this.peakKiB.get(pid) ?? 0, r));
    }
  }
}

/** How often RSS is read while load runs. */
export const RSS_SAMPLE_INTERVAL_MS = 250;

/** Clock ticks per second of /proc/PID/stat times (USER_HZ; 100 on every Linux we run on). */
export const USER_HZ = 100;

/** User + system CPU time a process has used, in ms (resolution 1000 / USER_HZ). */
export function cpuTimeMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name (which may contain spaces): utime is the 14th field overall.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
    return ((utime + stime) * 1000) / USER_HZ;
  } catch {
    return undefined;
  }
}

export function sumCpuMs(pids: readonly number[]): number | undefined {
  let total = 0;
  for (const pid of pids) {
    const c = cpuTimeMs(pid);
    if (c === undefined) return undefined;
    total += c;
  }
  return total;
}
