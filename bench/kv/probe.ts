/**
 * The frame of the single-phase probes (watch-only.ts, put-only.ts): a fresh three-member
 * cluster of one system, a writer connected to its leader, the member PIDs leader first, and
 * teardown whatever happens; plus the process entry that prints an error and sets the exit code.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd, startPicloud, type SystemName } from './clusters.js';
import { EtcdBenchClient, useTls } from './client.js';
import { makeTestCerts } from '../../test/helpers/certs.js';
import { PUT_KEYSPACE, closedLoop } from './workload.js';

export interface ProbeCluster {
  writer: EtcdBenchClient;
  /** Member PIDs, the leader first. */
  pids: number[];
  /** Client endpoints in the same order. */
  endpoints: string[];
  /** Data directories in the same order. */
  dataDirs: string[];
  /** The recent log lines of each member, same order. */
  logTails: string[][];
  /** picloud only: each member's /metrics, same order. */
  metricsUrls: (string | undefined)[];
}

export function parseSystem(arg: string | undefined): SystemName {
  const system = arg ?? 'picloud';
  if (system !== 'picloud' && system !== 'etcd') throw new Error('system must be picloud or etcd');
  return system;
}

/**
 * Runs `fn` against a fresh cluster; PICLOUD_NODE_ARGS='--flag …' passes node flags to picloud
 * members, `memberArgs` flags to the members of either system (the agent's, or etcd's).
 */
export async function withProbeCluster(system: SystemName, writerChannels: number, fn: (c: ProbeCluster) => Promise<void>, memberArgs: string[] = []): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), `picloud-probe-${system}-`));
  const nodeArgs = process.env.PICLOUD_NODE_ARGS?.split(' ').filter(Boolean);
  // PICLOUD_BENCH_TLS=1: both systems serve their client ports over TLS (a server certificate,
  // as etcd's --cert-file/--key-file; the same flags on both).
  const certs = process.env.PICLOUD_BENCH_TLS === '1' ? makeTestCerts() : undefined;
  const tlsArgs = certs === undefined ? [] : ['--cert-file', certs.serverCert, '--key-file', certs.serverKey];
  if (certs !== undefined) useTls(readFileSync(certs.caCert));
  const cluster =
    system === 'etcd'
      ? await startEtcd({ root, etcdArgs: [...tlsArgs, ...memberArgs], clientScheme: certs === undefined ? 'http' : 'https' })
      : await startPicloud({ root, nodeArgs, agentArgs: [...tlsArgs, ...memberArgs] });
  const writer = new EtcdBenchClient(await cluster.leaderEndpoint(), writerChannels);
  try {
    await writer.connect();
    const leader = writer.endpoint;
    const order = [...cluster.members].sort((a, b) => Number(b.clientEndpoint === leader) - Number(a.clientEndpoint === leader));
    await fn({ writer, pids: order.map((m) => m.proc.pid!), endpoints: order.map((m) => m.clientEndpoint), dataDirs: order.map((m) => m.dataDir), logTails: order.map((m) => m.logTail), metricsUrls: order.map((m) => m.metricsUrl) });
  } finally {
    writer.close();
    await cluster.stop();
    rmSync(root, { recursive: true, force: true });
    certs?.remove();
  }
}

/**
 * PICLOUD_BENCH_PRELOAD=N: puts N revisions (256 in flight, over PUT_KEYSPACE keys) before the
 * probe's rounds, as the full run's later phases find a few hundred thousand in each member.
 */
export async function preloadFromEnv(system: SystemName, writer: EtcdBenchClient, value: Buffer): Promise<void> {
  const preload = Number(process.env.PICLOUD_BENCH_PRELOAD ?? 0);
  if (!(Number.isInteger(preload) && preload >= 0)) throw new Error('PICLOUD_BENCH_PRELOAD must be a count of revisions');
  if (preload === 0) return;
  const started = Date.now();
  await closedLoop(256, 600_000, preload, (seq, w) => writer.put(Buffer.from(`preload/${seq % PUT_KEYSPACE}`), value, w));
  process.stdout.write(`${system}: ${preload} revisions put first, at 256 in flight, in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
}

export function runProbe(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`${(e as Error).message}\n`);
      process.exit(1);
    },
  );
}
