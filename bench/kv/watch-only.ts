/**
 * `node dist/bench/kv/watch-only.js [picloud|etcd] [WATCHERS] [PUTS]`: the KV benchmark's watch
 * phase alone, twice, on a fresh three-member cluster warmed up as the full run's, with what the
 * full run does not report: CPU per put of each member (leader first) and of this client, and each
 * member's write syscalls per put (/proc/PID/io syscw). For working on the fan-out; ratios still
 * come from `npm run bench -- kv`. PICLOUD_BENCH_PRELOAD=N puts N revisions first (as put-only.js),
 * as the full run's watch phase follows its load phases.
 */
import { readFileSync } from 'node:fs';
import { parseSystem, preloadFromEnv, runProbe, withProbeCluster } from './probe.js';
import { cpuTimeMs } from './proc.js';
import { FULL_PLAN } from './system-run.js';
import { benchValue, warmUp, warmUpWatch, watchPhase } from './workload.js';

const WATCH_DURATION_MS = 15_000;

function writeSyscalls(pid: number): number {
  const line = readFileSync(`/proc/${pid}/io`, 'utf8').split('\n').find((l) => l.startsWith('syscw:'));
  return Number(line?.split(':')[1] ?? NaN);
}

async function main(): Promise<void> {
  const system = parseSystem(process.argv[2]);
  const watchers = Number(process.argv[3] ?? 1000);
  const puts = Number(process.argv[4] ?? 200);
  if (!(Number.isInteger(watchers) && watchers >= 1 && watchers <= 10_000)) throw new Error('WATCHERS must be 1..10000');
  if (!(Number.isInteger(puts) && puts >= 1 && puts <= 10_000)) throw new Error('PUTS must be 1..10000');
  await withProbeCluster(system, 1, async ({ writer, pids, endpoints }) => {
    const follower = endpoints[1]!;
    const value = benchValue();
    // As the full run does: a member's hot paths run unoptimised for its first few thousand puts.
    await warmUp(writer, [writer], FULL_PLAN.systemWarmupMs, value);
    await preloadFromEnv(system, writer, value);
    // As the full run does before its watch phases.
    await warmUpWatch(writer, follower, watchers, FULL_PLAN.watchWarmupPuts, value);
    for (let round = 1; round <= 2; round++) {
      const cpu0 = pids.map(cpuTimeMs);
      const sys0 = pids.map(writeSyscalls);
      const client0 = process.cpuUsage();
      const r = await watchPhase(writer, follower, watchers, puts, WATCH_DURATION_MS, value);
      const client = process.cpuUsage(client0);
      const per = (xs: number[]): string => xs.map((x) => (x / r.puts).toFixed(2)).join(' / ');
      const cpu = pids.map((p, i) => (cpuTimeMs(p) ?? NaN) - (cpu0[i] ?? NaN));
      const sys = pids.map((p, i) => writeSyscalls(p) - sys0[i]!);
      process.stdout.write(
        `${system} round ${round}: ${watchers} watchers, ${r.puts} puts (${r.incompletePuts} incomplete), ack -> event p50 ${r.latency.p50Ms.toFixed(2)} ms p99 ${r.latency.p99Ms.toFixed(2)} ms, -> a put's last event p50 ${r.lastEventLatency.p50Ms.toFixed(2)} ms p99 ${r.lastEventLatency.p99Ms.toFixed(2)} ms max ${r.lastEventLatency.maxMs.toFixed(2)} ms; ` +
          `member CPU ms per put (leader, watched follower, other) ${per(cpu)}; write syscalls per put ${per(sys)}; ` +
          `client CPU ms per put ${((client.user + client.system) / 1000 / r.puts).toFixed(2)}\n`,
      );
    }
  });
}

runProbe(main);
