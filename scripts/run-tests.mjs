#!/usr/bin/env node
// Runs the whole tap suite on the compiled tests and prints the closing line CI reads:
// "N passed, N failed" alone on the last line. Extra args are passed to tap
// (e.g. `npm test -- dist/test/raft`).
import { spawnSync, spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const build = spawnSync('node_modules/.bin/tsc', ['-p', 'tsconfig.json'], { stdio: 'inherit' });
if (build.status !== 0) {
  console.error('build failed');
  console.log('0 passed, 1 failed');
  process.exit(1);
}

function findTests(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...findTests(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out.sort();
}

// Tests that start many real agent processes and assert timing bounds (a new leader within
// three election timeouts, a failure detected within the gossip bound) run one file at a time,
// before the rest: run beside each other, or beside the 2-thread simulator run, on a 2-core
// machine they measure CPU starvation rather than picloud.
const SERIAL = [/^dist\/test\/compat\//, /^dist\/test\/gossip\/agents\.test\.js$/];
// Tests that assert no timing (no quiet periods, no bounds beyond generous waits for readiness)
// run two at a time, after the serial group, which keeps the suite well under 30 minutes: the
// real-client differential tests (they compare transcripts) and the start/restart/snapshot ones
// (they check what a member holds or says). etcd-differential and etcd3-client-differential wait
// fixed quiet periods for watch events, so they stay serial.
const PAIRED = [
  /^dist\/test\/compat\/(etcdctl-differential|etcd-auth-differential|etcd-gateway-differential|python-clients|learner-rpcs)\.test\.js$/,
  /^dist\/test\/compat\/(data-dir-damage|data-dir-mode|auto-tls|auth-snapshot|snapshot|snapshot-no-quorum|join-retry-snapshot|restart|snapshot-install|wiped-voter|joiner-kills|member-add|worker-token)\.test\.js$/,
];
const matches = (f, list) => list.some((r) => r.test(f));

const args = process.argv.slice(2);
const all = args.length > 0 ? args : findTests('dist/test');
const groups =
  args.length > 0
    ? [{ files: all, jobs: [] }]
    : [
        { files: all.filter((f) => matches(f, SERIAL) && !matches(f, PAIRED)), jobs: ['--jobs=1'] },
        { files: all.filter((f) => matches(f, PAIRED)), jobs: ['--jobs=2'] },
        { files: all.filter((f) => !matches(f, SERIAL)), jobs: [] },
      ].filter((g) => g.files.length > 0);

let pass = 0;
let fail = 0;
let failedRun = false;
// What failed, by file, printed again just above the closing line: CI keeps only the head and
// the tail of a long log, and a failure in the middle is otherwise invisible there.
const failures = [];
// Each group's wall time and its slowest files, printed at the end too: where the suite's time goes.
const timings = [];

function runTap(files, jobs) {
  return new Promise((resolve) => {
    const started = Date.now();
    const fileMs = [];
    const child = spawn('node_modules/.bin/tap', ['--reporter=tap', ...jobs, ...files], { stdio: ['ignore', 'pipe', 'inherit'] });
    let gPass = 0;
    let gFail = 0;
    let buf = '';
    let tapSummary = null; // tap's own closing summary, preferred when present
    let failedInFile = []; // nested "not ok" lines of the file being printed
    child.stdout.on('data', (d) => {
      process.stdout.write(d);
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        // Count top-level assertion results of each test file's subtests (indent 4 = inside a file).
        const summary = /^# \{ total: (\d+), pass: (\d+)(?:, fail: (\d+))?/.exec(line);
        if (summary) tapSummary = { pass: Number(summary[2]), fail: Number(summary[3] ?? 0) };
        const m = /^( *)(not ok|ok) \d+(.*)$/.exec(line);
        if (m && m[1].length === 4 && !/# SKIP/.test(line)) {
          if (m[2] === 'ok') gPass++;
          else gFail++;
        }
        if (m && m[2] === 'not ok' && m[1].length > 0) failedInFile.push(`${m[1]}${m[3].trim()}`);
        if (m && m[1].length === 0) {
          const ms = /^ - (\S+) # time=([\d.]+)ms/.exec(m[3]);
          if (ms) fileMs.push([Number(ms[2]), ms[1]]);
          if (m[2] === 'not ok') failures.push(`not ok ${m[3].trim()}`, ...failedInFile.slice(0, 12).map((l) => `  ${l}`));
          failedInFile = [];
        }
      }
    });
    child.on('close', (code) => {
      const slowest = fileMs.sort((a, b) => b[0] - a[0]).slice(0, 8).map(([ms, f]) => `${(ms / 1000).toFixed(0)} s ${f}`);
      timings.push(`${files.length} files ${jobs.join(' ') || 'in parallel'}: ${((Date.now() - started) / 1000).toFixed(0)} s; slowest: ${slowest.join(', ')}`);
      if (tapSummary) ({ pass: gPass, fail: gFail } = tapSummary);
      if (code !== 0 && gFail === 0) gFail = 1; // a crashed file with no counted failure still fails
      pass += gPass;
      fail += gFail;
      if (code !== 0) failedRun = true;
      resolve();
    });
  });
}

for (const g of groups) await runTap(g.files, g.jobs);
console.log(['# where the time went:', ...timings.map((l) => `#   ${l}`)].join('\n'));
if (failures.length > 0) console.log(['# what failed:', ...failures.map((l) => `#   ${l}`)].join('\n'));
console.log(`${pass} passed, ${fail} failed`);
process.exit(!failedRun && fail === 0 ? 0 : 1);
