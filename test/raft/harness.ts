/**
 * A scripted Raft cluster for data-driven tests (the style of etcd-io/raft's testdata):
 * nodes of the real RawNode with MemoryStorage, a mailbox per node, and commands that
 * tick, deliver, drop, partition and print. Everything is deterministic.
 */
import {
  ConfChangeType,
  Entry,
  EntryType,
  MemoryStorage,
  Message,
  MessageType,
  NodeId,
  RawNode,
  Ready,
  bootstrap,
  decodeConfChange,
  snapshotBytes,
} from '../../core/raft/index.js';
import { Prng } from '../../core/sim/prng.js';

interface TestNode {
  id: NodeId;
  rn: RawNode;
  storage: MemoryStorage;
  /** Application state: the data of every applied normal entry. */
  applied: string[];
  readResults: string[];
}

const text = new TextEncoder();
const untext = new TextDecoder();

function fmtEntries(ents: Entry[]): string {
  return ents
    .map((e) => {
      if (e.type === EntryType.ConfChange) {
        const cc = decodeConfChange(e.data);
        return `${e.term}/${e.index} ${ConfChangeType[cc.type]} ${cc.nodeId}`;
      }
      return `${e.term}/${e.index}${e.data.length ? ` ${untext.decode(e.data)}` : ' EMPTY'}`;
    })
    .join(', ');
}

export function fmtMessage(m: Message): string {
  let s = `${m.from}->${m.to} ${m.type} term=${m.term}`;
  switch (m.type) {
    case MessageType.App:
      s += ` log=${m.logTerm}/${m.index} commit=${m.commit}`;
      if (m.entries.length) s += ` [${fmtEntries(m.entries)}]`;
      if (m.commitOnly) s += ' commit-only';
      break;
    case MessageType.AppResp:
      s += m.reject ? ` REJECT index=${m.index} hint=${m.logTerm}/${m.rejectHint}` : ` index=${m.index}`;
      break;
    case MessageType.Vote:
    case MessageType.PreVote:
      s += ` last=${m.logTerm}/${m.index}`;
      if (m.context.length) s += ' transfer';
      break;
    case MessageType.VoteResp:
    case MessageType.PreVoteResp:
      s += m.reject ? ' REJECT' : ' GRANT';
      break;
    case MessageType.Heartbeat:
      s += ` commit=${m.commit}`;
      if (m.context.length) s += ` ctx=${untext.decode(m.context)}`;
      break;
    case MessageType.HeartbeatResp:
      if (m.context.length) s += ` ctx=${untext.decode(m.context)}`;
      break;
    case MessageType.Snap: {
      const c = m.snapshot!;
      s += ` snap=${c.metadata.term}/${c.metadata.index} bytes=${c.offset}+${c.data.length}/${c.totalBytes}${c.done ? ' done' : ''}`;
      break;
    }
    case MessageType.SnapResp:
      s += ` snap=${m.logTerm}/${m.rejectHint} acked=${m.index}${m.reject ? ' REJECT' : ''}`;
      break;
    case MessageType.ReadIndex:
    case MessageType.ReadIndexResp:
      s += ` index=${m.index} ctx=${untext.decode(m.context)}`;
      break;
    case MessageType.Prop:
      s += ` [${fmtEntries(m.entries)}]`;
      break;
    default:
      break;
  }
  return s;
}

export interface NodeOptions {
  preVote?: boolean;
  checkQuorum?: boolean;
  maxInflightMsgs?: number;
  maxSizePerMsgBytes?: number;
  snapshotChunkBytes?: number;
}

export class RaftCluster {
  nodes = new Map<NodeId, TestNode>();
  mailbox = new Map<NodeId, Message[]>();
  /** Directed links that drop everything: "from->to". */
  cut = new Set<string>();
  private out: string[] = [];
  private rng = new Prng(1);

  addNode(id: NodeId, voters: NodeId[] | undefined, opts: NodeOptions): void {
    const storage = new MemoryStorage();
    if (voters) bootstrap(storage, voters);
    const rn = new RawNode({
      id,
      storage,
      random: this.rng.fork(),
      electionTicks: 10,
      heartbeatTicks: 1,
      preVote: opts.preVote ?? false,
      checkQuorum: opts.checkQuorum ?? false,
      maxInflightMsgs: opts.maxInflightMsgs ?? 256,
      maxSizePerMsgBytes: opts.maxSizePerMsgBytes ?? 1 << 20,
      snapshotChunkBytes: opts.snapshotChunkBytes ?? 1 << 20,
    });
    this.nodes.set(id, { id, rn, storage, applied: [], readResults: [] });
    this.mailbox.set(id, []);
  }

  node(id: NodeId): TestNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  print(line: string): void {
    this.out.push(line);
  }

  takeOutput(): string {
    const s = this.out.join('\n');
    this.out = [];
    return s;
  }

  /** Persist, send, apply one Ready of node `id`. Returns false if there was none. */
  processReady(id: NodeId, verbose = true): boolean {
    const n = this.node(id);
    if (!n.rn.hasReady()) return false;
    const rd: Ready = n.rn.ready();
    if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
    n.storage.append(rd.entries);
    if (rd.hardState) n.storage.setHardState(rd.hardState);
    for (const m of [...rd.earlyMessages, ...rd.messages]) {
      if (!this.nodes.has(m.to)) continue;
      this.mailbox.get(m.to)!.push(m);
    }
    if (rd.snapshot) {
      n.applied = untext.decode(snapshotBytes(rd.snapshot)).split(',').filter((s) => s.length > 0);
      if (verbose) this.print(`${id} restored snapshot ${rd.snapshot.metadata.term}/${rd.snapshot.metadata.index}`);
    }
    for (const e of rd.committedEntries) {
      if (e.type === EntryType.ConfChange) {
        const cc = decodeConfChange(e.data);
        const conf = n.rn.applyConfChange(cc);
        if (verbose && e.index > 0 && !(e.term === 1 && cc.type === ConfChangeType.AddVoter && this.isBootstrapEntry(n, e))) {
          this.print(`${id} applied ${ConfChangeType[cc.type]} ${cc.nodeId}: voters=(${conf.voters.join(',')}) learners=(${conf.learners.join(',')})`);
        }
      } else if (e.data.length > 0) {
        n.applied.push(untext.decode(e.data));
      }
    }
    for (const rs of rd.readStates) {
      const result = `${untext.decode(rs.context)}@${rs.index}`;
      n.readResults.push(result);
      if (verbose) this.print(`${id} read ready ${result}`);
    }
    n.rn.advance();
    return true;
  }

  private isBootstrapEntry(_n: TestNode, e: Entry): boolean {
    return e.index <= 5 && e.term === 1;
  }

  /** Deliver the messages currently queued for `id`. */
  deliver(id: NodeId, verbose = true, filter?: (m: Message) => boolean): number {
    const box = this.mailbox.get(id)!;
    const msgs = filter ? box.filter(filter) : box.splice(0);
    if (filter) this.mailbox.set(id, box.filter((m) => !filter(m)));
    let n = 0;
    for (const m of msgs) {
      if (this.cut.has(`${m.from}->${m.to}`)) {
        if (verbose) this.print(`  dropped ${fmtMessage(m)}`);
        continue;
      }
      if (verbose) this.print(`  ${fmtMessage(m)}`);
      try {
        this.node(id).rn.step(m);
      } catch (e) {
        this.print(`  step error: ${(e as Error).message}`);
      }
      n++;
    }
    return n;
  }

  /** Process readies and deliver messages until nothing moves (bounded). */
  stabilize(verbose = true): void {
    for (let round = 0; round < 1000; round++) {
      let moved = false;
      for (const id of this.nodes.keys()) if (this.processReady(id, verbose)) moved = true;
      for (const id of this.nodes.keys()) if (this.mailbox.get(id)!.length > 0) {
        if (this.deliver(id, verbose) > 0) moved = true;
        else moved = moved || false;
      }
      if (!moved) return;
    }
    throw new Error('stabilize did not converge in 1000 rounds');
  }

  state(): string {
    const lines: string[] = [];
    for (const n of this.nodes.values()) {
      const st = n.rn.status();
      lines.push(`${n.id}: ${st.role} term=${st.term} lead=${st.lead} commit=${st.commit} applied=${st.applied} last=${st.lastIndex} voters=(${st.conf.voters.join(',')})${st.conf.learners.length ? ` learners=(${st.conf.learners.join(',')})` : ''}`);
    }
    return lines.join('\n');
  }

  logOf(id: NodeId): string {
    const n = this.node(id);
    const st = n.rn.status();
    const first = n.rn.raft.log.firstIndex();
    const ents = n.rn.raft.log.slice(first, st.lastIndex + 1);
    return `${id}: first=${first} [${fmtEntries(ents)}] applied=[${n.applied.join(',')}]`;
  }

  /** Snapshot the application state (applied values joined) at the applied index; drop the log up to it. */
  compact(id: NodeId): number {
    const n = this.node(id);
    const st = n.rn.status();
    n.storage.createSnapshot(st.applied, st.conf, text.encode(n.applied.join(',')));
    n.storage.compact(st.applied);
    return st.applied;
  }
}
