import t from 'tap';
import { checkTargets, median, renderRounds, renderTable, roundFailures, roundRatios, watchRounds } from '../../bench/kv/report.js';
import { PhaseOrder } from '../../bench/kv/phase-order.js';
import { closedLoop } from '../../bench/kv/workload.js';

t.test('median of the rounds: odd and even counts, order does not matter', async (t) => {
  t.equal(median([1.1]), 1.1);
  t.equal(median([0.9, 1.2, 1.0]), 1.0);
  t.equal(median([1.2, 0.8, 1.0, 0.9]), 0.95);
  const r = roundRatios('put @64 throughput', '>= 1x etcd', [0.79, 1.05, 1.01], (m) => m >= 1);
  t.equal(r.median, 1.01);
  t.equal(r.met, true);
  t.equal(roundRatios('x', '>= 1x etcd', [0.79, 0.98, 1.05], (m) => m >= 1).met, false, 'one good round does not carry a target');
  const text = renderRounds([r]);
  t.match(text, /0\.79x 1\.05x 1\.01x/);
  t.match(text, /median 1\.01x/);
  t.match(text, /MET/);
});

t.test('the watch phase by rounds: picloud\'s median p99 against 5 ms, both systems shown', async (t) => {
  const lat = (p99Ms: number) => ({ count: 1, p50Ms: 1, p99Ms, maxMs: p99Ms, meanMs: 1 });
  const w = (p99: number) => ({ watchers: 1000, puts: 1, incompletePuts: 0, latency: lat(p99), eventsBeforeAck: 0, fromSendLatency: lat(p99), lastEventLatency: lat(p99), durationMs: 1 });
  const r = watchRounds([w(6.2), w(4.1), w(4.8)], [w(9.5), w(3.9), w(7)]);
  t.same(r.picloud, [6.2, 4.1, 4.8]);
  t.same(r.etcd, [9.5, 3.9, 7]);
  t.equal(r.median, 4.8);
  t.equal(r.met, true);
  t.equal(watchRounds([w(6.2), w(4.1), w(5.3)], [w(1), w(1), w(1)]).met, false, 'one good round does not carry it');
  const text = renderRounds([], [r]);
  t.match(text, /watch p99, 1000 watchers \(ms\) +\| picloud 6\.20 4\.10 4\.80; etcd 9\.50 3\.90 7\.00 +\| median 4\.80 \| <= 5 ms +\| MET/);
});

t.test('target checks compare the right numbers', async (t) => {
  const fsync = { samples: 1, method: 'fdatasync', writeBytes: 4096, p50Ms: 1, p99Ms: 2, maxMs: 2, meanMs: 1 };
  const lat = (p50Ms: number, p99Ms: number) => ({ count: 1, p50Ms, p99Ms, maxMs: p99Ms, meanMs: p50Ms });
  const put = (inFlight: number, opsPerSec: number, p50: number, p99: number) => ({ inFlight, ops: 1, errors: 0, durationMs: 1, opsPerSec, latency: lat(p50, p99), clientCpuPercent: 0 });
  const sys = (name: 'picloud' | 'etcd', f: number, watchP99: number) => ({
    system: name, members: [], leaderEndpoint: '', leaderAfterLoad: '', rssIdleKiB: [], idleCpuPercent: 0, rssLoadPeakKiB: [],
    puts: [put(1, 100, 1.4, 3), put(16, 1000 * f, 10, 30 / f), put(64, 1500 * f, 40, 90), put(256, 2000 * f, 100, 300)],
    get: put(64, 1600 * f, 40, 90),
    watch: [{ watchers: 1000, puts: 1, incompletePuts: 0, latency: lat(1, watchP99), eventsBeforeAck: 0, fromSendLatency: lat(1, watchP99), lastEventLatency: lat(1, watchP99), durationMs: 1 }],
  });
  const byName = (checks: ReturnType<typeof checkTargets>) => new Map(checks.map((c) => [c.name, c.met]));
  const good = byName(checkTargets(fsync as never, sys('picloud', 1.1, 4) as never, sys('etcd', 1, 40) as never));
  t.same([...good.values()], [true, true, true, true, true, true], 'every target met');
  const bad = byName(checkTargets(fsync as never, sys('picloud', 0.9, 6) as never, sys('etcd', 1, 40) as never));
  t.same([...bad.values()], [false, false, false, false, true, false], 'throughput, p99 @16 and watch missed; sequential p50 at 1.4x fsync still met');
});

t.test('failed requests or lost watch events spoil a check: not met, and the table says why', async (t) => {
  const fsync = { samples: 1, method: 'fdatasync', writeBytes: 4096, p50Ms: 1, p99Ms: 2, maxMs: 2, meanMs: 1 };
  const lat = (p50Ms: number, p99Ms: number) => ({ count: 1, p50Ms, p99Ms, maxMs: p99Ms, meanMs: p50Ms });
  const put = (inFlight: number, opsPerSec: number, errors = 0) => ({ inFlight, ops: 1, errors, firstError: errors ? 'deadline exceeded' : undefined, durationMs: 1, opsPerSec, latency: lat(1, 2), clientCpuPercent: 0 });
  const sys = (name: 'picloud' | 'etcd', f: number, etcdErrorsAt64: number, lostWatchPuts: number) => ({
    system: name, members: [], leaderEndpoint: '', leaderAfterLoad: '', rssIdleKiB: [], idleCpuPercent: 0, rssLoadPeakKiB: [],
    puts: [put(1, 100), put(16, 1000 * f), put(64, 1500 * f, etcdErrorsAt64), put(256, 2000 * f)],
    get: put(64, 1600 * f),
    watch: [{ watchers: 1000, puts: 10, incompletePuts: lostWatchPuts, latency: lat(1, 2), eventsBeforeAck: 0, fromSendLatency: lat(1, 2), lastEventLatency: lat(1, 2), durationMs: 1 }],
  });
  const checks = checkTargets(fsync as never, sys('picloud', 1.2, 0, 3) as never, sys('etcd', 1, 7, 0) as never);
  const c64 = checks.find((c) => c.name.startsWith('put throughput @64'))!;
  t.equal(c64.met, false, 'etcd\'s failures at 64 in flight: picloud\'s 1.2x is not shown');
  t.match(c64.spoiled, /etcd: 7 failed \(deadline exceeded\)/);
  t.equal(checks.find((c) => c.name.startsWith('put throughput @256'))!.met, true, 'a clean phase still counts');
  const watch = checks.find((c) => c.name.startsWith('watch p99'))!;
  t.equal(watch.met, false, 'a 2 ms p99 with events lost is not met');
  t.match(watch.spoiled, /picloud: 3 puts' events not all delivered/);
  const table = renderTable(fsync as never, lat(1, 1) as never, sys('picloud', 1.2, 0, 3) as never, sys('etcd', 1, 7, 0) as never, checks);
  t.match(table, /put @64 throughput.*NOT SHOWN \(etcd: 7 failed/);

  const r = roundRatios('put @64 throughput', '>= 1x etcd', [1.2, 1.3, 1.1], (m) => m >= 1, roundFailures([['picloud', [put(64, 1), put(64, 1, 2)]], ['etcd', [put(64, 1)]]]));
  t.equal(r.met, false);
  t.match(renderRounds([r]), /NOT SHOWN \(picloud: 2 failed\)/);
  t.equal(roundFailures([['picloud', [put(64, 1)]], ['etcd', [put(64, 1)]]]), undefined, 'no failures, nothing said');
});

t.test('closedLoop: a failed call is a latency sample at its time to fail, not throughput', async (t) => {
  let n = 0;
  const r = await closedLoop(1, 10_000, 4, async () => {
    if (n++ % 2 === 1) {
      await new Promise((resolve) => setTimeout(resolve, 60));
      throw new Error('deadline exceeded');
    }
  });
  t.equal(r.ops, 2, 'two succeeded');
  t.equal(r.errors, 2);
  t.equal(r.firstError, 'deadline exceeded');
  t.equal(r.latency.count, 4, 'every call is a sample');
  t.ok(r.latency.maxMs >= 55, `the slow failures are in the latency (max ${r.latency.maxMs.toFixed(1)} ms)`);
  t.ok(r.opsPerSec <= (2 / r.durationMs) * 1000 + 1e-9, 'throughput counts the successes only');
});

t.test('phase order: alternates between phases and, for a repeated phase, between rounds', async (t) => {
  const o = new PhaseOrder();
  const first = (phase: string): string => o.next(phase, ['picloud', 'etcd'])[0]!;
  const round1 = ['warm-up', 'put@1', 'put@16', 'put@64', 'put@256', 'get@64'].map(first);
  t.same(round1, ['picloud', 'etcd', 'picloud', 'etcd', 'picloud', 'etcd'], 'round 1: turn by turn');
  const round2 = ['put@16', 'put@64', 'put@256', 'get@64'].map(first);
  const round3 = ['put@16', 'put@64', 'put@256', 'get@64'].map(first);
  t.same(round2, ['etcd', 'picloud', 'etcd', 'picloud'], 'round 2: each repeated phase the other way round from round 1');
  t.same(round3, round1.slice(2), 'round 3: as round 1');
  t.same([o.next('get@64', ['a', 'b']), o.next('get@64', ['a', 'b'])], [['a', 'b'], ['b', 'a']], 'rounds 4 and 5: both systems returned, in turn');
});
