/**
 * A member's record is reaped (dead: 24 h, left: 1 h) and a recorder replays the member's old
 * alive announcement afterwards: the ghost must not come back (the transport's replay cache has
 * long forgotten the nonce; only the machine can tell). The member itself must still be able
 * to rejoin, with its saved incarnation or without it. Virtual time (TestNet): the day passes
 * in 60-second steps.
 */
import t from 'tap';
import { detectionBoundMs } from '../../core/gossip/config.js';
import { MsgType, type AliveMsg, type PushPullEntry } from '../../core/gossip/types.js';
import { MAX_REAPED_MEMBERS } from '../../core/gossip/limits.js';
import { TestNet } from './harness.js';

const DAY_AND_AN_HOUR_MS = 25 * 3_600_000;
const ATTACKER = { host: '10.66.6.6', port: 7946 };

function aliveOf(name: string, incarnation: number): AliveMsg {
  const { host, port } = TestNet.addr(name);
  return { t: MsgType.Alive, name, incarnation, host, port, meta: {}, protocol: 1 };
}

function entryOf(name: string, incarnation: number): PushPullEntry {
  const { host, port } = TestNet.addr(name);
  return { name, incarnation, host, port, status: 'alive', meta: {}, protocol: 1 };
}

const watchers = ['a', 'b', 'c'];

/** d crashes and e leaves; a day and an hour later both are reaped everywhere. */
function reapedCluster(): TestNet {
  const net = TestNet.cluster(['a', 'b', 'c', 'd', 'e']);
  net.advance(500);
  net.do('e', (m) => m.leave(net.now));
  net.advance(500);
  net.down.add('e');
  net.down.add('d');
  net.advance(detectionBoundMs(net.config, 5));
  net.advance(DAY_AND_AN_HOUR_MS, 60_000);
  return net;
}

t.test('a replayed alive message of a reaped member (dead or left) does not bring it back', async (t) => {
  const net = reapedCluster();
  for (const n of watchers) {
    t.same(net.m(n).members().map((m) => m.name).sort(), watchers, `${n} reaped d and e`);
    t.equal(net.m(n).counters.membersReaped, 2);
  }
  const seenBy = (name: string): string[] => net.eventsAbout(name).filter((e) => watchers.includes(e.observer)).map((e) => e.ev.type);
  t.same(seenBy('d'), ['fail', 'fail', 'fail'], 'd was reported failed');
  t.same(seenBy('e'), ['leave', 'leave', 'leave'], 'e was reported left');
  const eventsBefore = net.events.length;
  // The recorder's captures: d's and e's announcements, over UDP and as a join push-pull.
  for (const n of watchers) {
    net.do(n, (m) => m.step([aliveOf('d', 0), aliveOf('e', 0)], ATTACKER, net.now));
    net.do(n, (m) => m.handleStream({ t: MsgType.PushPull, join: true, from: 'd', states: [entryOf('d', 0), entryOf('e', 0)] }, net.now).effects);
  }
  net.advance(5_000);
  for (const n of watchers) {
    t.same(net.m(n).members().map((m) => m.name).sort(), watchers, `${n} did not re-add d or e`);
    t.equal(net.m(n).counters.reapedAlivesIgnored, 4, `${n} counted the 4 replayed announcements`);
  }
  t.same(net.events.slice(eventsBefore), [], 'no join event for a ghost');
  // The only answer: a suspicion sent to the ghost's own address (nobody there), not to the sender.
  const told = net.packets((s) => s.msgs.some((m) => m.t === MsgType.Suspect && (m.name === 'd' || m.name === 'e')) && s.atMs >= net.now - 5_000);
  t.ok(told.length >= 6, `each watcher told d's and e's addresses (${told.length} packets)`);
  t.ok(told.every((s) => s.to === 'd' || s.to === 'e'), 'only to the reaped members themselves');
});

t.test('a reaped member that comes back rejoins: with its saved incarnation at once, without it by refuting', async (t) => {
  const net = reapedCluster();
  // e's agent restarts with its saved incarnation + 1 (agent/gossip-subsystem.ts).
  net.add('e', { incarnation: 1 });
  net.do('e', (m) => m.join([TestNet.addr('a')], net.now));
  net.advance(2_000);
  for (const n of watchers) {
    t.equal(net.m(n).member('e')?.status, 'alive', `${n} has e back`);
    t.equal(net.m(n).counters.reapedAlivesIgnored, 0, `${n} had nothing to ignore`);
  }
  t.equal(net.m('e').counters.refutations, 0, 'e did not need to refute');
  // d comes back on a new SD card: no saved incarnation, so it announces 0 again, which is not
  // believed; its own address is told, and it refutes above.
  net.add('d', { incarnation: 0 });
  net.do('d', (m) => m.join([TestNet.addr('a')], net.now));
  net.advance(2_000);
  for (const n of [...watchers, 'e']) {
    const d = net.m(n).member('d');
    t.equal(d?.status, 'alive', `${n} has d back`);
    t.ok((d?.incarnation ?? 0) >= 1, `${n} knows d above its last incarnation (${d?.incarnation})`);
  }
  t.ok(net.m('d').counters.refutations >= 1, 'd refuted');
  t.equal(net.eventsAbout('d', 'join').filter((e) => watchers.includes(e.observer)).length, 3, 'a, b and c report d joined');
});

t.test('before the reap too: an old alive message from the address a dead member had before does not revive it there', async (t) => {
  const net = TestNet.cluster(['a', 'b', 'c', 'd']);
  net.advance(500);
  const fromOldAddress = aliveOf('d', 0);
  // d dies, comes back at a new address (DHCP) with its saved incarnation + 1, and dies again.
  net.down.add('d');
  net.advance(detectionBoundMs(net.config, 4));
  const moved = { host: '10.77.0.1', port: 7946 };
  net.add('d', { address: moved, incarnation: 1 });
  net.do('d', (m) => m.join([TestNet.addr('a')], net.now));
  net.advance(2_000);
  for (const n of watchers) t.same([net.m(n).member('d')?.status, net.m(n).member('d')?.host], ['alive', moved.host], `${n} has d back at its new address`);
  net.down.add('d');
  net.advance(detectionBoundMs(net.config, 4));
  for (const n of watchers) t.equal(net.m(n).member('d')?.status, 'dead', `${n} has d dead again`);
  const eventsBefore = net.events.length;
  for (const n of watchers) net.do(n, (m) => m.step([fromOldAddress], ATTACKER, net.now));
  net.advance(1_000);
  for (const n of watchers) t.same([net.m(n).member('d')?.status, net.m(n).member('d')?.host], ['dead', moved.host], `${n} still has d dead at its last address`);
  t.same(net.events.slice(eventsBefore), [], 'no join event');
  // d back once more at a third address, its saved incarnation lost: it refutes above and rejoins.
  const third = { host: '10.77.0.2', port: 7946 };
  net.add('d', { address: third, incarnation: 0 });
  net.do('d', (m) => m.join([TestNet.addr('a')], net.now));
  net.advance(2_000);
  for (const n of watchers) t.same([net.m(n).member('d')?.status, net.m(n).member('d')?.host], ['alive', third.host], `${n} has d alive at its third address`);
  t.ok(net.m('d').incarnation >= 2, `d refuted above its last incarnation (${net.m('d').incarnation})`);
});

t.test('a node restarted after the reap, given the reaped members it saved, still ignores the replay (without them it takes the ghost back)', async (t) => {
  const net = reapedCluster();
  const saved = net.m('a').reapedMembers();
  t.same(saved.map(([name]) => name).sort(), ['d', 'e'], 'a remembers d and e as reaped');
  t.equal(net.m('a').reapedChanges, 2, 'two changes to save');
  const replay = (): void => net.do('a', (m) => m.step([aliveOf('d', 0), aliveOf('e', 0)], ATTACKER, net.now));
  const restartA = (reaped?: Array<[string, number]>): void => {
    net.add('a', { incarnation: net.m('a').incarnation + 1, reaped });
    net.do('a', (m) => m.join([TestNet.addr('b')], net.now));
    net.advance(2_000);
  };
  // The agent saved them (agent/gossip-subsystem.ts) and passes them back at the restart.
  restartA(saved);
  t.same(net.m('a').members().map((m) => m.name).sort(), watchers, 'a rejoined b and c');
  t.same(net.m('a').reapedMembers(), saved, 'a starts out remembering them, oldest first');
  t.equal(net.m('a').reapedChanges, 0, 'nothing new to save at the start');
  replay();
  net.advance(1_000);
  t.same(net.m('a').members().map((m) => m.name).sort(), watchers, 'a did not re-add d or e');
  t.equal(net.m('a').counters.reapedAlivesIgnored, 2);
  // A restart that lost them: the hole this memory closes.
  restartA(undefined);
  replay();
  t.same(net.m('a').members().map((m) => m.name).sort(), ['a', 'b', 'c', 'd', 'e'], 'without it, a takes both ghosts back');
  // A member whose reaped memory is older than its return: it comes back above it, and is no
  // longer remembered as reaped (a change to save).
  restartA(saved);
  net.add('e', { incarnation: 1 });
  net.do('e', (m) => m.join([TestNet.addr('a')], net.now));
  net.advance(2_000);
  t.equal(net.m('a').member('e')?.status, 'alive', 'e rejoined above its last incarnation');
  t.same(net.m('a').reapedMembers().map(([name]) => name), ['d'], 'only d is still remembered');
  t.equal(net.m('a').reapedChanges, 1);
});

t.test('reaped: at most MAX_REAPED_MEMBERS are taken at the start, the newest; our own name is skipped', async (t) => {
  const net = new TestNet();
  const many: Array<[string, number]> = [['z', 1]];
  for (let i = 0; i < MAX_REAPED_MEMBERS; i++) many.push([`n${i}`, i]);
  many.push(['self', 9]);
  const m = net.add('self', { reaped: many });
  const kept = m.reapedMembers();
  t.equal(kept.length, MAX_REAPED_MEMBERS);
  t.same(kept[0], ['n0', 0], 'the oldest (z) was dropped');
  t.notOk(kept.some(([name]) => name === 'self' || name === 'z'));
});
