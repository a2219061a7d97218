/**
 * etcdctl 3.4 itself against a real etcd 3.4.23 and picloud: a fixed script of etcdctl
 * invocations (every command, its notable flags, each output format, bad input) runs against
 * one member of each, and a few cluster commands against three of each. What etcdctl prints
 * (exit code, stdout, stderr) must be equal once what legitimately differs is normalised:
 * revisions relative to the script's start, lease and member IDs by order, cluster IDs, raft
 * term and index, versions, sizes, hashes, timings, addresses. Steps whose difference is
 * deliberate (README, "Where picloud differs from etcd") are left out, each saying why.
 */
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { ETCD_BIN, type BenchCluster } from '../../bench/kv/clusters.js';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import { hasEtcdctl } from '../helpers/agents.js';
import { etcdAndPicloud } from '../helpers/etcd-ops.js';

/** A step: etcdctl's arguments ({rev:N}, {lease:N}, {member:LABEL}, {dir} and {self} filled in per system). */
interface Step {
  args: string[];
  input?: string;
  /** Killed after this long (watch, elect, make-mirror run until stopped). */
  killAfterMs?: number;
  /** etcdctl's -w protobuf output, decoded as this etcdserverpb message before it is compared. */
  pb?: string;
  /** Lines compared in sorted order (member list orders members by their random IDs). */
  sortLines?: boolean;
  /** The JSON member list compared in label order (etcd orders it by the members' random IDs). */
  sortMembers?: boolean;
  /** Whichever member etcdctl's balancer picked answers: the header's member_id not compared. */
  anyMember?: boolean;
  /** Only the shape compared: numbers and PASS/FAIL masked (check perf's results depend on the machine). */
  shapeOnly?: boolean;
  /** What etcd's own (normalised) answer holds: the step did what it is there for, so equality means something. */
  expect?: RegExp;
  /** stdin left open until the step is killed (watch -i stops reading at EOF, racing the events). */
  keepOpen?: boolean;
}

interface Sys {
  cluster: BenchCluster;
  /** Where etcdctl is pointed (every member's endpoint, for the cluster commands). */
  endpoint: string;
  /** Client endpoints in label order: on three members, the leader, the move-leader target, the other. */
  clients: string[];
  /** The move-leader target's ID. */
  target?: string;
  base: number;
  dir: string;
  /** Member names → labels by role (etcd's are e1.., picloud's p1..). */
  names: Map<string, string>;
  /** Decimal ID → label, for leases and members (their hex form is derived). */
  ids: Map<string, string>;
  leases: string[];
  newMembers: string[];
}

interface Outcome {
  status: number | string;
  stdout: string;
  stderr: string;
}

const unavailable = !hasEtcdctl()
  ? 'etcdctl not installed (apt-get install etcd-client)'
  : !existsSync(ETCD_BIN)
    ? 'etcd not installed (apt-get install etcd-server)'
    : undefined;
const running = new Set<ChildProcess>();
const HUGE = 'v'.repeat(1_600_000);

/** Runs etcdctl, killed (by its PID) after killAfterMs or, as a guard, 20 s. */
function etcdctl(endpoint: string, args: string[], input: string | undefined, killAfterMs?: number, keepOpen = false): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn('etcdctl', ['--endpoints', endpoint, '--command-timeout=5s', '--dial-timeout=3s', ...args], {
      env: { ...process.env, ETCDCTL_API: '3' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('latin1').on('data', (d: string) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.on('error', () => undefined);
    if (keepOpen) child.stdin.write(input ?? '');
    else child.stdin.end(input ?? '');
    const timer = setTimeout(() => child.kill('SIGTERM'), killAfterMs ?? 20_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      resolve({ status: code ?? `killed (${signal})`, stdout, stderr });
    });
  });
}

function fill(s: Sys, arg: string): string {
  return arg
    .replace(/\{rev:(\d+)\}/g, (_, n: string) => String(s.base + Number(n)))
    .replace(/\{lease:(\d+)\}/g, (_, n: string) => BigInt(s.leases[Number(n)] ?? '0').toString(16))
    .replace(/\{member:new(\d+)\}/g, (_, n: string) => BigInt(s.newMembers[Number(n)] ?? '0').toString(16))
    .replace(/\{target\}/g, BigInt(s.target ?? '0').toString(16))
    .replace(/\{self\}/g, s.endpoint)
    .replace(/\{dir\}/g, s.dir);
}

/** Leases granted and members added by a step get the next label, in the order the script makes them. */
function learnIds(s: Sys, out: string): void {
  for (const m of out.matchAll(/lease ([0-9a-f]+) granted|"ID" ?: ?(\d+),?\n?"TTL"/g)) {
    const id = m[1] ? BigInt('0x' + m[1]).toString() : m[2]!;
    if (!s.ids.has(id)) s.leases.push(id), s.ids.set(id, `lease#${s.leases.length - 1}`);
  }
  for (const m of out.matchAll(/Member +([0-9a-f]+) added/g)) {
    const id = BigInt('0x' + m[1]).toString();
    if (!s.ids.has(id)) s.newMembers.push(id), s.ids.set(id, `member#new${s.newMembers.length - 1}`);
  }
}

let rpcRoot: protobuf.Root | undefined;
function decodePb(type: string, bytes: string): string {
  if (!rpcRoot) {
    rpcRoot = new protobuf.Root();
    rpcRoot.resolvePath = (_origin, target) => (target.startsWith('/') ? target : join(ETCD_PROTO_DIR, target));
    rpcRoot.loadSync(ETCD_RPC_PROTO, { keepCase: true });
  }
  try {
    const msg = rpcRoot.lookupType(`etcdserverpb.${type}`).decode(Buffer.from(bytes, 'latin1'));
    // Longs as strings keep IDs exact; unquoted again so the JSON normalisation applies.
    return JSON.stringify(rpcRoot.lookupType(`etcdserverpb.${type}`).toObject(msg, { longs: String, bytes: String })).replace(/"(\w+)":"(-?\d+)"/g, '"$1":$2');
  } catch (e) {
    return `undecodable ${type}: ${(e as Error).message}`;
  }
}

const REV_KEYS = 'revision|create_revision|mod_revision|compact_revision|Revision|CreateRevision|ModRevision|CompactRevision';
/**
 * Per-cluster or per-machine values, and a lease's seconds left (a clock's reading): masked
 * wherever they appear, as JSON or "fields" output. A key's version is compared; the server's
 * version string is masked by its form (3.4.x).
 */
const MASKED_KEYS = 'ttl|cluster_id|raft_term|raft_index|raftIndex|raftTerm|raftAppliedIndex|dbSize|dbSizeInUse|hash|TTL|ClusterID|RaftTerm|RaftIndex|RaftAppliedIndex|Hash|GrantedTTL|DBSize|DBSizeInUse';

/** What etcdctl printed, with what legitimately differs between two clusters replaced by labels. */
function normalize(s: Sys, text: string): string {
  let out = text;
  const ids = [...s.ids.entries()].sort((a, b) => b[0].length - a[0].length);
  for (const [dec, label] of ids) {
    // Hex as etcdctl prints it: %016x for leases, %x or %16x for members.
    out = out.replace(new RegExp(`\\b${dec}\\b`, 'g'), label).replace(new RegExp(`\\b0*${BigInt(dec).toString(16)}\\b`, 'g'), label);
  }
  s.clients.forEach((e, i) => (out = out.replaceAll(e, `client#${i}`)));
  out = out
    .replace(/\b[ep][1-9]\b/g, (n) => s.names.get(n) ?? n)
    .replace(/(?:https?:\/\/)?127\.0\.0\.1:\d+/g, 'addr')
    .replace(new RegExp(`("(?:${REV_KEYS})" ?: ?)(\\d+)`, 'g'), (_, k: string, n: string) => k + (Number(n) === 0 ? 0 : Number(n) - s.base))
    .replace(new RegExp(`("(?:${MASKED_KEYS})" ?: ?)("[^"]*"|\\d+)`, 'g'), '$1*')
    .replace(/compacted revision (\d+)/g, (_, n: string) => `compacted revision ${Number(n) - s.base}`)
    .replace(/\b\d+(\.\d+)?(ms|µs|ns)\b/g, 'DUR')
    .replace(/"took":[\d.e-]+/g, '"took":DUR')
    .replace(/"ts":[^,]+,/g, '')
    .replace(/0x[0-9a-f]+/g, '0x?') // a panic's goroutine trace
    .replace(/\b\d+(\.\d+)? [kMG]?B\b/g, 'SIZE')
    .replace(/remaining\(\d+s\)/g, 'remaining(R)')
    .replace(/\b3\.4\.\d+\b/g, 'VERSION')
    .replace(new RegExp(s.dir, 'g'), 'DIR')
    .replace(/client-[0-9a-f-]{36}/g, 'client-UUID')
    .replace(/\b(lk|el)\/[0-9a-f]+\b/g, '$1/LEASE');
  // Table columns are as wide as the IDs and numbers in them.
  out = out.replace(/ {2,}/g, ' ').replace(/^\+[-+]+\+$/gm, (border) => border.replace(/-+/g, '-'));
  // endpoint status and hashkv: term, index and hash columns
  out = out.replace(/(VERSION, SIZE, (?:true|false), (?:true|false)), \d+, \d+, \d+,/g, '$1, T, I, A,');
  out = out.replace(/(VERSION \| SIZE \| (?:true|false) \| (?:true|false) \|) \d+ \| \d+ \| \d+ \|/g, '$1 T | I | A |');
  out = out.replace(/(client#\d+), \d+\n/g, '$1, HASH\n').replace(/(client#\d+ \|) \d+ \|/g, '$1 HASH |');
  return sortLists(out);
}

/**
 * Lists whose order is not the same twice: etcd lists leases in Go map order, and
 * ETCD_INITIAL_CLUSTER (etcdctl member add) follows the member list, ordered by random IDs.
 */
function sortLists(out: string): string {
  return out
    .replace(/"leases":\[([^\]]*)\]/g, (_, xs: string) => `"leases":[${xs.split(',').sort().join(',')}]`)
    .replace(/(found \d+ leases\n)((?:lease#\d+\n)*)/g, (_, h: string, xs: string) => h + xs.split('\n').filter(Boolean).sort().map((x) => x + '\n').join(''))
    .replace(/ETCD_INITIAL_CLUSTER="([^"]*)"/g, (_, xs: string) => `ETCD_INITIAL_CLUSTER="${xs.split(',').sort().join(',')}"`);
}

/**
 * Which checks check perf reported on, and that it gave a verdict: not the verdicts, nor the
 * progress bar redrawn as often as the machine's speed allows.
 */
function shape(text: string): string {
  return text
    .split(/[\r\n]/)
    .map((l) => /Throughput|Slowest|Stddev/.exec(l)?.[0] ?? (/^(PASS|FAIL)/.test(l) ? 'verdict' : undefined))
    .filter((l) => l !== undefined)
    .map((l) => l + '\n')
    .join('');
}

function sortMembers(json: string): string {
  const m = /^(.*"members":\[)(.*)(\]\}\n?)$/s.exec(json);
  return m ? m[1]! + m[2]!.split(/,(?=\{"ID")/).sort().join(',') + m[3]! : json;
}

const sortedLines = (text: string): string => text.split('\n').sort().join('\n');

async function runStep(s: Sys, step: Step): Promise<string> {
  const r = await etcdctl(s.endpoint, [...step.args.map((a) => fill(s, a))], step.input && fill(s, step.input), step.killAfterMs, step.keepOpen);
  learnIds(s, r.stdout);
  let stdout = step.pb ? decodePb(step.pb, r.stdout) : r.stdout;
  stdout = normalize(s, stdout);
  let stderr = normalize(s, r.stderr);
  if (step.sortMembers) stdout = sortMembers(stdout);
  if (step.anyMember) stdout = stdout.replace(/"member_id":member#\d/, '"member_id":any');
  if (step.sortLines) (stdout = sortedLines(stdout)), (stderr = sortedLines(stderr));
  let status = r.status;
  if (step.shapeOnly) (stdout = shape(stdout)), (stderr = shape(stderr)), (status = typeof status === 'number' ? 'exit' : status);
  return `exit ${status}\n--- stdout\n${stdout}--- stderr\n${stderr}`;
}

/**
 * A system's labels: its cluster ID, its members' IDs and endpoints (on three members by role:
 * the leader, a follower that move-leader makes leader, the other), its start revision.
 */
async function prepare(c: BenchCluster, root: string): Promise<Sys> {
  const all = c.members.map((m) => m.clientEndpoint);
  const leader = await c.leaderEndpoint();
  const clients = [leader, ...all.filter((e) => e !== leader)];
  const dir = mkdtempSync(join(root, `${c.system}-${all.length}-`));
  const s: Sys = { cluster: c, endpoint: clients.join(','), clients, base: 0, dir, names: new Map(), ids: new Map(), leases: [], newMembers: [] };
  const list = JSON.parse((await etcdctl(s.endpoint, ['member', 'list', '-w', 'json'], '')).stdout.replace(/:(\d{16,})/g, ':"$1"')) as {
    header: { cluster_id: string };
    members: Array<{ ID: string; name: string; clientURLs: string[] }>;
  };
  s.ids.set(String(list.header.cluster_id), 'cluster');
  for (const m of list.members) {
    const i = clients.findIndex((e) => m.clientURLs.some((u) => u.endsWith(e)));
    s.ids.set(String(m.ID), `member#${i}`);
    s.names.set(m.name, `name#${i}`);
    if (i === 1) s.target = String(m.ID);
  }
  await rebase(s);
  return s;
}

/** Revisions are compared relative to the system's revision now. */
async function rebase(s: Sys): Promise<void> {
  const head = await etcdctl(s.endpoint, ['get', 'nothing', '-w', 'json'], '');
  s.base = Number(/"revision":(\d+)/.exec(head.stdout)![1]);
}

const fmts = (args: string[], formats = ['simple', 'json', 'fields']): Step[] => formats.map((w) => ({ args: [...args, '-w', w] }));

/** The script for one member: every command, in the order that makes each one's effect visible to the next. */
const SINGLE: Step[] = [
  { args: ['version'] },
  { args: ['put', 'k/a', '1'] },
  { args: ['put', 'k/b', '2', '-w', 'json'] },
  { args: ['put', 'k/c', '3', '-w', 'fields'] },
  { args: ['put', 'k/a', '11', '--prev-kv'], expect: /^exit 0\n--- stdout\nOK\nk\/a\n1\n/ },
  { args: ['put', 'k/a', '12', '--prev-kv', '-w', 'json'] },
  { args: ['put', 'k/a', '13', '--prev-kv', '-w', 'fields'] },
  { args: ['put', 'k/a', '14', '--prev-kv', '-w', 'protobuf'], pb: 'PutResponse' },
  { args: ['put', 'k/a', '15', '-w', 'table'] },
  { args: ['put', 'k/bin', 'x\ty\u00e9'] },
  // leases
  { args: ['lease', 'grant', '600'], expect: /lease lease#0 granted with TTL\(600s\)/ },
  { args: ['lease', 'grant', '600', '-w', 'json'] },
  { args: ['lease', 'grant', '600', '-w', 'fields'] },
  { args: ['lease', 'grant', '0'] },
  { args: ['lease', 'grant', 'abc'] },
  { args: ['lease', 'grant'] },
  { args: ['put', 'k/l', 'v', '--lease={lease:0}'] },
  { args: ['put', 'k/l2', 'v', '--lease={lease:0}'] },
  { args: ['put', 'k/l', '--ignore-value', '--lease={lease:1}'] },
  { args: ['put', 'k/l', 'v2', '--ignore-lease', '-w', 'json'] },
  { args: ['put', 'k/l', 'v3', '--ignore-lease', '--lease={lease:1}'] },
  { args: ['put', 'k/none', '--ignore-value'] },
  { args: ['put', 'k/none', '--ignore-lease'], input: 'from stdin' },
  { args: ['put', 'k/x', 'v', '--lease=1234abcd'] },
  { args: ['put', 'k/x', 'v', '--lease=zzz'] },
  { args: ['put'] },
  { args: ['put', 'k/x'], input: '' },
  { args: ['put', '', 'v'] },
  { args: ['put', 'k/huge'], input: HUGE, expect: /^exit 1[\s\S]*request is too large/ },
  { args: ['lease', 'timetolive', '{lease:0}'] },
  ...fmts(['lease', 'timetolive', '{lease:0}', '--keys']),
  { args: ['lease', 'timetolive', '1234abcd'] },
  { args: ['lease', 'timetolive', 'zzz'] },
  { args: ['lease', 'list'] },
  { args: ['lease', 'list', '-w', 'json'] },
  { args: ['lease', 'keep-alive', '--once', '{lease:0}'] },
  { args: ['lease', 'keep-alive', '--once', '{lease:0}', '-w', 'json'] },
  { args: ['lease', 'keep-alive', '--once', '1234abcd'] },
  { args: ['lease', 'keep-alive', '{lease:2}'], killAfterMs: 1000 },
  { args: ['lease', 'revoke', '{lease:2}'] },
  { args: ['lease', 'revoke', '{lease:2}'] },
  { args: ['lease', 'revoke', '{lease:1}', '-w', 'json'] },
  { args: ['lease', 'revoke'] },
  // get
  { args: ['get', 'k/a'] },
  ...fmts(['get', 'k/', '--prefix']),
  { args: ['get', 'k/', '--prefix', '-w', 'protobuf'], pb: 'RangeResponse' },
  { args: ['get', 'k/', '--prefix', '-w', 'table'] },
  { args: ['get', 'k/a', '--rev={rev:1}'], expect: /^exit 0\n--- stdout\nk\/a\n1\n--- stderr\n$/ },
  { args: ['get', 'k/a', '--rev={rev:1}', '-w', 'json'] },
  { args: ['get', 'k/a', '--rev={rev:100}'] },
  { args: ['get', 'k/', '--prefix', '--limit=2'] },
  { args: ['get', 'k/', '--prefix', '--limit=2', '-w', 'json'] },
  { args: ['get', 'k/', '--prefix', '--order=DESCEND'] },
  { args: ['get', 'k/', '--prefix', '--sort-by=MODIFY', '--keys-only'] },
  { args: ['get', 'k/', '--prefix', '--sort-by=CREATE', '--order=DESCEND', '--keys-only'] },
  { args: ['get', 'k/', '--prefix', '--sort-by=VERSION', '--keys-only'] },
  { args: ['get', 'k/', '--prefix', '--sort-by=VALUE', '--print-value-only'] },
  { args: ['get', 'k/', '--prefix', '--sort-by=KEY', '--order=ASCEND', '--keys-only', '-w', 'json'] },
  // etcdctl 3.4 has no --count-only nor --min/max-*-revision (3.5 added them): both print its usage error.
  { args: ['get', 'k/', '--prefix', '--count-only'], expect: /^exit 1\n[\s\S]*unknown flag: --count-only/ },
  { args: ['get', 'k/', '--prefix', '-w', 'json'], expect: /"count":\d+/ },
  { args: ['get', 'k/a', '--consistency=s'] },
  { args: ['get', 'k/a', '--consistency=x'] },
  { args: ['get', 'k/', '--prefix', '--order=UP'] },
  { args: ['get', 'k/', '--prefix', '--sort-by=NAME'] },
  { args: ['get', 'k/b', '--from-key', '--keys-only'] },
  { args: ['get', 'k/a', 'k/c', '--keys-only'] },
  { args: ['get', 'k/', '--prefix', '--from-key'] },
  { args: ['get', 'k/', '--prefix', '--min-mod-revision={rev:3}', '--keys-only'], expect: /unknown flag: --min-mod-revision/ },
  { args: ['get', 'k/bin', '--hex'], expect: /\\x6b\\x2f\\x62\\x69\\x6e/ },
  { args: ['get', 'k/bin', '--hex', '-w', 'json'] },
  { args: ['get', 'k/bin', '--hex', '-w', 'fields'] },
  { args: ['get', 'k/unknown'] },
  { args: ['get', 'k/unknown', '-w', 'json'] },
  { args: ['get', 'k/unknown', '-w', 'fields'] },
  { args: ['get'] },
  { args: ['get', ''] },
  { args: ['get', 'k/huge', '--print-value-only'], shapeOnly: false },
  // txn
  { args: ['txn'], input: 'value("k/a") = "15"\nmod("k/b") > "0"\n\nput k/t1 yes\nget k/a\ndel k/c\n\nput k/t1 no\n\n' },
  { args: ['txn', '-w', 'json'], input: 'version("k/a") = "1"\n\nput k/t2 yes\n\nget k/a --prefix\nput k/t2 no\n\n' },
  { args: ['txn', '-w', 'fields'], input: 'create("k/a") > "0"\nlease("k/l") = "0"\n\nput k/t3 yes\n\n\n' },
  { args: ['txn', '-w', 'protobuf'], input: 'value("k/a") != "15"\n\n\nget k/a\n\n', pb: 'TxnResponse' },
  { args: ['txn', '-i'], input: 'value("k/a") = "15"\n\nput k/t4 yes\n\nput k/t4 no\n\n', expect: /compares:[\s\S]*SUCCESS/ },
  { args: ['txn'], input: 'value("k/a") ~ "15"\n\nput k/t5 x\n\n\n' },
  { args: ['txn'], input: 'bogus("k/a") = "1"\n\n\n\n' },
  { args: ['txn'], input: '\nfrob k/t6\n\n\n' },
  { args: ['txn'], input: '\nput k/t7 a\nput k/t7 b\n\n\n' },
  { args: ['txn'], input: '' },
  { args: ['txn'], input: `\n${Array.from({ length: 129 }, (_, i) => `put k/many${i} v\n`).join('')}\n\n`, expect: /too many operations in txn request/ },
  // watch, with history from a revision
  { args: ['watch', 'k/a', '--rev={rev:1}'], killAfterMs: 1000 },
  { args: ['watch', 'k/', '--prefix', '--rev={rev:2}', '--prev-kv'], killAfterMs: 1000, expect: /^exit killed[\s\S]*PUT\nk\/b\n2\n/ },
  { args: ['watch', 'k/', '--prefix', '--rev={rev:2}', '-w', 'json'], killAfterMs: 1000 },
  { args: ['watch', 'k/t1', '--rev={rev:1}', '-w', 'fields'], killAfterMs: 1000 },
  // One watch per session: two watches' events interleave in no fixed order.
  { args: ['watch', '-i'], input: 'watch k/a --rev={rev:2}\n', killAfterMs: 1000, keepOpen: true },
  { args: ['watch', '-i'], input: 'watch k/ --prefix --rev={rev:1} --prev-kv\n', killAfterMs: 1000, keepOpen: true },
  { args: ['watch', '-i'], input: 'watch\nbogus\n', killAfterMs: 1000, keepOpen: true },
  { args: ['watch'] },
  { args: ['watch', 'k/a', '--rev=-5'], killAfterMs: 1000, expect: /^exit 5[\s\S]*required revision has been compacted/ },
  // deletes
  { args: ['del', 'k/t1', '--prev-kv'] },
  { args: ['del', 'k/t2', '--prev-kv', '-w', 'json'] },
  { args: ['del', 'k/t3', '-w', 'fields'] },
  { args: ['del', 'k/t4', '-w', 'protobuf'], pb: 'DeleteRangeResponse' },
  { args: ['del', 'k/unknown'] },
  { args: ['del', 'k/l', '--prefix'] },
  { args: ['del', 'k/huge', '--from-key', '--prev-kv', '--keys-only'] },
  { args: ['del', 'k/huge', '--from-key'] },
  { args: ['del'] },
  // compaction
  { args: ['compaction', '{rev:3}'] },
  { args: ['compaction', '{rev:3}'] },
  { args: ['compaction', '{rev:5}', '--physical'], expect: /compacted revision 5\n/ },
  { args: ['compaction', '{rev:1000}'] },
  { args: ['compaction', 'abc'] },
  { args: ['compaction'] },
  { args: ['get', 'k/a', '--rev={rev:2}'], expect: /required revision has been compacted/ },
  { args: ['watch', 'k/a', '--rev={rev:2}'], killAfterMs: 1000 },
  // locks and elections
  { args: ['lock', 'lk', 'echo', 'held'], expect: /^exit 0\n--- stdout\nheld\n/ },
  { args: ['lock', 'lk'], killAfterMs: 1000 },
  { args: ['lock'] },
  { args: ['elect', 'el', 'proposal'], killAfterMs: 1000, expect: /el\/LEASE\nproposal\n/ },
  { args: ['elect', '-l', 'el'], killAfterMs: 1000 },
  { args: ['elect', 'el'] },
  // maintenance
  ...fmts(['alarm', 'list'], ['simple', 'json', 'fields', 'table']),
  { args: ['alarm', 'disarm'] },
  { args: ['alarm', 'disarm', '-w', 'json'] },
  { args: ['defrag'] },
  { args: ['defrag', '--cluster'] },
  // Not `snapshot status|restore`: picloud's snapshot is its own format, not a bbolt file (README).
  { args: ['snapshot', 'save', '{dir}/snap.db'], expect: /Snapshot saved at DIR\/snap.db/ },
  { args: ['snapshot', 'save'] },
  { args: ['snapshot', 'save', '/nonexistent/dir/snap.db'] },
  ...fmts(['endpoint', 'health'], ['simple', 'json', 'fields', 'table']),
  ...fmts(['endpoint', 'status'], ['simple', 'json', 'fields', 'table']),
  ...fmts(['endpoint', 'hashkv'], ['simple', 'json', 'fields', 'table']),
  { args: ['endpoint', 'hashkv', '--rev={rev:6}'] },
  { args: ['move-leader'] },
  { args: ['move-leader', 'abc'] },
  { args: ['move-leader', '1234abcd'] },
  // members: a learner added, updated, refused promotion (it never starts), removed
  ...fmts(['member', 'list'], ['simple', 'json', 'fields', 'table']),
  { args: ['member', 'add', 'learner1', '--learner', '--peer-urls=http://127.0.0.1:1'], expect: /Member member#new0 added to cluster cluster/ },
  { args: ['member', 'list'], sortLines: true },
  { args: ['member', 'update', '{member:new0}', '--peer-urls=http://127.0.0.1:2'] },
  { args: ['member', 'promote', '{member:new0}'] },
  { args: ['member', 'remove', '{member:new0}'] },
  { args: ['member', 'remove', '{member:new0}'] },
  { args: ['member', 'promote', '1234abcd'] },
  { args: ['member', 'update', '1234abcd', '--peer-urls=http://127.0.0.1:3'] },
  { args: ['member', 'add'] },
  { args: ['member', 'add', 'x'] },
  { args: ['member', 'remove', 'zz'] },
  // make-mirror into the same cluster under another prefix (a second target cluster would need a third pair)
  { args: ['make-mirror', '--prefix=k/', '--dest-prefix=mirror/', '{self}'], killAfterMs: 2000 },
  { args: ['get', 'mirror/', '--prefix', '--keys-only'], expect: /mirror\/a\n/ },
  // users, roles, auth
  { args: ['user', 'add', 'root:rootpw', '--interactive=false'] },
  { args: ['user', 'add', 'alice', '--interactive=false'], input: 'alicepw\n' },
  { args: ['user', 'add', 'alice:again', '--interactive=false'] },
  { args: ['user', 'add', 'bob', '--no-password'] },
  { args: ['role', 'add', 'reader'] },
  { args: ['role', 'add', 'reader'] },
  { args: ['role', 'grant-permission', 'reader', 'read', 'k/a'] },
  { args: ['role', 'grant-permission', 'reader', 'readwrite', 'k/', '--prefix'] },
  { args: ['role', 'grant-permission', 'reader', 'write', 'z', '--from-key'] },
  { args: ['role', 'grant-permission', 'reader', 'write', 'a', 'b'] },
  { args: ['role', 'grant-permission', 'reader', 'bogus', 'k/a'] },
  { args: ['role', 'grant-permission', 'nobody', 'read', 'k/a'] },
  ...fmts(['role', 'get', 'reader'], ['simple', 'json', 'fields']),
  { args: ['role', 'revoke-permission', 'reader', 'a', 'b'] },
  { args: ['role', 'revoke-permission', 'reader', 'nothing'] },
  ...fmts(['role', 'list'], ['simple', 'json']),
  { args: ['user', 'grant-role', 'alice', 'reader'] },
  { args: ['user', 'grant-role', 'root', 'root'] },
  { args: ['user', 'grant-role', 'alice', 'nobody'] },
  ...fmts(['user', 'get', 'alice'], ['simple', 'json', 'fields']),
  { args: ['user', 'get', 'alice', '--detail'] },
  { args: ['user', 'get', 'nobody'] },
  ...fmts(['user', 'list'], ['simple', 'json']),
  { args: ['user', 'passwd', 'alice', '--interactive=false'], input: 'alicepw2\n' },
  { args: ['user', 'passwd', 'nobody', '--interactive=false'], input: 'x\n' },
  { args: ['auth', 'enable'] },
  { args: ['get', 'k/a'] },
  { args: ['get', 'k/a', '--user=alice:alicepw2'] },
  { args: ['put', 'k/a', 'by-alice', '--user=alice:alicepw2'], expect: /^exit 0\n--- stdout\nOK/ },
  { args: ['put', 'other', 'x', '--user=alice:alicepw2'], expect: /^exit 1[\s\S]*permission denied/ },
  { args: ['get', 'k/a', '--user=alice:wrong'] },
  { args: ['user', 'list', '--user=alice:alicepw2'] },
  { args: ['user', 'list', '--user=root:rootpw'] },
  { args: ['user', 'revoke-role', 'alice', 'reader', '--user=root:rootpw'] },
  { args: ['user', 'revoke-role', 'alice', 'reader', '--user=root:rootpw'] },
  { args: ['get', 'k/a', '--user=alice:alicepw2'] },
  { args: ['user', 'delete', 'alice', '--user=root:rootpw'] },
  { args: ['user', 'delete', 'alice', '--user=root:rootpw'] },
  { args: ['role', 'delete', 'reader', '--user=root:rootpw'] },
  { args: ['role', 'delete', 'reader', '--user=root:rootpw'] },
  { args: ['role', 'delete', 'root', '--user=root:rootpw'] },
  { args: ['user', 'delete', 'root', '--user=root:rootpw'] },
  { args: ['auth', 'enable', '--user=root:rootpw'] },
  { args: ['auth', 'disable', '--user=root:rootpw'] },
  { args: ['auth', 'disable'] },
  { args: ['get', 'k/a'] },
  { args: ['get', 'k/a', '--user=root:rootpw'], expect: /authentication is not enabled/ },
  // bad invocations etcdctl answers itself
  { args: ['frobnicate'] },
  { args: ['get', 'k/a', '-w', 'yaml'] },
];

/** Cluster commands on three members of each (etcdctl given every member's endpoint). */
const CLUSTER: Step[] = [
  { args: ['member', 'list'], sortLines: true },
  { args: ['member', 'list', '-w', 'table'], sortLines: true },
  { args: ['endpoint', 'status', '--cluster'], sortLines: true },
  { args: ['endpoint', 'status', '--cluster', '-w', 'table'], sortLines: true },
  { args: ['endpoint', 'health', '--cluster'], sortLines: true },
  // The hashes themselves are masked: picloud's are SHA-256 based, etcd's CRC-32C of its bbolt pages (README).
  { args: ['endpoint', 'hashkv', '--cluster'], sortLines: true },
  { args: ['member', 'list', '-w', 'json'], sortMembers: true, anyMember: true },
  { args: ['endpoint', 'status', '-w', 'json'] },
  { args: ['move-leader', '{target}'], expect: /Leadership transferred from member#0 to member#1/ },
  // Now that member is the leader: moving it there again.
  { args: ['move-leader', '{target}'] },
];

/** A minute's load on each cluster: only whether it passed is machine-dependent, so only the shape is compared. */
const CHECK_PERF: Step = { args: ['check', 'perf', '--load=s'], shapeOnly: true, killAfterMs: 90_000, expect: /Throughput\nSlowest\nStddev\nverdict\n/ };

t.test('etcdctl 3.4 prints the same for picloud as for etcd 3.4.23', { skip: unavailable ?? false, timeout: 240_000 }, async (t) => {
  t.teardown(() => running.forEach((c) => c.kill('SIGKILL')));
  const root = mkdtempSync(join(tmpdir(), 'etcdctl-diff-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const [one, three] = await Promise.all([etcdAndPicloud(t, 1), etcdAndPicloud(t, 3)]);
  const singles = (await Promise.all(one.clusters.map((c) => prepare(c, root)))) as [Sys, Sys];
  const triples = (await Promise.all(three.clusters.map((c) => prepare(c, root)))) as [Sys, Sys];
  for (const step of CLUSTER) await compareStep(t, triples, step);
  for (const s of triples) await checkMemberOrder(t, s);
  // check perf's minute of load on the three members, while the one-member script runs.
  const perf = compareStep(t, triples, CHECK_PERF);
  for (const step of SINGLE) await compareStep(t, singles, step);
  await perf;
});

/** `member list -w json` lists the members in ID order (etcd's Members() sorts them; clients may rely on a stable order). */
async function checkMemberOrder(t: Test, s: Sys): Promise<void> {
  const out = (await etcdctl(s.endpoint, ['member', 'list', '-w', 'json'], '')).stdout;
  const ids = [...out.matchAll(/\{"ID":(\d+)/g)].map((m) => BigInt(m[1]!));
  t.same(ids.length, 3, `${s.cluster.system}: three members listed`);
  t.ok(ids.every((id, i) => i === 0 || ids[i - 1]! < id), `${s.cluster.system}: members in ID order`);
}

async function compareStep(t: Test, [etcd, picloud]: [Sys, Sys], step: Step): Promise<void> {
  const [want, got] = await Promise.all([runStep(etcd, step), runStep(picloud, step)]);
  if (step.expect) t.match(want, step.expect, `etcd: etcdctl ${step.args.join(' ')}`);
  t.equal(got, want, `etcdctl ${step.args.join(' ')}${etcd.clients.length > 1 ? ' (3 members)' : ''}`);
}
