// The Snapshot call: a client that goes away mid-stream frees what backs it (on a member, a
// spool file the size of the store), and nothing more is read for it.
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import { FakeEtcdBackend } from './fake-etcd-backend.js';

type MaintenanceClient = grpc.Client & { Snapshot(req: object): grpc.ClientReadableStream<{ blob: Buffer; remainingBytes: string }> };

function maintenanceClient(port: number): MaintenanceClient {
  const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { etcdserverpb: { Maintenance: new (a: string, c: grpc.ChannelCredentials) => MaintenanceClient } };
  return new pkg.etcdserverpb.Maintenance(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

async function until(cond: () => boolean, what: string, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('a snapshot read to the end is released once', async (t) => {
  const backend = new FakeEtcdBackend();
  const server = await EtcdGrpcServer.start({ backend, port: 0 });
  t.teardown(() => server.close(200));
  const client = maintenanceClient(server.port);
  t.teardown(() => client.close());
  let bytes = 0;
  await new Promise<void>((resolve, reject) => {
    const s = client.Snapshot({});
    s.on('data', (m: { blob: Buffer }) => (bytes += m.blob.length));
    s.on('end', resolve);
    s.on('error', reject);
  });
  t.ok(bytes > backend.snapshotBytes.length, 'the data and its trailer arrived');
  await until(() => backend.snapshotReleases === 1, 'release');
  t.equal(backend.snapshotReleases, 1);
});

t.test('a client that cancels mid-stream: the stream is released and reading stops', async (t) => {
  const backend = new FakeEtcdBackend();
  backend.snapshotBytes = Buffer.alloc(64 * 1024 * 1024, 7); // far beyond what HTTP/2 buffers
  const server = await EtcdGrpcServer.start({ backend, port: 0 });
  t.teardown(() => server.close(200));
  const client = maintenanceClient(server.port);
  t.teardown(() => client.close());
  for (let round = 1; round <= 3; round++) {
    await new Promise<void>((resolve) => {
      const s = client.Snapshot({});
      s.once('data', () => {
        s.pause(); // stop reading: the server's writes back up, then the client goes
        setTimeout(() => s.cancel(), 200);
      });
      s.on('error', () => resolve());
    });
    await until(() => backend.snapshotReleases === round, `release after cancel ${round}`);
  }
  const read = backend.snapshotPiecesRead;
  await new Promise((r) => setTimeout(r, 300));
  t.equal(backend.snapshotPiecesRead, read, 'nothing more read after the cancels');
  t.ok(read < (3 * backend.snapshotBytes.length) / 10_000, `only part of each snapshot was read (${read} pieces)`);
});
