/**
 * Clients cannot use up a member's file descriptors (agent/open-files.ts). An agent runs under an
 * open files limit of 1,024 (`prlimit`, soft and hard); 1,200 connections are opened to its client
 * port at once; then 40 puts of 1 MB go through a connection opened before, which makes LevelDB
 * open new files (memtable flushes, a new log). Before the budget the member exited here ("writing
 * the Raft log failed ... Too many open files"); now the connections beyond the client port's
 * share are closed as they arrive, every put is answered, the http port still answers, and once
 * the flood is gone new clients are served again.
 */
import t from 'tap';
import { connect, type Socket } from 'node:net';
import { spawnSync } from 'node:child_process';
import { AgentCluster, etcdctl, hasEtcdctl } from '../helpers/agents.js';
import { SimpleKv } from '../helpers/kv-client.js';
import { until } from '../helpers/wait.js';
import { openFilesBudget, readOpenFilesLimit } from '../../agent/open-files.js';

const AGENT_LIMIT = 1_024;
const FLOOD = 1_200;
const BIG_PUTS = 40;
const BIG_VALUE = 'v'.repeat(1_000_000);

const own = readOpenFilesLimit()?.soft ?? 0;
const unavailable = !hasEtcdctl()
  ? 'etcdctl not installed (apt-get install etcd-client)'
  : spawnSync('prlimit', ['--version']).status !== 0
    ? 'prlimit not installed (util-linux)'
    : own < FLOOD + 200
      ? `this process may open only ${own} files, fewer than the flood needs`
      : undefined;

t.test('a flood of client connections neither stops the member nor its writes', { skip: unavailable ?? false, timeout: 120_000 }, async (t) => {
  const cluster = new AgentCluster();
  const flood: Socket[] = [];
  t.teardown(async () => {
    for (const s of flood) s.destroy();
    await cluster.stopAll();
  });
  const a = await cluster.add('fd1');
  a.wrap = ['prlimit', `--nofile=${AGENT_LIMIT}:${AGENT_LIMIT}`];
  await cluster.startAdded();
  const expected = openFilesBudget(AGENT_LIMIT).clientConnections;
  t.ok(a.log.join('').includes(`"clientConnections":${expected}`), `the agent logged its budget: ${expected} client connections under ${AGENT_LIMIT} files`);

  const kv = new SimpleKv(cluster.endpoints(), 10_000);
  t.teardown(() => kv.close());
  await kv.put('before', 'x');

  let refused = 0;
  for (let i = 0; i < FLOOD; i++) {
    const s = connect(a.ports.client, a.host);
    const opened = Date.now();
    s.on('error', () => undefined);
    // Closed by the member well before its sorting timeout (5 s for a first request): refused at the cap.
    s.once('close', () => Date.now() - opened < 3_000 && refused++);
    flood.push(s);
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 20));
  }
  await until('the flood is open or refused', () => flood.every((s) => s.readyState !== 'opening') || undefined, 10_000);

  const { answered, failure } = await kv.putsUntilFailure('big/', 5, BIG_PUTS, BIG_VALUE);
  t.equal(answered, BIG_PUTS, `every 1 MB put during the flood was answered${failure === '' ? '' : ` (failed: ${failure})`}`);
  t.equal(a.proc!.exitCode, null, `the member is still running${a.proc!.exitCode === null ? '' : `: ${a.log.join('').slice(-600)}`}`);
  const ready = await fetch(`http://${a.host}:${a.ports.http}/ready`).catch(() => undefined);
  t.equal(ready?.status, 200, 'the http port still answers /ready');
  t.ok(refused >= FLOOD - expected - 20 && refused <= FLOOD, `${refused} of ${FLOOD} flood connections closed at once (cap ${expected})`);
  t.match(a.log.join(''), /connection refused: the port holds as many connections as the open files budget allows/, 'the refusals were logged');

  for (const s of flood) s.destroy();
  const put = await until('a new client is served once the flood is gone', () => {
    const r = etcdctl(cluster.endpoints(), ['put', 'after', 'y']);
    return r.status === 0 ? r : undefined;
  });
  t.equal(put.stdout.trim(), 'OK');
  t.equal(await kv.get('big/4'), BIG_VALUE, 'the last big value reads back');
});
