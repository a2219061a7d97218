/**
 * etcd's --auto-tls against a real agent: etcdctl over https with its certificate unverified
 * (etcdctl 3.4 needs --insecure-transport=false beside --insecure-skip-tls-verify, as against
 * etcd), plain text refused, the same certificate served after a restart, a joining member's
 * certificate its own (without the warning it gave before members published theirs, unless
 * --trusted-ca-file makes it refuse the others' certificates), and a
 * damaged certificate file refused at start with a message naming it.
 */
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentCluster, etcdctl, hasEtcdctl, type AgentProc } from '../helpers/agents.js';
import { hasOpenssl, makeTestCerts, servedFingerprint as servedFingerprintOf } from '../helpers/certs.js';

const insecure = ['--insecure-transport=false', '--insecure-skip-tls-verify'];

/** The SHA-256 fingerprint of the certificate the agent's client port presents. */
const servedFingerprint = (a: AgentProc): Promise<string> => servedFingerprintOf(a.ports.client);

if (!hasEtcdctl()) {
  t.test('--auto-tls', { skip: 'needs etcdctl (apt-get install etcd-client)' }, async () => undefined);
} else {
  const cluster = new AgentCluster(['--tick-ms', '50', '--auto-tls']);
  cluster.ctlArgs = insecure;
  t.teardown(() => cluster.stopAll());
  let a: AgentProc;
  const certFile = (): string => join(a.dataDir, 'fixtures', 'client', 'cert.pem');
  const keyFile = (): string => join(a.dataDir, 'fixtures', 'client', 'key.pem');
  let firstFingerprint = '';

  t.test('a certificate made in <data-dir>/fixtures/client/, served to etcdctl over https; plain text refused', async (t) => {
    await cluster.startCluster(['a1']);
    a = cluster.agents[0]!;
    firstFingerprint = new X509Certificate(readFileSync(certFile())).fingerprint256;
    t.equal(await servedFingerprint(a), firstFingerprint, 'the port serves the certificate in the data dir');
    t.equal(statSync(keyFile()).mode & 0o777, 0o600, 'the key is private');
    const https = `https://127.0.0.1:${a.ports.client}`;
    const put = etcdctl(https, [...insecure, 'put', 'auto/a', '1']);
    t.equal(put.status, 0, put.stderr);
    t.equal(etcdctl(https, [...insecure, 'get', 'auto/a', '--print-value-only']).stdout, '1\n');
    t.equal(etcdctl(https, ['--cacert', certFile(), 'get', 'auto/a', '--print-value-only']).stdout, '1\n', 'or trusting the file itself');
    const plain = etcdctl(`http://127.0.0.1:${a.ports.client}`, ['--command-timeout=2s', 'get', 'auto/a']);
    t.not(plain.status, 0, `plain text refused ${plain.stderr.slice(-200)}`);
  });

  t.test('a restart serves the same certificate', async (t) => {
    cluster.kill(a, 'SIGTERM');
    t.equal(await cluster.exited(a), 0);
    cluster.start(a, 'restart');
    await cluster.ready(a);
    t.equal(await servedFingerprint(a), firstFingerprint, 'same fingerprint');
    t.match(a.log.join(''), /"made":"at an earlier start"/);
    t.equal(etcdctl(`https://127.0.0.1:${a.ports.client}`, [...insecure, 'get', 'auto/a', '--print-value-only']).stdout, '1\n');
  });

  t.test('a member joining an --auto-tls member makes a certificate of its own, and no longer warns that the others cannot verify it', async (t) => {
    const warning = /other members cannot verify this member's client certificate|cannot forward to this member/;
    const a2 = await cluster.add('a2');
    cluster.start(a2, false);
    await cluster.ready(a2);
    t.not(new X509Certificate(readFileSync(join(a2.dataDir, 'fixtures', 'client', 'cert.pem'))).fingerprint256, firstFingerprint, 'a certificate of its own');
    t.notMatch(a2.log.join(''), warning, 'it publishes its certificate in its member record instead (auto-tls-cluster.test.ts)');
    if (hasOpenssl()) {
      // Requiring client certificates a CA signed, it would refuse the others' self-signed ones.
      const certs = makeTestCerts();
      t.teardown(() => certs.remove());
      const a3 = await cluster.add('a3');
      a3.extraArgs = ['--trusted-ca-file', certs.caCert];
      cluster.start(a3, false);
      await cluster.ready(a3);
      t.match(a3.log.join(''), /"why":"it requires client certificates the --trusted-ca-file signed, and a member forwarding to it presents its own client-port certificate[^"]*","msg":"members with --auto-tls cannot forward to this member/, 'with --trusted-ca-file it still warns');
      cluster.kill(a3, 'SIGTERM');
      await cluster.exited(a3);
    }
    cluster.kill(a2, 'SIGTERM');
    await cluster.exited(a2);
  });

  t.test('a damaged certificate file stops the start with a message naming it', async (t) => {
    cluster.kill(a, 'SIGTERM');
    t.equal(await cluster.exited(a), 0);
    const good = readFileSync(certFile());
    writeFileSync(certFile(), good.subarray(0, 100));
    a.log.length = 0;
    cluster.start(a, 'restart');
    t.equal(await cluster.exited(a), 1, 'exits 1');
    const said = a.log.join('');
    t.match(said, new RegExp(`^picloud-node agent: --auto-tls: ${certFile().replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is not a PEM certificate .*: remove .*cert\\.pem and .*key\\.pem to have new ones made`, 'm'));
    t.notMatch(said, /\n\s+at /, 'no stack trace');
    t.same(readFileSync(certFile()), good.subarray(0, 100), 'the file is left as it was');
  });
}
