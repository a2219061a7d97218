/**
 * Durations as etcd's flags take them (Go's time.ParseDuration): a sequence of decimal numbers
 * each with a unit, "10m", "1.5s", "1m30s", "500ms". Used by the auto-compaction retention and
 * the watch progress-notify interval.
 */

const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
const PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/y;

/** Milliseconds in `text`, or undefined if it is not a Go duration with units. */
export function parseDurationMs(text: string): number | undefined {
  const s = text.trim();
  if (s === '') return undefined;
  if (s === '0') return 0;
  let ms = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < s.length) {
    const at = PART.lastIndex;
    const m = PART.exec(s);
    if (m === null || m.index !== at) return undefined;
    ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  }
  return Number.isFinite(ms) ? ms : undefined;
}
