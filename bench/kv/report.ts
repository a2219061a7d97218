/**
 * Turns the KV benchmark's measurements into the side-by-side table (picloud | etcd | ratio)
 * with the issue's targets and whether each is met. Formatting and target arithmetic only.
 */
import type { FsyncLatency } from '../../core/storage/index.js';
import type { LatencySummary } from './stats.js';
import type { LoadResult, WatchResult } from './workload.js';

export interface SystemResult {
  system: 'picloud' | 'etcd';
  members: { name: string; pid: number; clientEndpoint: string }[];
  leaderEndpoint: string;
  /** The leader at the end of the load phases, if it moved (a leader change spoils a run). */
  leaderAfterLoad: string;
  rssIdleKiB: number[];
  /** CPU all members used while idle, % of one core. */
  idleCpuPercent: number | undefined;
  rssLoadPeakKiB: number[];
  puts: LoadResult[];
  get: LoadResult;
  watch: WatchResult[];
}

/** The issue's targets, as named constants. */
export const PUT_THROUGHPUT_RATIO_MIN = 1.0;
export const GET_THROUGHPUT_RATIO_MIN = 1.0;
export const SEQ_PUT_P50_FSYNC_RATIO_MAX = 1.5;
export const WATCH_1000_P99_MS_MAX = 5;

export interface TargetCheck {
  name: string;
  target: string;
  picloud: number | undefined;
  reference: number | undefined;
  /** picloud / reference. */
  ratio: number | undefined;
  /** False too when either system's phase had failed requests or lost watch events (`spoiled` says which). */
  met: boolean | undefined;
  spoiled?: string;
}

const putAt = (s: SystemResult | undefined, n: number): LoadResult | undefined => s?.puts.find((p) => p.inFlight === n);
const watchOf = (s: SystemResult | undefined, n: number): WatchResult | undefined => s?.watch.find((w) => w.watchers === n);

/** What went wrong in the phases a check compares: failed requests, watch events that never came. */
function failures(phases: ReadonlyArray<readonly [string, LoadResult | WatchResult | undefined]>): string | undefined {
  const said: string[] = [];
  for (const [system, r] of phases) {
    if (!r) continue;
    if ('errors' in r && r.errors > 0) said.push(`${system}: ${r.errors} failed (${r.firstError ?? 'no message'})`);
    if ('incompletePuts' in r && r.incompletePuts > 0) said.push(`${system}: ${r.incompletePuts} puts' events not all delivered`);
  }
  return said.length > 0 ? said.join('; ') : undefined;
}

function check(
  name: string,
  target: string,
  p: number | undefined,
  ref: number | undefined,
  ok: (p: number, ref: number) => boolean,
  phases: ReadonlyArray<readonly [string, LoadResult | WatchResult | undefined]>,
): TargetCheck {
  const ratio = p !== undefined && ref !== undefined && ref !== 0 ? p / ref : undefined;
  const spoiled = failures(phases);
  // A phase with failures proves nothing either way: not met, and said why.
  const met = p !== undefined && ref !== undefined ? spoiled === undefined && ok(p, ref) : undefined;
  return { name, target, picloud: p, reference: ref, ratio, met, ...(spoiled ? { spoiled } : {}) };
}

export function checkTargets(fsync: FsyncLatency, pic: SystemResult | undefined, etcd: SystemResult | undefined): TargetCheck[] {
  const out: TargetCheck[] = [];
  const both = <T>(of: (s: SystemResult | undefined) => T) => [['picloud', of(pic)], ['etcd', of(etcd)]] as ReadonlyArray<readonly [string, T]>;
  for (const n of [64, 256]) {
    out.push(check(`put throughput @${n} in flight (ops/s)`, `>= ${PUT_THROUGHPUT_RATIO_MIN}x etcd`, putAt(pic, n)?.opsPerSec, putAt(etcd, n)?.opsPerSec, (p, r) => p >= PUT_THROUGHPUT_RATIO_MIN * r, both((s) => putAt(s, n))));
  }
  out.push(check('put p99 @16 in flight (ms)', '<= etcd', putAt(pic, 16)?.latency.p99Ms, putAt(etcd, 16)?.latency.p99Ms, (p, r) => p <= r, both((s) => putAt(s, 16))));
  out.push(check('linearizable get throughput @64 (ops/s)', `>= ${GET_THROUGHPUT_RATIO_MIN}x etcd`, pic?.get.opsPerSec, etcd?.get.opsPerSec, (p, r) => p >= GET_THROUGHPUT_RATIO_MIN * r, both((s) => s?.get)));
  out.push(check('sequential put p50 vs fsync p50 (ms)', `<= ${SEQ_PUT_P50_FSYNC_RATIO_MAX}x fsync`, putAt(pic, 1)?.latency.p50Ms, fsync.p50Ms, (p, r) => p <= SEQ_PUT_P50_FSYNC_RATIO_MAX * r, [['picloud', putAt(pic, 1)]]));
  out.push(check('watch p99, 1000 watchers (ms)', `<= ${WATCH_1000_P99_MS_MAX} ms`, watchOf(pic, 1000)?.latency.p99Ms, WATCH_1000_P99_MS_MAX, (p) => p <= WATCH_1000_P99_MS_MAX, [['picloud', watchOf(pic, 1000)]]));
  return out;
}

function fmt(x: number | undefined, digits = 2): string {
  if (x === undefined || !Number.isFinite(x)) return '-';
  if (Math.abs(x) >= 1000) return Math.round(x).toString();
  if (Math.abs(x) >= 100) return x.toFixed(0);
  return x.toFixed(digits);
}

/** Per-member CPU per op, the leader's first: "leader/follower/follower". */
function leaderFirst(r: SystemResult | undefined, phase: LoadResult | undefined): string {
  const each = phase?.memberCpuMsPerOpEach;
  if (!r || !each || each.length !== r.members.length) return '-';
  const lead = r.members.findIndex((m) => m.clientEndpoint === r.leaderEndpoint);
  const order = lead < 0 ? each : [each[lead]!, ...each.filter((_, i) => i !== lead)];
  return order.map((ms) => (ms * 1000).toFixed(0)).join('/');
}

const mib = (kib: number[] | undefined): string => (kib && kib.length ? kib.map((k) => (k / 1024).toFixed(0)).join('/') : '-');
const ratioOf = (p: number | undefined, e: number | undefined): string => (p !== undefined && e !== undefined && e !== 0 ? `${(p / e).toFixed(2)}x` : '-');

interface Row {
  metric: string;
  p: string;
  e: string;
  ratio: string;
  target: string;
  met: string;
}

export function renderTable(fsync: FsyncLatency, overwrite: LatencySummary, pic: SystemResult | undefined, etcd: SystemResult | undefined, checks: TargetCheck[]): string {
  const rows: Row[] = [];
  const byName = new Map(checks.map((c) => [c.name, c]));
  const metOf = (name: string): { target: string; met: string } => {
    const c = byName.get(name);
    if (!c) return { target: '', met: '' };
    return { target: c.target, met: c.met === undefined ? 'n/a' : c.met ? 'MET' : c.spoiled ? `NOT SHOWN (${c.spoiled})` : `MISSED (${fmt(c.ratio)}x)` };
  };
  const num = (metric: string, p: number | undefined, e: number | undefined, check?: string, digits = 2): void => {
    rows.push({ metric, p: fmt(p, digits), e: fmt(e, digits), ratio: ratioOf(p, e), ...(check ? metOf(check) : { target: '', met: '' }) });
  };
  rows.push({ metric: `disk ${fsync.method} after 4 KiB append, p50 / p99 (ms, ${fsync.samples} samples)`, p: `${fmt(fsync.p50Ms)} / ${fmt(fsync.p99Ms)}`, e: '(same disk)', ratio: '', target: '', met: '' });
  rows.push({ metric: 'disk fdatasync after 4 KiB overwrite (preallocated), p50 / p99 (ms)', p: `${fmt(overwrite.p50Ms)} / ${fmt(overwrite.p99Ms)}`, e: '(same disk)', ratio: '', target: '', met: 'informational' });
  const seqCheck = byName.get('sequential put p50 vs fsync p50 (ms)');
  const s1p = putAt(pic, 1);
  const s1e = putAt(etcd, 1);
  num('sequential put p50 (ms)', s1p?.latency.p50Ms, s1e?.latency.p50Ms);
  rows[rows.length - 1]!.target = seqCheck?.target ?? '';
  rows[rows.length - 1]!.met = seqCheck?.met === undefined ? 'n/a' : `${seqCheck.met ? 'MET' : seqCheck.spoiled ? 'NOT SHOWN' : 'MISSED'} (${fmt(seqCheck.ratio)}x fsync; etcd ${fmt(s1e ? s1e.latency.p50Ms / fsync.p50Ms : undefined)}x)${seqCheck.spoiled ? ` (${seqCheck.spoiled})` : ''}`;
  num('sequential put p99 (ms)', s1p?.latency.p99Ms, s1e?.latency.p99Ms);
  for (const n of [1, 16, 64, 256]) {
    const p = putAt(pic, n);
    const e = putAt(etcd, n);
    num(`put @${n} throughput (ops/s)`, p?.opsPerSec, e?.opsPerSec, n >= 64 ? `put throughput @${n} in flight (ops/s)` : undefined);
    num(`put @${n} p50 (ms)`, p?.latency.p50Ms, e?.latency.p50Ms);
    num(`put @${n} p99 (ms)`, p?.latency.p99Ms, e?.latency.p99Ms, n === 16 ? 'put p99 @16 in flight (ms)' : undefined);
    num(`put @${n} member CPU per put, all members (us)`, us(p?.memberCpuMsPerOp), us(e?.memberCpuMsPerOp), undefined, 0);
    rows.push({ metric: `put @${n} member CPU per put, leader/followers (us)`, p: leaderFirst(pic, p), e: leaderFirst(etcd, e), ratio: '', target: '', met: '' });
  }
  num('linearizable get @64 throughput (ops/s)', pic?.get.opsPerSec, etcd?.get.opsPerSec, 'linearizable get throughput @64 (ops/s)');
  num('linearizable get @64 p50 (ms)', pic?.get.latency.p50Ms, etcd?.get.latency.p50Ms);
  num('linearizable get @64 p99 (ms)', pic?.get.latency.p99Ms, etcd?.get.latency.p99Ms);
  num('linearizable get @64 member CPU per get (us)', us(pic?.get.memberCpuMsPerOp), us(etcd?.get.memberCpuMsPerOp), undefined, 0);
  for (const n of [1, 1000]) {
    const p = watchOf(pic, n);
    const e = watchOf(etcd, n);
    num(`watch ${n} watcher(s), ack -> event, p50 (ms)`, p?.latency.p50Ms, e?.latency.p50Ms);
    num(`watch ${n} watcher(s), ack -> event, p99 (ms)`, p?.latency.p99Ms, e?.latency.p99Ms, n === 1000 ? 'watch p99, 1000 watchers (ms)' : undefined);
    num(`watch ${n} watcher(s), put sent -> event, p50 (ms)`, p?.fromSendLatency.p50Ms, e?.fromSendLatency.p50Ms);
    num(`watch ${n} watcher(s), put sent -> event, p99 (ms)`, p?.fromSendLatency.p99Ms, e?.fromSendLatency.p99Ms);
  }
  num('idle CPU, all members (% of one core)', pic?.idleCpuPercent, etcd?.idleCpuPercent, undefined, 1);
  rows.push({ metric: 'RSS idle per member (MiB)', p: mib(pic?.rssIdleKiB), e: mib(etcd?.rssIdleKiB), ratio: ratioOf(sum(pic?.rssIdleKiB), sum(etcd?.rssIdleKiB)), target: '', met: '' });
  rows.push({ metric: 'RSS peak under load per member (MiB)', p: mib(pic?.rssLoadPeakKiB), e: mib(etcd?.rssLoadPeakKiB), ratio: ratioOf(sum(pic?.rssLoadPeakKiB), sum(etcd?.rssLoadPeakKiB)), target: '', met: '' });
  for (const n of [1, 64]) {
    num(`disk bytes written per put @${n}, all members (B)`, putAt(pic, n)?.writeBytesPerOp, putAt(etcd, n)?.writeBytesPerOp, undefined, 0);
    num(`write() bytes per put @${n}, all members (B)`, putAt(pic, n)?.wcharBytesPerOp, putAt(etcd, n)?.wcharBytesPerOp, undefined, 0);
  }
  const header: Row = { metric: 'metric', p: 'picloud', e: 'etcd', ratio: 'ratio', target: 'target', met: 'met' };
  const all = [header, ...rows];
  const w = (k: keyof Row): number => Math.max(...all.map((r) => r[k].length));
  const line = (r: Row): string => [r.metric.padEnd(w('metric')), r.p.padStart(w('p')), r.e.padStart(w('e')), r.ratio.padStart(w('ratio')), r.target.padEnd(w('target')), r.met].join(' | ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

const us = (ms: number | undefined): number | undefined => (ms === undefined ? undefined : ms * 1000);

function sum(xs: number[] | undefined): number | undefined {
  return xs && xs.length ? xs.reduce((a, b) => a + b, 0) : undefined;
}

/** One repeated phase: each round's picloud / etcd ratio (throughput, or p99 latency for put @16). */
export interface RoundRatios {
  phase: string;
  target: string;
  ratios: number[];
  median: number;
  met: boolean;
  /** Failed requests in any round of either system: the verdict is not met, and this says why. */
  spoiled?: string;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function roundRatios(phase: string, target: string, ratios: number[], ok: (median: number) => boolean, spoiled?: string): RoundRatios {
  const m = median(ratios);
  return { phase, target, ratios, median: m, met: spoiled === undefined && ok(m), ...(spoiled ? { spoiled } : {}) };
}

/** The failed requests of a repeated phase over every round and both systems, if any. */
export function roundFailures(phases: ReadonlyArray<readonly [string, readonly LoadResult[]]>): string | undefined {
  const said = phases.filter(([, rs]) => rs.some((r) => r.errors > 0)).map(([system, rs]) => `${system}: ${rs.reduce((a, r) => a + r.errors, 0)} failed`);
  return said.length > 0 ? said.join('; ') : undefined;
}

/** A repeated phase whose target is picloud's own number (not a ratio): each system's value per round. */
export interface RoundValues {
  phase: string;
  target: string;
  picloud: number[];
  etcd: number[];
  /** picloud's median, judged against the target. */
  median: number;
  met: boolean;
  spoiled?: string;
}

/** The 1,000-watcher watch phase repeated: picloud's p99 per round, its median against WATCH_1000_P99_MS_MAX. */
export function watchRounds(picloud: readonly WatchResult[], etcd: readonly WatchResult[]): RoundValues {
  const p99 = (w: WatchResult): number => w.latency.p99Ms;
  const m = median(picloud.map(p99));
  const lost = picloud.reduce((a, w) => a + w.incompletePuts, 0);
  const spoiled = lost > 0 ? `picloud: ${lost} puts' events not all delivered` : undefined;
  return { phase: 'watch p99, 1000 watchers (ms)', target: `<= ${WATCH_1000_P99_MS_MAX} ms`, picloud: picloud.map(p99), etcd: etcd.map(p99), median: m, met: spoiled === undefined && m <= WATCH_1000_P99_MS_MAX, ...(spoiled ? { spoiled } : {}) };
}

/** The repeated phases, one line each: every round's ratio (or value) and their median against the target. */
export function renderRounds(rows: readonly RoundRatios[], values: readonly RoundValues[] = []): string {
  const verdict = (r: { met: boolean; spoiled?: string }): string => (r.met ? 'MET' : r.spoiled ? `NOT SHOWN (${r.spoiled})` : 'MISSED');
  const lines = rows.map(
    (r) => `${r.phase.padEnd(34)} | ${r.ratios.map((x) => `${x.toFixed(2)}x`).join(' ').padEnd(40)} | median ${r.median.toFixed(2)}x | ${r.target.padEnd(11)} | ${verdict(r)}`,
  );
  const ms = (xs: readonly number[]): string => xs.map((x) => x.toFixed(2)).join(' ');
  for (const v of values) {
    lines.push(`${v.phase.padEnd(34)} | ${`picloud ${ms(v.picloud)}; etcd ${ms(v.etcd)}`.padEnd(40)} | median ${v.median.toFixed(2)} | ${v.target.padEnd(11)} | ${verdict(v)}`);
  }
  return [`picloud / etcd per round (round 1 is the table above; rounds alternate which system goes first):`, ...lines].join('\n');
}
