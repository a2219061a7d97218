/**
 * Watches under faults, as etcd's robustness tests check them: three agents under the fault
 * workload (plus multi-key txns and prefix deletes) while the leader is killed, a follower is
 * stopped and members restart; watchers through each member (a key, prefixes, the whole key
 * space, one from a past revision, some with prev_kv, one asking for progress) reopen where they
 * left off, on the next member, whenever their stream breaks (a rolling restart makes sure each
 * does). Then one member is cut off (the others SIGSTOPped): its require-leader watcher must be ended with "no leader" and resume
 * elsewhere. At the end the full history, read once, is the reference for watch-check.ts.
 */
import t, { type Test } from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Prng } from '../../core/sim/prng.js';
import { NO_LEADER_CHECK_MS, NO_LEADER_CHECKS } from '../../core/net/etcd/server.js';
import { AgentCluster, AgentProc, hasEtcdctl, leaderAgent, raftStatus } from '../helpers/agents.js';
import { FaultWorkload } from '../helpers/fault-workload.js';
import { SimpleKv, prefixEnd } from '../helpers/kv-client.js';
import { ResumingWatcher, readHistory } from '../helpers/watch-client.js';
import { checkAckedWrites, checkWatcher, inRange, type WatchEv, type WatchRecord, type WatchSpec } from '../helpers/watch-check.js';
import { until } from '../helpers/wait.js';

const ROUNDS = 6;
const TICK_MS = 50;
const ELECTION_TICKS = 10;
const ELECTION_TIMEOUT_MAX_MS = 2 * TICK_MS * ELECTION_TICKS;
/** For the fault rounds (a loaded machine runs fewer; the rolling restart after them always runs). */
const ROUNDS_DEADLINE_MS = 30_000;
/** Rounds that must have run for the test to mean anything. */
const MIN_ROUNDS = 3;
/** Ended within the no-leader checks, after the election timeout that makes the member leaderless, plus slack. */
const NO_LEADER_BOUND_MS = (NO_LEADER_CHECKS + 1) * NO_LEADER_CHECK_MS + ELECTION_TIMEOUT_MAX_MS + 1_500;
const TXN_KEYS = ['t/a', 't/b', 't/c'];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const alive = (a: AgentProc): boolean => a.proc !== undefined && a.proc.exitCode === null && a.proc.signalCode === null;

/** Multi-key writes (one revision, several events) and prefix deletes, until stopped: acknowledged ones in `acked`. */
function txnWriter(kv: SimpleKv[], rng: Prng, acked: Array<{ key: string; value: string; revision: number }>): { stop(): Promise<void> } {
  let running = true;
  const done = (async () => {
    for (let n = 0; running && n < 100_000; n++) {
      const c = rng.pick(kv);
      try {
        if (n % 4 === 3) await c.deletePrefix('t/');
        else {
          const value = `txn-${n}`;
          const revision = await c.putAll(TXN_KEYS, value);
          for (const key of TXN_KEYS) acked.push({ key, value, revision });
        }
      } catch {
        // indeterminate or refused: the reference decides
      }
      await sleep(20);
    }
  })();
  return { stop: async () => ((running = false), await done) };
}

/** One fault: kill the leader (restarted after a new one is elected), stop a follower for a while, or restart a member. */
async function faultRound(cluster: AgentCluster, round: number, rng: Prng): Promise<string> {
  const statuses = await Promise.all(cluster.agents.map(async (a) => ({ a, s: alive(a) ? await raftStatus(a) : undefined })));
  const leader = statuses.find((x) => x.s?.role === 'leader')?.a;
  if (round % 3 === 0 || !leader) {
    const victim = leader ?? rng.pick(cluster.agents);
    cluster.kill(victim, 'SIGKILL');
    await until('a new leader', async () => (await Promise.all(cluster.agents.filter((a) => a !== victim).map(raftStatus))).some((s) => s?.role === 'leader'), 10_000);
    cluster.start(victim, false);
    return `kill ${victim.name}`;
  }
  if (round % 3 === 1) {
    const follower = rng.pick(cluster.agents.filter((a) => a !== leader));
    cluster.kill(follower, 'SIGSTOP');
    await sleep(2 * ELECTION_TIMEOUT_MAX_MS);
    cluster.kill(follower, 'SIGCONT');
    return `stop/cont ${follower.name}`;
  }
  const victim = rng.pick(cluster.agents);
  cluster.kill(victim, 'SIGKILL');
  await sleep(200);
  cluster.start(victim, false);
  return `restart ${victim.name}`;
}

/** The watchers: through the leader (index `lead`) and the followers, over the kinds etcd's tests use. */
function watcherSpecs(): Array<{ spec: WatchSpec; member: 'leader' | 'follower' }> {
  return [
    { member: 'leader', spec: { name: 'key k0 via leader', key: 'k0', requireLeader: true } },
    { member: 'follower', spec: { name: 'prefix t/ via follower, prev_kv', key: 't/', rangeEnd: prefixEnd('t/'), prevKv: true } },
    { member: 'follower', spec: { name: 'all keys via follower, prev_kv', key: '\0', rangeEnd: '\0', prevKv: true, requireLeader: true } },
    { member: 'leader', spec: { name: 'all keys from revision 2 via leader', key: '\0', rangeEnd: '\0', startRevision: 2 } },
    { member: 'follower', spec: { name: 'prefix k via follower, progress', key: 'k', rangeEnd: prefixEnd('k'), progressNotify: true, requireLeader: true } },
    { member: 'leader', spec: { name: 'key t/b via leader, prev_kv, fragment', key: 't/b', prevKv: true, fragment: true } },
  ];
}

/** Cuts `member` off (the others SIGSTOPped) until its require-leader watcher is ended with "no leader": how long that took. */
async function cutOff(cluster: AgentCluster, member: AgentProc, w: ResumingWatcher): Promise<number | undefined> {
  const others = cluster.agents.filter((a) => a !== member);
  const endpoint = `127.0.0.1:${member.ports.client}`;
  const before = w.breaks.length;
  for (const a of others) cluster.kill(a, 'SIGSTOP');
  const stoppedAt = Date.now();
  try {
    const ended = await until('no-leader end', () => w.breaks.slice(before).find((b) => b.member === endpoint && b.reason === 'etcdserver: no leader'), NO_LEADER_BOUND_MS + 3_000).catch(() => undefined);
    return ended === undefined ? undefined : ended.at - stoppedAt;
  } finally {
    for (const a of others) cluster.kill(a, 'SIGCONT');
  }
}

/** Each watcher's violations; and that the checks catch a dropped, a duplicated and a split event. */
function checkAll(t: Test, records: WatchRecord[], reference: WatchEv[]): void {
  for (const w of records) {
    const events = w.responses.reduce((n, r) => n + r.events.length, 0);
    const sessions = new Set(w.responses.map((r) => r.session)).size;
    const v = checkWatcher(w, reference);
    t.same(v, [], `${w.name}: ${events} events over ${sessions} streams, from revision ${w.firstRev}: ordered, unique, atomic, complete, prev_kv, progress`);
  }
  const all = records.find((w) => w.rangeEnd === '\0' && w.prevKv === true)!;
  const multi = all.responses.findIndex((r) => r.events.length > 1 && r.events.every((e) => e.modRev === r.events[0]!.modRev));
  t.ok(multi >= 0, `${all.name} got a revision of several events`);
  if (multi < 0) return;
  const tampered = (f: (rs: WatchRecord['responses']) => void): WatchRecord => {
    const rs = all.responses.map((r) => ({ ...r, events: [...r.events] }));
    f(rs);
    return { ...all, responses: rs };
  };
  t.not(checkWatcher(tampered((rs) => rs[multi]!.events.pop()), reference).length, 0, 'teeth: one event of a fan-out dropped is caught');
  t.not(checkWatcher(tampered((rs) => rs.splice(multi + 1, 0, rs[multi]!)), reference).length, 0, 'teeth: a response delivered twice is caught');
  t.not(checkWatcher(tampered((rs) => rs.splice(multi + 1, 0, { ...rs[multi]!, events: [rs[multi]!.events.pop()!] })), reference).length, 0, 'teeth: a revision split in two responses is caught');
  const withPrev = tampered((rs) => (rs[multi]!.events[0] = { ...rs[multi]!.events[0]!, prev: { value: 'not-its-prev', modRev: 1 } }));
  t.not(checkWatcher(withPrev, reference).length, 0, 'teeth: a wrong prev_kv is caught');
}

t.test('watches keep etcd guarantees under kills, stops, restarts and a cut-off member', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const started = Date.now();
  const phases: string[] = []; // how long each part took, for a run that was slow
  const phase = (name: string): number => phases.push(`${name} at ${Date.now() - started} ms`);
  const cluster = new AgentCluster(['--tick-ms', String(TICK_MS), '--election-ticks', String(ELECTION_TICKS), '--snapshot-count', '50', '--auto-compaction-mode', 'off']);
  t.teardown(() => cluster.stopAll());
  if (process.env.FAULT_LOG_DIR) t.teardown(() => cluster.agents.forEach((a) => writeFileSync(join(process.env.FAULT_LOG_DIR!, `${a.name}.log`), a.log.join(''))));
  await cluster.startCluster(['w1', 'w2', 'w3']);
  const endpoints = cluster.agents.map((a) => `127.0.0.1:${a.ports.client}`);
  const rng = new Prng(Number(process.env.FAULT_SEED ?? 7));
  const kvs = endpoints.map((e) => new SimpleKv(e));
  t.teardown(() => kvs.forEach((k) => k.close()));
  for (let i = 0; i < 5; i++) await kvs[0]!.put(`k${i % 3}`, `init-${i}`); // history before the past-revision watcher's start

  const leader = cluster.agents.indexOf(await leaderAgent(cluster));
  const followers = [0, 1, 2].filter((i) => i !== leader);
  const watchers = watcherSpecs().map(({ spec, member }, i) => new ResumingWatcher(endpoints, member === 'leader' ? leader : followers[i % 2]!, spec));
  t.teardown(() => Promise.all(watchers.map((w) => w.close())));
  await Promise.all(watchers.map((w) => w.created));
  phase('cluster and watchers up');

  const workload = new FaultWorkload(endpoints, rng);
  t.teardown(() => workload.close());
  const txns = txnWriter(kvs, rng, workload.ackedWrites);
  t.teardown(() => txns.stop());
  const actions: string[] = [];
  const roundsStarted = Date.now();
  for (let round = 0; round < ROUNDS && Date.now() - roundsStarted < ROUNDS_DEADLINE_MS; round++) {
    await sleep(400);
    actions.push(await faultRound(cluster, round, rng));
    for (const a of cluster.agents) await cluster.ready(a, 20_000);
  }
  phase(`${actions.length} rounds done`);
  // A rolling restart, so every watcher's stream breaks at least once whatever the rounds hit.
  for (const a of cluster.agents) {
    cluster.kill(a, 'SIGKILL');
    await sleep(200);
    cluster.start(a, false);
    for (const b of cluster.agents) await cluster.ready(b, 20_000);
    actions.push(`restart ${a.name}`);
  }
  t.ok(actions.length >= MIN_ROUNDS + cluster.agents.length, `fault rounds: ${actions.join('; ')}`);

  phase('rolling restart done');
  // Cut one member off; its require-leader watcher must learn it and move on.
  const isolated = cluster.agents[followers[0]!]!;
  const cutWatcher = new ResumingWatcher(endpoints, followers[0]!, { name: `all keys via ${isolated.name}, cut off`, key: '\0', rangeEnd: '\0', prevKv: true, requireLeader: true });
  watchers.push(cutWatcher);
  // On that member itself: its first try may fail while the channel backs off from the restart.
  const isolatedEndpoint = endpoints[followers[0]!]!;
  await until(`a watch on ${isolated.name}`, () => cutWatcher.record.responses.some((r) => r.kind === 'created' && r.member === isolatedEndpoint && r.session === cutWatcher.sessions), 15_000);
  const endedMs = await cutOff(cluster, isolated, cutWatcher);
  t.ok(endedMs !== undefined && endedMs <= NO_LEADER_BOUND_MS, `the cut-off member ended its require-leader watch with "no leader" after ${endedMs} ms (bound ${NO_LEADER_BOUND_MS} ms)`);
  for (const a of cluster.agents) await cluster.ready(a, 20_000);
  await sleep(500); // writes after the cut-off, for the watchers that resumed elsewhere

  phase('cut-off done');
  await txns.stop();
  await workload.stop();
  const endRev = await until('a revision', () => kvs[leader]!.revision().catch(() => undefined), 10_000);
  const reference = await readHistory(endpoints[(leader + 1) % 3]!, endRev);
  t.ok(reference.length > 200, `reference history: ${reference.length} events to revision ${endRev}`);

  phase('reference read');
  // Each watcher catches up to the last event in its range before the checks.
  for (const w of watchers) {
    const last = reference.filter((e) => inRange(e.key, w.spec)).at(-1)?.modRev ?? 0;
    await until(`${w.spec.name} at revision ${last}`, () => w.lastEventRev >= last, 15_000).catch((e: Error) => t.fail(e.message));
  }
  t.comment(watchers.map((w) => `${w.spec.name}: ${w.breaks.length} breaks (${[...new Set(w.breaks.map((b) => b.reason))].join(' | ')})`).join('\n'));
  t.ok(watchers.every((w) => w.breaks.length > 0), 'every watcher\'s stream was broken and resumed');
  await Promise.all(watchers.map((w) => w.close()));

  checkAll(t, watchers.map((w) => w.record), reference);
  t.same(checkAckedWrites(workload.ackedWrites, reference), [], `every one of ${workload.ackedWrites.length} acknowledged writes is in the history at its revision`);
  phase('checked');
  t.comment(phases.join('; '));
});
