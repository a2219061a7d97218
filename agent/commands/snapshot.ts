/**
 * picloud-node snapshot save FILE [--endpoints HOST:PORT]   (like etcdctl snapshot save)
 * picloud-node snapshot restore FILE --data-dir DIR         (the restored data founds a new cluster)
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import { readSnapshotFile } from '../../core/net/etcd/snapshot-file.js';
import { restoreSnapshotFile } from '../../core/api/snapshot-restore.js';
import { ConfigError } from '../config.js';

async function save(file: string, endpoint: string): Promise<void> {
  const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true });
  const Maintenance = (grpc.loadPackageDefinition(def) as any).etcdserverpb.Maintenance;
  const client = new Maintenance(endpoint, grpc.credentials.createInsecure()) as grpc.Client & { Snapshot(req: object): grpc.ClientReadableStream<{ blob: Buffer }> };
  const part = `${file}.part`;
  const out = createWriteStream(part);
  try {
    await new Promise<void>((resolve, reject) => {
      const call = client.Snapshot({});
      call.on('data', (r: { blob: Buffer }) => {
        if (!out.write(r.blob)) {
          call.pause();
          out.once('drain', () => call.resume());
        }
      });
      call.on('error', reject);
      call.on('end', () => out.end(() => resolve()));
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

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { endpoints: { type: 'string' }, 'data-dir': { type: 'string' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  const [verb, file] = parsed.positionals;
  if ((verb !== 'save' && verb !== 'restore') || !file || parsed.positionals.length !== 2) {
    throw new ConfigError('usage: picloud-node snapshot save FILE [--endpoints HOST:PORT] | snapshot restore FILE --data-dir DIR');
  }
  if (verb === 'save') {
    const endpoint = (parsed.values.endpoints ?? '127.0.0.1:2379').split(',')[0]!;
    await save(file, endpoint);
    return 0;
  }
  const dataDir = parsed.values['data-dir'];
  if (!dataDir) throw new ConfigError('snapshot restore needs --data-dir DIR (a new directory)');
  const r = await restoreSnapshotFile(file, dataDir);
  process.stdout.write(`restored the state at revision ${r.revision} into ${dataDir}\nstart it with: picloud-node agent --bootstrap --name NAME --data-dir ${dataDir}\n`);
  return 0;
}
