/**
 * RaftDriver with real timers: three in-process nodes on an in-memory transport elect a
 * leader, commit proposals made on any node, serve read barriers, and survive the leader
 * being cut off (its pending proposals fail fast with LEADER_CHANGED or TIMEOUT).
 */
import t, { type Test } from 'tap';
import { MemoryPersistence, RaftDriver, RaftDriverError, SnapshotRefusedError, durablePrefix, type RaftPersistence, type RaftTransport } from '../../core/api/raft-driver.js';
import { ConfChangeType, Entry, MemoryStorage, Message, MessageType, Role, Snapshot, bootstrap, emptyMessage } from '../../core/raft/index.js';
import { Prng } from '../../core/sim/prng.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * n drivers on an in-memory network (messages to or from a node in `cut` are dropped).
 * `persistence` wraps a node's memory persistence (e.g. to hold its saves).
 */
function cluster(n: number, requestTimeoutMs = 5000, persistence: (id: number, mem: MemoryPersistence) => RaftPersistence = (_id, mem) => mem, seed = 7) {
  const drivers = new Map<number, RaftDriver>();
  const applied = new Map<number, string[]>();
  const cut = new Set<number>();
  const rng = new Prng(seed);
  for (let id = 1; id <= n; id++) {
    const p = new MemoryPersistence();
    bootstrap(p.storage, Array.from({ length: n }, (_, i) => i + 1));
    const log: string[] = [];
    applied.set(id, log);
    const d = new RaftDriver(
      { id, storage: p.storage, random: rng.fork(), electionTicks: 10, heartbeatTicks: 1 },
      persistence(id, p),
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
      { tickMs: 10, requestTimeoutMs },
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
  // A follower forwards proposals once it has heard from the new leader (before that the
  // driver holds them: see the election tests below).
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

t.test('a proposal made while no leader is known waits for the election and is applied once, as etcd holds it', async (t) => {
  const { drivers, applied } = cluster(3);
  t.teardown(() => { for (const d of drivers.values()) d.stop(); });
  for (const d of drivers.values()) d.start();
  // Just started: no node has heard of a leader yet (Raft itself would refuse the proposal).
  const d1 = drivers.get(1)!;
  t.equal(d1.node.status().lead, 0, 'no leader known when proposing');
  t.equal(await d1.propose(enc.encode('early')), 'applied:early', 'applied once a leader was elected');
  await waitFor('every node to apply it', () => [...applied.values()].every((a) => a.includes('early')) || undefined);
  for (const [id, a] of applied) t.same(a.filter((v) => v === 'early'), ['early'], `node ${id} applied it exactly once`);
});

t.test('a parked proposal whose requester gave up before the election is dropped, never proposed', async (t) => {
  const { drivers, applied } = cluster(3);
  t.teardown(() => { for (const d of drivers.values()) d.stop(); });
  for (const d of drivers.values()) d.start();
  const d1 = drivers.get(1)!;
  t.equal(d1.node.status().lead, 0, 'no leader known when proposing');
  let clientWaits = true;
  const abandoned = d1.propose(enc.encode('abandoned'), { wanted: () => clientWaits }).then((v) => v, (e: RaftDriverError) => e.code);
  const kept = d1.propose(enc.encode('kept'), { wanted: () => true });
  clientWaits = false; // its client's deadline passed while the cluster elected
  t.equal(await kept, 'applied:kept', 'the one still wanted is applied');
  t.equal(await abandoned, 'DROPPED', 'the abandoned one fails as never proposed');
  await waitFor('every node to apply the kept one', () => [...applied.values()].every((a) => a.includes('kept')) || undefined);
  for (const [id, a] of applied) t.notOk(a.includes('abandoned'), `node ${id} never applied the abandoned one`);
});

t.test('a proposal held for a leader that never comes fails as DROPPED ("no leader": never applied), not as a timeout', async (t) => {
  const { drivers, applied, cut } = cluster(3, 400);
  t.teardown(() => { for (const d of drivers.values()) d.stop(); });
  cut.add(2);
  cut.add(3);
  const d1 = drivers.get(1)!;
  d1.start();
  const err = await d1.propose(enc.encode('never')).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof RaftDriverError && err.code === 'DROPPED', `fails as DROPPED (${String(err)})`);
  t.equal(d1.node.status().lead, 0, 'still no leader');
  t.same(applied.get(1), [], 'nothing applied');
});

for (const healFirst of [false, true]) t.test(`a proposal parked on a leader that stepped down is not failed with the leader's own proposals: it waits for the next leader (${healFirst ? 'healed before' : 'healed after'} the save ends)`, async (t) => {
  // The deposed leader's driver hears of the step-down only after a save it is waiting on
  // (a slow SD card): a proposal made in between finds Raft with no leader and is parked. The
  // driver's "leader changed" failure is for what it proposed as leader, not for that one, even
  // when the cut heals first and the parked proposal has been forwarded to the new leader by
  // the time the driver hears of the step-down.
  let held: number | undefined;
  let release: (() => void) | undefined;
  const gated = (id: number, mem: MemoryPersistence): RaftPersistence => ({
    storage: mem.storage,
    async save(batch) {
      if (held === id) await new Promise<void>((r) => (release = r));
      await mem.save(batch);
    },
  });
  const { drivers, applied, cut } = cluster(3, 5000, gated, 5);
  for (const d of drivers.values()) d.start();
  t.teardown(() => { release?.(); for (const d of drivers.values()) d.stop(); });
  const leaderId = await waitFor('a leader', () => [...drivers.entries()].find(([, d]) => d.node.status().role === Role.Leader)?.[0]);
  const old = drivers.get(leaderId)!;
  held = leaderId;
  cut.add(leaderId);
  const stuck = old.propose(enc.encode('stuck')).then((v) => v, (e: RaftDriverError) => e.code);
  await waitFor('the old leader to step down in Raft', () => old.node.status().lead === 0 || undefined);
  const parked = old.propose(enc.encode('parked')).then((v) => v, (e: RaftDriverError) => e.code);
  const newLeader = await waitFor('a new leader', () => [...drivers.entries()].find(([id, d]) => id !== leaderId && d.node.status().role === Role.Leader)?.[0]);
  if (healFirst) {
    cut.clear();
    await waitFor('the old leader to hear of the new one (its save still held)', () => old.node.status().lead === newLeader || undefined);
    await new Promise((r) => setTimeout(r, 50)); // a few ticks: the parked proposal goes to the new leader
  }
  held = undefined;
  release?.();
  cut.clear();
  t.equal(await parked, 'applied:parked', 'the parked proposal was applied through the next leader');
  t.ok(['LEADER_CHANGED', 'TIMEOUT', 'applied:stuck'].includes(String(await stuck)), `the one proposed as leader ended as it may (${String(await stuck)})`);
  await waitFor('every node to apply it', () => [...applied.values()].every((a) => a.includes('parked')) || undefined);
});

t.test('read barriers the leader will never answer fail with LEADER_CHANGED when the leader changes, not at the timeout', async (t) => {
  const { drivers, applied, cut } = cluster(3);
  for (const d of drivers.values()) d.start();
  t.teardown(() => { for (const d of drivers.values()) d.stop(); });
  const leaderId = await waitFor('a leader', () => [...drivers.entries()].find(([, d]) => d.node.status().role === Role.Leader)?.[0]);
  const follower = [...drivers.keys()].find((id) => id !== leaderId)!;
  await waitFor('the follower to know the leader', () => drivers.get(follower)!.node.status().lead === leaderId || undefined);
  await drivers.get(follower)!.readBarrier();
  // Cut the leader off: its own round gets no heartbeat answers and the follower's request
  // never reaches it. The leader steps down (CheckQuorum) and the others elect a new one.
  cut.add(leaderId);
  const outcome = (p: Promise<unknown>) => {
    const started = performance.now();
    return p.then(() => ({ code: 'ok', ms: performance.now() - started }), (e: RaftDriverError) => ({ code: e.code, ms: performance.now() - started }));
  };
  const [onLeader, onFollower] = await Promise.all([outcome(drivers.get(leaderId)!.readBarrier()), outcome(drivers.get(follower)!.readBarrier())]);
  t.equal(onLeader.code, 'LEADER_CHANGED', `the deposed leader's read fails with LEADER_CHANGED after ${Math.round(onLeader.ms)} ms`);
  t.equal(onFollower.code, 'LEADER_CHANGED', `the follower's read fails with LEADER_CHANGED after ${Math.round(onFollower.ms)} ms`);
  t.ok(Math.max(onLeader.ms, onFollower.ms) < 2500, 'both well before the 5 s request timeout');
  // The next barrier goes to the new leader, and sees what it committed.
  const newLeader = await waitFor('a new leader', () => [...drivers.entries()].find(([id, d]) => id !== leaderId && d.node.status().role === Role.Leader)?.[0]);
  await waitFor('the follower to know it', () => (drivers.get(follower)!.node.status().lead !== 0 && drivers.get(follower)!.node.status().lead !== leaderId) || undefined);
  t.equal(await drivers.get(newLeader)!.propose(enc.encode('after')), 'applied:after', 'the new leader commits');
  const barrier = await outcome(drivers.get(follower)!.readBarrier());
  t.equal(barrier.code, 'ok', 'a read barrier on the follower after the change succeeds');
  t.ok(applied.get(follower)!.includes('after'), 'and the follower has applied what the new leader committed before it');
});

t.test('a committed membership change that cannot be made (removing the last voter) is skipped alike, not fatal', async (t) => {
  const p = new MemoryPersistence();
  bootstrap(p.storage, [1]);
  const skipped: string[] = [];
  let fatal: Error | undefined;
  const d = new RaftDriver(
    { id: 1, storage: p.storage, random: new Prng(3), electionTicks: 10, heartbeatTicks: 1 },
    p,
    { send: () => undefined },
    { apply: (_e, payload) => dec.decode(payload), restore: () => undefined, skippedConfChange: (e, reason) => skipped.push(`${e.index}: ${reason}`) },
    { tickMs: 5, requestTimeoutMs: 5000, onFatal: (e) => (fatal = e) },
  );
  d.start();
  t.teardown(() => d.stop());
  await waitFor('leadership', () => d.node.status().role === Role.Leader);
  d.proposeConfChange({ type: ConfChangeType.RemoveNode, nodeId: 1 });
  await waitFor('the change skipped', () => skipped.length > 0);
  t.match(skipped[0], /removing the last voter/);
  t.equal(fatal, undefined, 'the Ready loop goes on');
  t.same(d.node.status().conf.voters, [1], 'still the one voter');
  t.equal(await d.propose(enc.encode('after')), 'after', 'and commits what comes next');
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

/**
 * Three drivers that trace what each does, in order, into a log of its own: `trace.sent` for
 * each batch of messages handed to the transport, a 'flush' event for the transport's flushNow, `trace.saved`
 * for a save, `trace.applied` for an applied entry. Messages arrive on the next turn.
 */
async function tracedCluster<E>(t: Test, seed: number, trace: { flush: E; sent?: (msgs: Message[]) => E | undefined; saved?: (lastIndex: number) => E; applied?: (index: number) => E }) {
  const drivers = new Map<number, RaftDriver>();
  const events = new Map<number, E[]>();
  const rng = new Prng(seed);
  for (let id = 1; id <= 3; id++) {
    const mem = new MemoryPersistence();
    bootstrap(mem.storage, [1, 2, 3]);
    const log: E[] = [];
    events.set(id, log);
    const persistence: RaftPersistence = {
      storage: mem.storage,
      save: (batch) => {
        if (trace.saved && batch.entries.length > 0) log.push(trace.saved(batch.entries.at(-1)!.index));
        return mem.save(batch);
      },
    };
    const transport: RaftTransport = {
      send: (msgs: Message[]) => {
        const e = trace.sent?.(msgs);
        if (e !== undefined) log.push(e);
        for (const m of msgs) {
          const c = structuredClone(m);
          setImmediate(() => drivers.get(m.to)?.step(c));
        }
      },
      flushNow: () => log.push(trace.flush),
    };
    const sm = { apply: (e: { index: number }) => (trace.applied ? void log.push(trace.applied(e.index)) : e.index), restore: () => undefined };
    drivers.set(id, new RaftDriver({ id, storage: mem.storage, random: rng.fork(), electionTicks: 10, heartbeatTicks: 1 }, persistence, transport, sm, { tickMs: 10, requestTimeoutMs: 5000 }));
  }
  for (const d of drivers.values()) d.start();
  t.teardown(() => { for (const d of drivers.values()) d.stop(); });
  const leaderId = await waitFor('a leader', () => [...drivers.entries()].find(([, d]) => d.node.status().role === Role.Leader)?.[0]);
  return { drivers, events, leaderId, leader: drivers.get(leaderId)! };
}

t.test("a leader's appends are written out before its own save starts, not after", async (t) => {
  // The save's synchronous part (building the batch, handing it to LevelDB's thread) would
  // otherwise hold the appends, and with them the followers' fsyncs, until the turn ends.
  type Event = { kind: 'appends' | 'save' | 'flush'; last: number };
  const { drivers, events, leaderId, leader } = await tracedCluster<Event>(t, 13, {
    flush: { kind: 'flush', last: 0 },
    sent: (msgs) => {
      const appended = msgs.flatMap((m) => (m.type === MessageType.App ? m.entries.map((e) => e.index) : []));
      return appended.length > 0 ? { kind: 'appends', last: Math.max(...appended) } : undefined;
    },
    saved: (last) => ({ kind: 'save', last }),
  });
  const log = events.get(leaderId)!;
  const savedBefore = Math.max(0, ...log.filter((e) => e.kind === 'save').map((e) => e.last));
  log.length = 0;
  for (let i = 0; i < 10; i++) await leader.propose(enc.encode(`p${i}`));
  const flushedSaves = log.filter((e, i) => e.kind === 'save' && log[i - 1]?.kind === 'flush' && log[i - 2]?.kind === 'appends').length;
  t.ok(flushedSaves >= 1, `${flushedSaves} saves of new entries came right after their appends were sent and flushed`);
  // A save may come with no appends at all (both followers paused in probe state), but
  // appends sent in the same turn as a save must not wait behind it.
  const late = log.flatMap((e, i) => (e.kind === 'save' && log[i - 1]?.kind === 'appends' ? [i] : []));
  t.same(late, [], 'no save starts between its appends and their flush');
  // Appends that no save follows may only resend entries this leader already saved (a
  // follower that fell behind or rejected a batch): nothing waits on those.
  let saved = savedBefore;
  const unflushedNew: Event[] = [];
  for (const [i, e] of log.entries()) {
    if (e.kind === 'save') saved = Math.max(saved, e.last);
    if (e.kind === 'appends' && log[i + 1]?.kind !== 'flush' && e.last > saved) unflushedNew.push(e);
  }
  t.same(unflushedNew, [], 'every batch of new appends is flushed at once');
  const follower = [...drivers.keys()].find((id) => id !== leaderId)!;
  t.notOk(events.get(follower)!.some((e) => e.kind === 'flush'), 'a follower, which sends nothing before saving, never flushes early');
});

t.test("a leader's commit leaves before it applies: its commit-only appends are flushed first", async (t) => {
  // Followers apply, and serve their watchers, beside the leader's apply rather than after it.
  type Event = { kind: 'commit' | 'flush' | 'apply'; index: number };
  const { events, leaderId, leader } = await tracedCluster<Event>(t, 17, {
    flush: { kind: 'flush', index: 0 },
    sent: (msgs) => {
      const commits = msgs.flatMap((m) => (m.type === MessageType.App && m.entries.length === 0 ? [m.commit] : []));
      return commits.length > 0 ? { kind: 'commit', index: Math.max(...commits) } : undefined;
    },
    applied: (index) => ({ kind: 'apply', index }),
  });
  const log = events.get(leaderId)!;
  log.length = 0;
  // One at a time: each proposal's commit comes in a Ready of its own, with nothing to save.
  for (let i = 0; i < 10; i++) await leader.propose(enc.encode(`p${i}`));
  const applied = log.filter((e) => e.kind === 'apply');
  t.equal(applied.length, 10, 'the ten proposals applied on the leader');
  const late = applied.filter((a) => {
    const at = log.indexOf(a);
    const commit = log.findIndex((e, i) => i < at && e.kind === 'commit' && e.index >= a.index);
    return commit < 0 || !log.slice(commit + 1, at).some((e) => e.kind === 'flush');
  });
  t.same(late.map((a) => a.index), [], 'each entry applied only after appends carrying its commit were sent and flushed');
});

/** Storage that keeps snapshot bytes to itself (a file, in the agent) and gives Raft only their size. */
class FileLike extends MemoryStorage {
  file: { index: number; bytes: Uint8Array } | undefined;
  override snapshot(): Snapshot {
    const s = super.snapshot();
    return s.metadata.index === 0 ? s : { metadata: s.metadata, data: { external: true, sizeBytes: this.file!.bytes.length } };
  }
}

/** The drivers' network: each message cloned and delivered on a later turn, unless either end is cut off. */
function network(drivers: Map<number, RaftDriver>, cut: Set<number>, sent: Message[]): RaftTransport {
  return {
    send: (msgs: Message[]) => {
      for (const m of msgs) {
        if (cut.has(m.from) || cut.has(m.to)) continue;
        const copy = structuredClone(m);
        sent.push(copy);
        setImmediate(() => drivers.get(m.to)?.step(copy));
      }
    },
  };
}

/**
 * Starts the drivers, waits for a leader, cuts one follower off, commits ten entries, and
 * makes the leader's log start with a snapshot (bytes `image`) past the laggard, which stays
 * cut off for the caller to reconnect.
 */
async function leaveOneBehindASnapshot(t: Test, drivers: Map<number, RaftDriver>, storages: Map<number, FileLike>, cut: Set<number>, image: Uint8Array) {
  for (const d of drivers.values()) d.start();
  t.teardown(() => { for (const d of drivers.values()) d.stop(); });
  const leaderId = await waitFor('a leader', () => [...drivers.entries()].find(([, d]) => d.node.status().role === Role.Leader)?.[0]);
  const laggard = [...drivers.keys()].find((id) => id !== leaderId)!;
  cut.add(laggard);
  for (let i = 0; i < 10; i++) await drivers.get(leaderId)!.propose(enc.encode(`v${i}`));
  const leader = drivers.get(leaderId)!.node.status();
  const leaderStorage = storages.get(leaderId)!;
  leaderStorage.createSnapshot(leader.applied, leader.conf, new Uint8Array(0));
  leaderStorage.file = { index: leader.applied, bytes: image };
  leaderStorage.compact(leader.applied);
  return { laggard, leader };
}

t.test('an external snapshot reaches a lagging follower chunk by chunk, in order, and a failed read restarts the transfer', async (t) => {
  // Every node's storage keeps snapshot bytes to itself (a file, in the agent) and gives Raft
  // only their size; the driver reads each chunk through persistence.readSnapshotChunk. Reads
  // finish out of order and the first two after the first chunk fail.
  const image = new Uint8Array(10_500).map((_, i) => i % 251);
  const drivers = new Map<number, RaftDriver>();
  const storages = new Map<number, FileLike>();
  const cut = new Set<number>();
  const sent: Message[] = [];
  const restored: Uint8Array[] = [];
  let failReads = 2;
  const rng = new Prng(13);
  for (let id = 1; id <= 3; id++) {
    const storage = new FileLike();
    bootstrap(storage, [1, 2, 3]);
    storages.set(id, storage);
    const persistence: RaftPersistence = {
      storage,
      async save(batch) {
        if (batch.snapshot) storage.applySnapshot({ metadata: batch.snapshot.metadata, data: new Uint8Array(0) });
        storage.append(batch.entries);
        if (batch.hardState) storage.setHardState(batch.hardState);
      },
      async readSnapshotChunk(of, offset, length) {
        await new Promise((r) => setTimeout(r, Math.floor(rng.next() * 4)));
        if (failReads > 0 && offset > 0) {
          failReads--;
          throw new Error('snapshot file replaced');
        }
        if (storage.file?.index !== of.index) throw new Error('no such snapshot');
        return storage.file.bytes.slice(offset, offset + length);
      },
    };
    const d = new RaftDriver(
      { id, storage, random: rng.fork(), electionTicks: 10, heartbeatTicks: 1, snapshotChunkBytes: 1000 },
      persistence,
      network(drivers, cut, sent),
      { apply: () => undefined, restore: (s) => void restored.push(s.data as Uint8Array) },
      { tickMs: 10, requestTimeoutMs: 5000 },
    );
    drivers.set(id, d);
  }
  const { laggard } = await leaveOneBehindASnapshot(t, drivers, storages, cut, image);
  cut.delete(laggard);
  await waitFor('the laggard to install the snapshot', () => restored.length > 0 || undefined);
  t.ok(Buffer.from(restored[0]!).equals(Buffer.from(image)), 'the follower got exactly the image, read chunk by chunk');
  t.equal(failReads, 0, 'two chunk reads failed on the way');
  const chunks = sent.filter((m) => m.to === laggard && m.snapshot);
  t.ok(chunks.every((m) => m.snapshot!.bytesToAttach === undefined && m.snapshot!.data.length > 0), 'every chunk left with its bytes');
  t.ok(chunks.filter((m) => m.snapshot!.offset === 0).length >= 2, 'the transfer started over after a failed read');
  const rejects = sent.filter((m) => m.from === laggard && m.type === MessageType.SnapResp && m.reject);
  t.same(rejects, [], 'no chunk arrived ahead of its predecessor, though the reads finished out of order');
});

t.test('a follower refuses a snapshot that fails its check, reloads Raft from storage, and installs the one sent again', async (t) => {
  // Followers spool incoming chunks (as the agent does); the laggard's save refuses the first
  // snapshot it is asked to install, as the agent's does when the image does not decode.
  const image = new Uint8Array(5_500).map((_, i) => i % 241);
  const drivers = new Map<number, RaftDriver>();
  const storages = new Map<number, FileLike>();
  const appliedIndex = new Map<number, number>();
  const cut = new Set<number>();
  const sent: Message[] = [];
  const installed: Uint8Array[] = [];
  let refusals = 1;
  const rng = new Prng(17);
  for (let id = 1; id <= 3; id++) {
    const storage = new FileLike();
    bootstrap(storage, [1, 2, 3]);
    storages.set(id, storage);
    appliedIndex.set(id, 0);
    let spool = new Uint8Array(0);
    const persistence: RaftPersistence = {
      storage,
      async save(batch) {
        for (const c of batch.snapshotChunks ?? []) {
          const grown = new Uint8Array(c.offset + c.data.length);
          grown.set(spool.subarray(0, c.offset));
          grown.set(c.data, c.offset);
          spool = grown;
        }
        if (batch.snapshot) {
          if (refusals > 0) {
            refusals--;
            throw new SnapshotRefusedError('checksum mismatch');
          }
          storage.applySnapshot({ metadata: batch.snapshot.metadata, data: new Uint8Array(0) });
          storage.file = { index: batch.snapshot.metadata.index, bytes: spool };
        }
        storage.append(batch.entries);
        if (batch.hardState) storage.setHardState(batch.hardState);
      },
      async readSnapshotChunk(of, offset, length) {
        if (storage.file?.index !== of.index) throw new Error('no such snapshot');
        return storage.file.bytes.slice(offset, offset + length);
      },
    };
    const random = rng.fork();
    const config = () => ({ id, storage, random, electionTicks: 10, heartbeatTicks: 1, snapshotChunkBytes: 1000, spoolIncomingSnapshots: true, applied: appliedIndex.get(id) || undefined });
    const d = new RaftDriver(
      config(),
      persistence,
      network(drivers, cut, sent),
      {
        apply: (e) => void appliedIndex.set(id, e.index),
        restore: (snap) => {
          installed.push(storage.file!.bytes);
          appliedIndex.set(id, snap.metadata.index);
        },
      },
      { tickMs: 10, requestTimeoutMs: 5000, reloadConfig: config },
    );
    drivers.set(id, d);
  }
  const { laggard, leader } = await leaveOneBehindASnapshot(t, drivers, storages, cut, image);
  const laggardDriver = drivers.get(laggard)!;
  const nodeBefore = laggardDriver.node;
  cut.delete(laggard);
  await waitFor('the laggard to install the snapshot', () => installed.length > 0 || undefined);
  t.equal(refusals, 0, 'the first snapshot was refused');
  t.not(laggardDriver.node, nodeBefore, 'the refusal replaced the RawNode');
  t.equal(laggardDriver.lastError(), undefined, 'the Ready loop did not stop');
  t.same(installed.map((b) => Buffer.from(b).equals(Buffer.from(image))), [true], 'installed once, exactly the image');
  const starts = sent.filter((m) => m.to === laggard && m.snapshot && m.snapshot.offset === 0);
  t.ok(starts.length >= 2, `the leader sent the snapshot again (${starts.length} transfers started)`);
  t.ok(laggardDriver.node.status().applied >= leader.applied, 'Raft applied up to the snapshot');

  const before = appliedIndex.get(laggard)!;
  await laggardDriver.propose(enc.encode('after'));
  const last = appliedIndex.get(laggard)!;
  t.ok(last > before, 'a proposal through the reloaded follower commits and applies there');
  await waitFor('every member to apply it', () => [...appliedIndex.values()].every((a) => a === last) || undefined);
});

t.test("a proposal's entry has memory of its own, not a slice of Node's shared pool (which the log would keep whole)", async (t) => {
  const saved: MemoryPersistence[] = [];
  const { drivers } = cluster(1, 5000, (_id, mem) => (saved.push(mem), mem));
  const d = drivers.get(1)!;
  d.start();
  t.teardown(() => d.stop());
  await waitFor('a leader', () => d.node.status().role === Role.Leader || undefined);
  // Small buffers made just before and after the proposal come from Node's pool slab, as a
  // pooled entry would (the slab rotates at most once in between: one of them shares it).
  const before = Buffer.allocUnsafe(8);
  const done = d.propose(enc.encode('kept in the log'));
  const after = Buffer.allocUnsafe(8);
  t.equal(await done, 'applied:kept in the log');
  const storage = saved[0]!.storage;
  const entry = storage.entries(storage.firstIndex(), storage.lastIndex() + 1).find((e) => dec.decode(e.data).endsWith('kept in the log'));
  t.ok(entry, 'the entry is in the log');
  t.not(entry!.data.buffer, before.buffer, 'not the pool slab of a buffer made before');
  t.not(entry!.data.buffer, after.buffer, 'nor of one made after');
});

t.test('a single voter restarted with a saved commit index behind its acknowledged writes answers a read only after re-applying them', async (t) => {
  // The commit index is not saved on its own (only with entries), and the applied state is
  // persisted lazily: after a power cut both can be behind writes the node acknowledged. A read
  // must then wait for an entry of the new term to commit, as with several voters (§6.4).
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const rng = new Prng(3);
  const first = new MemoryPersistence();
  bootstrap(first.storage, [1]);
  const sm = (onApplied: (index: number) => void) => ({ apply: (e: Entry) => { onApplied(e.index); return e.index; }, noteApplied: (e: Entry) => onApplied(e.index), restore: () => undefined });
  const d1 = new RaftDriver({ id: 1, storage: first.storage, random: rng.fork(), electionTicks: 5, heartbeatTicks: 1 }, first, { send: () => undefined }, sm(() => undefined), { tickMs: 5, requestTimeoutMs: 5_000 });
  d1.start();
  t.teardown(() => d1.stop());
  while (d1.node.raft.role !== Role.Leader) await sleep(5);
  await d1.propose(new Uint8Array(10));
  // One batch of 1 MiB writes, all acknowledged: more than one Ready applies after a restart (4 MiB each).
  const acked = Math.max(...(await Promise.all(Array.from({ length: 8 }, () => d1.propose(new Uint8Array(1 << 20))))) as number[]);
  await sleep(50);
  d1.stop();
  const hard = first.storage.getHardState();
  t.ok(hard.commit < acked, `the saved commit index (${hard.commit}) is behind the acknowledged writes (${acked})`);

  // The restart: the log and hard state as saved, the applied state at the saved commit, a slow disk.
  const second = new MemoryPersistence();
  second.storage.append(first.storage.entries(1, first.storage.lastIndex() + 1));
  second.storage.setHardState(hard);
  // Its membership as the saved log's conf change made it (a copied MemoryStorage starts without one).
  const storage = Object.create(second.storage) as MemoryStorage;
  storage.initialState = () => ({ hardState: second.storage.getHardState(), confState: { voters: [1], learners: [] } });
  const slow: RaftPersistence = { storage, save: async (b) => { await sleep(20); return second.save(b); } };
  let applied = hard.commit;
  const d2 = new RaftDriver({ id: 1, storage, random: rng.fork(), electionTicks: 5, heartbeatTicks: 1, applied: hard.commit }, slow, { send: () => undefined }, sm((i) => (applied = i)), { tickMs: 5, requestTimeoutMs: 5_000 });
  d2.start();
  t.teardown(() => d2.stop());
  while (d2.node.raft.role !== Role.Leader) await sleep(0);
  await d2.readBarrier();
  t.ok(applied >= acked, `the read saw every acknowledged write (applied ${applied}, acknowledged ${acked})`);
});

t.test('a driver stopped while a save is in flight sends nothing of that Ready afterwards (no vote or ack from a stopped member)', async (t) => {
  const mem = new MemoryPersistence();
  bootstrap(mem.storage, [1, 2]);
  const sent: Message[] = [];
  let releaseSave: () => void = () => undefined;
  const held: RaftPersistence = { storage: mem.storage, save: async (b) => { await new Promise<void>((r) => (releaseSave = r)); return mem.save(b); } };
  const d = new RaftDriver({ id: 2, storage: mem.storage, random: new Prng(5).fork(), electionTicks: 10, heartbeatTicks: 1 }, held, { send: (msgs: Message[]) => void sent.push(...msgs) }, { apply: () => undefined, restore: () => undefined }, { tickMs: 1_000, requestTimeoutMs: 5_000 });
  d.start();
  // A vote request from 1 at a higher term: the answer (a vote) must follow the saved term and vote.
  const vote = emptyMessage(MessageType.Vote, 1, 2, 5);
  vote.index = mem.storage.lastIndex();
  vote.logTerm = mem.storage.term(vote.index);
  d.step(vote);
  await new Promise((r) => setTimeout(r, 50));
  d.stop();
  releaseSave();
  await new Promise((r) => setTimeout(r, 50));
  t.same(sent.filter((m) => m.type === MessageType.VoteResp), [], 'no vote left the stopped member');
});
