/**
 * Verdicts on a gossip simulation: the properties picloud promises, checked against a run's
 * measurements. A failing check is a bug report for that seed. test/gossip/sim.test.ts shows
 * each checker catching a deliberately injected bug (no refutation → false deaths; suspicion
 * that never expires → crashes never detected).
 */
import type { ScenarioResult } from './scenarios.js';

export interface GossipTargets {
  /** Live, reachable members declared failed (the promise is zero). */
  maxFalseDeaths: number;
  /** Every crash must be known to all live members within this bound (ms). */
  detectionBoundMs?: number;
  /** Median / p99 of "all know a crash" (ms), e.g. memberlist's for the same n. */
  detectionMedianMs?: number;
  detectionP99Ms?: number;
  /** Every join must be known to all live members within this (ms). */
  joinAllKnowMs?: number;
  /** Every metadata change must be known to all within this (ms). */
  updateAllKnowMs?: number;
  /** Average bytes per node per second. */
  bytesPerNodePerSec?: number;
  /** After a partition heals, all views must agree within this (ms). */
  convergeAfterHealMs?: number;
  /** A graceful leave must never be reported as a failure. */
  leaveNeverFailed?: boolean;
}

export function checkScenario(r: ScenarioResult, t: GossipTargets): string[] {
  const v: string[] = [];
  if (!r.completed) v.push(`run did not finish within its wall-clock budget (${r.virtualMs} ms virtual simulated)`);
  if (r.falseDeaths.length > t.maxFalseDeaths) {
    const first = r.falseDeaths[0]!;
    v.push(`${r.falseDeaths.length} false deaths (first: ${first.observer} declared ${first.subject} failed at ${first.atMs} ms)`);
  }
  if (t.detectionBoundMs !== undefined) {
    if (r.crash.incomplete > 0 && r.crash.worstIncompleteMs > t.detectionBoundMs) {
      v.push(`${r.crash.incomplete} crashes not known to all live members after ${r.crash.worstIncompleteMs} ms (bound ${t.detectionBoundMs} ms)`);
    }
    if (r.crash.worstInterruptedMs > t.detectionBoundMs) {
      v.push(`a crash was still not known to all live members ${r.crash.worstInterruptedMs} ms later, when the node restarted (bound ${t.detectionBoundMs} ms)`);
    }
    if (r.crash.allKnow.maxMs > t.detectionBoundMs) {
      v.push(`slowest crash detection ${r.crash.allKnow.maxMs} ms exceeds bound ${t.detectionBoundMs} ms`);
    }
  }
  if (t.detectionMedianMs !== undefined && r.crash.allKnow.medianMs > t.detectionMedianMs) {
    v.push(`detection median ${r.crash.allKnow.medianMs} ms exceeds target ${Math.round(t.detectionMedianMs)} ms`);
  }
  if (t.detectionP99Ms !== undefined && r.crash.allKnow.p99Ms > t.detectionP99Ms) {
    v.push(`detection p99 ${r.crash.allKnow.p99Ms} ms exceeds target ${Math.round(t.detectionP99Ms)} ms`);
  }
  if (t.joinAllKnowMs !== undefined) {
    if (r.join.allKnow.maxMs > t.joinAllKnowMs) v.push(`slowest join known to all after ${r.join.allKnow.maxMs} ms (target ${t.joinAllKnowMs} ms)`);
    if (r.join.incomplete > 0 && r.join.worstIncompleteMs > t.joinAllKnowMs) v.push(`${r.join.incomplete} joins never known to all`);
  }
  if (t.updateAllKnowMs !== undefined) {
    if (r.update.allKnow.maxMs > t.updateAllKnowMs) v.push(`slowest metadata change known to all after ${r.update.allKnow.maxMs} ms (target ${t.updateAllKnowMs} ms)`);
    if (r.update.incomplete > 0 && r.update.worstIncompleteMs > t.updateAllKnowMs) v.push(`${r.update.incomplete} metadata changes never known to all`);
  }
  if (t.bytesPerNodePerSec !== undefined && r.bytesPerNodePerSec > t.bytesPerNodePerSec) {
    v.push(`bandwidth ${r.bytesPerNodePerSec.toFixed(0)} B/node/s exceeds target ${t.bytesPerNodePerSec.toFixed(0)}`);
  }
  if (t.convergeAfterHealMs !== undefined) {
    for (const p of r.partitions) {
      if (p.convergedAfterMs === null || p.convergedAfterMs > t.convergeAfterHealMs) {
        v.push(`after the partition healed, views ${p.convergedAfterMs === null ? 'never agreed' : `agreed only after ${p.convergedAfterMs} ms`} (target ${t.convergeAfterHealMs} ms)`);
      }
    }
  }
  if (t.leaveNeverFailed && r.leftReportedFailed > 0) v.push(`${r.leftReportedFailed} graceful leaves reported as failures`);
  return v;
}
