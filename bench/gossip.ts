/**
 * `npm run bench -- gossip [--quick] [--only NAME,…] [--seed N] [--skip-5000]`: runs the real
 * gossip state machine in the simulator at 100 / 1,000 / 5,000 nodes with 0%, 10% and 30%
 * packet loss and with a partition, checks each run against the targets (zero false deaths,
 * detection time and bandwidth at or below memberlist's DefaultLANConfig for the same n, joins
 * known to all 1,000 members within 5 s), prints a table and writes bench/out/gossip.json.
 * The 5,000-node run needs ~5 GB of heap and runs in a child process with a larger heap limit.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MEMBERLIST_LAN_CONFIG, PICLOUD_LAN_CONFIG, detectionBoundMs, type GossipConfig } from '../core/gossip/config.js';
import { checkScenario, type GossipTargets } from '../core/sim/gossip/checkers.js';
import { memberlistModel, type ModelResult } from '../core/sim/gossip/memberlist-model.js';
import { nodeMeta, runScenario, type GossipScenario, type ScenarioResult } from '../core/sim/gossip/scenarios.js';

interface BenchConfig {
  name: string;
  profile: 'picloud' | 'memberlist';
  nodes: number;
  loss: number;
  durationMs: number;
  /** Stress runs are reported without pass/fail targets. */
  stress?: boolean;
  partition?: GossipScenario['partition'];
  crashEveryMs?: number;
  joinEveryMs?: number;
  metaEveryMs?: number;
  leaveEveryMs?: number;
  /** Run in a child process with this heap limit (MB). */
  heapMb?: number;
  warmupMs?: number;
}

const MIN = 60_000;

function configs(quick: boolean): BenchConfig[] {
  const q = (full: number, short: number): number => (quick ? short : full);
  const churn = { crashEveryMs: 30_000, joinEveryMs: 60_000, metaEveryMs: 30_000, leaveEveryMs: 120_000 };
  return [
    { name: 'n100-loss0', profile: 'picloud', nodes: 100, loss: 0, durationMs: q(10 * MIN, 2 * MIN), ...churn },
    { name: 'n100-loss10', profile: 'picloud', nodes: 100, loss: 0.1, durationMs: q(10 * MIN, 2 * MIN), ...churn },
    { name: 'n100-loss30', profile: 'picloud', nodes: 100, loss: 0.3, durationMs: q(5 * MIN, 1 * MIN), stress: true, ...churn },
    { name: 'n100-loss10-memberlist', profile: 'memberlist', nodes: 100, loss: 0.1, durationMs: q(10 * MIN, 2 * MIN), ...churn },
    { name: 'n1000-loss0', profile: 'picloud', nodes: 1000, loss: 0, durationMs: q(5 * MIN, 1 * MIN), ...churn },
    { name: 'n1000-loss10-1h', profile: 'picloud', nodes: 1000, loss: 0.1, durationMs: q(60 * MIN, 2 * MIN), ...churn },
    { name: 'n1000-loss10-memberlist', profile: 'memberlist', nodes: 1000, loss: 0.1, durationMs: q(5 * MIN, 1 * MIN), ...churn },
    { name: 'n1000-loss30', profile: 'picloud', nodes: 1000, loss: 0.3, durationMs: q(2 * MIN, 1 * MIN), stress: true, ...churn },
    {
      name: 'n1000-partition', profile: 'picloud', nodes: 1000, loss: 0.01, durationMs: q(8 * MIN, 4 * MIN),
      partition: { atMs: 30_000, durationMs: q(2 * MIN, 1 * MIN), fraction: 0.3 }, crashEveryMs: 0, joinEveryMs: 0, metaEveryMs: 0,
    },
    {
      name: 'n5000-loss10', profile: 'picloud', nodes: 5000, loss: 0.1, durationMs: q(75_000, 40_000), warmupMs: 15_000,
      crashEveryMs: 15_000, joinEveryMs: 20_000, metaEveryMs: 20_000, heapMb: 12_000,
    },
  ];
}

function profileOf(c: BenchConfig): GossipConfig {
  return { ...(c.profile === 'memberlist' ? MEMBERLIST_LAN_CONFIG : PICLOUD_LAN_CONFIG) };
}

function scenarioOf(c: BenchConfig, seed: number): GossipScenario {
  return {
    name: c.name,
    nodes: c.nodes,
    seed,
    config: profileOf(c),
    net: { lossRate: c.loss, minLatencyMs: 1, maxLatencyMs: 2 },
    warmupMs: c.warmupMs ?? 20_000,
    durationMs: c.durationMs,
    crashEveryMs: c.crashEveryMs,
    restartAfterMs: 60_000,
    joinEveryMs: c.joinEveryMs,
    metaEveryMs: c.metaEveryMs,
    leaveEveryMs: c.leaveEveryMs,
    partition: c.partition,
    wallBudgetMs: 15 * MIN,
  };
}

export interface GossipBenchRow {
  config: BenchConfig;
  result: ScenarioResult;
  model: ModelResult;
  targets: GossipTargets;
  violations: string[];
}

function targetsFor(c: BenchConfig, r: ScenarioResult, model: ModelResult): GossipTargets {
  const t: GossipTargets = { maxFalseDeaths: 0, detectionBoundMs: detectionBoundMs(profileOf(c), c.nodes) };
  if (c.stress) return { maxFalseDeaths: Infinity };
  if (c.profile === 'picloud') {
    if (c.partition) {
      // memberlist has no model for a partition heal: report its traffic, check convergence.
      t.convergeAfterHealMs = 2 * PICLOUD_LAN_CONFIG.reconnectIntervalMs;
      return t;
    }
    t.detectionMedianMs = model.detectionMedianMs;
    t.detectionP99Ms = model.detectionP99Ms;
    t.bytesPerNodePerSec = model.bytesPerNodePerSec;
    if (c.nodes >= 1000) t.joinAllKnowMs = 5_000;
    if (c.leaveEveryMs) t.leaveNeverFailed = true;
  }
  void r;
  return t;
}

function runOne(c: BenchConfig, seed: number): ScenarioResult {
  if (!c.heapMb) return runScenario(scenarioOf(c, seed));
  const self = fileURLToPath(import.meta.url);
  const child = spawnSync(process.execPath, [`--max-old-space-size=${c.heapMb}`, self, '--child', c.name, '--seed', String(seed), ...(process.argv.includes('--quick') ? ['--quick'] : [])], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (child.status !== 0) throw new Error(`${c.name}: child process failed (status ${child.status}, signal ${child.signal})`);
  return JSON.parse(child.stdout) as ScenarioResult;
}

const ms = (x: number): string => (Number.isFinite(x) ? `${(x / 1000).toFixed(1)}s` : '-');

function printTable(rows: GossipBenchRow[]): void {
  const head = ['config', 'n', 'loss', 'virtual', 'wall', 'false deaths', 'detect med/p99', 'memberlist med/p99', 'join all-know med/max', 'update med/max', 'B/node/s', 'memberlist B/node/s (own wire / same sizes)', 'verdict'];
  const lines = rows.map(({ config: c, result: r, model: m, violations }) => [
    c.name,
    String(c.nodes),
    `${c.loss * 100}%`,
    ms(r.virtualMs),
    ms(r.wallMs),
    String(r.falseDeaths.length),
    `${ms(r.crash.allKnow.medianMs)}/${ms(r.crash.allKnow.p99Ms)}`,
    `${ms(m.detectionMedianMs)}/${ms(m.detectionP99Ms)}`,
    `${ms(r.join.allKnow.medianMs)}/${ms(r.join.allKnow.maxMs)}`,
    `${ms(r.update.allKnow.medianMs)}/${ms(r.update.allKnow.maxMs)}`,
    r.bytesPerNodePerSec.toFixed(0),
    `${m.bytesPerNodePerSec.toFixed(0)} / ${m.bytesPerNodePerSecSameSizes.toFixed(0)}`,
    c.stress ? 'stress (no target)' : violations.length === 0 ? 'PASS' : 'FAIL',
  ]);
  const all = [head, ...lines];
  const widths = head.map((_, i) => Math.max(...all.map((l) => l[i]!.length)));
  for (const l of all) process.stdout.write(l.map((x, i) => x.padEnd(widths[i]!)).join('  ') + '\n');
  for (const row of rows) {
    for (const v of row.violations) process.stdout.write(`  ${row.config.name}: ${v}\n`);
    for (const p of row.result.partitions) {
      process.stdout.write(
        `  ${row.config.name}: partition split detected after ${p.splitDetectedAfterMs === null ? 'never' : ms(p.splitDetectedAfterMs)}, views agreed ${p.convergedAfterMs === null ? 'never' : ms(p.convergedAfterMs)} after heal\n`,
      );
    }
  }
}

export async function runGossipBench(argv: string[]): Promise<void> {
  const quick = argv.includes('--quick');
  const seedArg = argv.indexOf('--seed');
  const seed = seedArg >= 0 ? Number(argv[seedArg + 1]) : 1;
  const onlyArg = argv.indexOf('--only');
  const only = onlyArg >= 0 ? new Set(argv[onlyArg + 1]!.split(',')) : undefined;
  const skip5000 = argv.includes('--skip-5000');
  const rows: GossipBenchRow[] = [];
  for (const c of configs(quick)) {
    if (only && !only.has(c.name)) continue;
    if (skip5000 && c.nodes >= 5000) continue;
    process.stderr.write(`gossip bench: ${c.name} (${c.nodes} nodes, ${c.loss * 100}% loss, ${ms(c.durationMs)} virtual)…\n`);
    const result = runOne(c, seed);
    const model = memberlistModel({
      n: c.nodes,
      lossRate: c.loss,
      crashesPerSec: result.rates.crashesPerSec,
      joinsPerSec: result.rates.joinsPerSec,
      updatesPerSec: result.rates.updatesPerSec,
      leavesPerSec: result.rates.leavesPerSec,
      meta: nodeMeta(10),
    });
    const targets = targetsFor(c, result, model);
    const violations = c.stress ? [] : checkScenario(result, targets);
    rows.push({ config: c, result, model, targets, violations });
    process.stderr.write(`  done in ${ms(result.wallMs)}: ${violations.length === 0 ? 'pass' : violations.join('; ')}\n`);
  }
  printTable(rows);
  mkdirSync('bench/out', { recursive: true });
  writeFileSync(
    'bench/out/gossip.json',
    JSON.stringify(
      {
        command: `npm run bench -- gossip ${argv.join(' ')}`.trim(),
        seed,
        picloudConfig: PICLOUD_LAN_CONFIG,
        memberlistConfig: MEMBERLIST_LAN_CONFIG,
        rows: rows.map((r) => ({
          ...r,
          targets: { ...r.targets, maxFalseDeaths: Number.isFinite(r.targets.maxFalseDeaths) ? r.targets.maxFalseDeaths : null },
          result: { ...r.result, falseDeaths: r.result.falseDeaths.slice(0, 20), falseDeathCount: r.result.falseDeaths.length },
        })),
      },
      null,
      2,
    ),
  );
  process.stdout.write('wrote bench/out/gossip.json\n');
}

// Child mode for the large runs: `node dist/bench/gossip.js --child NAME --seed N`.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const childArg = argv.indexOf('--child');
  if (childArg >= 0) {
    const name = argv[childArg + 1];
    const seedArg = argv.indexOf('--seed');
    const c = configs(argv.includes('--quick')).find((x) => x.name === name);
    if (!c) throw new Error(`no gossip bench config ${name}`);
    const r = runScenario(scenarioOf(c, seedArg >= 0 ? Number(argv[seedArg + 1]) : 1));
    process.stdout.write(JSON.stringify(r));
  } else {
    runGossipBench(argv).catch((e: Error) => {
      process.stderr.write(`${e.stack ?? e.message}\n`);
      process.exit(1);
    });
  }
}
