/**
 * Test fixture: a small network of Linux network namespaces, one per "host", each with its own
 * address on a bridge in the test's namespace (the test process reaches every host, as an
 * operator's client would), and partitions between hosts.
 *
 * A cut is a wrong neighbour entry on both sides: host i sends what it means for host j to a
 * MAC address nobody has, so the bridge floods it and no host takes it. Every send succeeds
 * and every packet is lost, as when a cable is pulled between two switches: established TCP
 * connections stall and back their retransmission timeout off exponentially, new connections
 * hang in SYN_SENT until their timeout, and UDP goes nowhere. (Blackhole routes, the other
 * tool that works without tc or netfilter, which this machine's kernel lacks, fail sends at
 * once with EINVAL and retry a stalled TCP connection every 500 ms without backoff: a kinder
 * fault than a real one.) Healing deletes the entries and ARP finds the real addresses again.
 *
 * Needs root and `ip`; `unavailable()` says why not when a test must skip. Names carry the
 * test's PID, so a lab left by a killed run does not clash (and `destroy` is idempotent).
 */
import { spawnSync } from 'node:child_process';

function run(args: string[]): { ok: boolean; err: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  return { ok: r.status === 0, err: (r.stderr ?? '') + (r.error?.message ?? '') };
}

function must(args: string[]): void {
  const r = run(args);
  if (!r.ok) throw new Error(`ip ${args.join(' ')}: ${r.err.trim()}`);
}

/** A locally administered unicast MAC address no interface here has: frames to it are lost. */
const NOBODY_MAC = '02:00:5e:10:00:01';

/** A 10.x.y.0/24 no interface of this machine is on, picked from `seed` (first three octets). */
function freeSubnet(seed: number): string {
  const used = spawnSync('ip', ['-4', '-o', 'addr'], { encoding: 'utf8' }).stdout ?? '';
  for (let k = 0; k < 1000; k++) {
    const n = seed + k * 7919;
    const subnet = `10.${200 + (n % 50)}.${n % 250}`;
    if (!used.includes(` ${subnet}.`)) return subnet;
  }
  throw new Error('no free 10.x.y.0/24 for the test network');
}

export class NetLab {
  private readonly cuts = new Set<string>();
  private destroyed = false;

  private constructor(
    /** Namespace names, host i's at index i. */
    readonly namespaces: string[],
    private readonly bridge: string,
    private readonly subnet: string,
  ) {}

  /** Why a lab cannot be made here (not root, no iproute2, no namespaces), or undefined. */
  static unavailable(): string | undefined {
    if (process.getuid?.() !== 0) return 'network namespaces need root';
    const probe = `pcprobe${process.pid}`;
    const r = run(['netns', 'add', probe]);
    if (!r.ok) return `ip netns add failed: ${r.err.trim() || 'ip not installed'}`;
    run(['netns', 'del', probe]);
    return undefined;
  }

  /** `hosts` namespaces on one bridge; host i is `address(i)`, the test's side is `.254`. */
  static create(hosts: number): NetLab {
    const tag = `pc${process.pid % 100_000}`;
    const subnet = freeSubnet(process.pid);
    const lab = new NetLab(Array.from({ length: hosts }, (_, i) => `${tag}n${i}`), `${tag}br`, subnet);
    try {
      lab.destroy(); // leftovers of an earlier run with the same PID
      lab.destroyed = false;
      must(['link', 'add', lab.bridge, 'type', 'bridge']);
      must(['addr', 'add', `${subnet}.254/24`, 'dev', lab.bridge]);
      must(['link', 'set', lab.bridge, 'up']);
      lab.namespaces.forEach((ns, i) => {
        must(['netns', 'add', ns]);
        must(['link', 'add', `${tag}h${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
        must(['link', 'set', `${tag}h${i}`, 'master', lab.bridge, 'up']);
        must(['-n', ns, 'link', 'set', 'lo', 'up']);
        must(['-n', ns, 'addr', 'add', `${lab.address(i)}/24`, 'dev', 'eth0']);
        must(['-n', ns, 'link', 'set', 'eth0', 'up']);
      });
      return lab;
    } catch (e) {
      lab.destroy();
      throw e;
    }
  }

  address(i: number): string {
    return `${this.subnet}.${i + 1}`;
  }

  /** The command prefix that runs a program on host i. */
  exec(i: number): string[] {
    return ['ip', 'netns', 'exec', this.namespaces[i]!];
  }

  /** Host i's default route goes through the bridge (the test's side), as a LAN's router. */
  addDefaultRoute(i: number): void {
    must(['-n', this.namespaces[i]!, 'route', 'add', 'default', 'via', `${this.subnet}.254`, 'dev', 'eth0']);
  }

  /** Host i gets a second interface (`eth1`, a veth whose peer stays in its namespace) with `cidr`. */
  addSecondInterface(i: number, cidr: string): void {
    const ns = this.namespaces[i]!;
    must(['-n', ns, 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth1p']);
    must(['-n', ns, 'addr', 'add', cidr, 'dev', 'eth1']);
    must(['-n', ns, 'link', 'set', 'eth1p', 'up']);
    must(['-n', ns, 'link', 'set', 'eth1', 'up']);
  }

  /** Host i and host j can no longer reach each other (both directions); the test still reaches both. */
  cut(i: number, j: number): void {
    for (const [from, to] of [[i, j], [j, i]] as const) {
      const key = `${from}>${to}`;
      if (this.cuts.has(key)) continue;
      must(['-n', this.namespaces[from]!, 'neigh', 'replace', this.address(to), 'lladdr', NOBODY_MAC, 'dev', 'eth0', 'nud', 'permanent']);
      this.cuts.add(key);
    }
  }

  /** Every cut removed. */
  heal(): void {
    for (const key of [...this.cuts]) {
      const [from, to] = key.split('>').map(Number) as [number, number];
      must(['-n', this.namespaces[from]!, 'neigh', 'del', this.address(to), 'dev', 'eth0']);
      this.cuts.delete(key);
    }
  }

  /** Removes the namespaces (their veths go with them) and the bridge; safe to call twice. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const ns of this.namespaces) run(['netns', 'del', ns]);
    run(['link', 'del', this.bridge]);
  }
}
