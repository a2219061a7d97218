/**
 * Automatic compaction (etcd's `--auto-compaction-mode` / `--auto-compaction-retention`):
 * decides, on the leader, when to propose a compaction and at which revision. picloud keeps
 * history in memory, so a cluster that is never compacted grows until the space quota stops
 * its writes; this keeps a bounded window instead.
 *
 * - periodic: keep `retentionMs` of history. A sample (time, revision) is taken every tenth
 *   of the retention (at least MIN_SAMPLE_INTERVAL_MS apart); the compaction point is the
 *   newest revision sampled at least `retentionMs` ago, as etcd's periodic compactor does.
 * - revision: keep the last `retentionRevisions` revisions; checked every
 *   REVISION_CHECK_INTERVAL_MS (etcd: 5 minutes).
 *
 * Nothing is proposed when the compaction point has not moved, so an idle cluster writes
 * nothing (SD-card wear). Pure: time and the store's revisions are passed in.
 */
import { parseDurationMs } from './duration.js';

export type AutoCompactionMode = 'periodic' | 'revision' | 'off';

export interface AutoCompactionConfig {
  mode: AutoCompactionMode;
  /** periodic: milliseconds of history kept. */
  retentionMs?: number;
  /** revision: revisions kept. */
  retentionRevisions?: number;
}

/** picloud's default: one hour of history (etcd's is off; kube-apiserver compacts every 5 minutes). */
export const DEFAULT_AUTO_COMPACTION: Readonly<AutoCompactionConfig> = Object.freeze({ mode: 'periodic', retentionMs: 3_600_000 });
export const REVISION_CHECK_INTERVAL_MS = 5 * 60_000;
export const MIN_SAMPLE_INTERVAL_MS = 100;
/** Samples kept for the periodic mode (one retention window at ten per window, plus slack). */
const MAX_SAMPLES = 64;

export class AutoCompactor {
  private samples: Array<{ atMs: number; revision: number }> = [];
  private lastCheckMs = -Infinity;

  constructor(readonly config: AutoCompactionConfig) {
    if (config.mode === 'periodic' && !(Number.isFinite(config.retentionMs) && config.retentionMs! > 0)) {
      throw new RangeError('periodic auto-compaction needs a positive retentionMs');
    }
    if (config.mode === 'revision' && !(Number.isSafeInteger(config.retentionRevisions) && config.retentionRevisions! > 0)) {
      throw new RangeError('revision auto-compaction needs a positive integer retentionRevisions');
    }
  }

  /** Milliseconds between samples or checks. */
  get intervalMs(): number {
    if (this.config.mode === 'periodic') return Math.max(MIN_SAMPLE_INTERVAL_MS, this.config.retentionMs! / 10);
    return REVISION_CHECK_INTERVAL_MS;
  }

  /** Forget samples (on losing leadership: a later term starts its own window). */
  reset(): void {
    this.samples = [];
    this.lastCheckMs = -Infinity;
  }

  /**
   * Call regularly on the leader. Returns the revision to compact at, or undefined when
   * nothing should be proposed now.
   */
  tick(nowMs: number, currentRevision: number, compactRevision: number): number | undefined {
    if (this.config.mode === 'off' || nowMs - this.lastCheckMs < this.intervalMs) return undefined;
    this.lastCheckMs = nowMs;
    let target: number | undefined;
    if (this.config.mode === 'revision') {
      target = currentRevision - this.config.retentionRevisions!;
    } else {
      this.samples.push({ atMs: nowMs, revision: currentRevision });
      const horizon = nowMs - this.config.retentionMs!;
      let newestOld = -1;
      for (let i = 0; i < this.samples.length; i++) if (this.samples[i]!.atMs <= horizon) newestOld = i;
      if (newestOld >= 0) {
        target = this.samples[newestOld]!.revision;
        this.samples.splice(0, newestOld); // keep that sample: it may still be the point next time
      }
      if (this.samples.length > MAX_SAMPLES) this.samples.splice(0, this.samples.length - MAX_SAMPLES);
    }
    if (target === undefined || target <= Math.max(compactRevision, 1)) return undefined;
    return target;
  }
}

/** Parses etcd-style flags: periodic retention "1h", "30m", "90s", "500ms" or hours as a number; revision retention a count. */
export function parseAutoCompaction(mode: string, retention: string | undefined): AutoCompactionConfig {
  if (mode === 'off') return { mode: 'off' };
  if (mode === 'periodic') {
    const text = retention ?? '1h';
    // A bare number is hours (etcd's reading of this flag); otherwise a Go duration.
    const retentionMs = /^\d+(?:\.\d+)?$/.test(text.trim()) ? Number(text) * 3_600_000 : parseDurationMs(text);
    if (retentionMs === undefined) throw new RangeError(`periodic retention: expected a duration like 1h, 30m, 90s or hours as a number, got "${text}"`);
    if (!(retentionMs >= MIN_SAMPLE_INTERVAL_MS)) throw new RangeError(`periodic retention: at least ${MIN_SAMPLE_INTERVAL_MS} ms, got "${text}"`);
    return { mode, retentionMs };
  }
  if (mode === 'revision') {
    const n = Number(retention);
    if (retention === undefined || !Number.isSafeInteger(n) || n < 1) throw new RangeError(`revision retention: expected a positive number of revisions, got "${retention ?? ''}"`);
    return { mode, retentionRevisions: n };
  }
  throw new RangeError(`auto-compaction mode: expected periodic, revision or off, got "${mode}"`);
}
