/**
 * A member's published client-port certificate (core/net/etcd/member-cert.ts): what a member
 * record keeps of it, what a forwarding member makes of it (a damaged or hostile value is
 * refused with a reason, never thrown), and LeaseForwarder against real --auto-tls front ends:
 * the leader's published certificate is what it is trusted by; a stranger's is refused; a
 * garbage one is reported and the forward falls back to what it did before.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadOrCreateAutoTls, type AutoTls } from '../../agent/auto-tls.js';
import { LeaseForwarder } from '../../core/api/lease-forwarder.js';
import { MAX_PUBLISHED_CERT_CHARS, pinnedCert, recordedClientCert } from '../../core/net/etcd/member-cert.js';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import { FakeEtcdBackend } from './fake-etcd-backend.js';
import { hasOpenssl, makeTestCerts } from '../helpers/certs.js';

const dir = mkdtempSync(join(tmpdir(), 'member-cert-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const autoTls = (name: string): Promise<AutoTls> => loadOrCreateAutoTls(join(dir, name), ['127.0.0.1'], { clientCertAuth: false });

t.test('recordedClientCert: what a record change does to the published certificate, the same on every member', async (t) => {
  t.equal(recordedClientCert(undefined, 'PEM'), 'PEM', 'a change that does not speak of it (an older member, member update) keeps it');
  t.equal(recordedClientCert(undefined, undefined), undefined);
  t.equal(recordedClientCert('NEW', 'PEM'), 'NEW', 'a new one replaces it (renewed)');
  t.equal(recordedClientCert('', 'PEM'), undefined, "'' takes it away (the member no longer runs --auto-tls)");
  t.equal(recordedClientCert('x'.repeat(MAX_PUBLISHED_CERT_CHARS + 1), 'PEM'), undefined, 'too long: none');
  for (const hostile of [null, 42, true, { pem: 'x' }, ['PEM']]) t.equal(recordedClientCert(hostile, 'PEM'), undefined, `${JSON.stringify(hostile)}: none`);
  t.equal(recordedClientCert('not a certificate', undefined), 'not a certificate', 'a string is recorded as it came: checked where it is used');
});

t.test('pinnedCert: one self-signed certificate, or a reason', async (t) => {
  const a = await autoTls('a');
  const pem = a.tls.cert.toString('latin1');
  const pin = pinnedCert(pem);
  t.ok('pem' in pin && pin.fingerprint256 === a.fingerprint256, 'an --auto-tls certificate is pinned by its fingerprint');
  const reason = (v: string): string => {
    const r = pinnedCert(v);
    return 'reason' in r ? r.reason : 'pinned';
  };
  t.match(reason(''), /holds 0 PEM certificates/);
  t.match(reason('garbage \u0000\uffff'), /holds 0 PEM certificates/);
  t.match(reason(pem + pem), /holds 2 PEM certificates/, 'a bundle: which one would be the member\'s?');
  t.match(reason('-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----'), /cannot be read/);
  const der = Buffer.from(pem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
  der[der.length - 8]! ^= 0xff; // in the signature
  t.match(reason(`-----BEGIN CERTIFICATE-----\n${der.toString('base64')}\n-----END CERTIFICATE-----\n`), /not self-signed/, 'one whose signature was damaged');
  if (hasOpenssl()) {
    const certs = makeTestCerts();
    t.teardown(() => certs.remove());
    t.match(reason(readFileSync(certs.serverCert, 'latin1')), /not self-signed/, 'one a CA signed is not trusted as its own root');
  }
});

t.test('LeaseForwarder: an --auto-tls leader is trusted by the certificate it published', async (t) => {
  const [leaderTls, followerTls, strangerTls] = await Promise.all([autoTls('leader'), autoTls('follower'), autoTls('stranger')]);
  const backend = new FakeEtcdBackend();
  const server = await EtcdGrpcServer.start({ backend, port: 0, tls: leaderTls.tls, onInternalError: (e, m) => t.fail(`internal error in ${m}: ${String(e)}`) });
  t.teardown(() => server.close());
  const clientAddr = `https://127.0.0.1:${server.port}`;
  const id = (await backend.leaseGrant({ ttlSeconds: 30, id: 0 })).id;
  const refused: string[] = [];
  const fwd = new LeaseForwarder({ current: () => followerTls.tls }, (_addr, reason) => refused.push(reason));
  t.teardown(() => fwd.close());

  await t.rejects(fwd.keepAlive(clientAddr, id), 'nothing published: its own certificate is verified against nothing the follower trusts (as before)');
  t.equal(await fwd.keepAlive({ clientAddr, clientCert: leaderTls.tls.cert.toString('latin1') }, id), 30, 'published: the keep-alive is answered');
  const left = await fwd.timeToLive({ clientAddr, clientCert: leaderTls.tls.cert.toString('latin1') }, id);
  t.ok(left > 25 && left <= 30, `and time-to-live (${left} s)`);
  await t.rejects(fwd.timeToLive({ clientAddr, clientCert: strangerTls.tls.cert.toString('latin1') }, id), 'a certificate the leader does not hold the key of: refused');
  t.same(refused, [], 'none of those was refused as a record');

  await t.rejects(fwd.keepAlive({ clientAddr, clientCert: 'garbage -----BEGIN CERTIFICATE-----' }, id), 'a garbage record: dialed as one that published none, which fails here');
  t.equal(refused.length, 1, 'and said so once');
  t.match(refused[0], /holds 0 PEM certificates/);
  await t.rejects(fwd.timeToLive({ clientAddr, clientCert: 'garbage -----BEGIN CERTIFICATE-----' }, id));
  t.equal(refused.length, 1, 'not again for the same leader and record');
  t.equal(await fwd.keepAlive({ clientAddr, clientCert: leaderTls.tls.cert.toString('latin1') }, id), 30, 'a good record again: answered');
});

t.test('LeaseForwarder: a plain member (no TLS of its own) pins the published certificate too', async (t) => {
  const leaderTls = await autoTls('leader2');
  const backend = new FakeEtcdBackend();
  const server = await EtcdGrpcServer.start({ backend, port: 0, tls: leaderTls.tls, onInternalError: (e, m) => t.fail(`internal error in ${m}: ${String(e)}`) });
  t.teardown(() => server.close());
  const id = (await backend.leaseGrant({ ttlSeconds: 20, id: 0 })).id;
  const fwd = new LeaseForwarder();
  t.teardown(() => fwd.close());
  t.equal(await fwd.keepAlive({ clientAddr: `https://127.0.0.1:${server.port}`, clientCert: leaderTls.tls.cert.toString('latin1') }, id), 20);
});
