/**
 * Measurement for gossip simulations. Watches every membership event of every node and
 * measures, for each crash, join, metadata change and graceful leave, when each live member
 * learned of it and when the last one did ("all know"); flags every false death (a live,
 * reachable node declared failed); and watches a healed partition until all views agree again.
 * It only observes; verdicts are in checkers.ts.
 */
import type { MemberEvent } from '../../gossip/types.js';
import type { ClusterObserver, SimCluster } from './cluster.js';

export type SpreadKind = 'crash' | 'join' | 'update' | 'leave';

interface Spread {
  kind: SpreadKind;
  subject: number;
  startMs: number;
  incarnation: number;
  /** 1 = must learn it, 2 = learned, 0 = not counted. */
  need: Uint8Array;
  remaining: number;
  doneMs: number | undefined;
  interrupted: boolean;
  /** How long it had been running when interrupted. */
  interruptedAfterMs: number;
}

export interface FalseDeath {
  observer: string;
  subject: string;
  atMs: number;
}

export interface Distribution {
  count: number;
  medianMs: number;
  p99Ms: number;
  maxMs: number;
}

export interface SpreadStats {
  started: number;
  completed: number;
  /** Still not known by every live member when the run ended. */
  incomplete: number;
  /** Ended early on purpose (the subject restarted or crashed meanwhile). */
  interrupted: number;
  /** Time until every live member knew. */
  allKnow: Distribution;
  /** Time until each individual member knew. */
  perMember: Distribution;
  /** Longest wait of any incomplete spread at the end of the run (0 if none). */
  worstIncompleteMs: number;
  /** Longest any interrupted spread had been running without completing (0 if none). */
  worstInterruptedMs: number;
}

export interface PartitionStats {
  startMs: number;
  healMs: number;
  /** Time from partition start until each side had declared the other side failed, or null. */
  splitDetectedAfterMs: number | null;
  /** Time from heal until every live member saw every other as alive again, or null. */
  convergedAfterMs: number | null;
}

export function distribution(samples: number[]): Distribution {
  if (samples.length === 0) return { count: 0, medianMs: NaN, p99Ms: NaN, maxMs: NaN };
  const s = Float64Array.from(samples).sort();
  const q = (p: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!;
  return { count: s.length, medianMs: q(0.5), p99Ms: q(0.99), maxMs: s[s.length - 1]! };
}

export class MembershipTracker implements ClusterObserver {
  private readonly active = new Map<number, Spread[]>();
  private readonly finished: Spread[] = [];
  private readonly perMember: Record<SpreadKind, number[]> = { crash: [], join: [], update: [], leave: [] };
  private readonly nameToIndex = new Map<string, number>();
  private readonly lastCrashMs = new Map<number, number>();
  private readonly leftAtMs = new Map<number, number>();
  private readonly partitions: Array<{ startMs: number; endMs: number; groupOne: ReadonlySet<number> }> = [];
  readonly partitionStats: PartitionStats[] = [];
  readonly falseDeaths: FalseDeath[] = [];
  leftReportedFailed = 0;

  constructor(
    private readonly cluster: SimCluster,
    /** A fail event within this long after a crash or a partition is legitimate. */
    private readonly legitFailWindowMs: number,
  ) {}

  onEvent(observer: number, ev: MemberEvent, nowMs: number): void {
    const subject = this.indexOf(ev.member.name);
    if (subject === undefined) return;
    if (ev.type === 'fail') this.checkFail(observer, subject, nowMs);
    const spreads = this.active.get(subject);
    if (!spreads) return;
    for (const s of spreads) {
      if (s.need[observer] !== 1) continue;
      let learned = false;
      switch (s.kind) {
        case 'crash':
          learned = ev.type === 'fail' || ev.type === 'leave';
          break;
        case 'leave':
          learned = ev.type === 'leave';
          break;
        case 'join':
        case 'update':
          learned = (ev.type === 'join' || ev.type === 'update') && ev.member.incarnation >= s.incarnation;
          break;
      }
      if (!learned) continue;
      s.need[observer] = 2;
      this.perMember[s.kind].push(nowMs - s.startMs);
      this.decrement(s, nowMs);
    }
    this.sweep(subject);
  }

  /** Call right after the subject crashed. */
  noteCrash(subject: number): void {
    const now = this.cluster.now;
    this.lastCrashMs.set(subject, now);
    this.observerGone(subject);
    this.interrupt(subject);
    this.begin('crash', subject, 0);
  }

  /** Call right after the subject (re)started and began joining with `incarnation`. */
  noteJoin(subject: number, incarnation: number): void {
    this.interrupt(subject);
    this.begin('join', subject, incarnation);
  }

  noteUpdate(subject: number, incarnation: number): void {
    this.begin('update', subject, incarnation);
  }

  /** Call when the subject starts leaving gracefully. */
  noteLeave(subject: number): void {
    this.leftAtMs.set(subject, this.cluster.now);
    this.interrupt(subject);
    this.begin('leave', subject, 0);
  }

  /** Call when the subject's process stops after leaving. */
  noteStopped(subject: number): void {
    this.observerGone(subject);
  }

  notePartition(groupOne: ReadonlySet<number>, durationMs: number): void {
    const startMs = this.cluster.now;
    this.partitions.push({ startMs, endMs: startMs + durationMs, groupOne });
    const stats: PartitionStats = { startMs, healMs: startMs + durationMs, splitDetectedAfterMs: null, convergedAfterMs: null };
    this.partitionStats.push(stats);
    const poll = (): void => {
      const now = this.cluster.now;
      if (now >= stats.healMs) return;
      if (this.splitComplete(groupOne)) {
        stats.splitDetectedAfterMs = now - startMs;
        return;
      }
      this.cluster.at(now + 500, poll);
    };
    this.cluster.at(startMs + 500, poll);
  }

  /** Polls after a heal until every live member sees all others alive (or untilMs). */
  watchConvergence(untilMs: number): void {
    const stats = this.partitionStats[this.partitionStats.length - 1];
    if (!stats) return;
    const poll = (): void => {
      const now = this.cluster.now;
      if (this.converged()) {
        stats.convergedAfterMs = now - stats.healMs;
        return;
      }
      if (now + 500 <= untilMs) this.cluster.at(now + 500, poll);
    };
    this.cluster.at(stats.healMs + 500, poll);
  }

  stats(kind: SpreadKind, endMs: number): SpreadStats {
    const all = [...this.finished, ...[...this.active.values()].flat()].filter((s) => s.kind === kind);
    const done = all.filter((s) => s.doneMs !== undefined);
    const incomplete = all.filter((s) => s.doneMs === undefined && !s.interrupted);
    return {
      started: all.length,
      completed: done.length,
      incomplete: incomplete.length,
      interrupted: all.filter((s) => s.interrupted).length,
      allKnow: distribution(done.map((s) => s.doneMs! - s.startMs)),
      perMember: distribution(this.perMember[kind]),
      worstIncompleteMs: incomplete.reduce((m, s) => Math.max(m, endMs - s.startMs), 0),
      worstInterruptedMs: all.reduce((m, s) => (s.interrupted ? Math.max(m, s.interruptedAfterMs) : m), 0),
    };
  }

  /** Spreads still running that started before cutoffMs (for checking a finished run). */
  overdue(kind: SpreadKind, cutoffMs: number): number {
    let n = 0;
    for (const list of this.active.values()) for (const s of list) if (s.kind === kind && s.startMs < cutoffMs && !s.interrupted) n++;
    return n;
  }

  // -------------------------------------------------------------------------------------------

  private indexOf(name: string): number | undefined {
    let i = this.nameToIndex.get(name);
    if (i === undefined) {
      const n = Number(name.slice(name.lastIndexOf('-') + 1));
      if (!Number.isInteger(n)) return undefined;
      i = n;
      this.nameToIndex.set(name, i);
    }
    return i;
  }

  private begin(kind: SpreadKind, subject: number, incarnation: number): void {
    const n = this.cluster.nodes.length;
    const need = new Uint8Array(n);
    let remaining = 0;
    for (let i = 0; i < n; i++) {
      if (i !== subject && this.cluster.isUp(i) && !this.leftAtMs.has(i)) {
        need[i] = 1;
        remaining++;
      }
    }
    const s: Spread = { kind, subject, startMs: this.cluster.now, incarnation, need, remaining, doneMs: undefined, interrupted: false, interruptedAfterMs: 0 };
    if (remaining === 0) s.doneMs = s.startMs;
    const list = this.active.get(subject) ?? [];
    list.push(s);
    this.active.set(subject, list);
    this.sweep(subject);
  }

  private decrement(s: Spread, nowMs: number): void {
    s.remaining--;
    if (s.remaining === 0 && s.doneMs === undefined) s.doneMs = nowMs;
  }

  /** An observer crashed or stopped: it no longer has to learn anything. */
  private observerGone(observer: number): void {
    const now = this.cluster.now;
    for (const list of this.active.values()) {
      for (const s of list) {
        if (s.need[observer] === 1) {
          s.need[observer] = 0;
          this.decrement(s, now);
        }
      }
    }
    for (const subject of [...this.active.keys()]) this.sweep(subject);
  }

  /** The subject changed life: what was spreading about its previous life is moot. */
  private interrupt(subject: number): void {
    const list = this.active.get(subject);
    if (!list) return;
    for (const s of list) {
      if (s.doneMs === undefined) {
        s.interrupted = true;
        s.interruptedAfterMs = this.cluster.now - s.startMs;
      }
    }
    this.sweep(subject);
  }

  private sweep(subject: number): void {
    const list = this.active.get(subject);
    if (!list) return;
    const keep = list.filter((s) => s.doneMs === undefined && !s.interrupted);
    for (const s of list) if (s.doneMs !== undefined || s.interrupted) this.finished.push(s);
    if (keep.length === 0) this.active.delete(subject);
    else this.active.set(subject, keep);
  }

  private checkFail(observer: number, subject: number, nowMs: number): void {
    const left = this.leftAtMs.get(subject);
    if (left !== undefined) {
      if (nowMs - left < this.legitFailWindowMs * 4) this.leftReportedFailed++;
      return;
    }
    if (!this.cluster.isUp(subject)) return;
    const crashed = this.lastCrashMs.get(subject);
    if (crashed !== undefined && nowMs - crashed < this.legitFailWindowMs) return;
    for (const p of this.partitions) {
      if (p.startMs <= nowMs && p.endMs + this.legitFailWindowMs >= nowMs && p.groupOne.has(observer) !== p.groupOne.has(subject)) return;
    }
    const nodes = this.cluster.nodes;
    this.falseDeaths.push({ observer: nodes[observer]!.name, subject: nodes[subject]!.name, atMs: nowMs });
  }

  private splitComplete(groupOne: ReadonlySet<number>): boolean {
    const sideOne = groupOne.size;
    let up = 0;
    for (const n of this.cluster.nodes) if (n.machine) up++;
    for (const n of this.cluster.nodes) {
      if (!n.machine) continue;
      const side = groupOne.has(n.index) ? sideOne : up - sideOne;
      if (n.machine.viewSummary().live !== side - 1) return false;
    }
    return true;
  }

  private converged(): boolean {
    const up = this.cluster.liveNodes();
    for (const n of this.cluster.nodes) {
      if (!n.machine) continue;
      const v = n.machine.viewSummary();
      if (v.live !== up - 1 || v.suspect !== 0) return false;
    }
    return true;
  }
}
