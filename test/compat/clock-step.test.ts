/**
 * Wall-clock steps on real agents. A Raspberry Pi has no real-time clock: it boots with a stale
 * time and NTP steps it when it first syncs, forward by hours or years, sometimes back. Three
 * agents run under libfaketime (LD_PRELOAD, Debian's `faketime` package) with only the wall
 * clock faked, and the test steps it every STEP_EVERY_MS between -1 day and +3 years for the
 * whole run. Everything that keeps time must use the monotonic clock; the test covers:
 *
 * - forming the cluster (each join is a membership change with a deadline) and `move-leader`;
 * - a lease without keep-alives lives out its TTL, no less and not much more; one kept alive
 *   (`etcdctl lease keep-alive --once`) never expires;
 * - the put/get/CAS workload stays linearizable and every member ends with the same key space;
 * - gossip keeps probing at its interval and declares nobody dead (probe and suspicion timers);
 * - SIGTERM on the leader hands leadership over first (a deadline too) and exits cleanly.
 *
 * The agents' own log lines (pino stamps them with the wall clock) show that the steps reached
 * them.
 */
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { LOCAL_CONFIG } from '../../core/gossip/config.js';
import { Prng } from '../../core/sim/prng.js';
import { AgentCluster, AgentProc, etcdctl, hasEtcdctl, hashKvOfEachAgent, raftStatus, scrapeMetrics } from '../helpers/agents.js';
import { FaultWorkload } from '../helpers/fault-workload.js';

const LIBFAKETIME = ['x86_64-linux-gnu', 'aarch64-linux-gnu', 'arm-linux-gnueabihf']
  .map((arch) => `/usr/lib/${arch}/faketime/libfaketime.so.1`)
  .find((p) => existsSync(p));
/** Offsets from the real time, in libfaketime's syntax, cycled through. */
const OFFSETS = ['+3y', '-1d', '+90d', '+0', '+2h', '-1d'];
const STEP_EVERY_MS = 300;
const DAY_MS = 86_400_000;
const TICK_MS = 50;
const ELECTION_TICKS = 10;
const LEASE_TTL_S = 4;
/** The leader checks lease expiry every LEASE_TICK_MS (500 ms) and then commits the revoke. */
const LEASE_EXPIRY_SLACK_MS = 2_500;
const WORKLOAD_MS = 8_000;

const unavailable = !hasEtcdctl() ? 'etcdctl not installed' : LIBFAKETIME === undefined ? 'libfaketime not installed (apt-get install faketime)' : undefined;

/** The wall-clock stamps of `a`'s log lines (pino's "time", milliseconds since the epoch). */
function logTimes(a: AgentProc): number[] {
  return [...a.log.join('').matchAll(/"time":(\d{12,})/g)].map((m) => Number(m[1]));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('agents whose wall clock steps by days and years keep time by the monotonic clock', { skip: unavailable ?? false }, async (t) => {
  const cluster = new AgentCluster(['--tick-ms', String(TICK_MS), '--election-ticks', String(ELECTION_TICKS)]);
  const clockFile = join(cluster.root, 'clock-offset');
  writeFileSync(clockFile, '+0\n');
  let steps = 0;
  const stepper = setInterval(() => writeFileSync(clockFile, `${OFFSETS[steps++ % OFFSETS.length]}\n`), STEP_EVERY_MS);
  const wrap = [
    'env', `LD_PRELOAD=${LIBFAKETIME}`, `FAKETIME_TIMESTAMP_FILE=${clockFile}`,
    // Only the wall clock; the file is read on every call, so a step takes effect at once.
    'FAKETIME_DONT_FAKE_MONOTONIC=1', 'FAKETIME_NO_CACHE=1',
  ];
  t.teardown(async () => {
    clearInterval(stepper);
    const pids = cluster.agents.map((a) => a.proc?.pid);
    await cluster.stopAll();
    // libfaketime keeps a shared-memory pair per process, removed only on a clean exit.
    for (const pid of pids) for (const f of [`faketime_shm_${pid}`, `sem.faketime_sem_${pid}`]) rmSync(join('/dev/shm', f), { force: true });
  });
  process.env.PICLOUD_GOSSIP_PROFILE = 'local'; // probes every 200 ms: many timers cross each step
  await cluster.startCluster(['w1', 'w2', 'w3'], [0, 1, 2].map(() => ({ host: '127.0.0.1', wrap })));
  const all = cluster.endpoints();
  const clusterReady = performance.now();
  // Each agent's wall clock as it answers HTTP (the Date header), sampled through the run: log
  // lines come in bursts, and too few of them may fall in the steps that matter.
  const wallClocks: number[][] = cluster.agents.map(() => []);
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      await Promise.all(
        cluster.agents.map(async (a, i) => {
          try {
            const r = await fetch(`http://${a.host}:${a.ports.http}/health`, { signal: AbortSignal.timeout(1_000) });
            const date = r.headers.get('date');
            await r.arrayBuffer();
            if (date !== null) wallClocks[i]!.push(Date.parse(date));
          } catch {
            // a slow answer: the next sample
          }
        }),
      );
      await sleep(100);
    }
  })();
  t.teardown(() => {
    sampling = false;
  });

  const grant = (ttl: number): string => {
    const r = etcdctl(all, ['lease', 'grant', String(ttl)]);
    const id = /lease ([0-9a-f]+) granted/.exec(r.stdout)?.[1];
    if (id === undefined) throw new Error(`lease grant: ${r.stdout} ${r.stderr}`);
    return id;
  };
  const exists = (key: string): boolean => etcdctl(all, ['get', key, '--keys-only']).stdout.includes(key);

  const workload = new FaultWorkload(all.split(','), new Prng(Number(process.env.FAULT_SEED ?? 11)));
  t.teardown(() => workload.close());
  const workloadStarted = performance.now();

  const lapsing = grant(LEASE_TTL_S);
  const grantedAt = performance.now();
  t.equal(etcdctl(all, ['put', 'clock/lapsing', 'x', '--lease', lapsing]).status, 0);
  const kept = grant(LEASE_TTL_S);
  t.equal(etcdctl(all, ['put', 'clock/kept', 'x', '--lease', kept]).status, 0);

  // Keep one lease alive and watch the other lapse, sampling both every 250 ms. A leader
  // change meanwhile (a loaded machine) extends every lease by an election timeout: allowed.
  const highestTerm = async (): Promise<number> => Math.max(...(await Promise.all(cluster.agents.map(raftStatus))).map((s) => s?.term ?? 0));
  const termBefore = await highestTerm();
  let lapsedAfterMs: number | undefined;
  let keptLost = false;
  let keepAlives = 0;
  while (performance.now() - grantedAt < LEASE_TTL_S * 1000 + LEASE_EXPIRY_SLACK_MS + 2_000) {
    if (etcdctl(all, ['lease', 'keep-alive', '--once', kept]).status === 0) keepAlives++;
    if (!exists('clock/kept')) keptLost = true;
    if (lapsedAfterMs === undefined && !exists('clock/lapsing')) lapsedAfterMs = performance.now() - grantedAt;
    await sleep(250);
  }
  t.ok(lapsedAfterMs !== undefined, `the lease without keep-alives expired (after ${Math.round(lapsedAfterMs ?? -1)} ms, TTL ${LEASE_TTL_S} s)`);
  t.ok(lapsedAfterMs! >= LEASE_TTL_S * 1000, 'not before its TTL');
  const leaderChanged = (await highestTerm()) !== termBefore;
  // A new leader gives every lease its full TTL again, plus an election timeout.
  const slackMs = LEASE_EXPIRY_SLACK_MS + (leaderChanged ? LEASE_TTL_S * 1000 + TICK_MS * ELECTION_TICKS : 0);
  t.ok(lapsedAfterMs! <= LEASE_TTL_S * 1000 + slackMs, `within ${slackMs} ms after it${leaderChanged ? ' (the leader changed meanwhile)' : ''}`);
  t.ok(keepAlives > 5, `${keepAlives} keep-alives answered`);
  t.notOk(keptLost, 'the lease kept alive never expired');

  // Leadership moves on request, under the same steps.
  const status = JSON.parse(etcdctl(all, ['endpoint', 'status', '-w', 'json']).stdout) as Array<{ Status: { header: { member_id: string | number }; leader: string | number } }>;
  const leaderId = BigInt(status[0]!.Status.leader);
  const target = status.map((s) => BigInt(s.Status.header.member_id)).find((id) => id !== leaderId)!;
  const moved = etcdctl(all, ['move-leader', target.toString(16)]);
  t.equal(moved.status, 0, `move-leader to ${target.toString(16)}: ${moved.stdout.trim()} ${moved.stderr.slice(-300)}`);

  await sleep(Math.max(0, WORKLOAD_MS - (performance.now() - workloadStarted)));
  await workload.stop();
  workload.check(t, 50);
  const end = await hashKvOfEachAgent(cluster);
  t.equal(new Set(end.hashes).size, 1, `every member has the same key space at revision ${end.revisions.join(', ')}`);

  // SIGTERM on the leader: it hands leadership over first (a deadline on the clock too).
  const after = JSON.parse(etcdctl(all, ['endpoint', 'status', '-w', 'json']).stdout) as Array<{ Endpoint: string; Status: { header: { member_id: string | number }; leader: string | number } }>;
  const leaderEndpoint = after.find((s) => BigInt(s.Status.header.member_id) === BigInt(s.Status.leader))!.Endpoint;
  const leader = cluster.agents.find((a) => leaderEndpoint.endsWith(`:${a.ports.client}`))!;
  // Gossip's own counters: nobody declared dead, and probes kept going at their interval (a
  // step back must not postpone them). A probe can miss its 100 ms timeout on a loaded
  // machine, so failed probes and refuted suspicions are shown, not asserted.
  const minProbes = Math.floor((0.5 * (performance.now() - clusterReady)) / LOCAL_CONFIG.probeIntervalMs);
  for (const a of cluster.agents) {
    const m = await scrapeMetrics(a.ports.http);
    const count = (c: string): number => m.get(`picloud_gossip{counter="${c}"}`) ?? NaN;
    const probes = count('probes');
    t.equal(count('deathsDeclared'), 0, `${a.name}'s gossip declared nobody dead (${count('probeFailures')} failed probes, ${count('suspicionsRaised')} suspicions)`);
    t.ok(probes >= minProbes, `${a.name}'s gossip probed ${probes} times (at least ${minProbes})`);
  }
  sampling = false;
  await sampler;
  cluster.kill(leader, 'SIGTERM');
  t.equal(await cluster.exited(leader), 0, `the leader (${leader.name}) stopped cleanly`);
  t.match(leader.log.join(''), /handed leadership over before stopping/, 'after handing leadership over');

  // The steps reached the agents: their wall clocks went months ahead and a day behind, and their
  // log lines carry stamps days away from the real time.
  const now = Date.now();
  for (const [i, a] of cluster.agents.entries()) {
    const seen = wallClocks[i]!;
    t.ok(seen.some((x) => x > now + 80 * DAY_MS) && seen.some((x) => x < now - DAY_MS / 2), `${a.name}'s clock was months ahead and a day behind (${seen.length} samples)`);
  }
  const stamps = cluster.agents.flatMap(logTimes);
  t.ok(stamps.some((x) => Math.abs(x - now) > DAY_MS / 2), `log lines stamped at a stepped time (${stamps.length} lines)`);
  t.ok(steps > 20, `${steps} clock steps`);
});
