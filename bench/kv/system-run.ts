/**
 * One system's side of the KV benchmark: the clients and measurements for one started
 * cluster, phase by phase, so the caller can interleave the two systems phase by phase (the
 * machine's background load then drifts less between the two sides of a comparison).
 * Writes go to the leader; reads are spread over all members; watchers sit on one follower.
 */
import type { BenchCluster } from './clusters.js';
import { EtcdBenchClient } from './client.js';
import { RssSampler, rssKiB, sumCpuMs } from './proc.js';
import type { SystemResult } from './report.js';
import { getPhase, putPhase, warmUp, warmUpWatch, watchPhase, type LoadResult, type PhaseLimits, type WatchResult } from './workload.js';

export const PUT_IN_FLIGHT = [1, 16, 64, 256] as const;
export const GET_IN_FLIGHT = 64;
export const WATCHER_COUNTS = [1, 1000] as const;

export interface RunPlan {
  load: PhaseLimits;
  /** Pause after both clusters are up before reading idle RSS. */
  settleMs: number;
  /** Puts per watch phase at most, and its duration at most. */
  watchPuts: number;
  watchDurationMs: number;
  /**
   * Unmeasured puts to the most watched key before the watch phases: the fan-out's code (and
   * this client's reader) runs unoptimised for its first puts, which the put warm-up does not reach.
   */
  watchWarmupPuts: number;
  /** gRPC channels (TCP connections) per endpoint for the load phases. */
  channels: number;
  /** Unmeasured load on each system before its first phase (workload.ts warmUp). */
  systemWarmupMs: number;
}

export const FULL_PLAN: RunPlan = {
  load: { durationMs: 8_000, maxOps: 400_000, warmupMs: 1_000 },
  settleMs: 5_000,
  watchPuts: 400,
  watchDurationMs: 15_000,
  watchWarmupPuts: 100,
  channels: 8,
  systemWarmupMs: 10_000,
};

export const QUICK_PLAN: RunPlan = {
  load: { durationMs: 2_000, maxOps: 100_000, warmupMs: 300 },
  settleMs: 1_000,
  watchPuts: 60,
  watchDurationMs: 5_000,
  watchWarmupPuts: 20,
  channels: 8,
  systemWarmupMs: 2_000,
};

export class SystemSession {
  private readonly pids: number[];
  private readonly clients: EtcdBenchClient[] = [];
  private readonly sampler: RssSampler;
  private rssIdleKiB: number[] = [];
  private idleCpuStart: { cpuMs: number; atMs: number } | undefined;
  private idleCpuPercent: number | undefined;
  private rssLoadPeakKiB: number[] = [];
  private leaderAfterLoad = '';
  private readonly puts: LoadResult[] = [];
  private get: LoadResult | undefined;
  private readonly watch: WatchResult[] = [];

  private constructor(
    readonly cluster: BenchCluster,
    private readonly plan: RunPlan,
    private readonly leaderEndpoint: string,
    private readonly writer: EtcdBenchClient,
    private readonly readers: EtcdBenchClient[],
    private readonly log: (s: string) => void,
  ) {
    this.pids = cluster.pids();
    this.sampler = new RssSampler(this.pids);
    this.clients.push(writer, ...readers.filter((r) => r !== writer));
  }

  static async open(cluster: BenchCluster, plan: RunPlan, log: (s: string) => void): Promise<SystemSession> {
    const leader = await cluster.leaderEndpoint();
    const writer = new EtcdBenchClient(leader, plan.channels);
    const readers = cluster.members.map((m) => (m.clientEndpoint === leader ? writer : new EtcdBenchClient(m.clientEndpoint, plan.channels)));
    const s = new SystemSession(cluster, plan, leader, writer, readers, log);
    try {
      await Promise.all(s.clients.map((c) => c.connect()));
    } catch (e) {
      s.close();
      throw e;
    }
    return s;
  }

  private get name(): string {
    return this.cluster.system;
  }

  /** Starts the idle window: nothing but this cluster's own timers runs until readIdle(). */
  markIdleStart(): void {
    const cpuMs = sumCpuMs(this.pids);
    if (cpuMs !== undefined) this.idleCpuStart = { cpuMs, atMs: performance.now() };
  }

  /** Idle RSS per member, and the CPU all members used since markIdleStart() (% of one core). */
  readIdle(): void {
    this.rssIdleKiB = this.pids.map((p) => rssKiB(p) ?? 0);
    const cpuMs = sumCpuMs(this.pids);
    if (this.idleCpuStart && cpuMs !== undefined) {
      this.idleCpuPercent = ((cpuMs - this.idleCpuStart.cpuMs) / (performance.now() - this.idleCpuStart.atMs)) * 100;
    }
  }

  startLoad(): void {
    this.sampler.start();
  }

  async warmUp(value: Buffer): Promise<void> {
    await warmUp(this.writer, this.readers, this.plan.systemWarmupMs, value);
    this.log(`${this.name}: warmed up (${this.plan.systemWarmupMs} ms of unmeasured puts and gets)`);
  }

  async put(inFlight: number, value: Buffer): Promise<void> {
    this.puts.push(await this.measurePut(inFlight, value));
  }

  async getLinearizable(value: Buffer): Promise<void> {
    this.get = await this.measureGet(value);
  }

  /** One put phase, returned rather than recorded (the repeat rounds). */
  async measurePut(inFlight: number, value: Buffer): Promise<LoadResult> {
    const r = await putPhase(this.writer, inFlight, this.plan.load, this.pids, value);
    this.log(`${this.name} put @${inFlight}: ${describe(r)}`);
    return r;
  }

  async measureGet(value: Buffer): Promise<LoadResult> {
    const r = await getPhase(this.writer, this.readers, GET_IN_FLIGHT, this.plan.load, this.pids, value);
    this.log(`${this.name} get @${GET_IN_FLIGHT}: ${describe(r)}`);
    return r;
  }

  async endLoad(): Promise<void> {
    this.rssLoadPeakKiB = this.sampler.stop();
    this.leaderAfterLoad = await this.cluster.leaderEndpoint();
  }

  private watchedFollower(): string {
    return this.cluster.members.find((m) => m.clientEndpoint !== this.leaderEndpoint)!.clientEndpoint;
  }

  async warmUpWatch(value: Buffer): Promise<void> {
    const watchers = WATCHER_COUNTS[WATCHER_COUNTS.length - 1];
    await warmUpWatch(this.writer, this.watchedFollower(), watchers, this.plan.watchWarmupPuts, value);
    this.log(`${this.name}: watch path warmed up (${this.plan.watchWarmupPuts} unmeasured puts to ${watchers} watchers)`);
  }

  async watchers(count: number, value: Buffer): Promise<void> {
    this.watch.push(await this.measureWatch(count, value));
  }

  /** One watch phase, returned rather than recorded (the repeat rounds). */
  async measureWatch(count: number, value: Buffer): Promise<WatchResult> {
    const w = await watchPhase(this.writer, this.watchedFollower(), count, this.plan.watchPuts, this.plan.watchDurationMs, value);
    this.log(`${this.name} watch x${count}: p50 ${w.latency.p50Ms.toFixed(2)} ms p99 ${w.latency.p99Ms.toFixed(2)} ms (${w.puts} puts, ${w.incompletePuts} incomplete)`);
    return w;
  }

  result(): SystemResult {
    if (!this.get) throw new Error(`${this.name}: get phase did not run`);
    return {
      system: this.cluster.system,
      members: this.cluster.members.map((m) => ({ name: m.name, pid: m.proc.pid!, clientEndpoint: m.clientEndpoint })),
      leaderEndpoint: this.leaderEndpoint,
      leaderAfterLoad: this.leaderAfterLoad,
      rssIdleKiB: this.rssIdleKiB,
      idleCpuPercent: this.idleCpuPercent,
      rssLoadPeakKiB: this.rssLoadPeakKiB,
      puts: this.puts,
      get: this.get,
      watch: this.watch,
    };
  }

  close(): void {
    this.sampler.stop();
    for (const c of this.clients) c.close();
  }
}

function describe(r: LoadResult): string {
  const cpu = r.memberCpuMsPerOp === undefined ? '' : ` members ${(r.memberCpuMsPerOp * 1000).toFixed(0)} us CPU/op`;
  return `${r.opsPerSec.toFixed(0)} ops/s p50 ${r.latency.p50Ms.toFixed(2)} ms p99 ${r.latency.p99Ms.toFixed(2)} ms errors ${r.errors}${cpu} client ${r.clientCpuPercent.toFixed(0)}% CPU`;
}
