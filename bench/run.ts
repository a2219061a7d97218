/**
 * `npm run bench -- <suite> [args]`: runs one benchmark suite. Each suite prints a table
 * and writes JSON to bench/out/<suite>.json. Benchmarks are not tests: they measure, and
 * compare with the anchor (etcd, raw disk, memberlist's bound) measured in the same run.
 */
import { UsageError } from './usage.js';

interface Suite {
  module: string;
  entry: string;
}

const SUITES: Record<string, Suite> = {
  sim: { module: './sim.js', entry: 'runSimBench' },
  gossip: { module: './gossip.js', entry: 'runGossipBench' },
  kv: { module: './kv.js', entry: 'runKvBench' },
  leveldb: { module: './leveldb.js', entry: 'runLeveldbBench' },
};

async function main(): Promise<void> {
  const [name, ...rest] = process.argv.slice(2);
  const suite = name ? SUITES[name] : undefined;
  if (!suite) {
    process.stderr.write(`usage: npm run bench -- <${Object.keys(SUITES).join('|')}> [args]\n`);
    process.exit(2);
  }
  // Suites load on demand: each pulls in heavy dependencies the others do not need.
  const mod = (await import(suite.module)) as Record<string, (argv: string[]) => Promise<void>>;
  const run = mod[suite.entry];
  if (typeof run !== 'function') throw new Error(`bench ${name}: ${suite.module} does not export ${suite.entry}`);
  await run(rest);
}

main().catch((e) => {
  if (e instanceof UsageError) {
    process.stderr.write(`bench: ${e.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
