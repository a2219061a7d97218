/**
 * Test fixture: real `picloud-node agent` processes with free ports, a shared token, readiness
 * waits, and kill/stop/restart by PID. Every process is killed in teardown. Agents run on
 * loopback unless given a host of their own (an address and a command prefix that runs there,
 * e.g. a network namespace from netns.ts).
 */
import type { Test } from 'tap';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { NODE_FLAGS } from '../../agent/node-flags.js';

export const CLI = join(process.cwd(), 'dist/agent/cli.js');

export { freePort };

export interface AgentPorts {
  client: number;
  peer: number;
  gossip: number;
  http: number;
}

export interface AgentProc {
  name: string;
  /** Flags for this agent only (e.g. --role worker). */
  extraArgs?: string[];
  /** Flags for node itself, before the agent's script (e.g. --import a test fixture). */
  nodeArgs?: string[];
  dataDir: string;
  ports: AgentPorts;
  proc?: ChildProcess;
  log: string[];
  /** The address it binds and is reached at (default 127.0.0.1). */
  host: string;
  /** A command prefix that runs the agent where `host` is (e.g. `ip netns exec NS`). */
  wrap?: string[];
  /** Started without --bind: it binds every interface and picks the address it advertises. */
  bindAll?: boolean;
  /** Environment for this agent only, over the test's own. */
  env?: Record<string, string>;
  /** The member it joins through (default: the cluster's first agent, which may since have been removed). */
  joinVia?: AgentProc;
}

/** Where an agent runs when not on loopback. */
export interface AgentHost {
  host: string;
  wrap: string[];
}

export class AgentCluster {
  readonly agents: AgentProc[] = [];
  readonly root = mkdtempSync(join(tmpdir(), 'picloud-test-'));
  token = '';
  /** etcdctl flags the cluster's own checks need (e.g. --cacert when the client port is TLS). */
  ctlArgs: string[] = [];
  /** Per started process: settles with its exit code once it has exited and its stdio closed. */
  private readonly closed = new WeakMap<ChildProcess, Promise<number | null>>();

  constructor(private readonly extraArgs: string[] = ['--tick-ms', '50']) {}

  async add(name: string, where?: AgentHost): Promise<AgentProc> {
    const ports = { client: await freePort(), peer: await freePort(), gossip: await freePort(), http: await freePort() };
    const a: AgentProc = { name, dataDir: join(this.root, name), ports, log: [], host: where?.host ?? '127.0.0.1', wrap: where?.wrap };
    this.agents.push(a);
    return a;
  }

  /** bootstrap: --bootstrap; false: --join the cluster's first agent; 'restart': neither (a manager's data dir holds its member). */
  args(a: AgentProc, bootstrap: boolean | 'restart'): string[] {
    const base = [
      'agent', '--name', a.name, '--data-dir', a.dataDir, ...(a.bindAll === true ? [] : ['--bind', a.host]),
      '--client-port', String(a.ports.client), '--peer-port', String(a.ports.peer),
      '--gossip-port', String(a.ports.gossip), '--http-port', String(a.ports.http), ...this.extraArgs, ...(a.extraArgs ?? []),
    ];
    if (bootstrap === 'restart') return base;
    if (bootstrap) return [...base, '--bootstrap'];
    const via = a.joinVia ?? this.agents[0]!;
    return [...base, '--join', `${via.host}:${via.ports.gossip}`, '--token', this.token];
  }

  start(a: AgentProc, bootstrap: boolean | 'restart'): void {
    // `ip netns exec` execs the command, so the PID is the agent's either way.
    const [cmd, ...pre] = [...(a.wrap ?? []), process.execPath];
    const proc = spawn(cmd!, [...pre, ...NODE_FLAGS, ...(a.nodeArgs ?? []), CLI, ...this.args(a, bootstrap)], {
      stdio: ['ignore', 'ignore', 'pipe'],
      ...(a.env === undefined ? {} : { env: { ...process.env, ...a.env } }),
    });
    proc.stderr!.on('data', (d: Buffer) => {
      a.log.push(d.toString());
      if (a.log.length > 500) a.log.shift();
    });
    // 'close' follows the exit once the process's stderr has been read to its end: what it said
    // last is in a.log by then ('exit' can come before it).
    this.closed.set(proc, new Promise((resolve) => proc.once('close', (code) => resolve(code))));
    a.proc = proc;
  }

  async ready(a: AgentProc, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (a.proc && a.proc.exitCode !== null) throw new Error(`${a.name} exited: ${a.log.join('').slice(-2000)}`);
      try {
        const r = await fetch(`http://${a.host}:${a.ports.http}/ready`);
        if (r.status === 200) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`${a.name} not ready after ${timeoutMs} ms: ${a.log.join('').slice(-2000)}`);
  }

  /** Bootstrap the first agent, join the others, wait until all are ready and voters. */
  async startCluster(names: string[], hosts: AgentHost[] = []): Promise<void> {
    for (const [i, n] of names.entries()) await this.add(n, hosts[i]);
    await this.startAdded();
  }

  /** startCluster for agents already added (e.g. given data dirs of their own). */
  async startAdded(): Promise<void> {
    const [first, ...rest] = this.agents;
    this.start(first!, true);
    await this.ready(first!);
    this.token = readFileSync(join(first!.dataDir, 'token'), 'utf8').trim();
    for (const a of rest) this.start(a, false);
    for (const a of rest) await this.ready(a);
    await this.waitVoters(this.agents.length);
  }

  async waitVoters(n: number, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const r = etcdctl(this.endpoints(), [...this.ctlArgs, 'member', 'list', '-w', 'json']);
      if (r.status === 0) {
        const members = (JSON.parse(r.stdout) as { members?: Array<{ isLearner?: boolean }> }).members ?? [];
        if (members.length === n && members.every((m) => !m.isLearner)) return;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`cluster did not reach ${n} voters`);
  }

  endpoints(agents: AgentProc[] = this.agents): string {
    return agents.map((a) => `${a.host}:${a.ports.client}`).join(',');
  }

  kill(a: AgentProc, signal: NodeJS.Signals = 'SIGKILL'): void {
    a.proc?.kill(signal);
  }

  /** The agent's exit code once it has exited and its stderr is all in a.log (null: killed by a signal). */
  exited(a: AgentProc, timeoutMs = 15_000): Promise<number | null> {
    const closed = a.proc === undefined ? undefined : this.closed.get(a.proc);
    if (closed === undefined) throw new Error(`${a.name} was not started by this cluster`);
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      closed,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${a.name} still running after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
  }

  async stopAll(): Promise<void> {
    for (const a of this.agents) {
      if (a.proc && a.proc.exitCode === null) {
        a.proc.kill('SIGCONT');
        a.proc.kill('SIGKILL');
      }
    }
    await new Promise((r) => setTimeout(r, 100));
    rmSync(this.root, { recursive: true, force: true });
  }
}

export function hasEtcdctl(): boolean {
  return spawnSync('sh', ['-c', 'command -v etcdctl'], { stdio: 'ignore' }).status === 0;
}

export function etcdctl(endpoints: string, args: string[], input?: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('etcdctl', ['--endpoints', endpoints, '--command-timeout=10s', ...args], {
    env: { ...process.env, ETCDCTL_API: '3' },
    input,
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** etcdctl without blocking the test's event loop (so the test can fault agents while it runs). */
export function etcdctlAsync(endpoints: string, args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn('etcdctl', ['--endpoints', endpoints, '--command-timeout=10s', ...args], { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 30_000 });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ status: code ?? -1, stdout, stderr }));
  });
}

/** Runs etcdctl commands in order, each asserted to succeed (arguments holding a password left out of the message). */
export function etcdctlSteps(t: Test, endpoints: string, steps: string[][]): void {
  for (const args of steps) {
    const r = etcdctl(endpoints, args);
    t.equal(r.status, 0, `etcdctl ${args.filter((a) => !a.includes(':')).join(' ')}${r.status === 0 ? '' : ': ' + r.stderr}`);
  }
}

/**
 * `etcdctl endpoint hashkv` on each agent, once they all answer at the same revision (each
 * hashes its own applied state, so a member still applying is waited for, up to timeoutMs).
 */
export async function hashKvOfEachAgent(cluster: AgentCluster, args: string[] = [], timeoutMs = 10_000): Promise<{ revisions: number[]; hashes: number[] }> {
  type HashKv = Array<{ HashKV: { hash: number; header: { revision: number } } }>;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const all = cluster.agents.map((a) => {
      const r = etcdctl(cluster.endpoints([a]), ['endpoint', 'hashkv', '-w', 'json', ...args]);
      if (r.status !== 0) throw new Error(`endpoint hashkv on ${a.name}: ${r.stderr}`);
      return (JSON.parse(r.stdout) as HashKv)[0]!.HashKV;
    });
    const revisions = all.map((h) => h.header.revision);
    if (new Set(revisions).size === 1 || Date.now() > deadline) return { revisions, hashes: all.map((h) => h.hash) };
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** What an agent's GET /v1/raft/status says. */
export interface RaftStatus {
  id: string;
  name: string;
  lead: string;
  role: string;
  term: number;
  commit: number;
  applied: number;
}

/** `a`'s Raft status, or undefined if it does not answer within 300 ms (stopped, cut off). */
export async function raftStatus(a: AgentProc): Promise<RaftStatus | undefined> {
  try {
    const r = await fetch(`http://${a.host}:${a.ports.http}/v1/raft/status`, { signal: AbortSignal.timeout(300) });
    return r.ok ? ((await r.json()) as RaftStatus) : undefined;
  } catch {
    return undefined;
  }
}

/** etcd's Authenticate through the JSON gateway at `endpoint` (host:port): the token. */
export async function gatewayLogin(endpoint: string, name: string, password: string): Promise<string> {
  const r = await fetch(`http://${endpoint}/v3/auth/authenticate`, { method: 'POST', body: JSON.stringify({ name, password }), signal: AbortSignal.timeout(15_000) });
  const body = (await r.json()) as { token?: unknown };
  if (typeof body.token !== 'string') throw new Error(`login of ${name} at ${endpoint}: ${JSON.stringify(body)}`);
  return body.token;
}

/** The agent that leads (by its /v1/raft/status), waited for up to timeoutMs. */
export async function leaderAgent(cluster: AgentCluster, timeoutMs = 10_000): Promise<AgentProc> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const st = await Promise.all(cluster.agents.map((a) => raftStatus(a)));
    const i = st.findIndex((s) => s?.role === 'leader');
    if (i >= 0) return cluster.agents[i]!;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no leader within ${timeoutMs} ms`);
}

/** A cluster of `names` started for `t` (stopped in its teardown), with its leader and a follower. */
export async function startedCluster(t: Test, names: string[], extraArgs?: string[]): Promise<{ cluster: AgentCluster; leader: AgentProc; follower: AgentProc }> {
  const cluster = new AgentCluster(extraArgs);
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(names);
  const leader = await leaderAgent(cluster);
  return { cluster, leader, follower: cluster.agents.find((a) => a !== leader)! };
}

/** An agent's /metrics as a map from `name{labels}` to value (Prometheus text format). */
export async function scrapeMetrics(httpPort: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) values.set(m[1]!, Number(m[2]));
  }
  return values;
}
