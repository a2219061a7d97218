/**
 * The gossip machine in the simulator (small n; the 1,000 / 5,000-node runs are in
 * bench/gossip.ts): a healthy seed passes every checker, each checker catches a deliberately
 * injected bug, a healed partition converges, runs replay from their seed, and the memberlist
 * model agrees with the machine run on memberlist's parameters.
 */
import t from 'tap';
import { MEMBERLIST_LAN_CONFIG, PICLOUD_LAN_CONFIG, type GossipConfig } from '../../core/gossip/config.js';
import { checkScenario } from '../../core/sim/gossip/checkers.js';
import { memberlistModel } from '../../core/sim/gossip/memberlist-model.js';
import { nodeMeta, runScenario, type GossipScenario } from '../../core/sim/gossip/scenarios.js';

function scenario(over: Partial<GossipScenario> & { config?: GossipConfig } = {}): GossipScenario {
  return {
    name: 'test',
    nodes: 100,
    seed: 7,
    config: { ...PICLOUD_LAN_CONFIG },
    net: { lossRate: 0.1, minLatencyMs: 1, maxLatencyMs: 2 },
    warmupMs: 10_000,
    durationMs: 240_000,
    crashEveryMs: 30_000,
    restartAfterMs: 60_000,
    joinEveryMs: 60_000,
    metaEveryMs: 30_000,
    leaveEveryMs: 120_000,
    wallBudgetMs: 60_000,
    ...over,
  };
}

function modelFor(r: ReturnType<typeof runScenario>) {
  return memberlistModel({ n: r.nodes, lossRate: r.lossRate, ...r.rates, meta: nodeMeta(10) });
}

t.test('100 nodes, 10% loss, churn: every checker passes', async (t) => {
  const r = runScenario(scenario());
  const m = modelFor(r);
  const v = checkScenario(r, {
    maxFalseDeaths: 0,
    detectionBoundMs: r.detectionBoundMs,
    detectionMedianMs: m.detectionMedianMs,
    detectionP99Ms: m.detectionP99Ms,
    bytesPerNodePerSec: m.bytesPerNodePerSec,
    leaveNeverFailed: true,
  });
  t.same(v, [], 'no violations');
  t.ok(r.crash.completed >= 6, `crashes detected by all (${r.crash.completed})`);
  t.ok(r.join.completed >= 4, `joins known to all (${r.join.completed})`);
  t.ok(r.update.completed >= 6, `metadata changes known to all (${r.update.completed})`);
  t.ok(r.leave.completed >= 1, 'a graceful leave was seen by all');
  t.ok(r.counters.refutations > 0, 'false suspicions happened and were refuted');
});

t.test('injected bug — no refutation: the false-death checker fires', async (t) => {
  const r = runScenario(scenario({ durationMs: 120_000, config: { ...PICLOUD_LAN_CONFIG, faults: { noRefutation: true } } }));
  const v = checkScenario(r, { maxFalseDeaths: 0 });
  t.ok(r.falseDeaths.length > 0, `${r.falseDeaths.length} healthy nodes declared dead`);
  t.match(v.join('\n'), /false deaths/);
});

t.test('injected bug — suspicion never expires: the detection checker fires', async (t) => {
  const r = runScenario(scenario({ durationMs: 120_000, config: { ...PICLOUD_LAN_CONFIG, faults: { suspicionNeverExpires: true } } }));
  const v = checkScenario(r, { maxFalseDeaths: 0, detectionBoundMs: r.detectionBoundMs });
  t.equal(r.crash.completed, 0, 'no crash is ever detected');
  t.match(v.join('\n'), /not known to all live members/);
});

t.test('a 30/70 partition is detected on both sides and heals through reconnects', async (t) => {
  const r = runScenario(
    scenario({
      nodes: 60,
      net: { lossRate: 0.01, minLatencyMs: 1, maxLatencyMs: 2 },
      durationMs: 240_000,
      crashEveryMs: 0,
      joinEveryMs: 0,
      metaEveryMs: 0,
      leaveEveryMs: 0,
      partition: { atMs: 10_000, durationMs: 120_000, fraction: 0.3 },
    }),
  );
  const p = r.partitions[0]!;
  // The minority side is slower: Lifeguard's awareness slows its probing (its ping-reqs to the
  // unreachable majority go unanswered, so it rightly suspects itself).
  t.ok(p.splitDetectedAfterMs !== null, `both sides declared the other failed after ${p.splitDetectedAfterMs} ms`);
  t.same(checkScenario(r, { maxFalseDeaths: 0, convergeAfterHealMs: 2 * PICLOUD_LAN_CONFIG.reconnectIntervalMs }), [], `views agreed ${p.convergedAfterMs} ms after the heal`);
});

t.test('a run replays exactly from its seed', async (t) => {
  const small = scenario({ nodes: 30, durationMs: 60_000 });
  const a = runScenario(small);
  const b = runScenario(small);
  const c = runScenario({ ...small, seed: 8 });
  const summary = (r: typeof a) => JSON.stringify([r.crash, r.join, r.update, r.bytesPerNodePerSec, r.counters]);
  t.equal(summary(a), summary(b), 'same seed, same run');
  t.not(summary(a), summary(c), 'another seed, another run');
});

t.test("the memberlist model agrees with the machine run on memberlist's parameters", async (t) => {
  const r = runScenario(scenario({ config: { ...MEMBERLIST_LAN_CONFIG }, durationMs: 180_000 }));
  const m = modelFor(r);
  // The simulation sends picloud's message sizes, so compare with the same-sizes bound.
  const ratio = r.bytesPerNodePerSec / m.bytesPerNodePerSecSameSizes;
  t.ok(ratio > 0.7 && ratio < 1.3, `simulated ${r.bytesPerNodePerSec.toFixed(0)} vs modelled ${m.bytesPerNodePerSecSameSizes.toFixed(0)} B/node/s`);
  t.ok(m.bytesPerNodePerSec > m.bytesPerNodePerSecSameSizes, "memberlist's own encoding is larger");
  t.ok(r.crash.allKnow.medianMs <= m.detectionMedianMs * 1.1, `simulated median ${r.crash.allKnow.medianMs} vs modelled ${m.detectionMedianMs.toFixed(0)} ms`);
  t.ok(Math.abs(m.detectionMedianMs - (Math.LN2 * 1000 + 1000 + 8000 + m.disseminationMs)) < 1, 'median = ln2·PI + PI + 4·log10(100)·PI + dissemination');
});
