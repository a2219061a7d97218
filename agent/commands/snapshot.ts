/**
 * picloud-node snapshot save FILE [--endpoints [https://]HOST:PORT] [--user NAME[:PASSWORD] [--password P]]
 *                                 [--cacert FILE] [--cert FILE --key FILE]
 *                                                          (like etcdctl snapshot save; with auth
 *                                                          enabled it needs the root role; TLS with
 *                                                          an https:// endpoint or --cacert, as etcdctl)
 * picloud-node snapshot restore FILE --data-dir DIR         (the restored data founds a new cluster)
 */
import * as grpc from '@grpc/grpc-js';
import { createWriteStream, existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { rename, rm } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { etcdPackageDefinition } from '../../core/net/etcd/grpc-definitions.js';
import { readSnapshotFile } from '../../core/net/etcd/snapshot-file.js';
import { restoreSnapshotFile } from '../../core/api/snapshot-restore.js';
import { ConfigError, readFlagFile } from '../config.js';
import { parseHostPort } from '../../core/net/address.js';

interface Credentials {
  name: string;
  password: string;
}

/** What went wrong talking to the server or writing the file: printed as a message, no stack. */
class SnapshotSaveError extends Error {
  readonly code = 'SNAPSHOT_SAVE_FAILED';
}

/** A gRPC failure as etcdctl prints it: the server's (or grpc-js's) reason, naming the endpoint. */
function callFailed(endpoint: Endpoint, e: grpc.ServiceError): SnapshotSaveError {
  return new SnapshotSaveError(`${endpoint.hostPort}: ${e.details || e.message}`);
}

/** etcd's Authenticate: the token to send as the "token" metadata. */
function authenticate(pkg: any, endpoint: Endpoint, who: Credentials): Promise<string> {
  const auth = new pkg.Auth(endpoint.hostPort, endpoint.credentials) as grpc.Client & {
    Authenticate(req: object, cb: (err: grpc.ServiceError | null, r?: { token: string }) => void): void;
  };
  return new Promise<string>((resolve, reject) =>
    auth.Authenticate({ name: who.name, password: who.password }, (err, r) => {
      auth.close();
      if (err) reject(callFailed(endpoint, err));
      else resolve(r!.token);
    }),
  );
}

async function save(file: string, endpoint: Endpoint, who: Credentials | undefined): Promise<void> {
  const pkg = (grpc.loadPackageDefinition(etcdPackageDefinition()) as any).etcdserverpb;
  const metadata = new grpc.Metadata();
  if (who !== undefined) metadata.set('token', await authenticate(pkg, endpoint, who));
  const client = new pkg.Maintenance(endpoint.hostPort, endpoint.credentials) as grpc.Client & {
    Snapshot(req: object, md: grpc.Metadata): grpc.ClientReadableStream<{ blob: Buffer }>;
  };
  const part = `${file}.part`;
  // Private as the data dir it comes from (every key, the users' password hashes), as etcdctl's 0600.
  const out = createWriteStream(part, { mode: 0o600 });
  try {
    await new Promise<void>((resolve, reject) => {
      out.once('error', (e) => reject(new SnapshotSaveError(`cannot write ${part}: ${e.message}`)));
      out.once('open', () => {
        const call = client.Snapshot({}, metadata);
        call.on('data', (r: { blob: Buffer }) => {
          if (!out.write(r.blob)) {
            call.pause();
            out.once('drain', () => call.resume());
          }
        });
        call.on('error', (e: grpc.ServiceError) => reject(callFailed(endpoint, e)));
        call.on('end', () => out.end(() => resolve()));
      });
    });
    const { dataBytes } = await readSnapshotFile(part); // verifies size framing and SHA-256
    await rename(part, file);
    process.stdout.write(`Snapshot saved at ${file} (${dataBytes} bytes of state)\n`);
  } catch (e) {
    out.destroy();
    await rm(part, { force: true });
    throw e;
  } finally {
    client.close();
  }
}

interface Endpoint {
  hostPort: string;
  credentials: grpc.ChannelCredentials;
}

/**
 * etcdctl's way of choosing TLS: an https:// endpoint, or an endpoint without a scheme and any
 * of --cacert, --cert, --key (http:// stays plain); the server is checked against --cacert (the
 * system's roots without it).
 */
function endpointOf(endpoints: string | undefined, tls: { cacert?: string; cert?: string; key?: string }): Endpoint {
  const first = (endpoints ?? '127.0.0.1:2379').split(',')[0]!.trim();
  const m = /^(?:(https?):\/\/)?([^/]+)\/?$/.exec(first);
  if (!m) throw new ConfigError(`--endpoints: expected [http://|https://]HOST:PORT, got "${first}"`);
  // The port checked here (1-65535, digits), and given when left out: etcd's 2379, not the scheme's 443.
  let hostPort: string;
  try {
    const hp = parseHostPort(m[2]!, 2379);
    hostPort = hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
  } catch (e) {
    throw new ConfigError(`--endpoints: ${(e as Error).message}`);
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) throw new ConfigError('--cert and --key go together');
  const read = (flag: string, path: string | undefined): Buffer | undefined => (path === undefined ? undefined : readFlagFile(flag, path));
  const ca = read('cacert', tls.cacert);
  const cert = read('cert', tls.cert);
  const key = read('key', tls.key);
  const secure = m[1] === 'https' || (m[1] === undefined && (ca !== undefined || cert !== undefined));
  if (!secure) return { hostPort, credentials: grpc.credentials.createInsecure() };
  // grpc-js names an IP address as the TLS server name, which Node warns about (DEP0123) on a
  // command's output; the certificate is still checked against the address.
  process.noDeprecation = true;
  try {
    return { hostPort, credentials: grpc.credentials.createSsl(ca ?? null, key ?? null, cert ?? null) };
  } catch (e) {
    throw new ConfigError(`--cacert/--cert/--key: ${(e as Error).message}`);
  }
}

/** etcdctl's --user NAME[:PASSWORD] and --password. */
function credentials(user: string | undefined, password: string | undefined): Credentials | undefined {
  if (user === undefined) {
    if (password !== undefined) throw new ConfigError('--password needs --user NAME');
    return undefined;
  }
  const colon = user.indexOf(':');
  const name = colon < 0 ? user : user.slice(0, colon);
  if (name === '') throw new ConfigError('--user needs a user name');
  if (colon >= 0 && password !== undefined) throw new ConfigError('give the password either in --user NAME:PASSWORD or in --password, not both');
  const pw = colon >= 0 ? user.slice(colon + 1) : password;
  if (pw === undefined) throw new ConfigError('--user NAME needs a password: --user NAME:PASSWORD or --password PASSWORD');
  return { name, password: pw };
}

/** The file `snapshot save` will write: not a directory, in a directory that exists. */
function checkSaveTarget(file: string): void {
  if (existsSync(file) && statSync(file).isDirectory()) throw new ConfigError(`${file} is a directory: give the snapshot file's name`);
  const dir = dirname(resolve(file));
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ConfigError(`${dir} is not a directory: cannot save ${file} there`);
}

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        endpoints: { type: 'string' },
        'data-dir': { type: 'string' },
        user: { type: 'string' },
        password: { type: 'string' },
        cacert: { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  const [verb, file] = parsed.positionals;
  if ((verb !== 'save' && verb !== 'restore') || !file || parsed.positionals.length !== 2) {
    throw new ConfigError('usage: picloud-node snapshot save FILE [--endpoints [https://]HOST:PORT] [--user NAME[:PASSWORD]] [--password P] [--cacert FILE] [--cert FILE --key FILE] | snapshot restore FILE --data-dir DIR');
  }
  const given = Object.keys(parsed.values);
  const meaningless = given.filter((f) => (verb === 'save' ? f === 'data-dir' : f !== 'data-dir'));
  if (meaningless.length > 0) throw new ConfigError(`snapshot ${verb} does not take --${meaningless.join(', --')}`);
  if (verb === 'save') {
    const { cacert, cert, key } = parsed.values;
    // Before the snapshot is streamed: a directory (or a path under a missing one) fails only at the rename.
    checkSaveTarget(file);
    const endpoint = endpointOf(parsed.values.endpoints, { cacert, cert, key });
    await save(file, endpoint, credentials(parsed.values.user, parsed.values.password));
    return 0;
  }
  const dataDir = parsed.values['data-dir'];
  if (!dataDir) throw new ConfigError('snapshot restore needs --data-dir DIR (a new directory)');
  const r = await restoreSnapshotFile(file, dataDir);
  process.stdout.write(`restored the state at revision ${r.revision} into ${dataDir}\nstart it with: picloud-node agent --bootstrap --name NAME --data-dir ${dataDir}\n`);
  return 0;
}
