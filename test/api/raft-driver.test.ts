/**
 * RaftDriver with real timers: three in-process nodes on an in-memory transport elect a
 * leader, commit proposals made on any node, serve read barriers, and survive the leader
 * being cut off (its pending proposals fail fast with LEADER_CHANGED or TIMEOUT).
 */
import t from 'tap';
import { MemoryPersistence, RaftDriver, RaftDriverError } from '../../core/api/raft-driver.js';
import { Message, Role, bootstrap } from '../../core/raft/index.js';
import { Prng } from '../../core/sim/prng.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

function cluster(n: number) {
  const drivers = new Map<number, RaftDriver>();
  const applied = new Map<number, string[]>();
  const cut = new Set<number>();
  const rng = new Prng(7);
  for (let id = 1; id <= n; id++) {
    const p = new MemoryPersistence();
    bootstrap(p.storage, Array.from({ length: n }, (_, i) => i + 1));
    const log: string[] = [];
    applied.set(id, log);
    const d = new RaftDriver(
      { id, storage: p.storage, random: rng.fork(), electionTicks: 10, heartbeatTicks: 1 },
      p,
      {
        send: (msgs: Message[]) => {
          for (const m of msgs) {
            if (cut.has(m.from) || cut.has(m.to)) continue;
            const copy = structuredClone(m);
            setImmediate(() => drivers.get(m.to)?.step(copy));
          }
        },
      },
      { apply: (_e, payload) => { const v = dec.decode(payload); log.push(v); return `applied:${v}`; }, restore: () => undefined },
      { tickMs: 10, requestTimeoutMs: 5000 },
    );
    drivers.set(id, d);
  }
  return { drivers, applied, cut };
}

async function waitFor<T>(what: string, fn: () => T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

t.test('three drivers elect, commit from any node, read, and fail over', async (t) => {
  const { drivers, applied, cut } = cluster(3);
  for (const d of drivers.values()) d.start();
  t.teardown(() => { for (const d of drivers.values()) d.stop(); });
  const leaderId = await waitFor('a leader', () => [...drivers.entries()].find(([, d]) => d.node.status().role === Role.Leader)?.[0]);
  t.ok(leaderId, `leader ${leaderId} elected`);

  // A proposal on a follower is forwarded to the leader and resolves with the result here.
  const follower = [...drivers.keys()].find((id) => id !== leaderId)!;
  // A follower forwards proposals only once it has heard from the new leader (before that
  // Raft answers "no leader", as etcd does, and a client retries).
  await waitFor('the follower to know the leader', () => drivers.get(follower)!.node.status().lead === leaderId || undefined);
  t.equal(await drivers.get(follower)!.propose(enc.encode('a')), 'applied:a');
  t.equal(await drivers.get(leaderId)!.propose(enc.encode('b')), 'applied:b');
  await drivers.get(follower)!.readBarrier();
  t.same(applied.get(follower)!.slice(-2), ['a', 'b'], 'after a read barrier the follower has applied everything acknowledged');

  // Cut the leader off: its proposal cannot commit; the rest elect a new leader and go on.
  cut.add(leaderId);
  const stuck = drivers.get(leaderId)!.propose(enc.encode('lost?'));
  const err = await stuck.then(() => undefined, (e) => e as RaftDriverError);
  t.ok(err instanceof RaftDriverError && ['LEADER_CHANGED', 'TIMEOUT'].includes(err.code), `cut-off leader's proposal fails (${err?.code})`);
  const newLeader = await waitFor('a new leader', () => [...drivers.entries()].find(([id, d]) => id !== leaderId && d.node.status().role === Role.Leader)?.[0]);
  t.not(newLeader, leaderId);
  t.equal(await drivers.get(newLeader)!.propose(enc.encode('c')), 'applied:c');
  cut.clear();
  await waitFor('old leader catches up', () => applied.get(leaderId)!.includes('c'));
  t.same(applied.get(leaderId), applied.get(newLeader), 'every node applied the same sequence');
});
