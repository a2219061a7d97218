/**
 * Lease expiry as etcd 3.4 does it, on the pieces that decide it (a member stand-in around a
 * real KvStore and LeaseTimers; the rest of ManagerNode is not needed):
 * - a keep-alive of an expired lease is answered (TTL 0) only once the lease's revoke is applied
 *   on the member answering, so the client finds its keys gone (etcd's lessor Renew waits on the
 *   lease's revokec); bounded, and forwarded to the new leader if leadership is lost meanwhile;
 * - the leader proposes the revoke of an expired lease in the same duty round that confirms its
 *   leadership (etcd's expiry loop), not a round later;
 * - on a keep-alive stream, one keep-alive waiting so holds back no other lease's answer.
 */
import t, { type Test } from 'tap';
import { ManagerEtcdBackend } from '../../core/api/etcd-backend.js';
import { LeaseForwarder } from '../../core/api/lease-forwarder.js';
import { ManagerNode } from '../../core/api/manager-node.js';
import { LeaseTimers, type LeaseClock } from '../../core/kv/lease-timers.js';
import type { KvRequest, KvResponse } from '../../core/kv/types.js';
import { clientRequest } from '../../core/kv/permissions.js';
import { decodeKvRequest, encodeKvRequest } from '../../core/kv/codec.js';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import { generateToken } from '../../core/net/token.js';
import { Role } from '../../core/raft/index.js';
import { FakeEtcdBackend } from '../net/fake-etcd-backend.js';
import { b, Node } from '../kv/helpers.js';

class FakeClock implements LeaseClock {
  ms = 1000;
  nowMs(): number {
    return this.ms;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A member stand-in: leader (or not) with a real store and timers; `barrier` is its read barrier. */
function member(t: Test, opts: { leader: boolean; requestTimeoutMs?: number; barrier?: () => Promise<number> }) {
  const kvNode = Node.create();
  const clock = new FakeClock();
  const timers = new LeaseTimers({ clock, stallThresholdMs: 60_000 });
  if (opts.leader) timers.becomeLeader([]);
  const node = {
    store: kvNode.store,
    leaseTimers: timers,
    // Resolves with the instant its round started (RaftDriver.readBarrier).
    linearizableBarrier: () => (opts.barrier ?? (() => Promise.resolve(performance.now())))(),
    driver: { node: { raft: { term: 1, role: opts.leader ? Role.Leader : Role.Follower } } },
    electionTimeoutMs: 1_000,
    id: 1,
    lead: opts.leader ? 1 : 2,
    clusterId: 2,
    members: new Map<number, { clientAddr: string }>(),
    token: generateToken(),
    opts: { requestTimeoutMs: opts.requestTimeoutMs },
  };
  const backend = new ManagerEtcdBackend(node as unknown as ManagerNode);
  t.teardown(() => backend.close());
  /** A lease granted (and its clock started, on a leader) with `key` on it. */
  const grant = (ttl: number, key: string): number => {
    const id = kvNode.grant(ttl).ID;
    timers.onGranted(id, ttl);
    kvNode.put(key, 'v', { lease: id });
    return id;
  };
  /** The revoke applied here (as `user`, a client's), as ManagerNode.applyEntry does. */
  const applyRevoke = (id: number, user?: string): KvResponse => {
    const req: KvRequest = user === undefined ? { leaseRevoke: { ID: id } } : clientRequest({ leaseRevoke: { ID: id } }, user);
    const resp = kvNode.apply(req);
    timers.afterApply(req, resp, (lease) => kvNode.store.hasLease(lease));
    return resp;
  };
  /** What a client doing etcd's "create if absent" finds: the key, and whether the guarded create wins. */
  const probe = (key: string): { present: boolean; created: boolean } => {
    const present = kvNode.range(key).kvs.length > 0;
    const r = kvNode.txn({ compare: [{ key: b(key), target: 1, result: 0, createRevision: 0 }], success: [{ requestPut: { key: b(key), value: b('mine') } }], failure: [] });
    return { present, created: r.succeeded };
  };
  return { kvNode, clock, timers, node, backend, grant, applyRevoke, probe };
}

/** How a keep-alive ended: its TTL or error code, and what the client found right then. */
function settle<T>(p: Promise<{ ttlSeconds: number }>, then: () => T): Promise<{ answer: number | string; seen: T }> {
  return p.then(
    (r) => ({ answer: r.ttlSeconds, seen: then() }),
    (e: { code?: string }) => ({ answer: String(e.code), seen: then() }),
  );
}

t.test('leader: a keep-alive of an expired lease answers TTL 0 only once the revoke is applied (etcd Renew waits on revokec)', async (t) => {
  const m = member(t, { leader: true });
  const id = m.grant(2, 'lock');
  const live = m.grant(2, 'other');
  m.clock.ms += 2_100; // both expired, revokes not yet applied
  let settled = false;
  const answered = settle(m.backend.leaseKeepAlive(id), () => m.probe('lock')).finally(() => (settled = true));
  await sleep(100);
  t.notOk(settled, 'no answer while the lease is expired and its keys still there');
  t.ok(m.kvNode.range('lock').kvs.length === 1, 'the key is still there meanwhile');
  m.applyRevoke(id);
  const { answer, seen } = await answered;
  t.equal(answer, 'LEASE_NOT_FOUND', 'TTL 0 (the stream answers LEASE_NOT_FOUND as TTL 0)');
  t.same(seen, { present: false, created: true }, 'when TTL 0 arrives the key is gone and the guarded re-create succeeds');
  t.equal(m.timers.revokeWaiterCount, 0, 'no waiter left behind');
  // A live lease is renewed at once, as before.
  m.applyRevoke(live);
  const fresh = m.grant(2, 'fresh');
  m.clock.ms += 1_000;
  t.same((await m.backend.leaseKeepAlive(fresh)).ttlSeconds, 2, 'a live lease is renewed at once');
  t.same(await settle(m.backend.leaseKeepAlive(12345), () => 0), { answer: 'LEASE_NOT_FOUND', seen: 0 }, 'an unknown lease: not found at once');
});

t.test('leader: a revoke refused when applied (a permission checked then) leaves the lease its clock: renewed, then expired', async (t) => {
  const m = member(t, { leader: true });
  const id = m.grant(2, 'a/x');
  // Auth on; bob may write under b/ only, so he may not revoke a lease holding a/x (the check a
  // member with a stale view of the lease's keys lets through, made again at apply).
  const pw = b('scrypt$14$8$1$c2FsdA==$aGFzaA==');
  for (const op of [
    { userAdd: { name: 'root', password: pw } },
    { userGrantRole: { name: 'root', role: 'root' } },
    { roleAdd: { name: 'r' } },
    { roleGrantPermission: { name: 'r', permType: 2, key: b('b/'), rangeEnd: b('b0') } },
    { userAdd: { name: 'bob', password: pw } },
    { userGrantRole: { name: 'bob', role: 'r' } },
    { authEnable: {} },
  ]) m.kvNode.apply({ auth: op });
  t.match(m.applyRevoke(id, 'bob'), { error: { code: 'PERMISSION_DENIED' } }, 'refused at apply');
  t.ok(m.kvNode.store.hasLease(id), 'the lease stays');
  t.equal(m.timers.keepAlive(id), 2, "the leader's keep-alive renews it (its clock was gone: not found)");
  m.clock.ms += 2_100;
  t.same(m.timers.tick().revoke, [], 'expired: a leader check first');
  m.timers.confirmLeadership(m.clock.ms);
  t.same(m.timers.tick().revoke, [id], 'then its revoke is handed out');
  m.applyRevoke(id);
  t.notOk(m.kvNode.store.hasLease(id), 'revoked by expiry');
  t.same([m.timers.tick().revoke, m.timers.expired(id)], [[], false], 'and its clock gone');
});

t.test('a revoke through a member that has not applied the grant yet is proposed, not refused from its view (etcd decides at apply)', async (t) => {
  const cluster = Node.create(); // what the leader has applied
  const id = cluster.grant(30).ID;
  const behind = Node.create(); // this member: the grant not applied yet
  let index = 1_000;
  const node = {
    store: behind.store,
    driver: { node: { raft: { term: 1 } } },
    id: 2,
    clusterId: 2,
    token: generateToken(),
    opts: {},
    spaceAlarm: { admits: () => true },
    propose: async (req: KvRequest) => cluster.store.apply(decodeKvRequest(encodeKvRequest(req)), { index: ++index, term: 1 }),
  };
  const backend = new ManagerEtcdBackend(node as unknown as ManagerNode);
  t.teardown(() => backend.close());
  await backend.leaseRevoke(id);
  t.notOk(cluster.store.hasLease(id), 'revoked');
  await t.rejects(backend.leaseRevoke(id), { code: 'LEASE_NOT_FOUND' }, "a lease not there when applied: etcd's not found");
});

t.test('leader: the wait for the revoke is bounded; then it answers as before', async (t) => {
  const m = member(t, { leader: true, requestTimeoutMs: 300 });
  const id = m.grant(2, 'lock');
  m.clock.ms += 2_100;
  const started = performance.now();
  const { answer } = await settle(m.backend.leaseKeepAlive(id), () => 0);
  const waited = performance.now() - started;
  t.equal(answer, 'LEASE_NOT_FOUND', 'still expired: not found, not renewed');
  t.ok(waited >= 250 && waited < 2_000, `answered after the bound (${Math.round(waited)} ms)`);
  t.equal(m.timers.revokeWaiterCount, 0);
});

t.test('leader: leadership lost while waiting: the keep-alive goes to the new leader (etcd ErrNotPrimary)', async (t) => {
  const m = member(t, { leader: true });
  const id = m.grant(2, 'lock');
  m.clock.ms += 2_100;
  const answered = settle(m.backend.leaseKeepAlive(id), () => 0);
  await sleep(50);
  m.node.lead = 0; // no leader known yet
  m.node.driver.node.raft.role = Role.Follower;
  m.timers.stepDown();
  t.equal((await answered).answer, 'NO_LEADER', 'not told the lease is gone: the next leader extends it');
});

t.test('leader: a renewal counts the leader check from its round\'s start, not from the request', async (t) => {
  // A round queued behind another starts ~600 ms after the request and its apply waits 500 ms
  // more on a slow disk: 1.1 s after the request, 0.5 s after the round that proved leadership.
  const queued = member(t, { leader: true, requestTimeoutMs: 300, barrier: async () => {
    await sleep(600);
    const start = performance.now();
    await sleep(500);
    return start;
  } });
  const id = queued.grant(10, 'lock');
  t.same((await queued.backend.leaseKeepAlive(id)).ttlSeconds, 10, 'renewed: leadership proved 0.5 s ago, within the 1 s election timeout');
  // A round that itself started more than an election timeout before it finished proves nothing now.
  const stale = member(t, { leader: true, requestTimeoutMs: 300, barrier: async () => {
    const start = performance.now();
    await sleep(1_100);
    return start;
  } });
  const id2 = stale.grant(10, 'lock');
  const before = stale.timers.remainingSeconds(id2);
  const { answer } = await settle(stale.backend.leaseKeepAlive(id2), () => 0);
  t.not(answer, 10, `not renewed by this leader (answered ${answer})`);
  t.ok(stale.timers.remainingSeconds(id2) <= before, 'its clock not reset');
});

t.test('follower: a forwarded TTL 0 is answered once this member has caught up with the revoke', async (t) => {
  // The leader: a front end whose backend does not know the lease any more (it applied the revoke).
  const leaderBackend = new FakeEtcdBackend();
  const server = await EtcdGrpcServer.start({ backend: leaderBackend, port: 0 });
  t.teardown(() => server.close());
  let barriers = 0;
  let revokeHere: () => void = () => undefined;
  const m = member(t, {
    leader: false,
    barrier: async () => {
      barriers++;
      const start = performance.now();
      await sleep(20);
      revokeHere(); // the round waits for this member to apply what the leader had committed
      return start;
    },
  });
  m.node.members.set(2, { clientAddr: `127.0.0.1:${server.port}` });
  const id = m.grant(2, 'lock');
  revokeHere = () => m.applyRevoke(id);
  const { answer, seen } = await settle(m.backend.leaseKeepAlive(id), () => m.probe('lock'));
  t.equal(answer, 'LEASE_NOT_FOUND');
  t.equal(barriers, 1, 'one read barrier after the leader answered');
  t.same(seen, { present: false, created: true }, 'when TTL 0 arrives the key is gone here too');
});

t.test('duties: the revoke of an expired lease is proposed in the round that confirms leadership', async (t) => {
  // ManagerNode.leaderDuties on a stand-in: real LeaseTimers (on the monotonic clock, as the node's).
  const duties = (ManagerNode.prototype as unknown as { leaderDuties(this: unknown): Promise<void> }).leaderDuties;
  const make = (confirm: () => Promise<unknown>) => {
    const proposed: KvRequest[] = [];
    const node = {
      stopped: false,
      duplicate: undefined,
      role: Role.Leader,
      leaseTimers: new LeaseTimers({ clock: { nowMs: () => performance.now() } }),
      leaseCheckInFlight: false,
      proposeRevokes: (ManagerNode.prototype as unknown as { proposeRevokes: unknown }).proposeRevokes,
      driver: { readBarrier: confirm },
      propose: (req: KvRequest) => {
        proposed.push(req);
        return new Promise(() => undefined);
      },
      promoteCaughtUpLearners: () => undefined,
      autoCompact: () => undefined,
    };
    return { node, proposed };
  };
  const { node, proposed } = make(async () => {
    const start = performance.now();
    await sleep(5);
    return start;
  });
  node.leaseTimers.becomeLeader([
    { id: 7, ttlSeconds: 0.05 },
    { id: 8, ttlSeconds: 60 },
  ]);
  await sleep(60); // lease 7 expired
  await duties.call(node);
  t.same(proposed, [{ leaseRevoke: { ID: 7 } }], 'proposed in the first round after the expiry, once the leader check passed');
  await duties.call(node);
  t.equal(proposed.length, 1, 'not proposed twice');

  // Revokes confirmed by an earlier round are proposed at once, before this round's check:
  // after that wait this node may have lost and won leadership again, every lease extended.
  {
    let release: (start: number) => void = () => undefined;
    const slow = make(() => new Promise<number>((resolve) => (release = resolve)));
    const clock = new FakeClock();
    const timers = new LeaseTimers({ clock, maxRevokesPerTick: 1, stallThresholdMs: 60_000 });
    slow.node.leaseTimers = timers;
    timers.becomeLeader([{ id: 1, ttlSeconds: 1 }, { id: 2, ttlSeconds: 1 }, { id: 3, ttlSeconds: 60 }, { id: 4, ttlSeconds: 3 }]);
    clock.ms += 2_000;
    timers.confirmLeadership(clock.ms); // 1 and 2 expired before this
    await duties.call(slow.node); // hands out 1 (one per tick)
    t.same(slow.proposed, [{ leaseRevoke: { ID: 1 } }]);
    clock.ms += 2_000; // 4 expires, unconfirmed
    const running = duties.call(slow.node);
    await sleep(10);
    t.same(slow.proposed.slice(1), [{ leaseRevoke: { ID: 2 } }], 'the confirmed revoke is proposed while the check for the other is still out');
    // More duty rounds while the check waits: they take no revokes of their own.
    for (let i = 0; i < 3; i++) await duties.call(slow.node);
    t.equal(slow.proposed.length, 2, 'no round starts another check or revoke while one waits');
    release(clock.ms);
    await running;
    t.equal(slow.proposed.length, 2, 'the check confirmed 4, but the round\'s budget (1) went to the revoke before it');
    await duties.call(slow.node);
    t.same(slow.proposed.slice(2), [{ leaseRevoke: { ID: 4 } }], 'the next round revokes what the check confirmed');
  }

  // The rule stays: no confirmed leadership, no revoke.
  const unconfirmed = make(() => Promise.reject(new Error('not leader')));
  unconfirmed.node.leaseTimers.becomeLeader([{ id: 9, ttlSeconds: 0.05 }]);
  await sleep(60);
  await duties.call(unconfirmed.node);
  await duties.call(unconfirmed.node);
  t.same(unconfirmed.proposed, [], 'a leader that cannot confirm it leads revokes nothing');
});

t.test('keep-alive stream: a keep-alive that waits holds back no other lease answer', async (t) => {
  // A follower forwards every client's keep-alives to the leader on one stream: a keep-alive of
  // an expired lease waiting for its revoke must not delay the others (nor make them time out).
  const backend = new FakeEtcdBackend();
  const slow = (await backend.leaseGrant({ ttlSeconds: 30, id: 0 })).id;
  const live = (await backend.leaseGrant({ ttlSeconds: 45, id: 0 })).id;
  let release: () => void = () => undefined;
  const held = new Promise<void>((r) => (release = r));
  const keepAlive = backend.leaseKeepAlive.bind(backend);
  backend.leaseKeepAlive = async (id: number) => {
    if (id === slow) await held;
    return keepAlive(id);
  };
  const server = await EtcdGrpcServer.start({ backend, port: 0 });
  t.teardown(() => server.close());
  const fwd = new LeaseForwarder();
  t.teardown(() => fwd.close());
  const addr = `127.0.0.1:${server.port}`;
  let slowAnswered = false;
  const slowAnswer = fwd.keepAlive(addr, slow).finally(() => (slowAnswered = true));
  await sleep(20);
  const started = performance.now();
  t.equal(await fwd.keepAlive(addr, live), 45, 'the live lease is renewed');
  t.ok(performance.now() - started < 1_000, 'at once');
  t.notOk(slowAnswered, 'while the other still waits');
  release();
  t.equal(await slowAnswer, 30, 'and the waiting one is answered afterwards');
});
