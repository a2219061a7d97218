/**
 * `node dist/bench/kv/profile.js FILE.cpuprofile [--top N] [--inclusive | --by-part | --callers FUNCTION [--depth D]]`: summarises a V8 CPU profile
 * (as written by `node --cpu-prof`, e.g. from `npm run bench -- kv --cpu-prof DIR`) by self
 * time per function and per file, mapping compiled dist/*.js positions back to the .ts
 * sources through their source maps. Reading only; used to find where a member spends its CPU.
 */
import { existsSync, readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { fileURLToPath } from 'node:url';

/** Rows printed by default. */
export const DEFAULT_TOP_ROWS = 30;

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface SelfTimeRow {
  name: string;
  location: string;
  selfMs: number;
  percent: number;
}

const maps = new Map<string, SourceMap | null>();

function sourceMapFor(url: string): SourceMap | null {
  if (!maps.has(url)) {
    let sm: SourceMap | null = null;
    try {
      const file = fileURLToPath(url);
      if (existsSync(`${file}.map`)) sm = new SourceMap(JSON.parse(readFileSync(`${file}.map`, 'utf8')));
    } catch {
      sm = null;
    }
    maps.set(url, sm);
  }
  return maps.get(url)!;
}

/** "core/kv/mvcc.ts:123" for our compiled code, "node:internal/...:45" or the URL otherwise (lines 1-based). */
export function locate(cf: CallFrame): string {
  if (!cf.url) return '(native)';
  const sm = cf.url.startsWith('file://') ? sourceMapFor(cf.url) : null;
  if (sm) {
    const e = sm.findEntry(cf.lineNumber, cf.columnNumber) as { originalSource?: string; originalLine?: number };
    if (e && e.originalSource !== undefined && e.originalLine !== undefined) {
      const src = e.originalSource.replace(/^.*?\/(core|agent|bench|test)\//, '$1/');
      return `${src}:${e.originalLine + 1}`;
    }
  }
  const short = cf.url.replace(/^file:\/\/.*?\/node_modules\//, 'node_modules/');
  return `${short}:${cf.lineNumber + 1}`;
}

export function summariseProfile(profile: CpuProfile): { totalMs: number; idleMs: number; byFunction: SelfTimeRow[]; byFile: SelfTimeRow[] } {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const fn = new Map<string, SelfTimeRow>();
  const file = new Map<string, SelfTimeRow>();
  let totalUs = 0;
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const cf = nodes.get(id)!.callFrame;
    if (cf.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    totalUs += us;
    const location = locate(cf);
    const name = cf.functionName || '(anonymous)';
    const key = `${name}@${location}`;
    const row = fn.get(key) ?? { name, location, selfMs: 0, percent: 0 };
    row.selfMs += us / 1000;
    fn.set(key, row);
    const fileName = location.replace(/:\d+$/, '');
    const frow = file.get(fileName) ?? { name: fileName, location: fileName, selfMs: 0, percent: 0 };
    frow.selfMs += us / 1000;
    file.set(fileName, frow);
  }
  const finish = (m: Map<string, SelfTimeRow>): SelfTimeRow[] =>
    [...m.values()].map((r) => ({ ...r, percent: totalUs > 0 ? (r.selfMs * 1000 * 100) / totalUs : 0 })).sort((a, b) => b.selfMs - a.selfMs);
  return { totalMs: totalUs / 1000, idleMs: idleUs / 1000, byFunction: finish(fn), byFile: finish(file) };
}

/** The profile's nodes by id and each node's parent. */
function tree(profile: CpuProfile): { nodes: Map<number, ProfileNode>; parent: Map<number, number> } {
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  return { nodes: new Map(profile.nodes.map((n) => [n.id, n])), parent };
}

/**
 * Parts of a member, by the URL of the code: a sample counts for the first part found walking
 * up from its leaf frame, so native calls (writev, a cipher, a LevelDB batch) count for the JS
 * that made them. The first rule that matches wins.
 */
export const PARTS: ReadonlyArray<[string, RegExp]> = [
  ['gRPC server (grpc-js)', /@grpc\/grpc-js/],
  ['gRPC server (node http2)', /^node:internal\/http2/],
  ['etcd API adapter', /core\/(net\/etcd|api\/etcd-backend)/],
  ['peer transport (framing, AES-GCM, sockets)', /core\/net\/(peer-transport|secure-channel|frame|raft-codec)/],
  ['storage (Raft log, MVCC state, LevelDB)', /core\/storage\/|classic-level|abstract-level/],
  ['Raft and its driver', /core\/(raft\/|api\/raft-driver)/],
  ['KV state machine and its codec (CBOR)', /core\/kv\/|cbor-x/],
  ['protobufjs (requests, responses)', /protobufjs|@protobufjs/],
  ['module loading (start-up)', /^node:internal\/modules\//],
];

/** Busy time by PARTS; what no rule matches is "other", GC and V8's own time are listed apart. */
export function timeByPart(profile: CpuProfile): SelfTimeRow[] {
  const { nodes, parent } = tree(profile);
  const byPart = new Map<string, number>();
  let busyUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    const leaf = nodes.get(id)!.callFrame.functionName;
    if (leaf === '(idle)') continue;
    const us = profile.timeDeltas[i] ?? 0;
    busyUs += us;
    let part = leaf === '(garbage collector)' || leaf === '(program)' ? leaf : 'other';
    for (let p: number | undefined = id; p !== undefined && part === 'other'; p = parent.get(p)) {
      const url = nodes.get(p)!.callFrame.url;
      const hit = url ? PARTS.find(([, re]) => re.test(url)) : undefined;
      if (hit) part = hit[0];
    }
    byPart.set(part, (byPart.get(part) ?? 0) + us);
  }
  return [...byPart]
    .map(([name, us]) => ({ name, location: '', selfMs: us / 1000, percent: busyUs > 0 ? (us * 100) / busyUs : 0 }))
    .sort((a, b) => b.selfMs - a.selfMs);
}

/**
 * Self time of the functions named `name`, split by their callers' stacks (up to `depth`
 * frames above): which code paths reach a hot native function such as writev.
 */
export function callersOf(profile: CpuProfile, name: string, depth: number): { stack: string; selfMs: number }[] {
  const { nodes, parent } = tree(profile);
  const byStack = new Map<string, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    const node = nodes.get(id)!;
    if (node.callFrame.functionName !== name) continue;
    const frames: string[] = [];
    let p = parent.get(id);
    while (p !== undefined && frames.length < depth) {
      const cf = nodes.get(p)!.callFrame;
      frames.push(`${cf.functionName || '(anonymous)'} ${locate(cf)}`);
      p = parent.get(p);
    }
    const key = frames.join(' <- ');
    byStack.set(key, (byStack.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  }
  return [...byStack].map(([stack, selfMs]) => ({ stack, selfMs })).sort((a, b) => b.selfMs - a.selfMs);
}

/** Time under each function (itself and everything it called), busiest first. */
export function inclusiveTimes(profile: CpuProfile): SelfTimeRow[] {
  const { nodes, parent } = tree(profile);
  const label = new Map<number, { name: string; location: string }>();
  const labelOf = (id: number): { name: string; location: string } => {
    let l = label.get(id);
    if (!l) {
      const cf = nodes.get(id)!.callFrame;
      label.set(id, (l = { name: cf.functionName || '(anonymous)', location: locate(cf) }));
    }
    return l;
  };
  const total = new Map<string, SelfTimeRow>();
  let busyUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    if (nodes.get(id)!.callFrame.functionName === '(idle)') continue;
    const us = profile.timeDeltas[i] ?? 0;
    busyUs += us;
    const seen = new Set<string>();
    for (let p: number | undefined = id; p !== undefined; p = parent.get(p)) {
      const l = labelOf(p);
      const key = `${l.name}@${l.location}`;
      if (seen.has(key)) continue; // recursion: count each frame once per sample
      seen.add(key);
      const row = total.get(key) ?? { ...l, selfMs: 0, percent: 0 };
      row.selfMs += us / 1000;
      total.set(key, row);
    }
  }
  return [...total.values()].map((r) => ({ ...r, percent: busyUs > 0 ? (r.selfMs * 1000 * 100) / busyUs : 0 })).sort((a, b) => b.selfMs - a.selfMs);
}

function main(argv: string[]): void {
  const file = argv[0];
  if (!file) {
    process.stderr.write('usage: node dist/bench/kv/profile.js FILE.cpuprofile [--top N] [--inclusive | --by-part | --callers FUNCTION [--depth D]]\n');
    process.exit(2);
  }
  const ti = argv.indexOf('--top');
  const top = ti >= 0 ? Number(argv[ti + 1]) : DEFAULT_TOP_ROWS;
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const out = process.stdout;
  out.on('error', () => process.exit(0)); // a closed pipe (| head) ends the listing quietly
  const ci = argv.indexOf('--callers');
  if (ci >= 0) {
    const di = argv.indexOf('--depth');
    for (const r of callersOf(profile, argv[ci + 1] ?? '', di >= 0 ? Number(argv[di + 1]) : 4).slice(0, top)) {
      out.write(`${r.selfMs.toFixed(0).padStart(7)} ms  ${r.stack}\n`);
    }
    return;
  }
  if (argv.includes('--by-part')) {
    for (const r of timeByPart(profile)) out.write(`${r.percent.toFixed(1).padStart(5)}%  ${r.selfMs.toFixed(0).padStart(7)} ms  ${r.name}\n`);
    return;
  }
  if (argv.includes('--inclusive')) {
    for (const r of inclusiveTimes(profile).slice(0, top)) out.write(`${r.percent.toFixed(1).padStart(5)}%  ${r.selfMs.toFixed(0).padStart(7)} ms  ${r.name}  ${r.location}\n`);
    return;
  }
  const s = summariseProfile(profile);
  out.write(`${file}: ${(s.totalMs / 1000).toFixed(1)} s busy, ${(s.idleMs / 1000).toFixed(1)} s idle\n\nself time by function:\n`);
  for (const r of s.byFunction.slice(0, top)) out.write(`${r.percent.toFixed(1).padStart(5)}%  ${r.selfMs.toFixed(0).padStart(7)} ms  ${r.name}  ${r.location}\n`);
  out.write('\nself time by file:\n');
  for (const r of s.byFile.slice(0, Math.min(top, 20))) out.write(`${r.percent.toFixed(1).padStart(5)}%  ${r.selfMs.toFixed(0).padStart(7)} ms  ${r.name}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main(process.argv.slice(2));
