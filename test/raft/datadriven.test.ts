/**
 * Runs every script in test/raft/testdata: each block is a command, a `----` line and the
 * expected output. `RAFT_REWRITE=1` rewrites the expected output (review the diff!).
 */
import t from 'tap';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfChangeType } from '../../core/raft/index.js';
import { RaftCluster, NodeOptions } from './harness.js';

const DIR = join(process.cwd(), 'test/raft/testdata');
const text = new TextEncoder();

interface Block {
  /** Comment lines (starting with #) before the command, kept when rewriting. */
  comments: string[];
  command: string;
  expected: string;
}

function parse(src: string): Block[] {
  const blocks: Block[] = [];
  const lines = src.split('\n');
  let i = 0;
  let comments: string[] = [];
  while (i < lines.length) {
    const line = lines[i]!;
    if (line.startsWith('#')) comments.push(line);
    if (line.trim() === '' || line.startsWith('#')) {
      i++;
      continue;
    }
    const command = line;
    i++;
    if (lines[i] !== '----') throw new Error(`expected ---- after "${command}" at line ${i + 1}`);
    i++;
    const out: string[] = [];
    while (i < lines.length && lines[i] !== '') out.push(lines[i++]!);
    blocks.push({ comments, command, expected: out.join('\n') });
    comments = [];
  }
  return blocks;
}

const FLAGS = new Set(['prevote', 'checkquorum', 'quiet', 'oneway']);

function kv(args: string[]): { pos: string[]; opts: Map<string, string> } {
  const pos: string[] = [];
  const opts = new Map<string, string>();
  for (const a of args) {
    const eq = a.indexOf('=');
    if (eq > 0) opts.set(a.slice(0, eq), a.slice(eq + 1));
    else if (FLAGS.has(a)) opts.set(a, 'true');
    else pos.push(a);
  }
  return { pos, opts };
}

function run(c: RaftCluster, command: string): string {
  const [cmd, ...rest] = command.trim().split(/\s+/);
  const { pos, opts } = kv(rest);
  const id = Number(pos[0]);
  switch (cmd) {
    case 'add-nodes': {
      const count = Number(pos[0]);
      const voters = opts.get('voters')?.split(',').map(Number);
      const nodeOpts: NodeOptions = {
        preVote: opts.has('prevote'),
        checkQuorum: opts.has('checkquorum'),
        maxInflightMsgs: opts.has('inflight') ? Number(opts.get('inflight')) : undefined,
        maxSizePerMsgBytes: opts.has('maxsize') ? Number(opts.get('maxsize')) : undefined,
        snapshotChunkBytes: opts.has('chunk') ? Number(opts.get('chunk')) : undefined,
      };
      const start = c.nodes.size + 1;
      for (let k = start; k < start + count; k++) c.addNode(k, voters && voters.includes(k) ? voters : undefined, nodeOpts);
      c.stabilize(false);
      return c.state();
    }
    case 'campaign':
      c.node(id).rn.campaign();
      return '';
    case 'tick': {
      const times = Number(pos[1] ?? 1);
      for (let k = 0; k < times; k++) c.node(id).rn.tick();
      return '';
    }
    case 'tick-heartbeat':
      c.node(id).rn.tick();
      return '';
    case 'tick-election': {
      const r = c.node(id).rn.raft;
      const times = r.role === 'leader' ? r.cfg.electionTicks - r.electionElapsed : r.randomizedElectionTimeout - r.electionElapsed;
      for (let k = 0; k < times; k++) r.tick();
      return '';
    }
    case 'stabilize':
      c.stabilize(!opts.has('quiet'));
      return c.takeOutput();
    case 'process-ready':
      c.processReady(id);
      return c.takeOutput();
    case 'deliver': {
      const type = opts.get('type');
      c.deliver(id, true, type ? (m) => m.type === type : undefined);
      return c.takeOutput();
    }
    case 'drop': {
      const n = c.mailbox.get(id)!.length;
      c.mailbox.set(id, []);
      return `dropped ${n}`;
    }
    case 'cut':
      c.cut.add(`${pos[0]}->${pos[1]}`);
      if (!opts.has('oneway')) c.cut.add(`${pos[1]}->${pos[0]}`);
      return '';
    case 'isolate':
      for (const other of c.nodes.keys()) {
        if (other === id) continue;
        c.cut.add(`${id}->${other}`);
        c.cut.add(`${other}->${id}`);
      }
      return '';
    case 'heal':
      c.cut.clear();
      return '';
    case 'propose':
      try {
        c.node(id).rn.propose(text.encode(pos[1]!));
        return '';
      } catch (e) {
        return `error: ${(e as Error).message}`;
      }
    case 'propose-conf-change': {
      const type = { 'add-voter': ConfChangeType.AddVoter, 'add-learner': ConfChangeType.AddLearner, remove: ConfChangeType.RemoveNode }[rest[1]!];
      if (type === undefined) throw new Error(`bad conf change ${rest[1]}`);
      try {
        c.node(id).rn.proposeConfChange({ type, nodeId: Number(rest[2]) });
        return '';
      } catch (e) {
        return `error: ${(e as Error).message}`;
      }
    }
    case 'read-index':
      try {
        c.node(id).rn.readIndex(text.encode(pos[1]!));
        return '';
      } catch (e) {
        return `error: ${(e as Error).message}`;
      }
    case 'transfer-leader':
      c.node(id).rn.transferLeadership(Number(pos[1]));
      return '';
    case 'compact':
      return `snapshot at ${c.compact(id)}`;
    case 'state':
      return c.state();
    case 'log':
      return pos.map((p) => c.logOf(Number(p))).join('\n');
    case 'progress': {
      const st = c.node(id).rn.status();
      return Object.entries(st.progress ?? {})
        .map(([k, p]) => `${k}: ${p.state} match=${p.match} next=${p.next}${p.recentActive ? ' active' : ''}`)
        .join('\n');
    }
    default:
      throw new Error(`unknown command ${cmd}`);
  }
}

const files = readdirSync(DIR).filter((f) => f.endsWith('.txt')).sort();
for (const file of files) {
  t.test(file, async (t) => {
    const path = join(DIR, file);
    const src = readFileSync(path, 'utf8');
    const blocks = parse(src);
    const cluster = new RaftCluster();
    const actual: Block[] = [];
    let failures = 0;
    for (const b of blocks) {
      const got = run(cluster, b.command).replace(/\n+$/, '');
      actual.push({ comments: b.comments, command: b.command, expected: got });
      if (!process.env.RAFT_REWRITE) {
        if (got !== b.expected) failures++;
        t.equal(got, b.expected, b.command);
      }
    }
    if (process.env.RAFT_REWRITE) {
      writeFileSync(path, actual.map((b) => `${b.comments.map((c) => c + '\n').join('')}${b.command}\n----\n${b.expected}${b.expected ? '\n' : ''}`).join('\n'));
      t.pass('rewritten');
    }
    t.ok(blocks.length > 0, 'script has commands');
    void failures;
  });
}
