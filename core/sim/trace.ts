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
  /** Client results and everything else are kept apart, so busy clients never push faults out. */
  private readonly rings: { events: (TraceEvent | undefined)[]; next: number }[];
  count = 0;

  constructor(readonly ringSize: number) {
    const size = Math.max(1, ringSize);
    this.rings = [0, 1].map(() => ({ events: new Array<TraceEvent | undefined>(size), next: 0 }));
  }

  /** Fold numbers into the run's hash (hot path: no allocation). */
  fold(a: number, b: number, c: number, d: number): void {
    this.hash = mix(mix(mix(mix(this.hash, a), b), c), d);
  }

  event(atMs: number, kind: TraceKind, nodes: NodeId[], text: string | (() => string), key?: string): void {
    const ev: TraceEvent = { atMs, kind, nodes, text };
    if (key !== undefined) ev.key = key;
    const ring = this.rings[kind === 'client' ? 1 : 0]!;
    ring.events[ring.next] = ev;
    ring.next = (ring.next + 1) % ring.events.length;
    this.count++;
    if (typeof text === 'string') this.hash = mixString(mix(this.hash, atMs), text);
  }

  /** The last `n` events matching `relevant`, oldest first, formatted. */
  recent(n: number, relevant: (e: TraceEvent) => boolean = () => true): string[] {
    const picked: TraceEvent[] = [];
    for (const ring of this.rings) {
      const len = ring.events.length;
      const fromRing: TraceEvent[] = [];
      let got = 0;
      for (let k = 1; k <= len && got < n; k++) {
        const e = ring.events[(ring.next - k + len) % len];
        if (e === undefined) break;
        if (relevant(e)) {
          fromRing.push(e);
          got++;
        }
      }
      picked.push(...fromRing.reverse());
    }
    // Merge both rings by time (stable: insertion order breaks ties within a ring).
    picked.sort((a, b) => a.atMs - b.atMs);
    return picked.slice(-n).map((e) => `${String(e.atMs).padStart(7)} ms  ${typeof e.text === 'string' ? e.text : e.text()}`);
  }
}
