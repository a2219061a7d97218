/**
 * `node dist/bench/kv/snapshot-transfer.js [picloud|etcd] [MIB]`: a follower catches up by a
 * snapshot. One follower is stopped (SIGSTOP) while MIB MiB of 64 KiB values and 6,000 small
 * puts go in, so the leader's log moves past it (both systems run with --snapshot-count 1000
 * and keep 5,000 entries after it, etcd's fixed catch-up count); then it is continued and we
 * time until it serves the last key (a serializable read on it), sampling every member's RSS
 * every 10 ms. What it shows: how much memory sending and receiving a snapshot costs each
 * side beyond its state (the leader's RSS rise; etcd streams its bbolt file).
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { EtcdBenchClient } from './client.js';
import { rssKiB } from './proc.js';
import { parseSystem, runProbe, withProbeCluster } from './probe.js';
import { closedLoop } from './workload.js';

const LARGE_VALUE_BYTES = 64 * 1024;
const SMALL_PUTS = 6_000;
const CATCH_UP_TIMEOUT_MS = 180_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Bytes of the largest file under `dir` whose name passes `wanted` (the snapshot, or etcd's db). */
function largestFile(dir: string, wanted: (name: string) => boolean): number {
  let best = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !wanted(e.name)) continue;
    best = Math.max(best, statSync(join(e.parentPath, e.name)).size);
  }
  return best;
}

async function main(): Promise<void> {
  const system = parseSystem(process.argv[2]);
  const mib = Number(process.argv[3] ?? 200);
  if (!(Number.isInteger(mib) && mib >= 1 && mib <= 2048)) throw new Error('MIB must be 1..2048');
  const memberArgs = system === 'etcd' ? ['--snapshot-count', '1000'] : ['--snapshot-count', '1000', '--snapshot-catchup-entries', '5000'];
  await withProbeCluster(system, 4, async ({ writer, pids, endpoints, dataDirs, logTails }) => {
    const followerPid = pids[2]!;
    const follower = new EtcdBenchClient(endpoints[2]!, 1);
    await follower.connect();
    try {
      process.kill(followerPid, 'SIGSTOP');
      const large = Buffer.alloc(LARGE_VALUE_BYTES, 7);
      const bigPuts = Math.ceil((mib * 1024 * 1024) / LARGE_VALUE_BYTES);
      let n = 0;
      const loaded = await closedLoop(8, 600_000, bigPuts, () => writer.put(Buffer.from(`big/${n++}`), large).then(() => undefined));
      const small = Buffer.alloc(16, 1);
      const smallLoad = await closedLoop(16, 600_000, SMALL_PUTS, () => writer.put(Buffer.from(`small/${n++}`), small).then(() => undefined));
      if (loaded.errors + smallLoad.errors > 0) throw new Error(`load failed: ${loaded.firstError ?? smallLoad.firstError}`);
      const lastKey = Buffer.from('last');
      await writer.put(lastKey, small);
      await sleep(2_000); // let the leader settle (snapshot count reached, log compacted)
      const base = pids.map((p) => rssKiB(p) ?? 0);
      const peak = [...base];
      const sampler = setInterval(() => pids.forEach((p, i) => (peak[i] = Math.max(peak[i]!, rssKiB(p) ?? 0))), 10);
      const started = Date.now();
      process.kill(followerPid, 'SIGCONT');
      let caughtUp = false;
      while (Date.now() - started < CATCH_UP_TIMEOUT_MS) {
        if ((await follower.get(lastKey, 0, true).catch(() => 0)) === 1) {
          caughtUp = true;
          break;
        }
        await sleep(20);
      }
      const ms = Date.now() - started;
      clearInterval(sampler);
      const snapFile = system === 'etcd' ? largestFile(dataDirs[0]!, (n) => n === 'db') : largestFile(join(dataDirs[0]!, 'raft', 'snap'), (n) => n.endsWith('.snap'));
      const mb = (kib: number): string => (kib / 1024).toFixed(0);
      process.stdout.write(
        `${system}: ${mib} MiB in ${bigPuts} values + ${SMALL_PUTS} small puts; leader's ${system === 'etcd' ? 'db' : 'snapshot'} file ${(snapFile / 2 ** 20).toFixed(0)} MiB; ` +
          `follower ${caughtUp ? 'caught up' : 'NOT caught up'} in ${ms} ms\n` +
          `  RSS before -> peak during catch-up, MiB: leader ${mb(base[0]!)} -> ${mb(peak[0]!)} (+${mb(peak[0]! - base[0]!)}), ` +
          `other follower ${mb(base[1]!)} -> ${mb(peak[1]!)}, catching-up follower ${mb(base[2]!)} -> ${mb(peak[2]!)} (+${mb(peak[2]! - base[2]!)})\n`,
      );
      for (const [i, tail] of logTails.entries()) {
        for (const line of tail.join('').split('\n')) if (/snapshot/i.test(line)) process.stdout.write(`  member ${i}: ${line.slice(0, 300)}\n`);
      }
      if (!caughtUp) process.exitCode = 1;
    } finally {
      try {
        process.kill(followerPid, 'SIGCONT');
      } catch {
        // already gone
      }
      follower.close();
    }
  }, memberArgs);
}

runProbe(main);
