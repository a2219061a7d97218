/**
 * One member's data dir started twice (an SD card image of a running manager flashed onto
 * another board), on real agents: the copy is told by the members it dials that another
 * process is that member and started first, and stops with a message saying what to do; the
 * original keeps its place, its address and the cluster's writes. The same copy started under
 * another --name is refused at once (the data dir names its member), and so is one started on
 * another board (the data dir records its board, here named through PICLOUD_BOARD_ID), unless
 * told the card was moved there for good (--new-board).
 */
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { BOARD_ID_ENV } from '../../agent/board-id.js';
import { DUPLICATE_LIVE_WINDOW_MS } from '../../core/net/duplicate-member.js';
import { AgentCluster, AgentProc, etcdctl, hasEtcdctl } from '../helpers/agents.js';

function peerUrlOf(cluster: AgentCluster, name: string): string | undefined {
  const r = etcdctl(cluster.endpoints(cluster.agents.filter((a) => a.proc?.exitCode === null)), ['member', 'list', '-w', 'json']);
  if (r.status !== 0) return undefined;
  const m = (JSON.parse(r.stdout) as { members: Array<{ name: string; peerURLs?: string[] }> }).members.find((x) => x.name === name);
  return m?.peerURLs?.[0];
}

t.test('a copied data dir started beside the original (one board id: two VMs, or a wrong --new-board): the copy stops, the original keeps its place', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['d1', 'd2', 'd3']);
  const [d1, d2, d3] = cluster.agents as [AgentProc, AgentProc, AgentProc];

  // The image is taken of d2's card while it is shut down, then d2 boots again.
  cluster.kill(d2, 'SIGTERM');
  t.equal(await cluster.exited(d2), 0, 'd2 stopped for the image');
  const imageDir = join(cluster.root, 'd2-image');
  cpSync(d2.dataDir, imageDir, { recursive: true });
  cluster.start(d2, false);
  await cluster.ready(d2);
  const originalPeerUrl = peerUrlOf(cluster, 'd2');
  t.equal(originalPeerUrl, `http://127.0.0.1:${d2.ports.peer}`, 'd2 is recorded at its own peer port');
  // Past the live window since d2 dialed the others: they hear it through its own frames only
  // (Raft traffic to the leader; idle keep-alives to the other follower).
  await new Promise((r) => setTimeout(r, DUPLICATE_LIVE_WINDOW_MS + 1_000));

  // The image boots on another board as d2 too (its own ports here, as another board's address).
  const copy = await cluster.add('d2-copy');
  copy.name = 'd2';
  copy.dataDir = imageDir;
  const started = Date.now();
  cluster.start(copy, false);
  t.equal(await cluster.exited(copy, 30_000), 1, 'the copy stops, failing');
  const log = copy.log.join('');
  t.match(log, /another process is running as this member \([0-9a-f]+, data dir [^)]+\) and started first/, 'it says why');
  t.match(log, /member [0-9a-f]+ hears it from 127\.0\.0\.1:\d+, up \d+ s/, 'and which member saw the other process');
  t.match(log, /remove this data dir and start it with its own --name/, 'and what to do');
  t.comment(`the copy stopped ${Date.now() - started} ms after it was started`);

  await cluster.ready(d2, 5_000);
  t.equal(peerUrlOf(cluster, 'd2'), originalPeerUrl, 'the original is still recorded where it is');
  for (const a of [d1, d3]) {
    t.notOk(a.log.join('').includes(`"address":"127.0.0.1:${copy.ports.peer}"`), `${a.name} never dialed d2 at the copy's address`);
  }
  t.equal(etcdctl(cluster.endpoints([d1, d3]), ['put', 'after-the-copy', 'yes']).status, 0, 'the cluster commits');
  t.equal(etcdctl(cluster.endpoints([d2]), ['get', 'after-the-copy', '--print-value-only']).stdout, 'yes\n', 'the original d2 serves linearizable reads');
  t.notOk(d2.log.join('').includes('another process is running as this member'), 'the original was never told to stop');

  // The same image started under the board's own name: refused before it takes any part.
  const renamed = await cluster.add('d9');
  renamed.dataDir = imageDir;
  cluster.start(renamed, false);
  t.equal(await cluster.exited(renamed), 1, 'started under another --name, it refuses to start');
  t.match(renamed.log.join(''), /the data dir .* belongs to member 'd2' \([0-9a-f]+\), not 'd9': start it with --name d2, or, for a new member .* remove the data dir/);

  // The image's identity.json edited to name another member's ID (d3's, while d3 is down), or an
  // ID no member has: refused at start, before it could run d2's log and vote as d3, or wait for
  // ever for a cluster that does not know it.
  const idOf = (dir: string): number => (JSON.parse(readFileSync(join(dir, 'identity.json'), 'utf8')) as { id: number }).id;
  const d2Id = idOf(imageDir);
  cluster.kill(d3, 'SIGTERM');
  t.equal(await cluster.exited(d3), 0, 'd3 stopped');
  for (const [label, id] of [['d3\'s', idOf(d3.dataDir)], ['nobody\'s', 0x1234567]] as const) {
    const identity = JSON.parse(readFileSync(join(imageDir, 'identity.json'), 'utf8')) as { id: number };
    writeFileSync(join(imageDir, 'identity.json'), JSON.stringify({ ...identity, id }) + '\n');
    const edited = await cluster.add('d2-edited');
    Object.assign(edited, { name: 'd2', dataDir: imageDir });
    cluster.start(edited, false);
    t.equal(await cluster.exited(edited, 30_000), 1, `identity.json naming ${label} ID: refused`);
    const log = edited.log.join('');
    const known = id === d2Id ? '' : label.startsWith('d3') ? `${id.toString(16)} as 'd3'` : `no member ${id.toString(16)}`;
    t.match(log, `identity.json names member 'd2' ${id.toString(16)}, but the membership this data dir holds knows ${known} and 'd2' as ${d2Id.toString(16)}: identity.json was edited or copied from another member's data dir`, 'saying what the data dir knows');
    t.match(log, `put back this member's own identity.json (id ${d2Id.toString(16)})`, 'and what to do');
    t.notOk(log.includes('"msg":"agent started"'), 'before it took any part');
  }
  // d3's whole identity.json (its name and ID) put in the image of d2's data dir, started as d3:
  // the membership the data dir holds was written by d2, so it holds d2's log and vote.
  writeFileSync(join(imageDir, 'identity.json'), readFileSync(join(d3.dataDir, 'identity.json')));
  const asD3 = await cluster.add('d3-from-d2');
  Object.assign(asD3, { name: 'd3', dataDir: imageDir });
  cluster.start(asD3, false);
  t.equal(await cluster.exited(asD3, 30_000), 1, "d3's identity.json in d2's data dir: refused");
  const asD3Log = asD3.log.join('');
  t.match(asD3Log, `identity.json names member 'd3' ${idOf(d3.dataDir).toString(16)}, but this data dir holds the Raft log, term and vote of member 'd2' ${d2Id.toString(16)}`, 'naming whose state it holds');
  t.notOk(asD3Log.includes('"msg":"agent started"'), 'before it took any part');
  const members = JSON.parse(etcdctl(cluster.endpoints([d1, d2]), ['member', 'list', '-w', 'json']).stdout) as { members: Array<{ name: string; peerURLs: string[] }> };
  t.same(members.members.find((m) => m.name === 'd3')?.peerURLs, [`http://127.0.0.1:${d3.ports.peer}`], 'd3 is still recorded at its own address');
});

t.test('a new board joining under a member\'s name is refused at once, saying what to do', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['n1']);
  const twin = await cluster.add('n1');
  twin.dataDir = join(cluster.root, 'n1-second-board');
  const started = Date.now();
  cluster.start(twin, false);
  t.equal(await cluster.exited(twin), 1, 'the second n1 does not start');
  t.ok(Date.now() - started < 10_000, `it stops without retrying (${Date.now() - started} ms)`);
  t.match(twin.log.join(''), /a member named n1 already exists at 127\.0\.0\.1:\d+: start this one with another --name, or, if it replaces that member, remove that one first \(etcdctl member remove [0-9a-f]+\)/);
  t.equal((JSON.parse(etcdctl(cluster.endpoints([cluster.agents[0]!]), ['member', 'list', '-w', 'json']).stdout) as { members: unknown[] }).members.length, 1, 'nothing was added');
});

t.test('an image booted on another board is refused at start; --new-board takes a card moved for good', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  for (const n of ['b1', 'b2', 'b3']) (await cluster.add(n)).env = { [BOARD_ID_ENV]: `board-${n}` };
  await cluster.startAdded();
  const [b1, b2, b3] = cluster.agents as [AgentProc, AgentProc, AgentProc];

  cluster.kill(b2, 'SIGTERM');
  t.equal(await cluster.exited(b2), 0);
  const imageDir = join(cluster.root, 'b2-image');
  cpSync(b2.dataDir, imageDir, { recursive: true });
  cluster.start(b2, false);
  await cluster.ready(b2);

  // b2's image flashed onto board-x.
  const copy = await cluster.add('b2-copy');
  Object.assign(copy, { name: 'b2', dataDir: imageDir, env: { [BOARD_ID_ENV]: 'board-x' } });
  cluster.start(copy, false);
  t.equal(await cluster.exited(copy), 1, 'refused at start');
  t.match(copy.log.join(''), /the data dir .* of member 'b2' \([0-9a-f]+\) last ran on board env:board-b2; this board reads as env:board-x\./, 'naming both boards');
  t.match(copy.log.join(''), /remove the data dir and start with this board's own --name and --join HOST --token TOKEN \(not --bootstrap\)/, 'saying how to add the board');
  t.match(copy.log.join(''), /start once with --new-board env:board-b2\b/, 'and how to take a moved card over');
  t.notOk(copy.log.join('').includes('"msg":"agent started"'), 'before it took any part');

  // Told (wrongly) that the card was moved: the runtime check still stops it, the original lives.
  copy.log.length = 0;
  copy.extraArgs = ['--new-board', 'env:board-b2'];
  cluster.start(copy, false);
  t.equal(await cluster.exited(copy, 30_000), 1, 'with --new-board beside the live original, it is stopped all the same');
  t.match(copy.log.join(''), /another process is running as this member/);
  await cluster.ready(b2, 5_000);

  // b3's card moved to board-y for good (board-b3 is gone).
  cluster.kill(b3, 'SIGTERM');
  t.equal(await cluster.exited(b3), 0);
  b3.env = { [BOARD_ID_ENV]: 'board-y' };
  b3.log.length = 0;
  cluster.start(b3, false);
  t.equal(await cluster.exited(b3), 1, 'the moved card is refused without the flag');
  b3.extraArgs = ['--new-board', 'env:board-zz'];
  b3.log.length = 0;
  cluster.start(b3, false);
  t.equal(await cluster.exited(b3), 1, 'and with a flag naming another board than the one it ran on');
  t.match(b3.log.join(''), /\(--new-board names env:board-zz, not that board\)/);
  b3.extraArgs = ['--new-board', 'env:board-b3'];
  cluster.start(b3, false);
  await cluster.ready(b3);
  t.match(b3.log.join(''), /"from":"env:board-b3","to":"env:board-y".*this data dir now runs on this board \(--new-board\)/, 'taken over, logged');
  t.equal(etcdctl(cluster.endpoints([b1]), ['put', 'moved', 'card']).status, 0);
  t.equal(etcdctl(cluster.endpoints([b3]), ['get', 'moved', '--print-value-only']).stdout, 'card\n', 'the member serves on its new board');
  t.equal((JSON.parse(readFileSync(join(b3.dataDir, 'identity.json'), 'utf8')) as { board?: string }).board, 'env:board-y', 'the new board is recorded');
  cluster.kill(b3, 'SIGTERM');
  t.equal(await cluster.exited(b3), 0);
  // The flag left on (a service file): harmless here, and the member says to remove it.
  b3.log.length = 0;
  cluster.start(b3, false);
  await cluster.ready(b3);
  t.match(b3.log.join(''), /--new-board given, but this data dir already runs on this board: remove the flag/);
  cluster.kill(b3, 'SIGTERM');
  t.equal(await cluster.exited(b3), 0);
  b3.extraArgs = [];
  cluster.start(b3, false);
  await cluster.ready(b3);
  t.equal(etcdctl(cluster.endpoints([b3]), ['get', 'moved', '--print-value-only']).stdout, 'card\n', 'and it starts there again without the flag');
});
