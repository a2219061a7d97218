/**
 * The SWIM + Lifeguard state machine, scenario by scenario, on the hand-driven TestNet
 * (LOCAL_CONFIG timing: 200 ms probe interval, 100 ms probe timeout, 2 helpers).
 */
import t from 'tap';
import { LOCAL_CONFIG, detectionBoundMs, retransmitLimit, suspicionTimeoutMs, suspicionTimeouts } from '../../core/gossip/config.js';
import { SEAL_OVERHEAD_BYTES } from '../../core/gossip/limits.js';
import { Suspicion } from '../../core/gossip/suspicion.js';
import { MsgType } from '../../core/gossip/types.js';
import { TestNet } from './harness.js';

t.test('a healthy cluster never suspects anyone', async (t) => {
  const net = TestNet.cluster(['a', 'b', 'c', 'd']);
  net.advance(10_000);
  for (const m of net.machines.values()) {
    t.equal(m.counters.suspicionsRaised, 0, `${m.name} raised no suspicion`);
    t.ok(m.counters.probes >= 40, `${m.name} probed (${m.counters.probes})`);
  }
  t.equal(net.events.length, 0, 'no membership events');
});

t.test('a crashed member: ping, ping-req with nacks, TCP ping, suspicion told directly, checks, then fail everywhere', async (t) => {
  const net = TestNet.cluster(['a', 'b', 'c', 'd']);
  net.advance(1_000);
  net.down.add('x'); // no-op name, keeps the harness honest
  net.down.add('d');
  const crashAt = net.now;
  net.advance(detectionBoundMs(net.config, 4));
  const fails = net.eventsAbout('d', 'fail');
  t.same(fails.map((f) => f.observer).sort(), ['a', 'b', 'c'], 'every live member reports d failed');
  for (const f of fails) t.ok(f.atMs - crashAt <= detectionBoundMs(net.config, 4), `${f.observer} within the bound (${f.atMs - crashAt} ms)`);
  const pingReqs = net.packets((s) => s.msgs.some((m) => m.t === MsgType.PingReq && m.target === 'd'));
  t.ok(pingReqs.length > 0, 'indirect probes were sent');
  t.ok(net.packets((s) => s.msgs.some((m) => m.t === MsgType.Nack)).length > 0, 'helpers answered with nacks');
  const toldDirectly = net.packets((s) => s.to === 'd' && s.msgs[0]!.t === MsgType.Suspect);
  t.ok(toldDirectly.length > 0, 'the suspicion was sent straight to the suspect');
  // Whoever declared d dead on its own timer first checked with d three times.
  const declarer = ['a', 'b', 'c'].find((n) => net.m(n).counters.deathsDeclared > 0)!;
  t.ok(declarer, `${declarer} declared d dead on its own timer`);
  t.ok(net.m(declarer).counters.suspicionChecks >= 3, `${declarer} checked with d (${net.m(declarer).counters.suspicionChecks} check pings) before declaring it dead`);
  const a = net.m('a');
  t.ok(a.counters.tcpFallbackProbes > 0, 'the TCP fallback was tried');
  t.equal(a.member('d')!.status, 'dead');
});

t.test('a false suspicion is refuted with a higher incarnation and nobody declares death', async (t) => {
  const net = TestNet.cluster(['a', 'b', 'c', 'd']);
  net.advance(500);
  // Everything to and from d is lost for a while: someone suspects it.
  net.drop = (from, to) => from === 'd' || to === 'd';
  const before = net.m('d').incarnation;
  for (let i = 0; i < 200 && [...net.machines.values()].every((m) => m.member('d')!.status === 'alive'); i++) net.advance(10);
  t.ok([...net.machines.values()].some((m) => m.member('d')!.status === 'suspect'), 'd is suspected');
  net.drop = () => false;
  net.advance(3_000);
  t.ok(net.m('d').incarnation > before, 'd refuted with a new incarnation');
  t.ok(net.m('d').counters.refutations >= 1);
  for (const n of ['a', 'b', 'c']) t.equal(net.m(n).member('d')!.status, 'alive', `${n} sees d alive again`);
  t.equal(net.eventsAbout('d', 'fail').length, 0, 'no false death');
});

t.test('Lifeguard awareness: a node whose packets do not get out slows down instead of accusing', async (t) => {
  const net = TestNet.cluster(['a', 'b', 'c', 'd', 'e']);
  net.advance(500);
  // a can send but hears nothing back: its probes fail and no nack reaches it.
  net.drop = (_from, to) => to === 'a';
  net.advance(3_000);
  const a = net.m('a');
  t.ok(a.healthScore > 0, `a's health score rose to ${a.healthScore}`);
  const probesBefore = a.counters.probes;
  net.advance(4_000);
  const probesSlow = a.counters.probes - probesBefore;
  t.ok(probesSlow < 4_000 / LOCAL_CONFIG.probeIntervalMs / 2, `a probes at most half as often (${probesSlow} probes in 4 s)`);
  net.drop = () => false;
  net.advance(20_000);
  t.equal(a.healthScore, 0, 'health recovers once acks come back');
});

t.test('dynamic suspicion: the timeout starts at max and falls to min with k confirmations', async (t) => {
  t.equal(suspicionTimeoutMs(12_000, 72_000, 2, 0), 72_000);
  t.equal(suspicionTimeoutMs(12_000, 72_000, 2, 1), Math.floor(72_000 - (60_000 * Math.log(2)) / Math.log(3)));
  t.equal(suspicionTimeoutMs(12_000, 72_000, 2, 2), 12_000);
  t.equal(suspicionTimeoutMs(12_000, 72_000, 0, 0), 12_000, 'k = 0: no confirmations expected');
  const s = new Suspicion('a', 2, 1_000, 6_000, 100);
  t.equal(s.deadlineMs(), 6_100);
  t.notOk(s.confirm('a'), 'the accuser does not confirm itself');
  t.ok(s.confirm('b'));
  t.notOk(s.confirm('b'), 'one confirmation per member');
  t.ok(s.confirm('c'));
  t.notOk(s.confirm('d'), 'no more than k');
  t.equal(s.deadlineMs(), 1_100);
  const lan = suspicionTimeouts({ ...LOCAL_CONFIG, suspicionMult: 4, probeIntervalMs: 1_000, suspicionMaxTimeoutMult: 6 }, 1000);
  t.same(lan, { minMs: 12_000, maxMs: 72_000, k: 2 }, "memberlist's numbers for n = 1,000");
});

t.test('buddy system: probing a suspect carries the suspicion in the ping', async (t) => {
  const net = TestNet.cluster(['a', 'b', 'c']);
  net.drop = (from) => from === 'c';
  net.advance(2_000);
  const buddy = net.packets((s) => s.to === 'c' && s.msgs[0]!.t === MsgType.Ping && s.msgs.some((m) => m.t === MsgType.Suspect && m.name === 'c'));
  t.ok(buddy.length > 0, 'pings to the suspect carry the suspect message');
});

t.test('graceful leave: others report left (not failed) and stop probing it', async (t) => {
  const net = TestNet.cluster(['a', 'b', 'c', 'd']);
  net.advance(500);
  net.do('d', (m) => m.leave(net.now));
  net.advance(500);
  net.down.add('d');
  net.advance(5_000);
  t.same(net.eventsAbout('d', 'leave').map((e) => e.observer).sort(), ['a', 'b', 'c']);
  t.equal(net.eventsAbout('d', 'fail').length, 0, 'never reported as failed');
  const since = net.now;
  net.advance(2_000);
  t.equal(net.packets((s) => s.to === 'd' && s.atMs > since && s.msgs[0]!.t === MsgType.Ping).length, 0, 'no more probes of d');
});

t.test('metadata updates spread with a new incarnation; oversized metadata is refused', async (t) => {
  const net = TestNet.cluster(['a', 'b', 'c'], {}, { role: 'worker' });
  net.do('c', (m) => m.updateMeta({ role: 'manager', zone: 'rack-2' }, net.now));
  net.advance(1_000);
  const ups = net.eventsAbout('c', 'update');
  t.same(ups.map((u) => u.observer).sort(), ['a', 'b']);
  t.same(net.m('a').member('c')!.meta, { role: 'manager', zone: 'rack-2' });
  t.equal(net.m('a').member('c')!.incarnation, 1);
  t.throws(() => net.m('c').updateMeta({ blob: 'x'.repeat(600) }, net.now), { code: 'GOSSIP_META_TOO_LARGE' });
});

t.test('join by push-pull; a name held by another live member is refused', async (t) => {
  const net = TestNet.cluster(['a', 'b']);
  net.add('c');
  let outcome: unknown;
  net.do('c', (m) => {
    const fx = m.join([TestNet.addr('a')], net.now);
    return fx;
  });
  net.advance(1_000);
  t.same(net.m('c').members().map((m) => m.name).sort(), ['a', 'b', 'c'], 'c learned everyone');
  t.ok(net.eventsAbout('c', 'join').length >= 2, 'a and b report c joined');
  // An impostor at another address with the name "b".
  const impostor = net.add('bb', { address: { host: '10.9.9.9', port: 9 } });
  void impostor;
  const m2 = new (net.m('a').constructor as typeof import('../../core/gossip/machine.js').GossipMachine)({
    name: 'b', address: { host: '10.9.9.9', port: 9 }, config: net.config, random: new (await import('../../core/sim/prng.js')).Prng(1), nowMs: net.now,
  });
  const fx = m2.join([TestNet.addr('a')], net.now);
  const req = fx.streams[0]!;
  const { reply } = net.m('a').handleStream(req.request, net.now);
  t.equal(reply.t, MsgType.StreamError, 'the seed refuses');
  outcome = m2.streamResult(req.id, reply, net.now).joins[0];
  t.same(outcome, { streamId: req.id, ok: false, code: 'GOSSIP_NAME_CONFLICT' });
  t.equal(net.m('a').member('b')!.host, TestNet.addr('b').host, 'the real b is untouched');
  // An alive message for b from another address is ignored as a conflict.
  net.do('a', (m) => m.step([{ t: MsgType.Alive, name: 'b', incarnation: 99, host: '10.9.9.9', port: 9, meta: {}, protocol: 1 }], { host: '10.9.9.9', port: 9 }, net.now));
  t.equal(net.m('a').member('b')!.incarnation, 0);
  t.ok(net.m('a').counters.nameConflicts >= 1);
});

t.test('a failed member that restarts rejoins with a higher incarnation', async (t) => {
  const net = TestNet.cluster(['a', 'b', 'c']);
  net.advance(500);
  net.down.add('c');
  net.advance(detectionBoundMs(net.config, 3));
  t.equal(net.m('a').member('c')!.status, 'dead');
  // Restart without a persisted incarnation: the cluster tells it it is dead, it refutes.
  net.add('c', { incarnation: 0 });
  net.do('c', (m) => m.join([TestNet.addr('a')], net.now));
  net.advance(2_000);
  const a = net.m('a').member('c')!;
  t.equal(a.status, 'alive');
  t.ok(a.incarnation > 0, `higher incarnation (${a.incarnation})`);
  t.ok(net.eventsAbout('c', 'join').length >= 2, 'a and b report c back');
});

t.test('push-pull: a remote verdict of death only starts a suspicion', async (t) => {
  const net = TestNet.cluster(['a', 'b', 'c']);
  const { effects } = net.m('a').handleStream(
    { t: MsgType.PushPull, join: false, from: 'b', states: [{ name: 'c', incarnation: 0, host: TestNet.addr('c').host, port: TestNet.addr('c').port, status: 'dead', meta: {}, protocol: 1 }] },
    net.now,
  );
  t.equal(effects.events.length, 0, 'no fail event');
  t.equal(net.m('a').member('c')!.status, 'suspect');
});

t.test('packets stay within the UDP budget; broadcasts stop after λ·log(n) transmissions', async (t) => {
  const names = Array.from({ length: 30 }, (_, i) => `n${String(i).padStart(2, '0')}`);
  const net = TestNet.cluster(names, { udpBudgetBytes: 600 });
  for (const n of names.slice(0, 20)) net.do(n, (m) => m.updateMeta({ long: 'y'.repeat(100), n }, net.now));
  net.advance(3_000);
  const max = Math.max(...net.sent.map((s) => s.sizeBytes));
  t.ok(max <= 600 - SEAL_OVERHEAD_BYTES, `largest packet ${max} B fits the budget`);
  const limit = retransmitLimit(net.config, 30);
  const aboutN00 = net.packets((s) => s.from === 'n05' && s.msgs.some((m) => m.t === MsgType.Alive && m.name === 'n00' && m.incarnation === 1));
  t.ok(aboutN00.length <= limit, `n05 sent n00's update ${aboutN00.length} ≤ ${limit} times`);
  t.equal(net.m('n05').queuedBroadcasts(), 0, 'the queue drained');
  for (const n of names) t.equal(net.m(n).member('n00')!.incarnation, 1, `${n} has the update`);
});

t.test('a member that missed the refutation is rescued by asking the suspect directly', async (t) => {
  const net = TestNet.cluster(['a', 'b', 'c', 'd']);
  net.advance(300);
  // b hears (only) that d is suspect: no alive message about d reaches b by gossip.
  net.drop = (from, to, msgs) => to === 'b' && from !== 'd' && msgs.some((m) => m.t === MsgType.Alive && m.name === 'd');
  net.do('b', (m) => m.step([{ t: MsgType.Suspect, name: 'd', incarnation: 0, from: 'a' }], TestNet.addr('a'), net.now));
  t.equal(net.m('b').member('d')!.status, 'suspect');
  net.advance(6_000);
  t.equal(net.m('b').member('d')!.status, 'alive', "b's buddy probe or check ping got d's newer incarnation");
  t.ok(net.m('d').counters.aliveReplies >= 1, 'd answered a stale suspicion directly');
  t.equal(net.eventsAbout('d', 'fail').length, 0);
});
