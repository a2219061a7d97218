/**
 * What a run did, in two forms: a 32-bit hash folded over every message sent, fault and
 * client outcome (two runs are identical iff their hashes match, for all practical
 * purposes), and a ring of recent notable events (leader changes, crashes, partitions,
 * membership and snapshot events, client results) printed when a seed fails.
 */
import type { NodeId } from '../raft/types.js';
import { mix, mixString } from './hash.js';

export type TraceKind = 'fault' | 'raft' | 'client';

export interface TraceEvent {
  atMs: number;
  kind: TraceKind;
  /** Nodes the event is about (empty: cluster-wide, e.g. a partition). */
  nodes: NodeId[];
  /** The key a client event is about. */
  key?: string;
  text: string | (() => string);
}

export class Trace {
  hash = 0x12345678;
  private ring: (TraceEvent | undefined)[];
  private next = 0;
  count = 0;

  constructor(readonly ringSize: number) {
    this.ring = new Array<TraceEvent | undefined>(Math.max(1, ringSize));
  }

  /** Fold numbers into the run's hash (hot path: no allocation). */
  fold(a: number, b: number, c: number, d: number): void {
    this.hash = mix(mix(mix(mix(this.hash, a), b), c), d);
  }

  event(atMs: number, kind: TraceKind, nodes: NodeId[], text: string | (() => string), key?: string): void {
    const ev: TraceEvent = { atMs, kind, nodes, text };
    if (key !== undefined) ev.key = key;
    this.ring[this.next] = ev;
    this.next = (this.next + 1) % this.ring.length;
    this.count++;
    if (typeof text === 'string') this.hash = mixString(mix(this.hash, atMs), text);
  }

  /** The last `n` events matching `relevant`, oldest first, formatted. */
  recent(n: number, relevant: (e: TraceEvent) => boolean = () => true): string[] {
    const out: string[] = [];
    for (let k = 1; k <= this.ring.length && out.length < n; k++) {
      const e = this.ring[(this.next - k + this.ring.length) % this.ring.length];
      if (e === undefined) break;
      if (relevant(e)) out.push(`${String(e.atMs).padStart(7)} ms  ${typeof e.text === 'string' ? e.text : e.text()}`);
    }
    return out.reverse();
  }
}
