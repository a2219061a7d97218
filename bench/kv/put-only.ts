/**
 * `node dist/bench/kv/put-only.js [picloud|etcd] [IN_FLIGHT] [SECONDS]`: the KV benchmark's put
 * phase alone, twice, on a fresh three-member cluster warmed up as the full run's, with what the
 * full run does not report: each member's CPU per put split by thread (the main thread, then every
 * other thread by id) and its threads' sleeps per put (voluntary context switches, each followed by
 * a wake-up) (Node names them all "node": V8's GC helpers, libuv's pool, LevelDB's compaction
 * thread; etcd's Go threads appear under their own name), its read and write syscalls per put, and
 * (picloud) its Ready cycles, Raft log saves and peer messages per put; and each member's RSS idle
 * (after the cluster has settled, as the full run reads it) and its peak so far after each round. For working on CPU per put;
 * ratios still come from `npm run bench -- kv`. PICLOUD_NODE_ARGS='--flag …' passes node flags to
 * the picloud members. PICLOUD_BENCH_AUTH=1 switches auth on first and puts as a user granted every
 * key (what etcd's auth costs, on both systems). PICLOUD_BENCH_TLS=1 serves both systems' client
 * ports over TLS (`--cert-file`/`--key-file`, test certificates made with openssl).
 * PICLOUD_BENCH_PRELOAD=N puts N revisions (256 in flight, over 100,000 keys) before the rounds:
 * the full run's third round finds about 250,000 in each member.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { enableAuth } from './client.js';
import { parseSystem, preloadFromEnv, runProbe, withProbeCluster } from './probe.js';
import { RssSampler, rssKiB } from './proc.js';
import { FULL_PLAN } from './system-run.js';
import { benchValue, putPhase, warmUp } from './workload.js';

const USER_HZ = 100;
const WARMUP_MS = 5_000;
/** Not a thread: the kernel time within the main thread's, shown after it. */
const MAIN_SYSTEM = 'main in kernel';

/** CPU ms per thread name of one process (threads of one name summed). */
function threadCpuMs(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replace(/[0-9]+$/, '#');
      const key = Number(tid) === pid ? 'main' : name === 'node' ? `t${tid}` : name;
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const systemMs = (Number(rest[12]) * 1000) / USER_HZ;
      const ms = (Number(rest[11]) * 1000) / USER_HZ + systemMs;
      out.set(key, (out.get(key) ?? 0) + ms);
      // The kernel's share of the main thread: syscalls (socket writes carry loopback's receive path).
      if (key === 'main') out.set(MAIN_SYSTEM, systemMs);
    } catch {
      // thread gone
    }
  }
  return out;
}

/** Voluntary context switches of all a process's threads: each is a sleep, so a wake-up follows. */
function voluntarySwitches(pid: number): number {
  let n = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const m = /voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
      if (m) n += Number(m[1]);
    } catch {
      // thread gone
    }
  }
  return n;
}

/** Read- and write-family syscalls of a process so far (/proc/PID/io): socket reads and writes, LevelDB's files. */
function syscalls(pid: number): { reads: number; writes: number } {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  return { reads: Number(/syscr:\s+(\d+)/.exec(io)?.[1] ?? NaN), writes: Number(/syscw:\s+(\d+)/.exec(io)?.[1] ?? NaN) };
}

/** picloud's Ready-loop counters, per put: how well proposals batch (undefined for etcd). */
const RAFT_COUNTERS = { readies: 'picloud_raft_ready_total', saves: 'picloud_raft_saves_total', messages: 'picloud_raft_messages_sent_total' } as const;
type RaftCounts = Record<keyof typeof RAFT_COUNTERS, number>;

async function raftCounts(url: string | undefined): Promise<RaftCounts | undefined> {
  if (url === undefined) return undefined;
  const text = await (await fetch(url)).text();
  const read = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { readies: read(RAFT_COUNTERS.readies), saves: read(RAFT_COUNTERS.saves), messages: read(RAFT_COUNTERS.messages) };
}

async function main(): Promise<void> {
  const system = parseSystem(process.argv[2]);
  const inFlight = Number(process.argv[3] ?? 64);
  const seconds = Number(process.argv[4] ?? 15);
  if (!(Number.isInteger(inFlight) && inFlight >= 1 && inFlight <= 1024)) throw new Error('IN_FLIGHT must be 1..1024');
  if (!(seconds > 0 && seconds <= 300)) throw new Error('SECONDS must be in (0, 300]');
  await withProbeCluster(system, 8, async ({ writer, pids, metricsUrls }) => {
    if (process.env.PICLOUD_BENCH_AUTH === '1') {
      writer.useToken(await enableAuth(writer.endpoint));
      process.stdout.write(`${system}: auth enabled, putting as a user with read-write on every key\n`);
    }
    // RSS as the full run reads it: idle after the cluster has settled, then the peak while load runs.
    await new Promise((r) => setTimeout(r, FULL_PLAN.settleMs));
    const mib = (kib: number[]): string => kib.map((k) => (k / 1024).toFixed(0)).join(' / ');
    process.stdout.write(`${system}: RSS idle ${mib(pids.map((p) => rssKiB(p) ?? 0))} MiB (leader first)\n`);
    const sampler = new RssSampler(pids);
    sampler.start();
    const value = benchValue();
    // As the full run does: a member's hot paths run unoptimised for its first few thousand puts.
    await warmUp(writer, [writer], FULL_PLAN.systemWarmupMs, value);
    await preloadFromEnv(system, writer, value);
    for (let round = 1; round <= 2; round++) {
      // Warmed up apart, so the thread counters below cover the measured puts only.
      await putPhase(writer, inFlight, { warmupMs: 0, durationMs: WARMUP_MS, maxOps: Number.MAX_SAFE_INTEGER }, pids, value);
      const before = pids.map(threadCpuMs);
      const switchesBefore = pids.map(voluntarySwitches);
      const syscallsBefore = pids.map(syscalls);
      const countsBefore = await Promise.all(metricsUrls.map(raftCounts));
      const clientBefore = process.cpuUsage();
      const r = await putPhase(writer, inFlight, { warmupMs: 0, durationMs: seconds * 1000, maxOps: Number.MAX_SAFE_INTEGER }, pids, value);
      const after = pids.map(threadCpuMs);
      const switchesAfter = pids.map(voluntarySwitches);
      const syscallsAfter = pids.map(syscalls);
      const countsAfter = await Promise.all(metricsUrls.map(raftCounts));
      const client = process.cpuUsage(clientBefore);
      const clientUs = (client.user + client.system) / r.ops;
      process.stdout.write(`${system} round ${round}: ${inFlight} in flight, ${r.opsPerSec.toFixed(0)} puts/s, p50 ${r.latency.p50Ms.toFixed(1)} / p99 ${r.latency.p99Ms.toFixed(1)} / max ${r.latency.maxMs.toFixed(1)} ms, all members ${((r.memberCpuMsPerOp ?? NaN) * 1000).toFixed(0)} µs CPU per put, the client ${clientUs.toFixed(0)} µs\n`);
      pids.forEach((_, i) => {
        const perPut = (name: string, ms: number): number => ((ms - (before[i]!.get(name) ?? 0)) * 1000) / r.ops;
        const parts = [...after[i]!].filter(([name]) => name !== MAIN_SYSTEM).map(([name, ms]) => [name, perPut(name, ms)] as const)
          .filter(([, us]) => us >= 1).sort((a, b) => b[1] - a[1]);
        const total = parts.reduce((sum, [, us]) => sum + us, 0);
        const kernel = perPut(MAIN_SYSTEM, after[i]!.get(MAIN_SYSTEM) ?? 0);
        const shown = parts.map(([n, us]) => `${n} ${us.toFixed(0)}${n === 'main' ? ` (kernel ${kernel.toFixed(0)})` : ''}`);
        const sleeps = (switchesAfter[i]! - switchesBefore[i]!) / r.ops;
        const reads = (syscallsAfter[i]!.reads - syscallsBefore[i]!.reads) / r.ops;
        const writes = (syscallsAfter[i]!.writes - syscallsBefore[i]!.writes) / r.ops;
        const b = countsBefore[i];
        const a = countsAfter[i];
        const raft = a && b ? `, ${((a.readies - b.readies) / r.ops).toFixed(2)} Readies, ${((a.saves - b.saves) / r.ops).toFixed(2)} saves, ${((a.messages - b.messages) / r.ops).toFixed(2)} messages` : '';
        process.stdout.write(
          `  ${i === 0 ? 'leader  ' : 'follower'} ${total.toFixed(0)} µs, ${sleeps.toFixed(2)} sleeps, ${reads.toFixed(2)} reads, ${writes.toFixed(2)} writes${raft}: ${shown.join(', ')}\n`,
        );
      });
      process.stdout.write(`  RSS peak so far ${mib(sampler.stop())} MiB (leader first)\n`);
      sampler.start();
    }
    sampler.stop();
  });
}

runProbe(main);
