/**
 * Eight real agent processes on 127.0.0.1 (test/gossip/fixtures/gossip-agent.js, fast LOCAL
 * timing): kill -9 one (every other reports it failed within the configured detection bound),
 * restart it (alive again with a higher incarnation), stop another gracefully (reported as
 * left, never failed), change a node's tags (seen by all), and read it all back with
 * `picloud-node members --json`.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { get, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { run as membersCommand } from '../../agent/commands/members.js';
import { freePort } from '../helpers/ports.js';
import { LOCAL_CONFIG, detectionBoundMs } from '../../core/gossip/config.js';

const N = 8;
const FIXTURE = join(process.cwd(), 'dist/test/gossip/fixtures/gossip-agent.js');
const BOUND_MS = detectionBoundMs(LOCAL_CONFIG, N);

interface Agent {
  name: string;
  proc: ChildProcess;
  gossipPort: number;
  httpPort: number;
  dataDir: string;
}

interface WatchedEvent {
  type: string;
  name: string;
  state: string;
  incarnation: number;
  meta: Record<string, unknown>;
  receivedAt: number;
}

const dir = mkdtempSync(join(tmpdir(), 'picloud-gossip-agents-'));
const procs = new Set<ChildProcess>();

t.teardown(() => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

async function startAgent(name: string, opts: { join?: number; gossipPort?: number } = {}): Promise<Agent> {
  // A reserved port (not 0): the restart below binds the same port again.
  const gossipPort = opts.gossipPort ?? (await freePort());
  const dataDir = join(dir, name);
  const args = [FIXTURE, '--name', name, '--data-dir', dataDir, '--gossip-port', String(gossipPort), '--http-port', '0', '--gossip-profile', 'local', '--token', 'agents-test'];
  if (opts.join) args.push('--join', `127.0.0.1:${opts.join}`);
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.add(proc);
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not ready in 15 s: ${stderr}`)), 15_000);
    proc.once('exit', (code) => reject(new Error(`${name} exited with ${code}: ${stderr}`)));
    createInterface({ input: proc.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      const r = JSON.parse(line) as { gossipPort: number; httpPort: number };
      resolve({ name, proc, gossipPort: r.gossipPort, httpPort: r.httpPort, dataDir });
    });
  });
}

function httpJson<T>(port: number, path: string, method = 'GET', body?: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => {
        try {
          resolve(JSON.parse(text) as T);
        } catch (e) {
          reject(e);
        }
      });
    });
    req.setTimeout(5_000, () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

interface MemberJson {
  name: string;
  address: string;
  port: number;
  role: string | null;
  state: string;
  incarnation: number;
  meta: Record<string, unknown>;
}

const members = (a: Agent): Promise<MemberJson[]> => httpJson<MemberJson[]>(a.httpPort, '/v1/agent/members');

/** Streams GET /v1/agent/members?watch=1 into a list. */
function watch(a: Agent): WatchedEvent[] {
  const seen: WatchedEvent[] = [];
  const req = get({ host: '127.0.0.1', port: a.httpPort, path: '/v1/agent/members?watch=1' }, (res) => {
    let buf = '';
    res.on('data', (c: Buffer) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) seen.push({ ...(JSON.parse(line) as WatchedEvent), receivedAt: Date.now() });
      }
    });
    res.on('error', () => {});
  });
  req.on('error', () => {});
  return seen;
}

async function waitFor(what: string, pred: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

t.test('8 agents: crash, restart, graceful leave, metadata — seen by every other agent', async (t) => {
  const seed = await startAgent('agent-0');
  const agents = [seed, ...(await Promise.all(Array.from({ length: N - 1 }, (_, i) => startAgent(`agent-${i + 1}`, { join: seed.gossipPort }))))];
  await waitFor('all agents to see 8 alive members', async () => {
    const views = await Promise.all(agents.map(members));
    return views.every((v) => v.filter((m) => m.state === 'alive').length === N);
  }).catch(() => undefined);
  const alive = (await Promise.all(agents.map(members))).map((v) => v.filter((m) => m.state === 'alive').length);
  t.same(alive, agents.map(() => N), '8 agents converged: each sees 8 alive members');
  const watched = new Map(agents.map((a) => [a.name, watch(a)]));
  await new Promise((r) => setTimeout(r, 200)); // let the watch streams attach

  // kill -9 one agent.
  const victim = agents[3]!;
  const oldIncarnation = (await members(seed)).find((m) => m.name === victim.name)!.incarnation;
  const others = agents.filter((a) => a !== victim);
  const killedAt = Date.now();
  victim.proc.kill('SIGKILL');
  await waitFor(
    'every other agent to report the killed one failed',
    () => others.every((a) => watched.get(a.name)!.some((e) => e.type === 'fail' && e.name === victim.name)),
    BOUND_MS + 10_000,
  );
  for (const a of others) {
    const e = watched.get(a.name)!.find((x) => x.type === 'fail' && x.name === victim.name)!;
    t.ok(e.receivedAt - killedAt <= BOUND_MS, `${a.name} reported ${victim.name} failed after ${e.receivedAt - killedAt} ms (bound ${BOUND_MS} ms)`);
  }

  // Restart it: same name, port and data dir.
  const back = await startAgent(victim.name, { join: seed.gossipPort, gossipPort: victim.gossipPort });
  agents[3] = back;
  await waitFor(
    'every other agent to see the restarted one alive with a higher incarnation',
    () => others.every((a) => watched.get(a.name)!.some((e) => e.type === 'join' && e.name === victim.name && e.incarnation > oldIncarnation)),
  );
  const view = (await members(seed)).find((m) => m.name === victim.name)!;
  t.equal(view.state, 'alive');
  t.ok(view.incarnation > oldIncarnation, `incarnation ${oldIncarnation} → ${view.incarnation}`);
  watched.set(back.name, watch(back));

  // Stop another gracefully.
  const leaver = agents[5]!;
  const stayers = agents.filter((a) => a !== leaver);
  leaver.proc.kill('SIGTERM');
  await new Promise<void>((r) => (leaver.proc.exitCode !== null ? r() : leaver.proc.once('exit', () => r())));
  await waitFor('every other agent to report the stopped one as left', async () => {
    const views = await Promise.all(stayers.map(members));
    return views.every((v) => v.find((m) => m.name === leaver.name)?.state === 'left');
  });
  await new Promise((r) => setTimeout(r, BOUND_MS));
  for (const a of stayers) {
    t.notOk(watched.get(a.name)!.some((e) => e.type === 'fail' && e.name === leaver.name), `${a.name} never reported ${leaver.name} failed`);
  }

  // Change a node's metadata.
  const tagged = agents[1]!;
  await httpJson(tagged.httpPort, '/v1/agent/tags', 'PUT', { set: { color: 'blue' } });
  await waitFor('every agent to see the new tag', async () => {
    const views = await Promise.all(stayers.map(members));
    return views.every((v) => (v.find((m) => m.name === tagged.name)!.meta.tags as Record<string, unknown> | undefined)?.color === 'blue');
  });
  for (const a of stayers.filter((x) => x !== tagged && x !== back)) {
    t.ok(watched.get(a.name)!.some((e) => e.type === 'update' && e.name === tagged.name), `${a.name} got the update event`);
  }

  // `picloud-node members --json` against one agent.
  const out: string[] = [];
  const code = await membersCommand(['--json', '--http', `127.0.0.1:${seed.httpPort}`], { out: (l) => out.push(l), err: (l) => out.push(l) });
  t.equal(code, 0);
  const list = JSON.parse(out.join('\n')) as MemberJson[];
  t.equal(list.length, N);
  for (const m of list) {
    t.match(m, { name: String, address: '127.0.0.1', port: Number, role: 'worker', state: /^(alive|left)$/, incarnation: Number, meta: Object });
  }
  t.equal(list.find((m) => m.name === leaver.name)!.state, 'left');
  t.equal(list.filter((m) => m.state === 'alive').length, N - 1);

  for (const a of agents) if (a.proc.exitCode === null) a.proc.kill('SIGKILL');
});
