/**
 * `node dist/bench/kv/unary-frames.js [picloud|etcd] [PUTS]`: where a sequential put's time goes
 * between the client and the leader's answer, seen from a raw HTTP/2 client (no grpc-js): request
 * sent → response HEADERS, HEADERS → DATA, DATA → trailers (the call ends on the trailers), p50 /
 * p90 / p99, and how many answers' DATA and trailers the client read in one turn of its event
 * loop. On a fresh three-member cluster warmed up as the full run's. For working on the client
 * port; ratios still come from `npm run bench -- kv`.
 */
import { connect, type ClientHttp2Session } from 'node:http2';
import { etcdType } from '../../core/net/proto-files.js';
import { GRPC_MESSAGE_PREFIX_BYTES } from '../../core/net/etcd/eager-send.js';
import { parseSystem, runProbe, withProbeCluster } from './probe.js';
import { FULL_PLAN } from './system-run.js';
import { percentile } from './stats.js';
import { benchValue, warmUp } from './workload.js';

const PutRequest = etcdType('etcdserverpb.PutRequest');

interface Timing {
  headersMs: number;
  dataMs: number;
  trailersMs: number;
  oneTurn: boolean;
}

function grpcFrame(message: Uint8Array): Buffer {
  const out = Buffer.alloc(GRPC_MESSAGE_PREFIX_BYTES + message.length);
  out.writeUInt32BE(message.length, 1);
  out.set(message, GRPC_MESSAGE_PREFIX_BYTES);
  return out;
}

/** One Put on its own stream; times its answer's frames and counts loop turns between DATA and trailers. */
function timedPut(session: ClientHttp2Session, body: Buffer): Promise<Timing> {
  return new Promise((resolve, reject) => {
    const sent = performance.now();
    const stream = session.request({ ':method': 'POST', ':path': '/etcdserverpb.KV/Put', 'content-type': 'application/grpc', te: 'trailers' });
    let turn = 0;
    const tick = (): void => {
      turn++;
      if (!stream.closed) setImmediate(tick);
    };
    setImmediate(tick);
    let headersAt = NaN;
    let dataAt = NaN;
    let dataTurn = -1;
    stream.on('response', () => (headersAt = performance.now()));
    stream.on('data', () => {
      dataAt = performance.now();
      dataTurn = turn;
    });
    stream.on('trailers', (t) => {
      if (t['grpc-status'] !== '0') return reject(new Error(`put failed: grpc-status ${String(t['grpc-status'])} ${String(t['grpc-message'])}`));
      resolve({ headersMs: headersAt - sent, dataMs: dataAt - headersAt, trailersMs: performance.now() - dataAt, oneTurn: dataTurn === turn });
    });
    stream.on('error', reject);
    stream.end(body);
  });
}

function quantiles(xs: number[]): string {
  const sorted = [...xs].sort((a, b) => a - b);
  return [50, 90, 99].map((p) => percentile(sorted, p).toFixed(3)).join(' / ');
}

async function main(): Promise<void> {
  const system = parseSystem(process.argv[2]);
  const puts = Number(process.argv[3] ?? 2000);
  if (!(Number.isInteger(puts) && puts >= 1 && puts <= 100_000)) throw new Error('PUTS must be 1..100000');
  if (process.env.PICLOUD_BENCH_TLS === '1') throw new Error('unary-frames speaks plain HTTP/2 only (unset PICLOUD_BENCH_TLS)');
  await withProbeCluster(system, 1, async ({ writer }) => {
    const value = benchValue();
    await warmUp(writer, [writer], FULL_PLAN.systemWarmupMs, value);
    const session = connect(`http://${writer.endpoint}`);
    try {
      const timings: Timing[] = [];
      for (let i = 0; i < puts; i++) {
        const body = grpcFrame(PutRequest.encode(PutRequest.fromObject({ key: Buffer.from(`bench/frames/${i % 1000}`), value })).finish());
        timings.push(await timedPut(session, body));
      }
      const whole = timings.map((x) => x.headersMs + x.dataMs + x.trailersMs);
      process.stdout.write(
        `${system}: ${puts} sequential puts, ms p50 / p90 / p99: request -> HEADERS ${quantiles(timings.map((x) => x.headersMs))}; ` +
          `HEADERS -> DATA ${quantiles(timings.map((x) => x.dataMs))}; DATA -> trailers ${quantiles(timings.map((x) => x.trailersMs))}; ` +
          `whole ${quantiles(whole)}; DATA and trailers read in one turn: ${timings.filter((x) => x.oneTurn).length} of ${puts}\n`,
      );
    } finally {
      session.close();
    }
  });
}

runProbe(main);
