/**
 * Faults on real processes: three agents on loopback under a concurrent put/get/CAS
 * workload while, for ROUNDS rounds, the leader is killed with SIGKILL (and restarted), a
 * follower is frozen with SIGSTOP (and resumed) or a node is restarted. The client
 * history is checked with core/sim's linearizability checker: no acknowledged write may be
 * lost and every read must be explainable. After each leader kill a new leader must
 * appear within three election timeouts.
 */
import t from 'tap';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkLinearizability } from '../../core/sim/linearizability.js';
import { HistoryRecorder } from '../../core/sim/history.js';
import { Prng } from '../../core/sim/prng.js';
import { AgentCluster, AgentProc, hasEtcdctl, hashKvOfEachAgent } from '../helpers/agents.js';
import { SimpleKv, writeNotApplied } from '../helpers/kv-client.js';

const ROUNDS = 20;
const TICK_MS = 50;
const ELECTION_TICKS = 10;
/** etcd's meaning: followers wait a randomized [1, 2) × this before campaigning. */
const ELECTION_TIMEOUT_MS = TICK_MS * ELECTION_TICKS;
/** Followers campaign after up to twice the base timeout; "three election timeouts" uses that maximum. */
const ELECTION_TIMEOUT_MAX_MS = 2 * ELECTION_TIMEOUT_MS;
const CLIENTS = 4;
const KEYS = ['k0', 'k1', 'k2'];
const TEST_DEADLINE_MS = 150_000;
/**
 * Far below the defaults, so the log is compacted many times a run and a follower that was
 * stopped (the test writes enough while it is) or restarted is behind its start: it gets a
 * snapshot made for it, which the kills interrupt at any point.
 */
const SNAPSHOT_COUNT = 20;
const SNAPSHOT_CATCHUP_ENTRIES = 5;

interface RaftStatus {
  id: string;
  lead: string;
  role: string;
  term: number;
}

async function status(a: AgentProc): Promise<RaftStatus | undefined> {
  try {
    const r = await fetch(`http://127.0.0.1:${a.ports.http}/v1/raft/status`, { signal: AbortSignal.timeout(300) });
    return r.ok ? ((await r.json()) as RaftStatus) : undefined;
  } catch {
    return undefined;
  }
}

const alive = (a: AgentProc): boolean => a.proc !== undefined && a.proc.exitCode === null && a.proc.signalCode === null;

t.test('linearizable under kill -9 of the leader, SIGSTOP of a follower and restarts', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const started = Date.now();
  const cluster = new AgentCluster(['--tick-ms', String(TICK_MS), '--election-ticks', String(ELECTION_TICKS), '--snapshot-count', String(SNAPSHOT_COUNT), '--snapshot-catchup-entries', String(SNAPSHOT_CATCHUP_ENTRIES)]);
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['f1', 'f2', 'f3']);
  const rng = new Prng(Number(process.env.FAULT_SEED ?? 42));
  const history = new HistoryRecorder();
  const now = (): number => performance.now();
  let running = true;
  let writes = 0;
  let refusedWrites = 0;

  const clients = Array.from({ length: CLIENTS }, (_, c) => {
    const conns = cluster.agents.map((a) => new SimpleKv(`127.0.0.1:${a.ports.client}`));
    return { id: c, conns };
  });
  t.teardown(() => clients.forEach((c) => c.conns.forEach((k) => k.close())));

  const worker = async (c: (typeof clients)[number]): Promise<void> => {
    let n = 0;
    while (running) {
      const kv = c.conns[rng.int(c.conns.length)]!;
      const key = rng.pick(KEYS);
      const roll = rng.next();
      if (roll < 0.4) {
        const h = history.invoke(c.id, key, 'get', {}, now());
        try {
          history.ok(h, { value: await kv.get(key) }, now());
        } catch {
          history.fail(h, now()); // a failed read changed nothing
        }
      } else if (roll < 0.75) {
        const value = `c${c.id}-${n++}`;
        const h = history.invoke(c.id, key, 'put', { value }, now());
        try {
          await kv.put(key, value);
          history.ok(h, {}, now());
          writes++;
        } catch (e) {
          // Refused before any log held it: failed. Otherwise it may or may not have been applied.
          if (writeNotApplied(e)) {
            history.fail(h, now());
            refusedWrites++;
          } else history.indeterminate(h);
        }
      } else {
        const value = `c${c.id}-${n++}`;
        const expected = rng.chance(0.5) ? null : `c${rng.int(CLIENTS)}-${rng.int(Math.max(1, n))}`;
        const h = history.invoke(c.id, key, 'cas', { expected, value }, now());
        try {
          const ok = await kv.cas(key, expected, value);
          history.ok(h, { ok }, now());
        } catch (e) {
          if (writeNotApplied(e)) {
            history.fail(h, now());
            refusedWrites++;
          } else history.indeterminate(h);
        }
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  const workers = clients.map((c) => worker(c));

  const electionTimes: number[] = [];
  const actions: string[] = [];
  for (let round = 0; round < ROUNDS && Date.now() - started < TEST_DEADLINE_MS; round++) {
    await new Promise((r) => setTimeout(r, 400));
    const statuses = await Promise.all(cluster.agents.map(async (a) => ({ a, s: alive(a) ? await status(a) : undefined })));
    const leader = statuses.find((x) => x.s?.role === 'leader')?.a;
    const action = round % 3 === 0 || !leader ? 'kill-leader' : round % 3 === 1 ? 'stop-follower' : 'restart-node';
    if (action === 'kill-leader' && leader) {
      const oldLeadId = statuses.find((x) => x.a === leader)!.s!.id;
      cluster.kill(leader, 'SIGKILL');
      const killedAt = Date.now();
      const others = cluster.agents.filter((a) => a !== leader);
      let newLeaderMs: number | undefined;
      while (Date.now() - killedAt < 10 * ELECTION_TIMEOUT_MS) {
        const ss = await Promise.all(others.map((a) => status(a)));
        if (ss.some((s) => s?.role === 'leader' && s.id !== oldLeadId)) {
          newLeaderMs = Date.now() - killedAt;
          break;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      electionTimes.push(newLeaderMs ?? Infinity);
      actions.push(`kill ${leader.name}: new leader after ${newLeaderMs ?? 'none'} ms`);
      await new Promise((r) => setTimeout(r, 300));
      cluster.start(leader, false);
    } else if (action === 'stop-follower') {
      const follower = rng.pick(cluster.agents.filter((a) => a !== leader && alive(a)));
      cluster.kill(follower, 'SIGSTOP');
      // Push the log past it, so it needs a snapshot when it comes back even where the
      // workload alone writes too little in the pause (a slow CI machine did).
      const filler = clients[0]!.conns[cluster.agents.indexOf(leader!)]!;
      for (let i = 0; i < SNAPSHOT_COUNT + SNAPSHOT_CATCHUP_ENTRIES + 5; i++) await filler.put('filler', String(i)).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 2 * ELECTION_TIMEOUT_MS));
      cluster.kill(follower, 'SIGCONT');
      actions.push(`stop/cont ${follower.name}`);
    } else {
      const victim = rng.pick(cluster.agents.filter(alive));
      cluster.kill(victim, 'SIGKILL');
      await new Promise((r) => setTimeout(r, 200));
      cluster.start(victim, false);
      actions.push(`restart ${victim.name}`);
    }
    for (const a of cluster.agents) if (alive(a)) await cluster.ready(a, 20_000);
  }
  running = false;
  await Promise.all(workers);

  // Final linearizable reads of every key are part of the history: a lost acknowledged
  // write would make them unexplainable.
  for (const a of cluster.agents) await cluster.ready(a, 20_000);
  const finalKv = clients[0]!.conns[0]!;
  for (const key of KEYS) {
    for (let attempt = 0; attempt < 20; attempt++) {
      const h = history.invoke(99, key, 'get', {}, now());
      try {
        history.ok(h, { value: await finalKv.get(key) }, now());
        break;
      } catch {
        history.fail(h, now());
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  // Every member ends with the same key space (snapshot installs and restarts included).
  const end = await hashKvOfEachAgent(cluster, [], 20_000);
  t.equal(new Set(end.revisions).size, 1, `members caught up to one revision (${end.revisions.join(', ')})`);
  t.equal(new Set(end.hashes).size, 1, `and hash their key space alike (etcdctl endpoint hashkv: ${end.hashes.join(', ')})`);

  if (process.env.FAULT_HISTORY_OUT) writeFileSync(process.env.FAULT_HISTORY_OUT, JSON.stringify(history.ops));
  const acked = history.ops.filter((o) => o.status === 'ok').length;
  t.ok(actions.length >= ROUNDS, `${actions.length} fault rounds: ${actions.join('; ')}`);
  const indeterminate = history.ops.filter((o) => o.status === 'indeterminate').length;
  t.ok(writes > 50, `${writes} acknowledged puts, ${acked} acknowledged operations of ${history.ops.length}; ${refusedWrites} writes refused before the log, ${indeterminate} indeterminate`);
  const result = checkLinearizability(history.ops);
  t.equal(result.verdict, 'ok', `history of ${history.ops.length} ops is linearizable${result.verdict === 'violation' ? ': ' + JSON.stringify(result.keys.find((k) => k.verdict !== 'ok')?.detail) : ''}`);
  // Teeth: the same history with one read turned stale must be reported as a violation.
  // Stale means provably overwritten: W1 acknowledged, then a second acknowledged write W2
  // invoked after W1 returned and finished before the read began (values are unique, so
  // nothing can have written W1's value again). The earliest such read is used: refuting a
  // read late in a long history with many indeterminate writes exceeds the search budget
  // ('unknown', never 'ok').
  const written = (o: (typeof history.ops)[number]): string | undefined =>
    o.status === 'ok' && (o.op === 'put' || (o.op === 'cas' && o.output?.ok === true)) ? (o.input.value ?? undefined) : undefined;
  let tamperedCaught: boolean | undefined;
  const reads = history.ops.filter((o) => o.op === 'get' && o.status === 'ok').sort((a, b) => a.call - b.call);
  for (const read of reads) {
    const w1 = history.ops.find((a) => a.key === read.key && written(a) !== undefined && written(a) !== read.output?.value &&
      history.ops.some((b) => b.key === read.key && written(b) !== undefined && b !== a && b.call > a.return! && b.return! < read.call));
    if (!w1) continue;
    const tampered = history.ops.map((o) => (o === read ? { ...o, output: { value: written(w1)! } } : o));
    const verdict = checkLinearizability(tampered).verdict;
    tamperedCaught = verdict === 'violation';
    t.ok(tamperedCaught, `a read of ${read.key} turned stale (${written(w1)}) is caught (verdict ${verdict})`);
    break;
  }
  t.not(tamperedCaught, undefined, 'found a provably stale value to tamper with');
  // The comment on SNAPSHOT_COUNT holds only if snapshots were made and sent under the kills.
  const snapshotFiles = cluster.agents.map((a) => readdirSync(join(a.dataDir, 'raft', 'snap')).filter((f) => f.endsWith('.snap')));
  t.ok(snapshotFiles.some((fs) => fs.length > 0), `snapshots were made for lagging followers: ${snapshotFiles.map((fs) => fs.join(' ') || 'none').join('; ')}`);
  const installs = cluster.agents.map((a) => a.log.join('').split('installed a snapshot received from the leader').length - 1);
  t.ok(installs.some((n) => n > 0), `and streamed to them and installed (installs per member: ${installs.join(', ')})`);
  const bound = 3 * ELECTION_TIMEOUT_MAX_MS;
  t.ok(electionTimes.length >= 5, `${electionTimes.length} leader kills`);
  t.ok(electionTimes.every((ms) => ms <= bound), `new leader within 3 election timeouts (${bound} ms) each time: ${electionTimes.join(', ')} ms`);
});
