/**
 * Test fixture: X.509 certificates made with the openssl command line (Debian's openssl), for
 * the client port's TLS: a CA, a server certificate for 127.0.0.1 and localhost, a client
 * certificate it signed for the user root (more on request), and a client certificate from
 * another CA that nobody trusts.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';

export interface TestCerts {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate and key signed by another CA. */
  strangerCert: string;
  strangerKey: string;
  /** A self-signed server certificate for 127.0.0.1 (no CA). */
  selfSignedServer(): { cert: string; key: string };
  /** Another server certificate for 127.0.0.1 from the same CA (a renewal). */
  renewedServer(): { cert: string; key: string };
  /** A client certificate and key for user `cn`, signed by the trusted CA. */
  clientFor(cn: string): { cert: string; key: string };
  remove(): void;
}

export function hasOpenssl(): boolean {
  return spawnSync('sh', ['-c', 'command -v openssl'], { stdio: 'ignore' }).status === 0;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

function makeCa(dir: string, name: string): void {
  openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.crt`]);
}

/** A key and a certificate for `cn` signed by CA `ca`, with `ext` as its extensions (an OpenSSL config section's lines). */
function issue(dir: string, ca: string, name: string, cn: string, ext: string[]): void {
  openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${cn}`, '-keyout', `${name}.key`, '-out', `${name}.csr`]);
  const extFile = join(dir, `${name}.ext`);
  execFileSync('sh', ['-c', `cat > '${extFile}'`], { input: ext.join('\n') + '\n' });
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '2', '-extfile', extFile, '-out', `${name}.crt`]);
}

export function makeTestCerts(): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), 'picloud-certs-'));
  makeCa(dir, 'ca');
  makeCa(dir, 'other-ca');
  // Members also present the server certificate as a client (lease forwarding), as etcd's do.
  const serverExt = ['subjectAltName=IP:127.0.0.1,DNS:localhost', 'extendedKeyUsage=serverAuth,clientAuth'];
  issue(dir, 'ca', 'server', 'picloud member', serverExt);
  issue(dir, 'ca', 'client', 'root', ['extendedKeyUsage=clientAuth']);
  issue(dir, 'other-ca', 'stranger', 'root', ['extendedKeyUsage=clientAuth']);
  const f = (n: string): string => join(dir, n);
  return {
    dir,
    caCert: f('ca.crt'),
    serverCert: f('server.crt'),
    serverKey: f('server.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
    strangerCert: f('stranger.crt'),
    strangerKey: f('stranger.key'),
    selfSignedServer: () => {
      openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=self-signed member', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', 'self.key', '-out', 'self.crt']);
      return { cert: f('self.crt'), key: f('self.key') };
    },
    renewedServer: () => {
      issue(dir, 'ca', 'server-renewed', 'picloud member', serverExt);
      return { cert: f('server-renewed.crt'), key: f('server-renewed.key') };
    },
    clientFor: (cn) => {
      const name = `client-${cn.replace(/[^A-Za-z0-9]/g, '_')}`;
      issue(dir, 'ca', name, cn, ['extendedKeyUsage=clientAuth']);
      return { cert: f(`${name}.crt`), key: f(`${name}.key`) };
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** The SHA-256 fingerprint of the certificate a TLS port on 127.0.0.1 presents (unverified). */
export function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: ['h2'] }, () => {
      resolve(s.getPeerX509Certificate()!.fingerprint256);
      s.destroy();
    });
    s.on('error', reject);
  });
}
