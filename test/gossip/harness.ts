/**
 * A tiny hand-driven network for GossipMachine unit tests: instant in-order delivery, a manual
 * clock, a drop filter, and a log of every packet and event, so a test reads as a story
 * ("x stops answering; after the probe timeout a asks b and c; …").
 */
import { LOCAL_CONFIG, type GossipConfig } from '../../core/gossip/config.js';
import { GossipMachine } from '../../core/gossip/machine.js';
import type { Address, Effects, MemberEvent, Message, Meta, PushPullEntry, StreamMsg } from '../../core/gossip/types.js';
import { Prng } from '../../core/sim/prng.js';

export interface Sent {
  atMs: number;
  from: string;
  to: string;
  msgs: Message[];
  sizeBytes: number;
}

export interface Seen {
  atMs: number;
  observer: string;
  ev: MemberEvent;
}

type Job =
  | { k: 'packet'; from: string; fromAddr: Address; to: string; msgs: Message[] }
  /* streams obey `down` and `drop` (called with no messages) too */
  | { k: 'stream'; from: string; id: number; to: string; req: StreamMsg };

export class TestNet {
  now = 0;
  readonly machines = new Map<string, GossipMachine>();
  /** Crashed nodes: everything to or from them is lost. */
  readonly down = new Set<string>();
  readonly sent: Sent[] = [];
  readonly events: Seen[] = [];
  /** Return true to drop a packet. */
  drop: (from: string, to: string, msgs: Message[]) => boolean = () => false;
  private readonly jobs: Job[] = [];
  private readonly rng = new Prng(42);

  constructor(readonly config: GossipConfig = { ...LOCAL_CONFIG }) {}

  private static readonly addresses = new Map<string, Address>();

  /** A stable, distinct address per node name. */
  static addr(name: string): Address {
    let a = TestNet.addresses.get(name);
    if (!a) {
      const i = TestNet.addresses.size + 1;
      a = { host: `10.9.${i >> 8}.${i & 255}`, port: 7946 };
      TestNet.addresses.set(name, a);
    }
    return a;
  }

  nameOf(a: Address): string | undefined {
    for (const [n, m] of this.machines) if (m.address.host === a.host && m.address.port === a.port) return n;
    return undefined;
  }

  /** Nodes that already know each other (a converged cluster). */
  static cluster(names: string[], config?: Partial<GossipConfig>, meta: Meta = {}): TestNet {
    const net = new TestNet({ ...LOCAL_CONFIG, ...config });
    const entries: PushPullEntry[] = names.map((n) => ({ name: n, incarnation: 0, ...hostPort(TestNet.addr(n)), status: 'alive', meta, protocol: 1 }));
    for (const n of names) net.add(n, { initialMembers: entries, meta });
    return net;
  }

  add(name: string, opts: { initialMembers?: PushPullEntry[]; meta?: Meta; incarnation?: number; address?: Address; reaped?: Array<[string, number]> } = {}): GossipMachine {
    const m = new GossipMachine({
      name,
      address: opts.address ?? TestNet.addr(name),
      meta: opts.meta ?? {},
      incarnation: opts.incarnation ?? 0,
      config: this.config,
      random: this.rng.fork(),
      nowMs: this.now,
      initialMembers: opts.initialMembers,
      reaped: opts.reaped,
    });
    this.machines.set(name, m);
    this.down.delete(name);
    return m;
  }

  m(name: string): GossipMachine {
    return this.machines.get(name)!;
  }

  /** Runs an input on a machine and carries out its effects (delivering everything). */
  do(name: string, fn: (m: GossipMachine) => Effects): void {
    this.apply(name, fn(this.m(name)));
    this.flush();
  }

  /** Advances the clock in steps, ticking every live machine and delivering everything. */
  advance(ms: number, stepMs = 10): void {
    const end = this.now + ms;
    while (this.now < end) {
      this.now = Math.min(end, this.now + stepMs);
      for (const [name, m] of this.machines) if (!this.down.has(name)) this.apply(name, m.tick(this.now));
      this.flush();
    }
  }

  eventsAbout(subject: string, type?: MemberEvent['type']): Seen[] {
    return this.events.filter((e) => e.ev.member.name === subject && (type === undefined || e.ev.type === type));
  }

  packets(pred: (s: Sent) => boolean): Sent[] {
    return this.sent.filter(pred);
  }

  private apply(name: string, fx: Effects): void {
    const m = this.m(name);
    for (const p of fx.packets) {
      const to = this.nameOf(p.to) ?? `${p.to.host}:${p.to.port}`;
      this.sent.push({ atMs: this.now, from: name, to, msgs: p.messages, sizeBytes: p.sizeBytes });
      this.jobs.push({ k: 'packet', from: name, fromAddr: m.address, to, msgs: p.messages });
    }
    for (const s of fx.streams) this.jobs.push({ k: 'stream', from: name, id: s.id, to: this.nameOf(s.to) ?? '?', req: s.request });
    for (const ev of fx.events) this.events.push({ atMs: this.now, observer: name, ev });
  }

  private flush(): void {
    for (let guard = 0; this.jobs.length > 0 && guard < 100_000; guard++) {
      const j = this.jobs.shift()!;
      if (j.k === 'packet') {
        if (this.down.has(j.to) || this.down.has(j.from) || !this.machines.has(j.to) || this.drop(j.from, j.to, j.msgs)) continue;
        this.apply(j.to, this.m(j.to).step(j.msgs, j.fromAddr, this.now));
      } else {
        const client = this.m(j.from);
        if (this.down.has(j.to) || !this.machines.has(j.to) || this.drop(j.from, j.to, []) || this.drop(j.to, j.from, [])) {
          this.apply(j.from, client.streamResult(j.id, null, this.now));
          continue;
        }
        const { reply, effects } = this.m(j.to).handleStream(j.req, this.now);
        this.apply(j.to, effects);
        this.apply(j.from, client.streamResult(j.id, reply, this.now));
      }
    }
  }
}

function hostPort(a: Address): { host: string; port: number } {
  return { host: a.host, port: a.port };
}
