import t from 'tap';
import { spawnSync } from 'node:child_process';
import { Raft } from '../../core/raft/index.js';
import { runSeed, resolveOptions, DEFAULT_SIM_OPTIONS, SimError, type BugVariant } from '../../core/sim/index.js';
import { MAX_PEER_MESSAGES_PER_VIRTUAL_SECOND } from '../../core/sim/cluster.js';
import { MAX_JOBS, MAX_SEEDS } from '../../core/sim/cli.js';

const SHORT = { ticks: 3000, quietTicks: 1500 };

t.test('without faults every operation completes and nothing is lost', async (t) => {
  const r = runSeed(1, { ...SHORT, faults: 'none', membershipProbability: 0 });
  t.ok(r.ok, r.trace.join('\n'));
  t.equal(r.stats.crashes, 0);
  t.equal(r.stats.partitions, 0);
  t.equal(r.stats.messagesLost, 0);
  t.equal(r.stats.clientFail, 0, 'no failed ops');
  t.ok(r.stats.clientIndeterminate <= DEFAULT_SIM_OPTIONS.clients, 'indeterminate: only the ops in flight when the run ends');
  t.ok(r.stats.clientOk > 300, `ops: ${r.stats.clientOk}`);
  t.equal(r.stats.leaderTerms, 1, 'one stable leader');
});

t.test('crash faults lose unsynced writes and nodes restart from their disks', async (t) => {
  const results = [3, 4, 5, 6].map((seed) => runSeed(seed, { faults: 'crash' }));
  for (const r of results) t.ok(r.ok, r.trace.join('\n'));
  t.ok(results.some((r) => r.stats.writesLostOnCrash > 0), 'some crash lost unsynced writes');
  t.ok(results.every((r) => r.stats.partitions === 0 && r.stats.messagesLost === 0), 'no network faults in crash mode');
});

t.test('network faults alone', async (t) => {
  const r = runSeed(3, { faults: 'net' });
  t.ok(r.ok, r.trace.join('\n'));
  t.equal(r.stats.crashes, 0);
  t.ok(r.stats.partitions > 0);
});

t.test('the liveness checker fires when no leader can be elected', async (t) => {
  class NeverCampaigns extends Raft {
    override tick(): void {}
  }
  const bug: BugVariant = { name: 'never-campaigns', description: 'no election timer', raftClass: NeverCampaigns };
  const r = runSeed(1, { ...SHORT, faults: 'none', bug });
  t.notOk(r.ok);
  t.equal(r.violations[0]!.invariant, 'liveness');
  t.match(r.violations[0]!.message, /no leader with a live quorum 300 ticks after the faults stopped/);
  t.match(r.replay, /^npm run sim -- --seed 1 --nodes 5 --faults none --ticks 3000 --inject-bug never-campaigns$/);
  t.ok(r.trace.some((l) => /faults stop/.test(l)), 'the trace shows when faults stopped');
});

t.test('a Raft that throws is reported as an exception, not a crash of the simulator', async (t) => {
  class Throws extends Raft {
    protected override becomeLeader(): void {
      throw new Error('boom');
    }
  }
  const r = runSeed(1, { ...SHORT, faults: 'none', bug: { name: 'throws', description: '', raftClass: Throws } });
  t.equal(r.violations[0]!.invariant, 'exception');
  t.match(r.violations[0]!.message, /boom/);
});

t.test('options are validated; bug options override the caller', async (t) => {
  t.throws(() => resolveOptions({ nodes: 0 }), SimError);
  t.throws(() => resolveOptions({ faults: 'some' as 'all' }), { code: 'SIM_BAD_OPTION' });
  t.throws(() => resolveOptions({ quietTicks: DEFAULT_SIM_OPTIONS.ticks + 1 }), { code: 'SIM_BAD_OPTION' });
  t.equal(resolveOptions({ nodes: 63 }).nodes, 63, 'nodes at the limit');
  t.throws(() => resolveOptions({ nodes: 64 }), { code: 'SIM_BAD_OPTION' });
  const o = resolveOptions({ nodes: 3, bug: { name: 'b', description: '', options: { nodes: 7 } } });
  t.equal(o.nodes, 7);
  t.equal(MAX_PEER_MESSAGES_PER_VIRTUAL_SECOND, 50_000);
});

t.test('a 3-node and a 7-node cluster pass too', async (t) => {
  for (const nodes of [3, 7]) {
    const r = runSeed(11, { ...SHORT, nodes });
    t.ok(r.ok, r.trace.join('\n'));
  }
});

t.test('the command line', async (t) => {
  const sim = (...args: string[]) => spawnSync(process.execPath, ['dist/core/sim/cli.js', ...args], { encoding: 'utf8', timeout: 60_000 });
  const ok = sim('--seeds', '3', '--ticks', '2000');
  t.equal(ok.status, 0, ok.stderr);
  t.equal(ok.stdout.trim().split('\n').at(-1), 'seeds: 3, violations: 0');
  const list = sim('--inject-bug', 'list');
  t.equal(list.status, 0);
  t.ok(list.stdout.trim().split('\n').length >= 1);
  t.ok(list.stdout.split('\n').every((l) => /^[a-z0-9-]*$/.test(l)), 'one name a line');
  const bad = sim('--seeds', 'x');
  t.equal(bad.status, 2);
  t.match(bad.stderr, /usage: npm run sim/);
  t.equal(sim('--seed', '1', '--inject-bug', 'no-such-bug').status, 2);
  t.equal(sim('--seeds', String(MAX_SEEDS + 1)).status, 2, 'over MAX_SEEDS');
  t.equal(sim('--seed', '1', '--jobs', String(MAX_JOBS + 1)).status, 2, 'over MAX_JOBS');
  t.equal(sim('--seed', '1', '--ticks', '500', '--jobs', String(MAX_JOBS)).status, 0, 'MAX_JOBS itself (one seed: one worker used)');
  const jobs = sim('--seeds', '4', '--seed', '5', '--ticks', '2000', '--jobs', '2', '--verbose');
  t.equal(jobs.status, 0, jobs.stderr);
  const seqLines = sim('--seeds', '4', '--seed', '5', '--ticks', '2000', '--verbose').stdout;
  t.equal(jobs.stdout, seqLines, 'worker threads print the same thing in the same order');
});
