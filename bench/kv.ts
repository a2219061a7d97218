/**
 * `npm run bench -- kv [--quick] [--only picloud|etcd] [--channels N] [--cpu-prof DIR]`:
 * the KV benchmark of issue 3. Starts three picloud managers and three etcd 3.4 members
 * (/usr/bin/etcd) on loopback with fsync on, drives both with the same etcd-v3 gRPC client
 * and workload (256-byte values), phase by phase alternating between the two, measures the
 * disk's fsync latency in the same run, prints picloud | etcd | ratio with the issue's
 * targets and writes bench/out/kv.json.
 * --cpu-prof DIR runs the picloud agents under `node --cpu-prof` (profiles land in DIR).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { measureFsyncLatency } from '../core/storage/index.js';
import { ETCD_BIN, startEtcd, startPicloud, type BenchCluster, type SystemName } from './kv/clusters.js';
import { measureOverwriteFdatasync } from './kv/fsync-overwrite.js';
import { checkTargets, renderTable, type SystemResult } from './kv/report.js';
import { FULL_PLAN, PUT_IN_FLIGHT, QUICK_PLAN, SystemSession, WATCHER_COUNTS } from './kv/system-run.js';
import { benchValue } from './kv/workload.js';

/** fsync samples for the anchor: enough for a stable p99 in a few seconds. */
export const FSYNC_SAMPLES = 500;
export const FSYNC_SAMPLES_QUICK = 100;

interface Options {
  quick: boolean;
  only: SystemName | undefined;
  channels: number | undefined;
  cpuProfDir: string | undefined;
}

function parseArgs(argv: string[]): Options {
  const value = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    if (i < 0) return undefined;
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`${flag} needs a value`);
    return v;
  };
  const only = value('--only');
  if (only !== undefined && only !== 'picloud' && only !== 'etcd') throw new Error('--only must be picloud or etcd');
  const ch = value('--channels');
  const channels = ch === undefined ? undefined : Number(ch);
  if (channels !== undefined && !(Number.isInteger(channels) && channels >= 1 && channels <= 256)) throw new Error('--channels must be 1..256');
  const prof = value('--cpu-prof');
  return { quick: argv.includes('--quick'), only: only as SystemName | undefined, channels, cpuProfDir: prof === undefined ? undefined : resolve(prof) };
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
    // Phase by phase, alternating which system goes first, so both see the same background.
    let phase = 0;
    const each = async (f: (s: SystemSession) => Promise<void>): Promise<void> => {
      const order = phase++ % 2 === 0 ? sessions : [...sessions].reverse();
      for (const s of order) await f(s);
    };
    for (const s of sessions) s.startLoad();
    await each((s) => s.warmUp(value));
    for (const n of PUT_IN_FLIGHT) await each((s) => s.put(n, value));
    await each((s) => s.getLinearizable(value));
    for (const s of sessions) await s.endLoad();
    for (const n of WATCHER_COUNTS) await each((s) => s.watchers(n, value));
    const results: Partial<Record<SystemName, SystemResult>> = {};
    for (const s of sessions) results[s.cluster.system] = s.result();
    const loadAvgEnd = loadavg();

    const checks = checkTargets(fsync, results.picloud, results.etcd);
    const table = renderTable(fsync, overwrite, results.picloud, results.etcd, checks);
    process.stdout.write(`\n${table}\n`);
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
        order: 'both clusters run side by side; each phase runs on one then the other, alternating which goes first',
        warmup: 'before the first phase each system gets plan.systemWarmupMs of unmeasured puts then gets at 64 in flight',
        writes: 'to the leader, closed loop, over `channels` gRPC channels (each its own TCP connection)',
        reads: 'linearizable Range, round-robin over all three members, `channels` channels each',
        watchers: 'on one follower, 100 watchers per Watch stream, one stream per connection; sequential puts to the watched key on the leader',
        watchLatency: 'put acknowledged -> event received (events that beat the ack count as 0); fromSendLatency: put sent -> event',
        bytesPerPut: '/proc/PID/io write_bytes and wchar deltas summed over the three members during the measured phase, per acknowledged put',
        plan,
      },
      fsync,
      fsyncOverwrite: overwrite,
      results,
      targets: checks,
    };
    writeFileSync('bench/out/kv.json', `${JSON.stringify(out, null, 2)}\n`);
    process.stdout.write('wrote bench/out/kv.json\n');
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
