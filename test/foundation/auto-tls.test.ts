// --auto-tls's certificate in the data dir (agent/auto-tls.ts): made private where etcd keeps
// its own, used again while valid, replaced before it expires (at start and while running),
// refused with the remedy when damaged.
import t, { type Test } from 'tap';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AUTO_TLS_VALID_MS, AutoTlsError, RENEW_BEFORE_MS, autoTlsNames, keepAutoTlsFresh, loadOrCreateAutoTls, type AutoTls } from '../../agent/auto-tls.js';
import { ClientTlsFiles } from '../../core/net/etcd/client-tls.js';

const DAY = 24 * 3600_000;

function dataDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'picloud-auto-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('the names: the bound address and the advertised one; loopback and the host name for a wildcard bind', async (t) => {
  t.same(autoTlsNames('0.0.0.0', '192.168.1.5', 'pi1'), ['127.0.0.1', 'localhost', 'pi1', '192.168.1.5']);
  t.same(autoTlsNames('10.0.0.7', '10.0.0.7', 'pi1'), ['10.0.0.7'], 'once each');
  t.same(autoTlsNames('::', undefined, 'pi1'), ['127.0.0.1', 'localhost', 'pi1']);
});

t.test('made in fixtures/client/: a P-256 key private to the account, a year of validity, the names as SANs', async (t) => {
  const dir = dataDir(t);
  const now = Date.now();
  const auto = await loadOrCreateAutoTls(dir, ['127.0.0.1', 'pi1'], { clientCertAuth: false }, now);
  t.equal(auto.made, 'new');
  const certFile = join(dir, 'fixtures', 'client', 'cert.pem');
  const keyFile = join(dir, 'fixtures', 'client', 'key.pem');
  t.same(auto.tls.files, { cert: certFile, key: keyFile });
  t.equal(statSync(keyFile).mode & 0o777, 0o600, 'key 0600');
  t.equal(statSync(join(dir, 'fixtures', 'client')).mode & 0o777, 0o700, 'its directory 0700');
  const cert = new X509Certificate(readFileSync(certFile));
  t.ok(cert.verify(cert.publicKey), 'self-signed');
  t.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  t.equal(cert.subjectAltName, 'IP Address:127.0.0.1, DNS:pi1');
  t.ok(Math.abs(new Date(cert.validTo).getTime() - (now + AUTO_TLS_VALID_MS)) < 2_000, `valid to ${cert.validTo}`);
  t.equal(auto.tls.cert.toString(), readFileSync(certFile, 'utf8'), 'what is served is what is kept');
});

t.test('used again at the next start; replaced once it expires within RENEW_BEFORE_MS', async (t) => {
  const dir = dataDir(t);
  const first = await loadOrCreateAutoTls(dir, ['127.0.0.1'], { clientCertAuth: false });
  const again = await loadOrCreateAutoTls(dir, ['127.0.0.1', 'another'], { clientCertAuth: false });
  t.equal(again.made, false);
  t.equal(again.fingerprint256, first.fingerprint256, 'same certificate (new names do not replace it, as in etcd)');
  const keyFile = join(dir, 'fixtures', 'client', 'key.pem');
  chmodSync(keyFile, 0o644);
  await loadOrCreateAutoTls(dir, ['127.0.0.1'], { clientCertAuth: false });
  t.equal(statSync(keyFile).mode & 0o777, 0o600, 'a key made readable by others is made private again');
  const nearExpiry = Date.now() + AUTO_TLS_VALID_MS - RENEW_BEFORE_MS + DAY;
  const renewed = await loadOrCreateAutoTls(dir, ['127.0.0.1'], { clientCertAuth: false }, nearExpiry);
  t.equal(renewed.made, 'expiring');
  t.not(renewed.fingerprint256, first.fingerprint256, 'a new certificate');
});

t.test('a damaged pair is refused with the files named and the remedy, and left in place', async (t) => {
  const dir = dataDir(t);
  await loadOrCreateAutoTls(dir, ['127.0.0.1'], { clientCertAuth: false });
  const certFile = join(dir, 'fixtures', 'client', 'cert.pem');
  const keyFile = join(dir, 'fixtures', 'client', 'key.pem');
  const cert = readFileSync(certFile);
  const key = readFileSync(keyFile);
  const other = await loadOrCreateAutoTls(dataDir(t), ['127.0.0.1'], { clientCertAuth: false });
  const cases: Array<[string, () => void, RegExp]> = [
    ['a cut certificate', () => writeFileSync(certFile, cert.subarray(0, 100)), /cert\.pem is not a PEM certificate/],
    ['an empty certificate', () => writeFileSync(certFile, ''), /cert\.pem is not a PEM certificate/],
    ['a cut key', () => writeFileSync(keyFile, key.subarray(0, 60)), /key\.pem is not a PEM private key/],
    ['a missing key', () => rmSync(keyFile), /cannot read .*key\.pem .*ENOENT/],
    ['another pair\'s key', () => writeFileSync(keyFile, other.tls.key), /key\.pem is not the key of .*cert\.pem/],
  ];
  for (const [what, damage, message] of cases) {
    writeFileSync(certFile, cert);
    writeFileSync(keyFile, key, { mode: 0o600 });
    damage();
    const held = (): Array<Buffer | undefined> => [readFileSync(certFile), statSync(keyFile, { throwIfNoEntry: false }) === undefined ? undefined : readFileSync(keyFile)];
    const before = held();
    await t.rejects(loadOrCreateAutoTls(dir, ['127.0.0.1'], { clientCertAuth: false }), { name: 'AutoTlsError', code: 'AUTO_TLS_FILES', message }, what);
    await t.rejects(loadOrCreateAutoTls(dir, ['127.0.0.1'], { clientCertAuth: false }), /remove .*cert\.pem and .*key\.pem to have new ones made/, `${what}: the remedy`);
    t.same(held(), before, `${what}: left as it was`);
  }
});

t.test('a key without its certificate (a first start cut short before the certificate was written) is made anew', async (t) => {
  const dir = dataDir(t);
  await loadOrCreateAutoTls(dir, ['127.0.0.1'], { clientCertAuth: false });
  rmSync(join(dir, 'fixtures', 'client', 'cert.pem'));
  t.equal((await loadOrCreateAutoTls(dir, ['127.0.0.1'], { clientCertAuth: false })).made, 'new');
});

t.test('the other client TLS flags are kept: the trusted CA and --client-cert-auth', async (t) => {
  const dir = dataDir(t);
  const ca = Buffer.from('ca bytes');
  const auto = await loadOrCreateAutoTls(dir, ['127.0.0.1'], { ca, caFile: '/etc/ca.crt', clientCertAuth: true });
  t.equal(auto.tls.ca, ca);
  t.equal(auto.tls.clientCertAuth, true);
  t.equal(auto.tls.files.ca, '/etc/ca.crt', 'read again when it changes, as --trusted-ca-file is');
});

t.test('while running: a certificate due for replacement is replaced, and the client port\'s files serve the new one', async (t) => {
  const dir = dataDir(t);
  const first = await loadOrCreateAutoTls(dir, ['127.0.0.1'], { clientCertAuth: false });
  const served = new ClientTlsFiles(first.tls, () => undefined, 0);
  let now = Date.now();
  const reports: Array<{ replaced: AutoTls } | { error: Error }> = [];
  let calls = 0;
  const stop = keepAutoTlsFresh(() => {
    calls++;
    return loadOrCreateAutoTls(dir, ['127.0.0.1'], { clientCertAuth: false }, now);
  }, (o) => reports.push(o), 20);
  t.teardown(stop);
  const until = async (cond: () => boolean): Promise<void> => {
    for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  };
  await until(() => calls >= 2);
  t.same(reports, [], 'not due: nothing replaced, nothing said');
  now += AUTO_TLS_VALID_MS - RENEW_BEFORE_MS + DAY;
  await until(() => reports.length > 0);
  const replaced = reports[0];
  t.ok(replaced !== undefined && 'replaced' in replaced && replaced.replaced.made === 'expiring', 'replaced once due');
  const onDisk = readFileSync(join(dir, 'fixtures', 'client', 'cert.pem'));
  t.not(onDisk.toString(), first.tls.cert.toString(), 'a new certificate on disk');
  t.equal(served.current().cert.toString(), onDisk.toString(), 'and served from the next connection');
  stop();
  const after = calls;
  await new Promise((r) => setTimeout(r, 80));
  t.equal(calls, after, 'stopped');
});

t.test('while running: a failed look is reported and tried again; a slow one is not overlapped', async (t) => {
  const reports: Array<{ replaced: AutoTls } | { error: Error }> = [];
  let calls = 0;
  let inFlight = 0;
  let most = 0;
  const stop = keepAutoTlsFresh(async () => {
    calls++;
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, 50));
    inFlight--;
    throw new AutoTlsError('damaged');
  }, (o) => reports.push(o), 10);
  t.teardown(stop);
  for (let i = 0; i < 100 && calls < 3; i++) await new Promise((r) => setTimeout(r, 10));
  stop();
  t.ok(calls >= 3, `tried again (${calls})`);
  t.equal(most, 1, 'one at a time');
  t.ok(reports.length >= 2 && reports.every((r) => 'error' in r && r.error.message === 'damaged'), 'each failure reported');
});
