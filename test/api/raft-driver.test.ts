/**
 * RaftDriver with real timers: three in-process nodes on an in-memory transport elect a
 * leader, commit proposals made on any node, serve read barriers, and survive the leader
 * being cut off (its pending proposals fail fast with LEADER_CHANGED or TIMEOUT).
 */
import t from 'tap';
import { MemoryPersistence, RaftDriver, RaftDriverError, durablePrefix, type RaftPersistence } from '../../core/api/raft-driver.js';
import { Entry, Message, Role, bootstrap } from '../../core/raft/index.js';
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

t.test('durablePrefix: only committed entries below the first unsaved one', async (t) => {
  const e = (index: number) => ({ index, term: 1, type: 0, data: new Uint8Array() }) as unknown as Entry;
  t.equal(durablePrefix([e(5), e(6), e(7)], []), 3, 'nothing being saved: all of them');
  t.equal(durablePrefix([e(5), e(6), e(7)], [e(7), e(8)]), 2, 'stops at the first entry of this save');
  t.equal(durablePrefix([e(5)], [e(5)]), 0);
  t.equal(durablePrefix([], [e(1)]), 0);
});

t.test('committed entries are applied while a save is in flight, never before this node holds them', async (t) => {
  // Saves take a few ms (an fsync): the driver applies what is already durable meanwhile,
  // and must not apply an entry of the save still in flight (a follower learns a commit
  // index covering entries it has only just received).
  const SAVE_MS = 3;
  const n = 3;
  const drivers = new Map<number, RaftDriver>();
  const violations: string[] = [];
  let appliedDuringSave = 0;
  const cut = new Set<number>();
  const rng = new Prng(11);
  for (let id = 1; id <= n; id++) {
    const mem = new MemoryPersistence();
    bootstrap(mem.storage, [1, 2, 3]);
    let durableLast = mem.storage.lastIndex();
    let saving = 0;
    const slow: RaftPersistence = {
      storage: mem.storage,
      async save(batch, sync) {
        saving++;
        await new Promise((r) => setTimeout(r, SAVE_MS));
        await mem.save(batch);
        if (batch.entries.length > 0) durableLast = batch.entries[batch.entries.length - 1]!.index;
        saving--;
        void sync;
      },
    };
    const d = new RaftDriver(
      { id, storage: mem.storage, random: rng.fork(), electionTicks: 10, heartbeatTicks: 1 },
      slow,
      {
        send: (msgs: Message[]) => {
          for (const m of msgs) {
            if (cut.has(m.from) || cut.has(m.to)) continue;
            const c = structuredClone(m);
            setImmediate(() => drivers.get(m.to)?.step(c));
          }
        },
      },
      {
        apply: (e) => {
          if (e.index > durableLast) violations.push(`node ${id} applied ${e.index} with ${durableLast} durable`);
          if (saving > 0) appliedDuringSave++;
          return e.index;
        },
        restore: () => undefined,
      },
      { tickMs: 10, requestTimeoutMs: 5000 },
    );
    drivers.set(id, d);
  }
  for (const d of drivers.values()) d.start();
  t.teardown(() => { for (const d of drivers.values()) d.stop(); });
  const leaderId = await waitFor('a leader', () => [...drivers.entries()].find(([, d]) => d.node.status().role === Role.Leader)?.[0]);
  const leader = drivers.get(leaderId)!;
  // Keep proposals coming so saves overlap with commits. A follower cut off for the first
  // rounds then catches up on entries that are already committed: the leader's appends carry
  // them with a commit index that covers them, the case where applying early would be wrong.
  const lagging = [...drivers.keys()].find((id) => id !== leaderId)!;
  cut.add(lagging);
  for (let round = 0; round < 20; round++) {
    if (round === 10) cut.clear();
    await Promise.all(Array.from({ length: 8 }, (_, i) => leader.propose(enc.encode(`r${round}-${i}`))));
  }
  await waitFor('the lagging follower to catch up', () => drivers.get(lagging)!.node.status().applied >= leader.node.status().commit || undefined);
  t.same(violations, [], 'no member applied an entry before its own log held it');
  t.ok(appliedDuringSave > 0, `${appliedDuringSave} entries were applied while a save was in flight`);
});
