import t from 'tap';
import { reportSeed } from '../../core/sim/cli.js';
import { runSeed } from '../../core/sim/index.js';

// CI (ci-seeds.test.ts) passes on the CLI's "violations: 0": an exhausted linearizability
// search proves nothing, so it must count as a failing seed there.
t.test('a linearizability verdict of unknown fails the seed in the CLI report', async (t) => {
  const r = runSeed(1, { faults: 'none', linearizabilityStepBudget: 1 });
  t.equal(r.linearizability, 'unknown', 'a one-step budget cannot finish the search');
  t.equal(r.violations.length, 0, 'no checker found a violation');
  const report = reportSeed(1, r, false);
  t.equal(report.failed, true, 'counted among the violations');
  t.match(report.lines[0]!, /^seed 1: FAIL linearizability unknown/);
  t.ok(report.lines.includes(`  replay: ${r.replay}`));
});

t.test('a seed checked to ok is not failed', async (t) => {
  const r = runSeed(1, { faults: 'none' });
  t.equal(r.linearizability, 'ok');
  const report = reportSeed(1, r, false);
  t.equal(report.failed, false);
  t.same(report.lines, []);
});
