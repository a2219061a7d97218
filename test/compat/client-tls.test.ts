/**
 * The client port over TLS with client certificates (etcd's --cert-file, --key-file,
 * --trusted-ca-file, --client-cert-auth), against three real agents: etcdctl and the npm etcd3
 * client with certificates; plain text and a stranger's certificate refused; keep-alives sent to
 * a follower forwarded to the leader over TLS; member list and `endpoint status --cluster` over
 * https:// URLs; `picloud-node snapshot save` with etcdctl's TLS flags; certificate files renewed
 * on disk; auth by a certificate's common name.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { AgentCluster, CLI, etcdctl, hasEtcdctl, leaderAgent } from '../helpers/agents.js';
import { hasOpenssl, makeTestCerts } from '../helpers/certs.js';
import { TLS_FILES_CHECK_MS } from '../../core/net/etcd/client-tls.js';
import { until } from '../helpers/wait.js';

if (!hasEtcdctl() || !hasOpenssl()) {
  t.test('client port over TLS', { skip: 'needs etcdctl and openssl (apt-get install etcd-client openssl)' }, async () => undefined);
} else {
  const certs = makeTestCerts();
  // The members' own copies, renewed in place below.
  const member = { cert: join(certs.dir, 'member.crt'), key: join(certs.dir, 'member.key') };
  copyFileSync(certs.serverCert, member.cert);
  copyFileSync(certs.serverKey, member.key);
  const tlsFlags = ['--cert-file', member.cert, '--key-file', member.key, '--trusted-ca-file', certs.caCert, '--client-cert-auth'];
  const cluster = new AgentCluster(['--tick-ms', '50', ...tlsFlags]);
  const mtls = ['--cacert', certs.caCert, '--cert', certs.clientCert, '--key', certs.clientKey];
  cluster.ctlArgs = mtls;
  t.teardown(async () => {
    await cluster.stopAll();
    certs.remove();
  });
  t.before(async () => {
    await cluster.startCluster(['s1', 's2', 's3']);
  });
  const ctl = (args: string[], endpoints = cluster.endpoints()) => etcdctl(endpoints, ['--dial-timeout=3s', ...args]);

  t.test('etcdctl with a client certificate: put, get, txn, watch', async (t) => {
    t.equal(ctl([...mtls, 'put', 'tls/a', '1']).status, 0);
    t.equal(ctl([...mtls, 'get', 'tls/a', '--print-value-only']).stdout, '1\n');
    const txn = etcdctl(cluster.endpoints(), [...mtls, 'txn'], 'value("tls/a") = "1"\n\nput tls/a 2\n\n\n');
    t.match(txn.stdout, /^SUCCESS/, `compare-and-swap ${txn.stderr}`);
    t.equal(ctl([...mtls, 'get', 'tls/a', '--print-value-only']).stdout, '2\n');
    const watch = spawnSync('etcdctl', ['--endpoints', cluster.endpoints([cluster.agents[2]!]), ...mtls, 'watch', 'tls/a', '--rev=1'], { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8', timeout: 3_000 });
    t.match(watch.stdout, /PUT\ntls\/a\n1\nPUT\ntls\/a\n2\n/, 'watch from history over TLS');
  });

  t.test('refused: plain text, no certificate, a certificate from another CA', async (t) => {
    // etcdctl retries a refused connection until its command timeout.
    const refused = (args: string[]) => ctl(['--command-timeout=2s', ...args]);
    const plain = refused(['get', 'tls/a']);
    t.not(plain.status, 0, 'plain text');
    const noCert = refused(['--cacert', certs.caCert, 'get', 'tls/a']);
    t.not(noCert.status, 0, 'no client certificate');
    const stranger = refused(['--cacert', certs.caCert, '--cert', certs.strangerCert, '--key', certs.strangerKey, 'get', 'tls/a']);
    t.not(stranger.status, 0, 'a certificate another CA signed');
    t.equal(ctl([...mtls, 'get', 'tls/a', '--print-value-only']).stdout, '2\n', 'still serving');
  });

  t.test('member list shows https:// client URLs; endpoint status --cluster dials them', async (t) => {
    const list = JSON.parse(ctl([...mtls, 'member', 'list', '-w', 'json']).stdout) as { members: Array<{ clientURLs: string[] }> };
    const urls = list.members.flatMap((m) => m.clientURLs).sort();
    t.same(urls, cluster.agents.map((a) => `https://127.0.0.1:${a.ports.client}`).sort());
    const status = ctl([...mtls, 'endpoint', 'status', '--cluster']);
    t.equal(status.status, 0, status.stderr);
    t.equal(status.stdout.trim().split('\n').length, 3, 'every member answered over its https:// URL');
  });

  t.test('a keep-alive sent to a follower reaches the leader over TLS', async (t) => {
    const leader = await leaderAgent(cluster);
    const follower = cluster.agents.find((a) => a !== leader)!;
    const grant = ctl([...mtls, 'lease', 'grant', '60']);
    const id = /lease ([0-9a-f]+) granted/.exec(grant.stdout)?.[1];
    t.ok(id, grant.stdout + grant.stderr);
    const ka = ctl([...mtls, 'lease', 'keep-alive', '--once', id!], cluster.endpoints([follower]));
    t.match(ka.stdout, new RegExp(`lease ${id} keepalived with TTL\\(60\\)`), ka.stderr);
    const ttl = ctl([...mtls, 'lease', 'timetolive', id!], cluster.endpoints([follower]));
    t.match(ttl.stdout, /remaining\(\d+s\)/, `time-to-live asked of a follower ${ttl.stderr}`);
    // grpc-js names the leader's IP address as the TLS server name, which Node warns about.
    // (spawnSync held this process: the follower's stderr is read from now on.)
    const logged = (): string[] => follower.log.join('').split('\n').filter((l) => l.trim() !== '');
    for (let i = 0; i < 40 && !logged().some((l) => l.includes('DEP0123')); i++) await new Promise((r) => setTimeout(r, 50));
    const lines = logged();
    const notJson = lines.filter((l) => {
      try {
        JSON.parse(l);
        return false;
      } catch {
        return true;
      }
    });
    t.same(notJson, [], 'the follower\'s stderr holds only JSON log lines');
    t.ok(lines.some((l) => l.includes('"code":"DEP0123"')), 'Node\'s warning about it is one of them');
  });

  t.test('the npm etcd3 client with a client certificate', async (t) => {
    const client = new Etcd3({
      hosts: cluster.agents.map((a) => `https://127.0.0.1:${a.ports.client}`),
      credentials: { rootCertificate: readFileSync(certs.caCert), certChain: readFileSync(certs.clientCert), privateKey: readFileSync(certs.clientKey) },
    });
    t.teardown(() => client.close());
    await client.put('tls/etcd3').value('ok');
    t.equal(await client.get('tls/etcd3').string(), 'ok');
    const lease = client.lease(30);
    await lease.put('tls/leased').value('x');
    t.equal(await client.get('tls/leased').string(), 'x');
    await lease.revoke();
    t.equal(await client.get('tls/leased').string(), null, 'revoked with its key');
  });

  t.test('picloud-node snapshot save with etcdctl\'s TLS flags', async (t) => {
    const file = join(cluster.root, 'tls.snap');
    const endpoint = `https://127.0.0.1:${cluster.agents[0]!.ports.client}`;
    const ok = spawnSync(process.execPath, [CLI, 'snapshot', 'save', file, '--endpoints', endpoint, ...mtls], { encoding: 'utf8', timeout: 30_000 });
    t.equal(ok.status, 0, ok.stderr);
    t.ok(existsSync(file), 'saved');
    const noCert = spawnSync(process.execPath, [CLI, 'snapshot', 'save', join(cluster.root, 'no.snap'), '--endpoints', endpoint, '--cacert', certs.caCert], { encoding: 'utf8', timeout: 30_000 });
    t.not(noCert.status, 0, 'refused without a client certificate');
    t.notOk(existsSync(join(cluster.root, 'no.snap')), 'nothing saved');
  });

  t.test('certificate files renewed on disk are served without a restart', async (t) => {
    const served = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const s = tlsConnect({ host: '127.0.0.1', port: cluster.agents[0]!.ports.client, ca: readFileSync(certs.caCert), cert: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey), ALPNProtocols: ['h2'] }, () => {
          resolve(s.getPeerCertificate().serialNumber);
          s.destroy();
        });
        s.on('error', reject);
      });
    t.equal(await served(), new X509Certificate(readFileSync(certs.serverCert)).serialNumber);
    const renewed = certs.renewedServer();
    copyFileSync(renewed.cert, member.cert);
    copyFileSync(renewed.key, member.key);
    // A connection looks at the files at most once a second (TLS_FILES_CHECK_MS).
    await new Promise((r) => setTimeout(r, TLS_FILES_CHECK_MS + 100));
    t.equal(await served(), new X509Certificate(readFileSync(renewed.cert)).serialNumber, 'the renewed certificate, from the first connection after');
    // The line is written before the handshake answers, but the agent's stdout pipe and the TLS
    // socket are read by this process in either order: wait for it (bounded).
    const logged = await until('the reload logged', () => /certificate files changed; new connections use them/.test(cluster.agents[0]!.log.join('')), 5_000).catch(() => false);
    t.ok(logged, 'the reload is logged');
    t.equal(ctl([...mtls, 'get', 'tls/a', '--print-value-only'], cluster.endpoints([cluster.agents[0]!])).stdout, '2\n', 'etcdctl against it');
  });

  // Last: it turns auth on for the rest of this cluster's life.
  t.test('auth by certificate: with auth on, a request without a token is the user its certificate names', async (t) => {
    const alice = certs.clientFor('alice');
    const nobody = certs.clientFor('nobody');
    const as = (c: { cert: string; key: string }): string[] => ['--cacert', certs.caCert, '--cert', c.cert, '--key', c.key];
    const run = (args: string[], endpoints?: string) => ctl(['--command-timeout=5s', ...args], endpoints);
    for (const args of [
      ['user', 'add', 'root:rootpw'],
      ['auth', 'enable'],
      ['role', 'add', 'app'],
      ['role', 'grant-permission', 'app', 'readwrite', 'app/', '--prefix'],
      ['user', 'add', 'alice', '--no-password'],
      ['user', 'grant-role', 'alice', 'app'],
    ]) {
      const r = run([...mtls, ...args]);
      t.equal(r.status, 0, `etcdctl ${args.join(' ')} as root by certificate ${r.stderr}`);
    }
    t.equal(run([...as(alice), 'put', 'app/x', '1']).status, 0, 'alice writes her prefix');
    t.equal(run([...as(alice), 'get', 'app/x', '--print-value-only']).stdout, '1\n');
    t.match(run([...as(alice), 'put', 'other', '1']).stderr, /permission denied/, 'and nothing else');
    t.match(run([...as(nobody), 'get', 'app/x']).stderr, /permission denied/, 'a certificate naming no user');
    t.match(run([...as(nobody), 'lease', 'grant', '60']).stderr, /permission denied/, 'a certificate naming no user cannot grant a lease (any user may)');
    t.match(run([...as(alice), 'endpoint', 'hashkv']).stderr, /permission denied/, 'endpoint hashkv needs root');
    const status = run([...mtls, 'endpoint', 'status', '--cluster']);
    t.equal(status.stdout.trim().split('\n').length, 3, `root by certificate over the https:// URLs (rewritten connections) ${status.stderr}`);
    const asRoot = run([...as(alice), '--user', 'root:rootpw', 'put', 'other', '2']);
    t.equal(asRoot.status, 0, `a token wins over the certificate ${asRoot.stderr}`);

    const leader = await leaderAgent(cluster);
    const follower = cluster.agents.find((a) => a !== leader)!;
    const grant = run([...as(alice), 'lease', 'grant', '60']);
    const id = /lease ([0-9a-f]+) granted/.exec(grant.stdout)?.[1];
    t.ok(id, `alice grants a lease ${grant.stderr}`);
    t.equal(run([...as(alice), 'put', 'app/leased', 'v', '--lease', id!]).status, 0);
    const ka = run([...as(alice), 'lease', 'keep-alive', '--once', id!], cluster.endpoints([follower]));
    t.match(ka.stdout, new RegExp(`lease ${id} keepalived with TTL\\(60\\)`), `alice's keep-alive forwarded by a follower ${ka.stderr}`);
  });
}
