/**
 * The simulated network between endpoints (Raft nodes, clients): every copy of a message is
 * independently lost, duplicated and delayed (variable delay, occasional long spikes, so
 * messages overtake each other), and directed links can be cut to form symmetric or
 * asymmetric partitions that later heal. Messages are deep-copied on send, once per copy.
 *
 * Not responsible for whether the receiver is running (the harness checks that on delivery)
 * nor for when partitions form (faults.ts decides that).
 */
import type { EventQueue } from './events.js';
import type { Prng } from './prng.js';
import { SimError } from './errors.js';

export type Endpoint = number;

export interface NetworkProfile {
  /** Probability that one copy of a message is dropped. */
  lossProbability: number;
  /** Probability that a message is delivered twice; the second copy is a late retransmission (extra delay up to spikeMaxDelayMs). */
  duplicateProbability: number;
  /** Every copy takes a uniform delay in [minDelayMs, maxDelayMs]. */
  minDelayMs: number;
  maxDelayMs: number;
  /** Probability that a copy takes an extra delay up to spikeMaxDelayMs: reorders messages. */
  spikeProbability: number;
  spikeMaxDelayMs: number;
}

/** A LAN of Pis on a switch: 1–3 ms, nothing lost. */
export const RELIABLE_NETWORK: NetworkProfile = {
  lossProbability: 0,
  duplicateProbability: 0,
  minDelayMs: 1,
  maxDelayMs: 3,
  spikeProbability: 0,
  spikeMaxDelayMs: 0,
};

/** Link keys pack (from, to) into one number; endpoints must be below this. */
export const MAX_ENDPOINT = 1 << 20;

export interface NetworkStats {
  sent: number;
  delivered: number;
  lost: number;
  cutByPartition: number;
  duplicated: number;
}

export class SimNetwork<M> {
  /** Directed links that are currently cut. Insertion-ordered set of from * MAX_ENDPOINT + to. */
  private readonly cut = new Set<number>();
  readonly stats: NetworkStats = { sent: 0, delivered: 0, lost: 0, cutByPartition: 0, duplicated: 0 };

  constructor(
    private readonly queue: EventQueue,
    private readonly prng: Prng,
    public profile: NetworkProfile,
    private readonly clone: (m: M) => M,
    private readonly deliver: (to: Endpoint, msg: M) => void,
  ) {
    checkProfile(profile);
  }

  setProfile(profile: NetworkProfile): void {
    checkProfile(profile);
    this.profile = profile;
  }

  /** Sends `msg` from `from` to `to`; returns how many copies are on their way (0, 1 or 2). */
  send(from: Endpoint, to: Endpoint, msg: M): number {
    this.stats.sent++;
    if (this.isCut(from, to)) {
      this.stats.cutByPartition++;
      return 0;
    }
    const p = this.profile;
    const copies = p.duplicateProbability > 0 && this.prng.chance(p.duplicateProbability) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    let scheduled = 0;
    for (let c = 0; c < copies; c++) {
      if (p.lossProbability > 0 && this.prng.chance(p.lossProbability)) {
        this.stats.lost++;
        continue;
      }
      let delayMs = p.minDelayMs + (p.maxDelayMs > p.minDelayMs ? this.prng.int(p.maxDelayMs - p.minDelayMs + 1) : 0);
      // A duplicate is a retransmission: it comes late, possibly after the conversation moved on.
      if (c > 0 || (p.spikeProbability > 0 && this.prng.chance(p.spikeProbability))) delayMs += this.prng.int(p.spikeMaxDelayMs + 1);
      const copy = this.clone(msg);
      scheduled++;
      this.queue.after(delayMs, () => {
        // A partition that formed while the message was in flight cuts it too.
        if (this.isCut(from, to)) {
          this.stats.cutByPartition++;
          return;
        }
        this.stats.delivered++;
        this.deliver(to, copy);
      });
    }
    return scheduled;
  }

  isCut(from: Endpoint, to: Endpoint): boolean {
    return this.cut.size > 0 && this.cut.has(from * MAX_ENDPOINT + to);
  }

  /** Cut the directed link from → to (to may still reach from: an asymmetric partition). */
  cutLink(from: Endpoint, to: Endpoint): void {
    checkEndpoint(from);
    checkEndpoint(to);
    if (from !== to) this.cut.add(from * MAX_ENDPOINT + to);
  }

  /** Symmetric partition: no traffic between endpoints of different groups. */
  partition(groups: readonly (readonly Endpoint[])[]): void {
    for (let g = 0; g < groups.length; g++) {
      for (let h = 0; h < groups.length; h++) {
        if (g === h) continue;
        for (const a of groups[g]!) for (const b of groups[h]!) this.cutLink(a, b);
      }
    }
  }

  /** Asymmetric partition: messages from `senders` to `receivers` are cut; the reverse flows. */
  cutOneWay(senders: readonly Endpoint[], receivers: readonly Endpoint[]): void {
    for (const a of senders) for (const b of receivers) this.cutLink(a, b);
  }

  heal(): void {
    this.cut.clear();
  }

  get cutLinkCount(): number {
    return this.cut.size;
  }
}

function checkEndpoint(e: Endpoint): void {
  if (!Number.isInteger(e) || e < 0 || e >= MAX_ENDPOINT) throw new SimError('SIM_BAD_OPTION', `endpoint ${e} outside [0, ${MAX_ENDPOINT})`);
}

function checkProfile(p: NetworkProfile): void {
  const prob = (x: number): boolean => x >= 0 && x <= 1;
  if (!prob(p.lossProbability) || !prob(p.duplicateProbability) || !prob(p.spikeProbability)) {
    throw new SimError('SIM_BAD_OPTION', 'network probabilities must be in [0, 1]');
  }
  if (!(p.minDelayMs >= 0 && p.maxDelayMs >= p.minDelayMs && p.spikeMaxDelayMs >= 0)) {
    throw new SimError('SIM_BAD_OPTION', 'network delays must satisfy 0 <= min <= max, spike >= 0');
  }
}
