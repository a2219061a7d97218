/**
 * `node dist/bench/kv/unary-server.js [IN_FLIGHT] [SECONDS] [ROUNDS]`: what the client port's
 * gRPC server costs per unary call, without Raft or storage: an etcd server in this process over
 * a backend that answers every Put at once, the benchmark's grpc-js client (client.ts) in a child
 * process putting 256-byte values at IN_FLIGHT over 8 channels. Each round measures the server answering through
 * direct-unary.ts and through grpc-js (`directUnary: false`), alternating which goes first, and
 * prints this process's CPU and garbage collections per call for each.
 */
import { fork } from 'node:child_process';
import { PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import type { EtcdBackend, PutResponse } from '../../core/net/etcd/service.js';
import { EtcdBenchClient } from './client.js';

const CHANNELS = 8;
const WARMUP_MS = 3_000;
const VALUE = Buffer.alloc(256, 0x61);

/** A backend that answers puts at once: only the server's own cost is left to measure. */
function instantBackend(): EtcdBackend {
  let revision = 1;
  const answer = (): PutResponse => ({ header: { clusterId: 1, memberId: 2, revision: ++revision, raftTerm: 3 } });
  return { put: async () => answer() } as unknown as EtcdBackend;
}

interface ClientResult {
  calls: number;
}

/** The child: puts at `inFlight` for `ms` after a warm-up, telling the parent when measuring starts. */
async function client(port: number, inFlight: number, ms: number): Promise<void> {
  const kv = new EtcdBenchClient(`127.0.0.1:${port}`, CHANNELS);
  await kv.connect();
  const run = async (until: number): Promise<number> => {
    let calls = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async (_, w) => {
        for (let i = 0; Date.now() < until; i++) {
          await kv.put(Buffer.from(`k${w}-${i % 100}`), VALUE);
          calls++;
        }
      }),
    );
    return calls;
  };
  await run(Date.now() + WARMUP_MS);
  process.send!('measuring');
  const calls = await run(Date.now() + ms);
  process.send!({ calls } satisfies ClientResult);
  kv.close();
}

async function measure(directUnary: boolean, inFlight: number, ms: number): Promise<string> {
  const server = await EtcdGrpcServer.start({ backend: instantBackend(), port: 0, directUnary });
  let gcs = 0;
  let gcMs = 0;
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcs++;
      gcMs += e.duration;
    }
  });
  gc.observe({ entryTypes: ['gc'] });
  const child = fork(fileURLToPath(import.meta.url), ['client', String(server.port), String(inFlight), String(ms)]);
  let start = { cpu: process.cpuUsage(), gcs: 0, gcMs: 0 };
  const result = await new Promise<ClientResult>((resolve, reject) => {
    child.on('message', (m) => {
      if (m === 'measuring') start = { cpu: process.cpuUsage(), gcs, gcMs };
      else resolve(m as ClientResult);
    });
    child.on('exit', (code) => reject(new Error(`client exited with ${code}`)));
  });
  const cpu = process.cpuUsage(start.cpu);
  gc.disconnect();
  await server.close();
  const n = result.calls;
  return `${directUnary ? 'direct ' : 'grpc-js'}: ${Math.round(n / (ms / 1000))} calls/s, server ${((cpu.user + cpu.system) / n).toFixed(1)} µs CPU per call, ${((1000 * (gcs - start.gcs)) / n).toFixed(2)} GCs and ${((1000 * (gcMs - start.gcMs)) / n).toFixed(1)} ms of GC per 1,000 calls`;
}

async function main(): Promise<void> {
  if (process.argv[2] === 'client') return client(Number(process.argv[3]), Number(process.argv[4]), Number(process.argv[5]));
  const inFlight = Number(process.argv[2] ?? 16);
  const seconds = Number(process.argv[3] ?? 8);
  const rounds = Number(process.argv[4] ?? 3);
  if (!(Number.isInteger(inFlight) && inFlight >= 1 && inFlight <= 4096)) throw new Error('IN_FLIGHT must be 1..4096');
  if (!(seconds > 0 && seconds <= 600)) throw new Error('SECONDS must be in (0, 600]');
  if (!(Number.isInteger(rounds) && rounds >= 1 && rounds <= 20)) throw new Error('ROUNDS must be 1..20');
  for (let r = 1; r <= rounds; r++) {
    for (const direct of r % 2 === 1 ? [true, false] : [false, true]) console.log(`round ${r} ${await measure(direct, inFlight, seconds * 1000)}`);
  }
}

await main();
