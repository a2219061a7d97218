/**
 * The KV benchmark's phases, identical for both systems: closed-loop puts and gets with a
 * fixed number of requests in flight, and watch delivery latency with W watchers. Each phase
 * is bounded by a request count and a wall-clock duration. Knows nothing of which system it
 * drives: it gets endpoints and PIDs.
 */
import { randomBytes } from 'node:crypto';
import { EtcdBenchClient, WatchStream } from './client.js';
import { cpuTimeMs, sumCpuMs, sumIo } from './proc.js';
import { LatencyRecorder, nowMs, type LatencySummary } from './stats.js';

/** Value size of every put, as the issue fixes it. */
export const VALUE_BYTES = 256;
/** Distinct keys a put phase cycles through. */
export const PUT_KEYSPACE = 100_000;
/** Keys written before the get phase and read during it. */
export const GET_KEYSPACE = 1_000;
/** Watchers multiplexed on one Watch stream (each stream has its own connection). */
export const WATCHERS_PER_STREAM = 100;
/** How long one put's events may take to reach every watcher before the put counts as lost. */
export const WATCH_EVENT_TIMEOUT_MS = 5_000;
/** The longest a watch warm-up runs, however few of its puts are done. */
const WATCH_WARMUP_MAX_MS = 15_000;

export interface PhaseLimits {
  durationMs: number;
  maxOps: number;
  warmupMs: number;
}

export interface LoadResult {
  inFlight: number;
  ops: number;
  errors: number;
  firstError?: string;
  durationMs: number;
  opsPerSec: number;
  latency: LatencySummary;
  /** Bytes written by all members during the measured part, per successful op. */
  writeBytesPerOp?: number;
  wcharBytesPerOp?: number;
  /** CPU time of all members during the measured part, per successful op. */
  memberCpuMsPerOp?: number;
  /** The same per member, in the order of the pids given (which one leads is the caller's to say). */
  memberCpuMsPerOpEach?: number[];
  /** CPU used by this benchmark process (the client) during the measured part, % of one core. */
  clientCpuPercent: number;
}

export function benchValue(): Buffer {
  return randomBytes(VALUE_BYTES);
}

function key(prefix: string, i: number, keyspace: number): Buffer {
  return Buffer.from(`bench/${prefix}/${(i % keyspace).toString().padStart(8, '0')}`);
}

export type LoopResult = Pick<LoadResult, 'ops' | 'errors' | 'firstError' | 'durationMs' | 'opsPerSec' | 'latency'>;

type Op = (seq: number, worker: number) => Promise<unknown>;

/**
 * `inFlight` workers each issue one request at a time until the duration or the op budget
 * is spent; latency is measured per request from send to response.
 */
export async function closedLoop(inFlight: number, durationMs: number, maxOps: number, op: Op): Promise<LoopResult> {
  // A failed call's time to its failure is a latency sample too (a deadline reached is one of
  // the slowest answers, not a missing one); only successes count as throughput.
  const rec = new LatencyRecorder();
  let issued = 0;
  let succeeded = 0;
  let errors = 0;
  let firstError: string | undefined;
  const start = nowMs();
  const end = start + durationMs;
  const worker = async (w: number): Promise<void> => {
    while (issued < maxOps && nowMs() < end) {
      const seq = issued++;
      const t0 = nowMs();
      try {
        await op(seq, w);
        rec.add(nowMs() - t0);
        succeeded++;
      } catch (e) {
        rec.add(nowMs() - t0);
        errors++;
        firstError ??= (e as Error).message;
        // a failing server must not turn the loop into a busy spin
        if (errors > 1000 && errors > issued / 2) throw new Error(`too many errors (${errors}/${issued}): ${firstError}`);
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, (_, w) => worker(w)));
  const elapsed = nowMs() - start;
  const latency = rec.summary();
  return { ops: succeeded, errors, firstError, durationMs: elapsed, opsPerSec: (succeeded / elapsed) * 1000, latency };
}

/**
 * Unmeasured load before any phase: puts at 64 in flight, then linearizable gets, so each
 * system is measured in its steady state (a Node process runs its hot paths unoptimised
 * until V8 has compiled them; a long-running member has long done so).
 */
export async function warmUp(writer: EtcdBenchClient, readers: EtcdBenchClient[], durationMs: number, value: Buffer): Promise<void> {
  await closedLoop(64, durationMs / 2, Number.MAX_SAFE_INTEGER, (seq, w) => writer.put(key('warm', seq, GET_KEYSPACE), value, w));
  await closedLoop(64, durationMs / 2, Number.MAX_SAFE_INTEGER, (seq, w) => readers[seq % readers.length]!.get(key('warm', seq, GET_KEYSPACE), w));
}

/** Runs a closed loop after an unmeasured warm-up and attributes the members' disk writes to it. */
async function measured(inFlight: number, limits: PhaseLimits, pids: readonly number[], op: Op): Promise<LoadResult> {
  if (limits.warmupMs > 0) await closedLoop(inFlight, limits.warmupMs, limits.maxOps, op);
  const ioBefore = sumIo(pids);
  const cpuBefore = sumCpuMs(pids);
  const eachBefore = pids.map(cpuTimeMs);
  const clientBefore = process.cpuUsage();
  const r = await closedLoop(inFlight, limits.durationMs, limits.maxOps, op);
  const client = process.cpuUsage(clientBefore);
  const cpuAfter = sumCpuMs(pids);
  const eachAfter = pids.map(cpuTimeMs);
  const ioAfter = sumIo(pids);
  const out: LoadResult = { inFlight, ...r, clientCpuPercent: ((client.user + client.system) / 1000 / r.durationMs) * 100 };
  if (cpuBefore !== undefined && cpuAfter !== undefined && r.ops > 0) out.memberCpuMsPerOp = (cpuAfter - cpuBefore) / r.ops;
  if (r.ops > 0 && eachBefore.every((c) => c !== undefined) && eachAfter.every((c) => c !== undefined)) {
    out.memberCpuMsPerOpEach = eachAfter.map((c, i) => (c! - eachBefore[i]!) / r.ops);
  }
  if (ioBefore && ioAfter && r.ops > 0) {
    out.writeBytesPerOp = (ioAfter.writeBytes - ioBefore.writeBytes) / r.ops;
    out.wcharBytesPerOp = (ioAfter.wcharBytes - ioBefore.wcharBytes) / r.ops;
  }
  return out;
}

/** Puts of VALUE_BYTES to the given client's endpoint with `inFlight` requests outstanding. */
export function putPhase(client: EtcdBenchClient, inFlight: number, limits: PhaseLimits, pids: readonly number[], value: Buffer): Promise<LoadResult> {
  const prefix = `put${inFlight}`;
  return measured(inFlight, limits, pids, (seq, w) => client.put(key(prefix, seq, PUT_KEYSPACE), value, w));
}

/** Writes GET_KEYSPACE keys, then reads them linearizably across every client (one per member). */
export async function getPhase(writer: EtcdBenchClient, readers: EtcdBenchClient[], inFlight: number, limits: PhaseLimits, pids: readonly number[], value: Buffer): Promise<LoadResult> {
  await closedLoop(64, 60_000, GET_KEYSPACE, (seq, w) => writer.put(key('get', seq, GET_KEYSPACE), value, w));
  return measured(inFlight, limits, pids, async (seq, w) => {
    const found = await readers[seq % readers.length]!.get(key('get', seq, GET_KEYSPACE), w);
    if (found !== 1) throw new Error(`get found ${found} keys`);
  });
}

export interface WatchResult {
  watchers: number;
  puts: number;
  /** Puts whose events did not all arrive within WATCH_EVENT_TIMEOUT_MS. */
  incompletePuts: number;
  /** Put acknowledged → event received, per (put, watcher); an event that beat the ack counts as 0. */
  latency: LatencySummary;
  /** Events that arrived before the put's acknowledgement. */
  eventsBeforeAck: number;
  /** Put sent → event received (what etcd's `benchmark watch-latency` reports). */
  fromSendLatency: LatencySummary;
  /** Put acknowledged → its last event received, per put: how long a fan-out takes to finish. */
  lastEventLatency: LatencySummary;
  durationMs: number;
}

/**
 * `watchers` watchers of one key on `watchEndpoint`, and sequential puts to that key through
 * `writer`; after each acknowledged put, waits until every watcher has its event.
 */
/** A watch phase whose numbers are dropped: `puts` puts to `watchers` watchers, as watchPhase makes them. */
export async function warmUpWatch(writer: EtcdBenchClient, watchEndpoint: string, watchers: number, puts: number, value: Buffer): Promise<void> {
  const r = await watchPhase(writer, watchEndpoint, watchers, puts, WATCH_WARMUP_MAX_MS, value);
  if (r.incompletePuts > 0) throw new Error(`watch warm-up: ${r.incompletePuts} of ${r.puts} puts did not reach all ${watchers} watchers`);
}

export async function watchPhase(writer: EtcdBenchClient, watchEndpoint: string, watchers: number, maxPuts: number, durationMs: number, value: Buffer): Promise<WatchResult> {
  const watchKey = Buffer.from(`bench/watch/${watchers}`);
  const arrivals = new Map<number, number[]>();
  // Set while the writer waits for the last events of an acknowledged put (no polling: the
  // client shares the machine's two cores with the members it measures).
  let waiting: { rev: number; done: () => void } | undefined;
  const sink = (_id: number, rev: number, at: number): void => {
    let a = arrivals.get(rev);
    if (!a) arrivals.set(rev, (a = []));
    a.push(at);
    if (waiting && waiting.rev === rev && a.length >= watchers) waiting.done();
  };
  const allArrived = (rev: number): Promise<void> => {
    if ((arrivals.get(rev)?.length ?? 0) >= watchers) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        waiting = undefined;
        resolve();
      }, WATCH_EVENT_TIMEOUT_MS);
      waiting = {
        rev,
        done: () => {
          clearTimeout(timer);
          waiting = undefined;
          resolve();
        },
      };
    });
  };
  const streams: WatchStream[] = [];
  try {
    for (let left = watchers; left > 0; left -= WATCHERS_PER_STREAM) {
      const s = new WatchStream(watchEndpoint, sink, nowMs);
      streams.push(s);
      await s.addWatchers(watchKey, Math.min(WATCHERS_PER_STREAM, left));
    }
    const fromAck = new LatencyRecorder();
    const fromSend = new LatencyRecorder();
    const lastEvent = new LatencyRecorder();
    let eventsBeforeAck = 0;
    let incompletePuts = 0;
    let puts = 0;
    const start = nowMs();
    while (puts < maxPuts && nowMs() - start < durationMs) {
      const sent = nowMs();
      const rev = Number(await writer.put(watchKey, value, 0));
      const acked = nowMs();
      puts++;
      await allArrived(rev);
      const got = arrivals.get(rev) ?? [];
      if (got.length < watchers) incompletePuts++;
      let last = acked;
      for (const at of got) {
        if (at < acked) eventsBeforeAck++;
        fromAck.add(Math.max(0, at - acked));
        fromSend.add(at - sent);
        last = Math.max(last, at);
      }
      // An event that never came counts as one at the timeout (at least that late), not as none.
      for (let missing = watchers - got.length; missing > 0; missing--) {
        fromAck.add(WATCH_EVENT_TIMEOUT_MS);
        fromSend.add(acked - sent + WATCH_EVENT_TIMEOUT_MS);
      }
      if (got.length === watchers) lastEvent.add(last - acked);
      arrivals.clear();
    }
    return { watchers, puts, incompletePuts, latency: fromAck.summary(), eventsBeforeAck, fromSendLatency: fromSend.summary(), lastEventLatency: lastEvent.summary(), durationMs: nowMs() - start };
  } finally {
    for (const s of streams) s.close();
  }
}
