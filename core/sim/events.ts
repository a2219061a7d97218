/**
 * The simulator's virtual clock and agenda: a min-heap of timed callbacks ordered by
 * (time, insertion sequence), so two events at the same virtual millisecond always run in
 * the order they were scheduled and a run depends on nothing but its seed.
 * Not responsible for what the events do; callers cancel an event by making its callback
 * a no-op (e.g. comparing a node's incarnation).
 */

import { SimError } from './errors.js';

export type EventFn = () => void;

interface Scheduled {
  atMs: number;
  seq: number;
  fn: EventFn;
}

/** Guards against runaway loops: no simulation needs more pending events than this. */
export const MAX_PENDING_EVENTS = 1_000_000;

export class EventQueue {
  private heap: Scheduled[] = [];
  private seq = 0;
  /** Virtual time in integer milliseconds; advances only when an event runs. */
  nowMs = 0;

  get size(): number {
    return this.heap.length;
  }

  /** Run `fn` `delayMs` (rounded down, at least 0) after now. */
  after(delayMs: number, fn: EventFn): void {
    this.at(this.nowMs + Math.max(0, Math.floor(delayMs)), fn);
  }

  at(atMs: number, fn: EventFn): void {
    if (atMs < this.nowMs) throw new SimError('SIM_TIME_TRAVEL', `event at ${atMs} before now ${this.nowMs}`);
    if (this.heap.length >= MAX_PENDING_EVENTS) throw new SimError('SIM_QUEUE_OVERFLOW', `${this.heap.length} pending events`);
    const ev: Scheduled = { atMs: Math.floor(atMs), seq: this.seq++, fn };
    const h = this.heap;
    let i = h.length;
    h.push(ev);
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p]!;
      if (parent.atMs < ev.atMs || (parent.atMs === ev.atMs && parent.seq < ev.seq)) break;
      h[i] = parent;
      i = p;
    }
    h[i] = ev;
  }

  /** Time of the next event, or Infinity when none is pending. */
  peekMs(): number {
    return this.heap.length > 0 ? this.heap[0]!.atMs : Infinity;
  }

  /** Run the next event if it is due at or before `untilMs`; false when none is. */
  runNext(untilMs: number): boolean {
    const h = this.heap;
    if (h.length === 0 || h[0]!.atMs > untilMs) return false;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      let i = 0;
      const n = h.length;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        let c = l;
        if (r < n && (h[r]!.atMs < h[l]!.atMs || (h[r]!.atMs === h[l]!.atMs && h[r]!.seq < h[l]!.seq))) c = r;
        const child = h[c]!;
        if (last.atMs < child.atMs || (last.atMs === child.atMs && last.seq < child.seq)) break;
        h[i] = child;
        i = c;
      }
      h[i] = last;
    }
    this.nowMs = top.atMs;
    top.fn();
    return true;
  }

  /** Run every event due at or before `untilMs`, then set the clock to `untilMs`. */
  runUntil(untilMs: number): void {
    while (this.runNext(untilMs)) {
      /* each event may schedule more */
    }
    if (untilMs > this.nowMs) this.nowMs = untilMs;
  }
}
