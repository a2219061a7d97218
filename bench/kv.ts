/**
 * `npm run bench -- kv [--quick] [--only picloud|etcd] [--channels N] [--rounds N] [--cpu-prof DIR]`:
 * the KV benchmark of issue 3. Starts three picloud managers and three etcd 3.4 members
 * (/usr/bin/etcd) on loopback with fsync on, drives both with the same etcd-v3 gRPC client
 * and workload (256-byte values), phase by phase alternating between the two, measures the
 * disk's fsync latency in the same run, prints picloud | etcd | ratio with the issue's
 * targets and writes bench/out/kv.json.
 * --cpu-prof DIR runs the picloud agents under `node --cpu-prof` (profiles land in DIR).
 * --rounds N repeats the throughput phases (put @16/@64/@256, get @64) N times in all and
 * reports each round's ratio and the median: on a shared 2-core machine one round's ratio
 * moves by 10-20% with the background, the median of several much less. The 1,000-watcher
 * watch phase is repeated as often (after the load rounds), its p99 reported per round and
 * system, picloud's median against the target.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { measureFsyncLatency } from '../core/storage/index.js';
import { ETCD_BIN, startEtcd, startPicloud, type BenchCluster, type SystemName } from './kv/clusters.js';
import { measureOverwriteFdatasync } from './kv/fsync-overwrite.js';
import { checkTargets, renderRounds, renderTable, roundFailures, roundRatios, watchRounds, GET_THROUGHPUT_RATIO_MIN, PUT_THROUGHPUT_RATIO_MIN, type RoundRatios, type RoundValues, type SystemResult } from './kv/report.js';
import { PhaseOrder } from './kv/phase-order.js';
import { FULL_PLAN, PUT_IN_FLIGHT, QUICK_PLAN, SystemSession, WATCHER_COUNTS } from './kv/system-run.js';
import { benchValue, type LoadResult, type WatchResult } from './kv/workload.js';
import { UsageError } from './usage.js';

/** Rounds at most for --rounds. */
export const MAX_ROUNDS = 10;
/** The phases --rounds repeats: the throughput and tail-latency targets. */
const REPEATED_PUTS = [16, 64, 256] as const;

/** fsync samples for the anchor: enough for a stable p99 in a few seconds. */
export const FSYNC_SAMPLES = 500;
export const FSYNC_SAMPLES_QUICK = 100;

interface Options {
  quick: boolean;
  only: SystemName | undefined;
  channels: number | undefined;
  cpuProfDir: string | undefined;
  rounds: number;
}

function parseArgs(argv: string[]): Options {
  const value = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    if (i < 0) return undefined;
    const v = argv[i + 1];
    if (v === undefined) throw new UsageError(`${flag} needs a value`);
    return v;
  };
  const only = value('--only');
  if (only !== undefined && only !== 'picloud' && only !== 'etcd') throw new UsageError('--only must be picloud or etcd');
  const ch = value('--channels');
  const channels = ch === undefined ? undefined : Number(ch);
  if (channels !== undefined && !(Number.isInteger(channels) && channels >= 1 && channels <= 256)) throw new UsageError('--channels must be 1..256');
  const prof = value('--cpu-prof');
  const r = value('--rounds');
  const rounds = r === undefined ? 1 : Number(r);
  if (!(Number.isInteger(rounds) && rounds >= 1 && rounds <= MAX_ROUNDS)) throw new UsageError(`--rounds must be 1..${MAX_ROUNDS}`);
  if (rounds > 1 && only !== undefined) throw new UsageError('--rounds compares the two systems; it cannot be used with --only');
  return { quick: argv.includes('--quick'), only: only as SystemName | undefined, channels, cpuProfDir: prof === undefined ? undefined : resolve(prof), rounds };
}

/** Writes every dirty page out (sync(1)): one system's lazily written state is not the next one's disk work. */
function syncDirtyPages(): void {
  execFileSync('sync', { stdio: 'ignore' });
}

function etcdVersion(): string {
  try {
    return execFileSync(ETCD_BIN, ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
  } catch {
    return 'unknown';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runKvBench(argv: string[]): Promise<void> {
  const opts = parseArgs(argv);
  const plan = { ...(opts.quick ? QUICK_PLAN : FULL_PLAN) };
  if (opts.channels !== undefined) plan.channels = opts.channels;
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  const root = mkdtempSync(join(tmpdir(), 'picloud-bench-kv-'));
  const live = new Set<BenchCluster>();
  const sessions: SystemSession[] = [];
  const cleanup = async (): Promise<void> => {
    for (const s of sessions.splice(0)) s.close();
    await Promise.all([...live].map((c) => c.stop()));
    live.clear();
    rmSync(root, { recursive: true, force: true });
  };
  const onSignal = (): void => {
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const loadAvgStart = loadavg();
    // The anchors, on the disk the members' data dirs are on, before any member runs.
    const fsyncSamples = opts.quick ? FSYNC_SAMPLES_QUICK : FSYNC_SAMPLES;
    const fsync = await measureFsyncLatency({ dir: root, samples: fsyncSamples });
    const overwrite = await measureOverwriteFdatasync(root, fsyncSamples);
    log(`fsync (${fsync.method}, append) p50 ${fsync.p50Ms.toFixed(2)} ms p99 ${fsync.p99Ms.toFixed(2)} ms; overwrite p50 ${overwrite.p50Ms.toFixed(2)} ms`);
    const systems: SystemName[] = opts.only ? [opts.only] : ['picloud', 'etcd'];
    for (const system of systems) {
      if (opts.cpuProfDir && system === 'picloud') mkdirSync(opts.cpuProfDir, { recursive: true });
      const cluster =
        system === 'picloud'
          ? await startPicloud({ root, nodeArgs: opts.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', opts.cpuProfDir] : [] })
          : await startEtcd({ root });
      live.add(cluster);
      log(`${system}: 3 members up (pids ${cluster.pids().join(', ')})`);
    }
    for (const c of live) sessions.push(await SystemSession.open(c, plan, log));
    for (const s of sessions) s.markIdleStart();
    await sleep(plan.settleMs);
    for (const s of sessions) s.readIdle();
    const value = benchValue();
    // Which system goes first: see PhaseOrder. Before each system's turn the dirty pages are
    // written out, so neither pays for the other's unsynced writes.
    const phaseOrder = new PhaseOrder();
    const each = async (phase: string, f: (s: SystemSession) => Promise<void>): Promise<void> => {
      const order = phaseOrder.next(phase, sessions);
      for (const s of order) {
        syncDirtyPages();
        await f(s);
      }
    };
    for (const s of sessions) s.startLoad();
    await each('warm-up', (s) => s.warmUp(value));
    for (const n of PUT_IN_FLIGHT) await each(`put@${n}`, (s) => s.put(n, value));
    await each('get@64', (s) => s.getLinearizable(value));
    const extra = new Map<SystemSession, Map<string, LoadResult[]>>(sessions.map((s) => [s, new Map()]));
    const keep = (s: SystemSession, phase: string, r: LoadResult): void => {
      const m = extra.get(s)!;
      m.set(phase, [...(m.get(phase) ?? []), r]);
    };
    for (let round = 2; round <= opts.rounds; round++) {
      log(`round ${round} of ${opts.rounds}`);
      for (const n of REPEATED_PUTS) await each(`put@${n}`, async (s) => keep(s, `put@${n}`, await s.measurePut(n, value)));
      await each('get@64', async (s) => keep(s, 'get@64', await s.measureGet(value)));
    }
    for (const s of sessions) await s.endLoad();
    await each('watch warm-up', (s) => s.warmUpWatch(value));
    for (const n of WATCHER_COUNTS) await each(`watch@${n}`, (s) => s.watchers(n, value));
    // The most watched phase again, once per further round: its p99 moves by 2x between runs.
    const mostWatchers = WATCHER_COUNTS[WATCHER_COUNTS.length - 1];
    const extraWatch = new Map<SystemSession, WatchResult[]>(sessions.map((s) => [s, []]));
    for (let round = 2; round <= opts.rounds; round++) await each(`watch@${mostWatchers}`, async (s) => void extraWatch.get(s)!.push(await s.measureWatch(mostWatchers, value)));
    const results: Partial<Record<SystemName, SystemResult>> = {};
    for (const s of sessions) results[s.cluster.system] = s.result();
    const rounds = opts.rounds > 1 ? repeatRounds(sessions, results, extra) : [];
    const watchRoundValues = opts.rounds > 1 ? [repeatWatchRounds(sessions, results, extraWatch, mostWatchers)] : [];
    const loadAvgEnd = loadavg();

    const checks = checkTargets(fsync, results.picloud, results.etcd);
    const table = renderTable(fsync, overwrite, results.picloud, results.etcd, checks);
    process.stdout.write(`\n${opts.rounds > 1 ? 'round 1 (the verdicts over all rounds are the medians below):\n' : ''}${table}\n`);
    if (rounds.length > 0) process.stdout.write(`\n${renderRounds(rounds, watchRoundValues)}\n`);
    process.stdout.write(`machine: ${cpus().length} CPUs, load average ${loadAvgStart[0]!.toFixed(1)} at start, ${loadAvgEnd[0]!.toFixed(1)} at end\n`);
    for (const r of Object.values(results)) {
      if (r && r.leaderAfterLoad !== r.leaderEndpoint) process.stdout.write(`WARNING: ${r.system} leader moved during load (${r.leaderEndpoint} -> ${r.leaderAfterLoad})\n`);
    }
    mkdirSync('bench/out', { recursive: true });
    const out = {
      command: `npm run bench -- kv ${argv.join(' ')}`.trim(),
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, etcd: etcdVersion(), loadAvgStart, loadAvgEnd },
      method: {
        valueBytes: 256,
        members: 3,
        order: 'both clusters run side by side; each phase runs on one then the other, which goes first alternating from phase to phase and, for a repeated phase, from round to round; `sync` before each system\'s turn',
        warmup: 'before the first phase each system gets plan.systemWarmupMs of unmeasured puts then gets at 64 in flight; before the watch phases, plan.watchWarmupPuts unmeasured puts to 1,000 watchers',
        writes: 'to the leader, closed loop, over `channels` gRPC channels (each its own TCP connection)',
        reads: 'linearizable Range, round-robin over all three members, `channels` channels each',
        watchers: 'on one follower, 100 watchers per Watch stream, one stream per connection; sequential puts to the watched key on the leader',
        watchLatency: 'put acknowledged -> event received (events that beat the ack count as 0); fromSendLatency: put sent -> event; lastEventLatency: put acknowledged -> its last event (one sample per put)',
        bytesPerPut: '/proc/PID/io write_bytes and wchar deltas summed over the three members during the measured phase, per acknowledged put',
        plan,
      },
      fsync,
      fsyncOverwrite: overwrite,
      results,
      // Round 1's phases alone; with --rounds above 1 the verdicts to report are the medians in `rounds` and `watchRounds`.
      targets: checks,
      rounds,
      watchRounds: watchRoundValues,
    };
    // The latest as kv.json, and each run under its own name, so a recorded run stays checkable.
    const json = `${JSON.stringify(out, null, 2)}\n`;
    const dated = `bench/out/kv-${out.date.replace(/[:.]/g, '-')}.json`;
    writeFileSync('bench/out/kv.json', json);
    writeFileSync(dated, json);
    process.stdout.write(`wrote bench/out/kv.json and ${dated}\n`);
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** The most watched phase's p99 in every round (round 1 from the main results), per system. */
function repeatWatchRounds(sessions: SystemSession[], results: Partial<Record<SystemName, SystemResult>>, extra: Map<SystemSession, WatchResult[]>, watchers: number): RoundValues {
  const all = (name: SystemName): WatchResult[] => {
    const s = sessions.find((x) => x.cluster.system === name)!;
    return [results[name]!.watch.find((w) => w.watchers === watchers)!, ...extra.get(s)!];
  };
  return watchRounds(all('picloud'), all('etcd'));
}

/** Each repeated phase's ratio in every round (round 1 from the main results) and the median. */
function repeatRounds(sessions: SystemSession[], results: Partial<Record<SystemName, SystemResult>>, extra: Map<SystemSession, Map<string, LoadResult[]>>): RoundRatios[] {
  const bySystem = (name: SystemName): Map<string, LoadResult[]> => {
    const s = sessions.find((x) => x.cluster.system === name)!;
    const r = results[name]!;
    const all = new Map<string, LoadResult[]>();
    for (const n of REPEATED_PUTS) all.set(`put@${n}`, [r.puts.find((p) => p.inFlight === n)!, ...(extra.get(s)!.get(`put@${n}`) ?? [])]);
    all.set('get@64', [r.get, ...(extra.get(s)!.get('get@64') ?? [])]);
    return all;
  };
  const p = bySystem('picloud');
  const e = bySystem('etcd');
  const ratios = (phase: string, f: (r: LoadResult) => number): number[] => p.get(phase)!.map((x, i) => f(x) / f(e.get(phase)![i]!));
  const ops = (r: LoadResult): number => r.opsPerSec;
  const failed = (phase: string): string | undefined => roundFailures([['picloud', p.get(phase)!], ['etcd', e.get(phase)!]]);
  return [
    roundRatios('put @16 p99 latency', '<= etcd', ratios('put@16', (r) => r.latency.p99Ms), (m) => m <= 1, failed('put@16')),
    roundRatios('put @64 throughput', `>= ${PUT_THROUGHPUT_RATIO_MIN}x etcd`, ratios('put@64', ops), (m) => m >= PUT_THROUGHPUT_RATIO_MIN, failed('put@64')),
    roundRatios('put @256 throughput', `>= ${PUT_THROUGHPUT_RATIO_MIN}x etcd`, ratios('put@256', ops), (m) => m >= PUT_THROUGHPUT_RATIO_MIN, failed('put@256')),
    roundRatios('linearizable get @64 throughput', `>= ${GET_THROUGHPUT_RATIO_MIN}x etcd`, ratios('get@64', ops), (m) => m >= GET_THROUGHPUT_RATIO_MIN, failed('get@64')),
  ];
}
