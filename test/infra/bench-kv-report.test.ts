import t from 'tap';
import { checkTargets, median, renderRounds, roundRatios, watchRounds } from '../../bench/kv/report.js';

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
