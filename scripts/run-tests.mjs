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

const args = process.argv.slice(2);
const files = args.length > 0 ? args : findTests('dist/test');
const child = spawn('node_modules/.bin/tap', ['--reporter=tap', ...files], { stdio: ['ignore', 'pipe', 'inherit'] });
let pass = 0;
let fail = 0;
let buf = '';
let tapSummary = null; // tap's own closing summary, preferred when present
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
    const m = /^( *)(not ok|ok) \d+/.exec(line);
    if (m && m[1].length === 4 && !/# SKIP/.test(line)) {
      if (m[2] === 'ok') pass++;
      else fail++;
    }
  }
});
child.on('close', (code) => {
  if (tapSummary) ({ pass, fail } = tapSummary);
  if (code !== 0 && fail === 0) fail = 1; // a crashed file with no counted failure still fails
  console.log(`${pass} passed, ${fail} failed`);
  process.exit(code === 0 && fail === 0 ? 0 : 1);
});
