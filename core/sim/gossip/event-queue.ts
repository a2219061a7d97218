/**
 * Discrete-event queue for the gossip simulator: events at integer virtual milliseconds, FIFO
 * within one millisecond. Events of the same millisecond share a bucket, so the binary heap
 * only orders distinct times — far fewer heap operations than one per event, which matters at
 * tens of millions of packets per run.
 */
export class EventQueue<T> {
  private readonly buckets = new Map<number, T[]>();
  private readonly times: number[] = [];
  private current: T[] | undefined;
  private currentTime = -1;
  private cursor = 0;
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Time of the event being processed (or last processed). */
  get now(): number {
    return this.currentTime;
  }

  push(atMs: number, ev: T): void {
    const t = Math.max(atMs, this.currentTime) | 0;
    this.count++;
    if (t === this.currentTime && this.current) {
      this.current.push(ev);
      return;
    }
    let b = this.buckets.get(t);
    if (!b) {
      b = [];
      this.buckets.set(t, b);
      this.heapPush(t);
    }
    b.push(ev);
  }

  /** Next event in time order, or undefined when the queue is empty or the next is after untilMs. */
  pop(untilMs: number): T | undefined {
    for (;;) {
      if (this.current && this.cursor < this.current.length) {
        const ev = this.current[this.cursor]!;
        this.current[this.cursor++] = undefined as unknown as T;
        this.count--;
        return ev;
      }
      if (this.current) {
        this.buckets.delete(this.currentTime);
        this.current = undefined;
      }
      if (this.times.length === 0) return undefined;
      const t = this.times[0]!;
      if (t > untilMs) return undefined;
      this.heapPop();
      this.currentTime = t;
      this.current = this.buckets.get(t)!;
      this.cursor = 0;
    }
  }

  /** Advances the clock to t when no event is due before it. */
  advanceTo(t: number): void {
    if (t > this.currentTime && (this.times.length === 0 || this.times[0]! >= t) && !this.current) this.currentTime = t;
  }

  private heapPush(t: number): void {
    const h = this.times;
    h.push(t);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]! <= t) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = t;
  }

  private heapPop(): void {
    const h = this.times;
    const last = h.pop()!;
    if (h.length === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && h[r]! < h[l]! ? r : l;
      if (h[c]! >= last) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
  }
}
