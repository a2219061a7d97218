/**
 * Debian's Python etcd clients against a real etcd 3.4.23 and picloud: python3-etcd3 (gRPC over
 * grpcio, i.e. gRPC C-core: another HTTP/2 and gRPC implementation than grpc-js and etcdctl) and
 * python3-etcd3gw (OpenStack's client over the JSON gateway, under tooz and oslo). The script
 * test/compat/fixtures/python-etcd-clients.py does through each library's public API what its
 * users do (KV with metadata and sorting, deletes, compare-and-swap, transactions, leases and
 * their expiry, watches in both forms, locks under contention and expiry, compaction, members,
 * status, errors) and prints a transcript, revisions relative to its start and lease IDs by
 * position. The transcripts from etcd and picloud must be equal: on one member each, and on
 * three with every request sent to a follower (the other lock holder is on the leader).
 */
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ETCD_BIN, type BenchCluster } from '../../bench/kv/clusters.js';
import { findPython } from '../helpers/python.js';
import { etcdAndPicloud } from '../helpers/etcd-ops.js';

const SCRIPT = join(process.cwd(), 'test/compat/fixtures/python-etcd-clients.py');
/** A run of the script takes ~8 s (two leases and a lock left to expire); a hung one is killed. */
const SCRIPT_TIMEOUT_MS = 60_000;
/** Steps each mode of the script writes before its `end` line: fewer means steps went missing. */
const STEPS: Record<Mode, number> = { etcd3: 66, etcd3gw: 60 };

type Mode = 'etcd3' | 'etcd3gw';
type Line = Record<string, unknown> & { step: string };

const PYTHON = findPython('etcd3', 'etcd3gw');
const unavailable = !existsSync(ETCD_BIN)
  ? 'etcd not installed (apt-get install etcd-server)'
  : PYTHON === undefined
    ? 'python3 with the etcd3 and etcd3gw modules not installed (apt-get install python3-etcd3 python3-etcd3gw)'
    : undefined;

/** Scripts running now: killed in the test's teardown if it ends first. */
const running = new Set<ChildProcess>();

/** Runs the script; its transcript, or an error with its stderr. Killed (by its PID) past the timeout. */
function runScript(mode: Mode, prefix: string, endpoints: string[]): Promise<Line[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON!, [SCRIPT, mode, prefix, ...endpoints], { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), SCRIPT_TIMEOUT_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      if (code !== 0) return reject(new Error(`${mode} against ${endpoints.join(',')} exited ${code ?? signal}: ${err.slice(-3000)}`));
      resolve(out.trim().split('\n').map((l) => JSON.parse(l) as Line));
    });
  });
}

/** Client endpoints with a follower first (then the leader): requests are served through a follower. */
async function followerFirst(c: BenchCluster): Promise<string[]> {
  if (c.members.length === 1) return [c.members[0]!.clientEndpoint];
  const leader = await c.leaderEndpoint();
  return [c.members.map((m) => m.clientEndpoint).find((e) => e !== leader)!, leader];
}

interface Transcripts {
  etcd: Line[];
  picloud: Line[];
}

/** Each mode in turn (their revisions must not interleave), etcd and picloud side by side. */
async function runModes(clusters: [BenchCluster, BenchCluster]): Promise<Record<Mode, Transcripts>> {
  const endpoints = await Promise.all(clusters.map(followerFirst));
  const out = {} as Record<Mode, Transcripts>;
  for (const mode of ['etcd3', 'etcd3gw'] as const) {
    const [etcd, picloud] = await Promise.all(endpoints.map((eps) => runScript(mode, `py-${mode}/`, eps)));
    out[mode] = { etcd: etcd!, picloud: picloud! };
  }
  return out;
}

const step = (lines: Line[], name: string): Line | undefined => lines.find((l) => l.step === name);

/** Assertions on etcd's own transcript: the script really did what it claims, so equality means something. */
function checkReference(t: Test, mode: Mode, lines: Line[]): void {
  const end = lines.at(-1)!;
  t.same([end.step, end.steps, lines.length], ['end', STEPS[mode], STEPS[mode] + 1], `${mode}: every step ran`);
  t.same(lines.filter((l) => 'unexpected' in l).map((l) => l.step), [], `${mode}: no step failed against etcd`);
  t.match(step(lines, 'lease expiry removes its keys'), { present_at_first: true, gone: true, ttl_after: -1 }, `${mode}: a lease's expiry removed its key`);
  t.equal((step(lines, 'watch (iterator)')?.events as unknown[] | undefined)?.length, 3, `${mode}: the watch delivered its three events`);
  if (mode === 'etcd3') {
    t.match(step(lines, 'lock contention'), { held_meanwhile: true, blocked: true, event: 'DeleteEvent', acquired: true, b_has_it: true, a_has_it: false }, 'the second holder waited for the release');
    t.match(step(lines, 'lock expiry'), { waited_for_expiry: true, acquired: true, taker_has_it: true }, 'the second holder waited for the lease to expire');
    t.match(step(lines, 'watch from a compacted revision'), { error: 'RevisionCompactedError' });
  } else {
    t.match(step(lines, 'lock contention'), { other_acquires: false, holder_releases: true, other_then_acquires: true }, 'a held lock is refused, then taken once released');
    t.match(step(lines, 'lock expiry'), { refused_at_first: true, acquired: true, waited_for_expiry: true });
    t.match(step(lines, 'status on the default API path'), { error: 'Etcd3Exception', reason: ['Not Found'] }, "etcd 3.4 serves no /v3alpha/, etcd3gw 2.0.0's default");
    t.match(step(lines, 'read a compacted revision'), { detail: { code: 11 } }, 'a read of a compacted revision is OUT_OF_RANGE');
  }
}

/** picloud's transcript equals etcd's, step by step (the first difference is reported). */
function compare(t: Test, mode: Mode, { etcd, picloud }: Transcripts): void {
  const first = etcd.findIndex((l, i) => JSON.stringify(l) !== JSON.stringify(picloud[i]));
  const where = first < 0 ? '' : ` — first difference at "${etcd[first]!.step}":\n  etcd:    ${JSON.stringify(etcd[first])}\n  picloud: ${JSON.stringify(picloud[first])}`;
  t.ok(first < 0 && picloud.length === etcd.length, `${mode}: picloud's transcript is etcd's (${etcd.length} lines)${where}`);
}

t.test("Debian's Python etcd clients see picloud as they see etcd 3.4", { skip: unavailable ?? false, timeout: 180_000 }, async (t) => {
  t.teardown(() => running.forEach((c) => c.kill('SIGKILL')));
  const sizes = [1, 3];
  const results = await Promise.all(sizes.map(async (size) => runModes((await etcdAndPicloud(t, size)).clusters)));
  for (const [i, size] of sizes.entries()) {
    t.test(`${size} member${size > 1 ? 's, through a follower' : ''}`, async (t) => {
      for (const mode of ['etcd3', 'etcd3gw'] as const) {
        checkReference(t, mode, results[i]![mode].etcd);
        compare(t, mode, results[i]![mode]);
      }
    });
  }
});
