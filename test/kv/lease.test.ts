// Leases in the replicated state (grant, revoke, attach, time-to-live, list) and the leader's
// LeaseTimers (election extension, confirmed-leadership revocation, stall tolerance).
import t from 'tap';
import { LeaseTimers } from '../../core/kv/lease-timers.js';
import { leaseIdForIndex } from '../../core/kv/leases.js';
import { MAX_LEASE_TTL_SECONDS, MIN_LEASE_TTL_SECONDS } from '../../core/kv/limits.js';
import { KvStore } from '../../core/kv/store.js';
import { EventType } from '../../core/kv/types.js';
import { WatchHub } from '../../core/kv/watch.js';
import { b, keysOf, Node, s } from './helpers.js';

t.test('grant', async (t) => {
  const n = Node.create();
  const g = n.grant(60, 42);
  t.same(g, { header: { revision: 1 }, ID: 42, TTL: 60, error: '' });
  const e = n.err({ leaseGrant: { TTL: 60, ID: 42 } });
  t.equal(e.code, 'LEASE_EXISTS');
  t.equal(e.message, 'etcdserver: lease already exists');
  t.equal(n.grant(1, 43).TTL, MIN_LEASE_TTL_SECONDS, 'raised to the minimum TTL');
  t.equal(n.grant(MAX_LEASE_TTL_SECONDS, 44).TTL, MAX_LEASE_TTL_SECONDS);
  const big = n.err({ leaseGrant: { TTL: MAX_LEASE_TTL_SECONDS + 1, ID: 45 } });
  t.equal(big.code, 'LEASE_TTL_TOO_LARGE');
  t.equal(big.message, 'etcdserver: too large lease TTL');
  t.same(
    n.store.leaseLeases().leases.map((l) => l.ID),
    [42, 43, 44],
  );
});

t.test('ID 0: derived from the entry index, the same on every member', async (t) => {
  const a = new KvStore();
  const c = new KvStore();
  const ra = a.apply({ leaseGrant: { TTL: 10 } }, { index: 7, term: 1 });
  const rc = c.apply({ leaseGrant: { TTL: 10 } }, { index: 7, term: 1 });
  t.same(ra, rc);
  const id = 'leaseGrant' in ra ? ra.leaseGrant.ID : 0;
  t.ok(id > 0 && id < 2 ** 53 && Number.isSafeInteger(id));
  t.not(leaseIdForIndex(8, () => false), id, 'another index, another ID');
  // Collisions probe deterministically.
  const taken = new Set([leaseIdForIndex(9, () => false)]);
  const next = leaseIdForIndex(9, (x) => taken.has(x));
  t.equal(next, [...taken][0]! + 1);
});

t.test('revoke deletes attached keys at one revision', async (t) => {
  const n = Node.create();
  const hub = new WatchHub(n.store, { schedule: () => {} });
  const ws = hub.openStream();
  ws.create({ key: b('\0'), rangeEnd: b('\0') });
  ws.next();
  const id = n.grant(30).ID;
  n.put('z', '1', { lease: id });
  n.put('a', '1', { lease: id });
  n.put('m', '1', { lease: id });
  n.put('keep', '1');
  n.put('m', '2'); // detached by a put without lease
  const ttl = n.store.leaseTimeToLive(id, true);
  t.same(ttl.keys.map(s), ['a', 'z'], 'attached keys in order');
  t.equal(ttl.grantedTTL, 30);
  const before = n.store.revision;
  const r = n.apply({ leaseRevoke: { ID: id } });
  t.same(r, { leaseRevoke: { header: { revision: before + 1 } } });
  t.same(keysOf(n.range('\0', '\0')), ['keep', 'm']);
  t.equal(n.store.leaseTimeToLive(id, true).TTL, -1, 'gone: TTL -1 as etcd answers');
  let resp;
  const events = [];
  while ((resp = ws.next())) events.push(...resp.events);
  const dels = events.filter((e) => e.type === EventType.DELETE);
  t.same(dels.map((e) => s(e.kv.key)), ['a', 'z'], 'deletes in key order');
  t.same(dels.map((e) => e.kv.modRevision), [before + 1, before + 1]);
  const e = n.err({ leaseRevoke: { ID: id } });
  t.equal(e.code, 'LEASE_NOT_FOUND');
  // A lease without keys: revoked without a new revision.
  const id2 = n.grant(30).ID;
  const rev = n.store.revision;
  n.apply({ leaseRevoke: { ID: id2 } });
  t.equal(n.store.revision, rev);
  t.equal(n.err({ put: { key: b('x'), lease: id2 } }).code, 'LEASE_NOT_FOUND');
});

t.test('deleting a key detaches it', async (t) => {
  const n = Node.create();
  const id = n.grant(30).ID;
  n.put('a', '1', { lease: id });
  n.del('a');
  n.put('a', '2');
  n.apply({ leaseRevoke: { ID: id } });
  t.same(keysOf(n.range('a')), ['a'], 'the recreated key is not the lease’s');
});

class FakeClock {
  ms = 1000;
  nowMs(): number {
    return this.ms;
  }
}

t.test('LeaseTimers: expiry needs leadership confirmed after it (etcd#15247)', async (t) => {
  const clock = new FakeClock();
  const timers = new LeaseTimers({ clock, stallThresholdMs: 60_000 });
  t.same(timers.tick(), { revoke: [], needConfirm: false }, 'followers do nothing');
  timers.becomeLeader([{ id: 1, ttlSeconds: 10 }, { id: 2, ttlSeconds: 20 }]);
  clock.ms += 9000;
  t.same(timers.tick(), { revoke: [], needConfirm: false });
  t.equal(timers.remainingSeconds(1), 1);
  clock.ms += 1000;
  t.same(timers.tick(), { revoke: [], needConfirm: true }, 'expired, but not revoked before confirmation');
  timers.confirmLeadership(clock.ms - 500); // a round that started before the expiry proves nothing
  t.same(timers.tick(), { revoke: [], needConfirm: true });
  timers.confirmLeadership(clock.ms);
  t.same(timers.tick(), { revoke: [1], needConfirm: false });
  t.same(timers.tick(), { revoke: [], needConfirm: false }, 'not handed out twice');
  timers.revokeFailed(1);
  t.same(timers.tick(), { revoke: [1], needConfirm: false }, 'again after a failed proposal');
  timers.onRevoked(1);
  t.equal(timers.remainingSeconds(1), -1);
  t.throws(() => timers.keepAlive(1), { code: 'LEASE_NOT_FOUND' });
});

t.test('LeaseTimers: keep-alive and time-to-live', async (t) => {
  const clock = new FakeClock();
  const timers = new LeaseTimers({ clock, stallThresholdMs: 60_000 });
  timers.becomeLeader([]);
  timers.onGranted(7, 10);
  clock.ms += 8000;
  t.equal(timers.keepAlive(7), 10);
  clock.ms += 8000;
  t.same(timers.tick().revoke, [], 'renewed');
  t.equal(
    timers.timeToLive({ header: { revision: 1 }, ID: 7, TTL: 10, grantedTTL: 10, keys: [] }).TTL,
    2,
  );
  clock.ms += 2000;
  t.throws(() => timers.keepAlive(7), { code: 'LEASE_NOT_FOUND' }, 'an expired lease cannot be renewed');
  t.throws(() => timers.keepAlive(99), { code: 'LEASE_NOT_FOUND' });
});

t.test('LeaseTimers: a new leader extends every lease by its full TTL', async (t) => {
  const clock = new FakeClock();
  const timers = new LeaseTimers({ clock, stallThresholdMs: 60_000 });
  // Follower for a long time: leases granted long ago.
  clock.ms += 50_000;
  timers.becomeLeader([{ id: 1, ttlSeconds: 5 }], 1000);
  timers.confirmLeadership(clock.ms);
  clock.ms += 5500;
  t.same(timers.tick(), { revoke: [], needConfirm: false }, 'TTL + election extension from election time');
  clock.ms += 600;
  t.equal(timers.tick().needConfirm, true);
  timers.stepDown();
  t.same(timers.tick(), { revoke: [], needConfirm: false }, 'a follower revokes nothing');
});

t.test('LeaseTimers: a stalled leader does not revoke on wake-up', async (t) => {
  const clock = new FakeClock();
  const timers = new LeaseTimers({ clock, stallThresholdMs: 2000 });
  timers.becomeLeader([{ id: 1, ttlSeconds: 10 }]); // expires at 11000
  clock.ms += 1500;
  timers.tick();
  clock.ms += 60_000; // a stall: GC, swap, slow disk, SIGSTOP
  timers.confirmLeadership(clock.ms);
  t.same(timers.tick(), { revoke: [], needConfirm: false }, 'expiry shifted by the stall');
  t.equal(timers.remainingSeconds(1), 8);
  for (let i = 0; i < 17; i++) {
    clock.ms += 500;
    t.same(timers.tick().revoke, []);
  }
  clock.ms += 500;
  t.equal(timers.tick().needConfirm, true);
  timers.confirmLeadership(clock.ms);
  t.same(timers.tick().revoke, [1], 'expires normally afterwards');
});

t.test('LeaseTimers: revocations are rate limited', async (t) => {
  const clock = new FakeClock();
  const timers = new LeaseTimers({ clock, stallThresholdMs: 60_000, maxRevokesPerTick: 3 });
  timers.becomeLeader(Array.from({ length: 10 }, (_, i) => ({ id: i + 1, ttlSeconds: 5 })));
  clock.ms += 6000;
  timers.confirmLeadership(clock.ms);
  t.same(timers.tick().revoke, [1, 2, 3]);
  t.same(timers.tick().revoke, [4, 5, 6]);
});

t.test('LeaseTimers: an expired lease waits for its revoke (etcd Renew), bounded, until a step-down', async (t) => {
  const clock = new FakeClock();
  const timers = new LeaseTimers({ clock, stallThresholdMs: 60_000 });
  t.equal(await timers.untilRevoked(1, 1_000), 'not-leader', 'a follower has no revoke to wait for');
  timers.becomeLeader([{ id: 1, ttlSeconds: 2 }, { id: 2, ttlSeconds: 2 }, { id: 3, ttlSeconds: 10 }]);
  t.equal(await timers.untilRevoked(99, 1_000), 'revoked', 'no clock for it: gone already');
  clock.ms += 2000;
  t.ok(timers.expired(1) && timers.expired(2), 'expired at its expiry instant');
  t.notOk(timers.expired(3), 'a live lease is not');
  t.notOk(timers.expired(99), 'nor an unknown one');
  const revoked = timers.untilRevoked(1, 60_000);
  const twice = timers.untilRevoked(1, 60_000);
  const timedOut = timers.untilRevoked(2, 20);
  t.equal(timers.revokeWaiterCount, 3);
  timers.onRevoked(1);
  t.same(await Promise.all([revoked, twice, timedOut]), ['revoked', 'revoked', 'timeout']);
  t.equal(timers.revokeWaiterCount, 0);
  const lost = timers.untilRevoked(2, 60_000);
  timers.stepDown();
  t.equal(await lost, 'not-leader', 'a step-down ends the wait: the next leader extends the lease');
  t.equal(timers.revokeWaiterCount, 0);
});

t.test('LeaseTimers: tick(max) hands out at most max (the rest of a round after the leader check)', async (t) => {
  const clock = new FakeClock();
  const timers = new LeaseTimers({ clock, stallThresholdMs: 60_000, maxRevokesPerTick: 3 });
  timers.becomeLeader(Array.from({ length: 5 }, (_, i) => ({ id: i + 1, ttlSeconds: 5 })));
  clock.ms += 5000;
  t.same(timers.tick(), { revoke: [], needConfirm: true });
  timers.confirmLeadership(clock.ms);
  t.same(timers.tick(2).revoke, [1, 2]);
  t.same(timers.tick(0).revoke, []);
  t.same(timers.tick().revoke, [3, 4, 5]);
});
