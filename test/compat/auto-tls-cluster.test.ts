/**
 * Three --auto-tls members, each with a self-signed certificate of its own: a follower
 * forwards lease keep-alives and time-to-live questions to the leader's client port, and
 * verifies the leader by the certificate the leader published in its member record
 * (core/net/etcd/member-cert.ts) — before that, it could not verify it and etcdctl was told
 * "leader changed". Renewed certificates are published again and trusted from then on.
 */
import t from 'tap';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadOrCreateAutoTls } from '../../agent/auto-tls.js';
import { AgentCluster, etcdctl, hasEtcdctl, leaderAgent, type AgentProc } from '../helpers/agents.js';
import { servedFingerprint as servedFingerprintOf } from '../helpers/certs.js';
import { until } from '../helpers/wait.js';

const insecure = ['--insecure-transport=false', '--insecure-skip-tls-verify'];
const published = /"clientCertificate":"published"[^\n]*"msg":"recorded this member's addresses and quota"/g;

/** The SHA-256 fingerprint of the certificate the agent's client port presents. */
const servedFingerprint = (a: AgentProc): Promise<string> => servedFingerprintOf(a.ports.client);

/** How many times the agent recorded a certificate of its own in its member record. */
const publications = (a: AgentProc): number => a.log.join('').match(published)?.length ?? 0;

t.test('three --auto-tls members: keep-alive and time-to-live through a follower, before and after the certificates are renewed', { skip: hasEtcdctl() ? false : 'needs etcdctl' }, async (t) => {
  const cluster = new AgentCluster(['--tick-ms', '50', '--auto-tls']);
  cluster.ctlArgs = insecure;
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['m1', 'm2', 'm3']);
  await until('every member published its certificate', () => cluster.agents.every((a) => publications(a) >= 1));

  /** Through each follower: a keep-alive and a time-to-live of a lease granted through it. */
  const throughFollowers = async (when: string): Promise<void> => {
    const leader = await leaderAgent(cluster);
    for (const follower of cluster.agents.filter((a) => a !== leader)) {
      const ep = `https://127.0.0.1:${follower.ports.client}`;
      const grant = etcdctl(ep, [...insecure, 'lease', 'grant', '30']);
      t.equal(grant.status, 0, `${when}: a lease granted through follower ${follower.name}: ${grant.stderr}`);
      const id = /lease ([0-9a-f]+) granted/.exec(grant.stdout)?.[1] ?? '0';
      const ka = etcdctl(ep, [...insecure, '--command-timeout=6s', 'lease', 'keep-alive', '--once', id]);
      t.match(ka.stdout, /keepalived with TTL\((2\d|30)\)/, `${when}: keep-alive through ${follower.name} answered by leader ${leader.name} (${ka.stderr.trim().slice(-200)})`);
      const ttl = etcdctl(ep, [...insecure, '--command-timeout=6s', 'lease', 'timetolive', id]);
      t.match(ttl.stdout, /granted with TTL\(30s\), remaining\((2\d|30)s\)/, `${when}: time-to-live through ${follower.name} (${ttl.stderr.trim().slice(-200)})`);
    }
  };
  await throughFollowers('as started');

  // Renewal (auto-tls.ts keepAutoTlsFresh writes a new pair over the files): each member's port
  // serves its new pair from the next connection on, and its record must follow, or the
  // followers' pins would refuse it.
  const before = await Promise.all(cluster.agents.map((a) => servedFingerprint(a)));
  const scratch = join(cluster.root, 'renewed');
  for (const a of cluster.agents) {
    const fresh = await loadOrCreateAutoTls(join(scratch, a.name), ['127.0.0.1'], { clientCertAuth: false });
    const dir = join(a.dataDir, 'fixtures', 'client');
    for (const [name, pem] of [['key.pem', fresh.tls.key], ['cert.pem', fresh.tls.cert]] as const) {
      writeFileSync(join(dir, `${name}.new`), pem, { mode: 0o600 });
      renameSync(join(dir, `${name}.new`), join(dir, name));
    }
  }
  await until('every member published its renewed certificate', () => cluster.agents.every((a) => publications(a) >= 2));
  const after = await Promise.all(cluster.agents.map((a) => servedFingerprint(a)));
  t.ok(after.every((f, i) => f !== before[i]), 'each port serves its renewed certificate');
  await throughFollowers('renewed');
});
