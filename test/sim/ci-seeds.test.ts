/**
 * The bar, on every push: the simulator command itself runs 500 seeds of a 5-node
 * cluster with all faults (two worker threads) and must end with "seeds: 500, violations: 0".
 * A linearizability verdict of 'unknown' (search budget exhausted) counts as a violation there.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';

// ~250 s on an idle 2-core machine, ~340 s beside two busy loops: room for a slower CI machine.
const SIM_TIMEOUT_MS = 1_080_000;
t.setTimeout(SIM_TIMEOUT_MS + 60_000);

t.test('npm run sim -- --seeds 500 --faults all: zero violations', async (t) => {
  const r = spawnSync(process.execPath, ['dist/core/sim/cli.js', '--seeds', '500', '--faults', 'all', '--jobs', '2'], { encoding: 'utf8', timeout: SIM_TIMEOUT_MS });
  const lines = r.stdout.trim().split('\n');
  t.equal(lines[lines.length - 1], 'seeds: 500, violations: 0', r.status === 0 ? 'last line' : r.stdout.slice(-3000));
  t.equal(r.status, 0, 'exit code 0');
});
