import t from 'tap';
import { EventQueue, MAX_PENDING_EVENTS } from '../../core/sim/events.js';
import { Prng } from '../../core/sim/prng.js';
import { MAX_ENDPOINT, RELIABLE_NETWORK, SimNetwork, type NetworkProfile } from '../../core/sim/network.js';
import { cloneMessage } from '../../core/sim/clone.js';
import { emptyMessage, EntryType, MessageType, type Message } from '../../core/raft/types.js';

interface Got {
  at: number;
  to: number;
  msg: { n: number; body: Uint8Array };
}

function setup(profile: NetworkProfile, seed = 1): { q: EventQueue; net: SimNetwork<{ n: number; body: Uint8Array }>; got: Got[] } {
  const q = new EventQueue();
  const got: Got[] = [];
  type M = { n: number; body: Uint8Array };
  const net = new SimNetwork<M>(q, new Prng(seed), profile, (m: M) => ({ n: m.n, body: m.body.slice() }), (to, msg) => got.push({ at: q.nowMs, to, msg }));
  return { q, net, got };
}

t.test('event queue runs in (time, insertion) order and refuses the past', async (t) => {
  const q = new EventQueue();
  const order: string[] = [];
  q.at(5, () => order.push('b'));
  q.at(1, () => order.push('a'));
  q.at(5, () => order.push('c'));
  q.at(5, () => q.after(0, () => order.push('d')));
  q.runUntil(10);
  t.same(order, ['a', 'b', 'c', 'd']);
  t.equal(q.nowMs, 10);
  t.throws(() => q.at(9, () => {}), { code: 'SIM_TIME_TRAVEL' });
});

t.test('the event queue refuses more than MAX_PENDING_EVENTS pending events', async (t) => {
  const q = new EventQueue();
  const noop = (): void => {};
  for (let i = 0; i < MAX_PENDING_EVENTS; i++) q.at(i, noop);
  t.equal(q.size, MAX_PENDING_EVENTS, 'exactly the limit is accepted');
  t.throws(() => q.at(0, noop), { code: 'SIM_QUEUE_OVERFLOW' });
});

t.test('a reliable network delivers every message once within its delay bounds', async (t) => {
  const { q, net, got } = setup(RELIABLE_NETWORK);
  const body = new Uint8Array([1, 2, 3]);
  for (let i = 0; i < 200; i++) net.send(1, 2, { n: i, body });
  body[0] = 99; // the sender changing its buffer after send must not reach the receiver
  q.runUntil(1000);
  t.equal(got.length, 200);
  t.ok(got.every((g) => g.at >= 1 && g.at <= 3));
  t.ok(got.every((g) => g.msg.body[0] === 1), 'messages are copied at send time');
  t.not(got[0]!.msg.body, got[1]!.msg.body, 'copies share no buffer');
  t.same(net.stats, { sent: 200, delivered: 200, lost: 0, cutByPartition: 0, duplicated: 0 });
});

t.test('loss, duplication and reordering happen at the configured rates', async (t) => {
  const profile: NetworkProfile = { lossProbability: 0.2, duplicateProbability: 0.1, minDelayMs: 1, maxDelayMs: 10, spikeProbability: 0.1, spikeMaxDelayMs: 200 };
  const { q, net, got } = setup(profile, 7);
  const n = 5000;
  for (let i = 0; i < n; i++) net.send(1, 2, { n: i, body: new Uint8Array(0) });
  q.runUntil(10_000);
  const lossRate = net.stats.lost / (n + net.stats.duplicated);
  t.ok(lossRate > 0.17 && lossRate < 0.23, `loss ${lossRate}`);
  t.ok(net.stats.duplicated > 400 && net.stats.duplicated < 600, `dups ${net.stats.duplicated}`);
  const seen = new Map<number, number>();
  for (const g of got) seen.set(g.msg.n, (seen.get(g.msg.n) ?? 0) + 1);
  t.ok([...seen.values()].some((c) => c === 2), 'some messages arrive twice');
  let inversions = 0;
  for (let i = 1; i < got.length; i++) if (got[i]!.msg.n < got[i - 1]!.msg.n) inversions++;
  t.ok(inversions > 100, `reordered deliveries: ${inversions}`);
  t.ok(Math.max(...got.map((g) => g.at)) > 50, 'spikes delay some messages far beyond maxDelayMs');
  t.equal(got.length, net.stats.delivered);
});

t.test('symmetric and asymmetric partitions cut links, including in-flight messages, and heal', async (t) => {
  const { q, net, got } = setup(RELIABLE_NETWORK);
  const m = { n: 0, body: new Uint8Array(0) };
  net.partition([[1, 2], [3]]);
  t.equal(net.send(1, 3, m), 0);
  t.equal(net.send(3, 2, m), 0);
  t.equal(net.send(1, 2, m), 1, 'same side still talks');
  q.runUntil(10);
  net.heal();
  net.cutOneWay([1], [2]);
  t.equal(net.send(1, 2, m), 0, 'one way cut');
  t.equal(net.send(2, 1, m), 1, 'the other way flows');
  q.runUntil(20);
  net.heal();
  net.send(1, 3, m); // in flight when the partition forms
  net.partition([[1], [2, 3]]);
  q.runUntil(100);
  t.same(
    got.map((g) => g.to),
    [2, 1],
  );
  t.equal(net.stats.cutByPartition, 4, 'three at send time, one in flight');
  net.heal();
  t.equal(net.cutLinkCount, 0);
  net.send(1, 3, m);
  q.runUntil(200);
  t.equal(got.at(-1)!.to, 3);
  t.throws(() => net.cutLink(MAX_ENDPOINT, 1), { code: 'SIM_BAD_OPTION' });
  t.throws(() => net.setProfile({ ...RELIABLE_NETWORK, lossProbability: 1.5 }), { code: 'SIM_BAD_OPTION' });
});

t.test('the same seed gives the same deliveries', async (t) => {
  const profile: NetworkProfile = { lossProbability: 0.1, duplicateProbability: 0.1, minDelayMs: 1, maxDelayMs: 20, spikeProbability: 0.05, spikeMaxDelayMs: 100 };
  const run = (seed: number): string => {
    const { q, net, got } = setup(profile, seed);
    for (let i = 0; i < 300; i++) net.send(i % 3, (i + 1) % 3, { n: i, body: new Uint8Array(0) });
    q.runUntil(1000);
    return got.map((g) => `${g.at}:${g.to}:${g.msg.n}`).join(',');
  };
  t.equal(run(42), run(42));
  t.not(run(42), run(43));
});

t.test('raft messages are deep-copied, entries and snapshot chunks included', async (t) => {
  const m: Message = { ...emptyMessage(MessageType.App, 1, 2, 3), entries: [{ term: 3, index: 7, type: EntryType.Normal, data: new Uint8Array([5]) }] };
  m.snapshot = { metadata: { index: 4, term: 2, conf: { voters: [1, 2], learners: [] } }, offset: 0, data: new Uint8Array([9]), totalBytes: 1, done: true };
  m.context = new Uint8Array([1]);
  const c = cloneMessage(m);
  t.same(c, m);
  t.not(c.entries[0]!.data, m.entries[0]!.data);
  t.not(c.snapshot!.data, m.snapshot.data);
  t.not(c.snapshot!.metadata.conf.voters, m.snapshot.metadata.conf.voters);
  t.not(c.context, m.context);
});
