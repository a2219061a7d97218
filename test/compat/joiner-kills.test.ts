/**
 * A joiner killed with SIGKILL at moments spread over its catch-up (the join, the snapshot
 * it receives and installs, the entries after it) and restarted on its data dir each time:
 * it ends a voter with the key space of the others, under writes all along.
 */
import t from 'tap';
import { Prng } from '../../core/sim/prng.js';
import { AgentCluster, AgentProc, hasEtcdctl, hashKvOfEachAgent } from '../helpers/agents.js';
import { SimpleKv } from '../helpers/kv-client.js';
import { until } from '../helpers/wait.js';

const KILLS = Number(process.env.KILLS ?? 6);
const VALUE = 'x'.repeat(2048);

const countOf = (a: AgentProc, line: string): number => a.log.join('').split(line).length - 1;

t.test('a joiner killed again and again during its catch-up by snapshot becomes a voter', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster(['--tick-ms', '50', '--snapshot-count', '20', '--snapshot-catchup-entries', '5']);
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['j1', 'j2']);
  const j1 = cluster.agents[0]!;
  // Enough history that the snapshot takes a while to send and install (3 MB).
  const kv = new SimpleKv(`127.0.0.1:${j1.ports.client}`, 10_000);
  t.teardown(() => kv.close());
  for (let i = 0; i < 1500; i += 50) await Promise.all(Array.from({ length: 50 }, (_, k) => kv.put(`key${i + k}`, VALUE)));
  const rng = new Prng(Number(process.env.FAULT_SEED ?? 5));
  const j3 = await cluster.add('j3');
  let writing = true;
  const writer = (async () => {
    for (let n = 0; writing; n++) {
      await kv.put(`w${n % 50}`, String(n)).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const kills: string[] = [];
  cluster.start(j3, false);
  for (let k = 0; k < KILLS; k++) {
    // From the moment this start serves (it has joined), into its catch-up (~1 s here).
    await until('j3 serving', () => countOf(j3, 'etcd API listening') > k, 20_000);
    const wait = rng.int(1200);
    await new Promise((r) => setTimeout(r, wait));
    cluster.kill(j3);
    const code = await cluster.exited(j3);
    kills.push(`${wait} ms (exit ${code}, installs so far ${countOf(j3, 'installed a snapshot')})`);
    j3.log.push('[test: SIGKILL]\n');
    cluster.start(j3, false);
  }
  await cluster.ready(j3, 30_000);
  await cluster.waitVoters(3, 30_000);
  writing = false;
  await writer;
  t.comment(`killed after ${kills.join(', ')}`);
  const end = await hashKvOfEachAgent(cluster, [], 20_000);
  t.equal(new Set(end.revisions).size, 1, `one revision (${end.revisions.join(', ')})`);
  t.equal(new Set(end.hashes).size, 1, `one key space (${end.hashes.join(', ')})`);
  t.notMatch(j3.log.join(''), /"level":(50|60)/, 'j3 logged no error');
});
