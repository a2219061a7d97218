/**
 * A voter and a learner added with `etcdctl member add --learner`, in a real etcd 3.4 and in
 * picloud, started at once, for tests that compare what a learner answers. Every process is
 * stopped in the test's teardown, by PID.
 */
import type { Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ETCD_BIN, spawnMember, startEtcd, type BenchCluster } from '../../bench/kv/clusters.js';
import { memberStatus } from '../../bench/kv/client.js';
import { AgentCluster, etcdctlAsync, freePort, type AgentProc } from './agents.js';
import { until } from './wait.js';

/** How long a learner may take to start and hear from its leader. */
const LEARNER_START_MS = 20_000;

export interface WithLearner {
  system: 'etcd' | 'picloud';
  /** Client endpoints (host:port). */
  voter: string;
  learner: string;
  /** The learner's member id, hex, as etcdctl prints it. */
  learnerId: string;
}

/** `etcdctl member add NAME --learner` through `voter`: the id and ETCD_INITIAL_CLUSTER it printed. */
async function memberAddLearner(voter: string, name: string, peerPort: number): Promise<{ id: string; initialCluster: string }> {
  const r = await etcdctlAsync(voter, ['member', 'add', name, '--learner', `--peer-urls=http://127.0.0.1:${peerPort}`]);
  const id = /Member\s+([0-9a-f]+)\s+added/.exec(r.stdout)?.[1];
  const initialCluster = /ETCD_INITIAL_CLUSTER="([^"]+)"/.exec(r.stdout)?.[1];
  if (r.status !== 0 || id === undefined || initialCluster === undefined) throw new Error(`member add ${name} --learner: ${r.stderr}`);
  return { id, initialCluster };
}

/** One etcd member, then a learner started with --initial-cluster-state existing. */
async function etcdWithLearner(root: string, track: (c: BenchCluster) => void): Promise<WithLearner> {
  const cluster = await startEtcd({ root, size: 1 });
  track(cluster);
  const voter = cluster.members[0]!.clientEndpoint;
  const client = await freePort();
  const peer = await freePort();
  const { id, initialCluster } = await memberAddLearner(voter, 'e2', peer);
  const dataDir = join(root, 'etcd', 'e2');
  const learner = `127.0.0.1:${client}`;
  // In the cluster's member list: its stop() stops the learner too.
  cluster.members.push(
    spawnMember('e2', ETCD_BIN, [
      '--name', 'e2', '--data-dir', dataDir,
      '--listen-client-urls', `http://${learner}`, '--advertise-client-urls', `http://${learner}`,
      '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
      '--initial-cluster', initialCluster, '--initial-cluster-state', 'existing', '--logger', 'zap', '--log-level', 'warn',
    ], learner, dataDir),
  );
  await until('the etcd learner knows its leader', () => memberStatus(learner).then((s) => s.leader !== '0', () => false), LEARNER_START_MS);
  return { system: 'etcd', voter, learner, learnerId: id };
}

/** One picloud agent, then a learner: `member add --learner`, and the agent started at that address (--join). */
async function picloudWithLearner(cluster: AgentCluster): Promise<WithLearner> {
  const p1 = await cluster.add('p1');
  cluster.start(p1, true);
  await cluster.ready(p1);
  cluster.token = readFileSync(join(p1.dataDir, 'token'), 'utf8').trim();
  const p2: AgentProc = await cluster.add('p2');
  const voter = cluster.endpoints([p1]);
  const { id } = await memberAddLearner(voter, 'p2', p2.ports.peer);
  cluster.start(p2, false);
  await cluster.ready(p2, LEARNER_START_MS);
  return { system: 'picloud', voter, learner: cluster.endpoints([p2]), learnerId: id };
}

/** etcd and picloud, each a voter and a learner, started at once; stopped in `t`'s teardown. */
export async function etcdAndPicloudLearners(t: Test): Promise<[WithLearner, WithLearner]> {
  const root = mkdtempSync(join(tmpdir(), 'picloud-learner-'));
  let etcd: BenchCluster | undefined;
  const agents = new AgentCluster();
  t.teardown(async () => {
    await Promise.all([etcd?.stop(), agents.stopAll()]);
    rmSync(root, { recursive: true, force: true });
  });
  const [e, p] = await Promise.allSettled([etcdWithLearner(root, (c) => (etcd = c)), picloudWithLearner(agents)]);
  if (e.status === 'rejected') throw e.reason;
  if (p.status === 'rejected') throw p.reason;
  return [e.value, p.value];
}
