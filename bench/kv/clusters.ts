/**
 * Starts and stops the two three-member clusters the KV benchmark compares, on loopback with
 * free ports and fsync on: picloud agents (dist/agent/cli.js) and etcd 3.4 (/usr/bin/etcd).
 * Every process started here is tracked by PID and killed by stop(), also on error.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../test/helpers/ports.js';
import { memberList, memberStatus } from './client.js';
import { NODE_FLAGS } from '../../agent/node-flags.js';

/** How long a cluster may take to elect a leader and promote its members. */
export const CLUSTER_START_TIMEOUT_MS = 60_000;
/** How long a member may take to exit after SIGTERM (a CPU profile is written on exit) before SIGKILL. */
export const STOP_GRACE_MS = 10_000;
/** Lines of each member's stderr kept for error messages. */
export const LOG_TAIL_LINES = 200;

/** dist/bench/kv/clusters.js → dist/agent/cli.js */
export const AGENT_CLI: string = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'agent', 'cli.js');
export const ETCD_BIN = '/usr/bin/etcd';

export type SystemName = 'picloud' | 'etcd';

export interface Member {
  name: string;
  clientEndpoint: string;
  dataDir: string;
  proc: ChildProcess;
  logTail: string[];
  /** picloud only: the member's /metrics (Raft counters). */
  metricsUrl?: string;
}

export interface BenchCluster {
  system: SystemName;
  members: Member[];
  pids(): number[];
  /** The client endpoint of the current leader. */
  leaderEndpoint(): Promise<string>;
  stop(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * PICLOUD_BENCH_STDOUT_DIR=dir writes each member's stdout to dir/NAME.out (what V8's --trace-gc
 * flags print, passed with PICLOUD_NODE_ARGS); otherwise it is dropped.
 */
function memberStdout(name: string): 'ignore' | number {
  const dir = process.env.PICLOUD_BENCH_STDOUT_DIR;
  return dir ? openSync(join(dir, `${name}.out`), 'w') : 'ignore';
}

export function spawnMember(name: string, cmd: string, args: string[], clientEndpoint: string, dataDir: string): Member {
  const stdout = memberStdout(name);
  const proc = spawn(cmd, args, { stdio: ['ignore', stdout, 'pipe'] });
  if (typeof stdout === 'number') closeSync(stdout); // the child has its own copy
  const m: Member = { name, clientEndpoint, dataDir, proc, logTail: [] };
  proc.stderr!.on('data', (d: Buffer) => {
    m.logTail.push(d.toString());
    if (m.logTail.length > LOG_TAIL_LINES) m.logTail.shift();
  });
  return m;
}

function assertAlive(m: Member): void {
  if (m.proc.exitCode !== null || m.proc.signalCode !== null) {
    throw new Error(`${m.name} exited (${m.proc.exitCode ?? m.proc.signalCode}): ${m.logTail.join('').slice(-2000)}`);
  }
}

async function stopMembers(members: Member[]): Promise<void> {
  const exits = members.map((m) =>
    m.proc.exitCode !== null || m.proc.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => m.proc.once('exit', () => r())),
  );
  for (const m of members) if (m.proc.pid !== undefined && m.proc.exitCode === null) m.proc.kill('SIGTERM');
  const timer = setTimeout(() => {
    for (const m of members) if (m.proc.exitCode === null && m.proc.signalCode === null) m.proc.kill('SIGKILL');
  }, STOP_GRACE_MS);
  await Promise.all(exits);
  clearTimeout(timer);
}

async function leaderOf(members: Member[]): Promise<string> {
  const deadline = Date.now() + CLUSTER_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    for (const m of members) {
      try {
        const s = await memberStatus(m.clientEndpoint);
        if (s.leader !== '0' && s.leader === s.memberId) return m.clientEndpoint;
      } catch {
        // not serving yet, or between leaders
      }
    }
    await sleep(100);
  }
  throw new Error('no leader found');
}

/** Waits until every member answers Status with a leader and the member list has `n` voters. */
async function waitVoters(members: Member[], n: number): Promise<void> {
  const deadline = Date.now() + CLUSTER_START_TIMEOUT_MS;
  let last = '';
  while (Date.now() < deadline) {
    for (const m of members) assertAlive(m);
    try {
      const statuses = await Promise.all(members.map((m) => memberStatus(m.clientEndpoint)));
      const list = await memberList(members[0]!.clientEndpoint);
      if (statuses.every((s) => s.leader !== '0') && list.length === n && list.every((x) => !x.isLearner)) return;
      last = `members ${JSON.stringify(list.map((x) => [x.name, x.isLearner]))}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(200);
  }
  throw new Error(`cluster did not reach ${n} voters with a leader: ${last}`);
}

function makeCluster(system: SystemName, members: Member[], root: string): BenchCluster {
  return {
    system,
    members,
    pids: () => members.map((m) => m.proc.pid!),
    leaderEndpoint: () => leaderOf(members),
    stop: async () => {
      await stopMembers(members);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface PicloudOptions {
  root: string;
  /** Node arguments for every agent after NODE_FLAGS, which it always gets (e.g. --cpu-prof --cpu-prof-dir DIR). */
  nodeArgs?: string[];
  tickMs?: number;
  electionTicks?: number;
  /** Extra agent flags for every member. */
  agentArgs?: string[];
  /** Members (default 3). */
  size?: number;
}

/** Three (or `size`) picloud managers: the first bootstraps, the others join and are promoted. */
export async function startPicloud(opts: PicloudOptions): Promise<BenchCluster> {
  const root = join(opts.root, 'picloud');
  mkdirSync(root, { recursive: true });
  const members: Member[] = [];
  const cluster = makeCluster('picloud', members, root);
  try {
    let firstGossip = 0;
    let token = '';
    const size = opts.size ?? 3;
    for (let i = 1; i <= size; i++) {
      const name = `p${i}`;
      const ports = { client: await freePort(), peer: await freePort(), gossip: await freePort(), http: await freePort() };
      if (i === 1) firstGossip = ports.gossip;
      const dataDir = join(root, name);
      const args = [
        ...NODE_FLAGS, ...(opts.nodeArgs ?? []), AGENT_CLI, 'agent', '--name', name, '--data-dir', dataDir, '--bind', '127.0.0.1',
        '--client-port', String(ports.client), '--peer-port', String(ports.peer), '--gossip-port', String(ports.gossip),
        '--http-port', String(ports.http), '--tick-ms', String(opts.tickMs ?? 100), '--election-ticks', String(opts.electionTicks ?? 10),
        ...(i === 1 ? ['--bootstrap'] : ['--join', `127.0.0.1:${firstGossip}`, '--token', token]),
        ...(opts.agentArgs ?? []),
      ];
      const m = spawnMember(name, process.execPath, args, `127.0.0.1:${ports.client}`, dataDir);
      m.metricsUrl = `http://127.0.0.1:${ports.http}/metrics`;
      members.push(m);
      await waitReady(m, ports.http);
      if (i === 1) token = readFileSync(join(dataDir, 'token'), 'utf8').trim();
    }
    await waitVoters(members, size);
    return cluster;
  } catch (e) {
    await cluster.stop();
    throw e;
  }
}

async function waitReady(m: Member, httpPort: number): Promise<void> {
  const deadline = Date.now() + CLUSTER_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    assertAlive(m);
    try {
      const r = await fetch(`http://127.0.0.1:${httpPort}/ready`);
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`${m.name} not ready: ${m.logTail.join('').slice(-2000)}`);
}

/** Three (or `size`) etcd members with a static initial cluster, default fsync and timing. */
export async function startEtcd(opts: {
  root: string;
  /** Members (default 3). */
  size?: number;
  /** Extra etcd flags for every member. */
  etcdArgs?: string[];
  /** The client URLs' scheme: https with --cert-file and --key-file among etcdArgs. */
  clientScheme?: 'http' | 'https';
  /**
   * Member i's address and a command prefix that runs it there (e.g. `ip netns exec NS`, a host
   * of test/helpers/netns.ts); default loopback.
   */
  hosts?: Array<{ host: string; wrap: string[] }>;
}): Promise<BenchCluster> {
  const root = join(opts.root, 'etcd');
  mkdirSync(root, { recursive: true });
  const members: Member[] = [];
  const cluster = makeCluster('etcd', members, root);
  try {
    const specs = [];
    const size = opts.size ?? 3;
    for (let i = 1; i <= size; i++) {
      const where = opts.hosts?.[i - 1];
      specs.push({ name: `e${i}`, host: where?.host ?? '127.0.0.1', wrap: where?.wrap ?? [], client: await freePort(), peer: await freePort() });
    }
    const initialCluster = specs.map((s) => `${s.name}=http://${s.host}:${s.peer}`).join(',');
    const scheme = opts.clientScheme ?? 'http';
    for (const s of specs) {
      const dataDir = join(root, s.name);
      const args = [
        '--name', s.name, '--data-dir', dataDir,
        '--listen-client-urls', `${scheme}://${s.host}:${s.client}`, '--advertise-client-urls', `${scheme}://${s.host}:${s.client}`,
        '--listen-peer-urls', `http://${s.host}:${s.peer}`, '--initial-advertise-peer-urls', `http://${s.host}:${s.peer}`,
        '--initial-cluster', initialCluster, '--initial-cluster-state', 'new', '--initial-cluster-token', 'picloud-bench',
        '--logger', 'zap', '--log-level', 'warn',
        ...(opts.etcdArgs ?? []),
      ];
      // `ip netns exec` execs the command, so the PID is etcd's either way.
      const [cmd, ...pre] = [...s.wrap, ETCD_BIN];
      members.push(spawnMember(s.name, cmd!, [...pre, ...args], `${s.host}:${s.client}`, dataDir));
    }
    await waitVoters(members, size);
    return cluster;
  } catch (e) {
    await cluster.stop();
    throw e;
  }
}
