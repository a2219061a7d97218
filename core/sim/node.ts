/**
 * One simulated Raft node: the real RawNode driven exactly as an embedder must (types.ts
 * Ready contract) — persist to the simulated disk (sending `earlyMessages` meanwhile), wait
 * for the fsync's virtual latency, send `messages`, apply committed entries to the KV state machine, serve ReadIndex reads, advance — plus the
 * application's periodic snapshots, client request handling, and crash / restart from the
 * durable image only.
 *
 * Not responsible for routing messages (the cluster does), for deciding when to crash (the
 * fault injector), or for judging correctness (it reports observations to the safety
 * checker and violations to the cluster).
 */
import {
  EntryType,
  MemoryStorage,
  RaftError,
  RawNode,
  Role,
  bootstrap,
  decodeConfChange,
  snapshotBytes,
  type ConfChange,
  type ConfState,
  type Entry,
  type Message,
  type NodeId,
  type RaftClass,
  type Ready,
} from '../raft/index.js';
import type { ClientRequest, ClientResponse } from './client.js';
import { cloneConf } from './clone.js';
import { SimDisk, type DiskProfile } from './disk.js';
import { SimError } from './errors.js';
import type { EventQueue } from './events.js';
import { fnv1a } from './hash.js';
import { decodeKvCommand, encodeKvCommand, KvStateMachine } from './kv.js';
import type { Prng } from './prng.js';
import type { RaftSafetyChecker, Violation } from './safety.js';
import type { Trace } from './trace.js';

/** Raft and application settings shared by every node of one run (chosen per seed). */
export interface NodeSettings {
  electionTicks: number;
  heartbeatTicks: number;
  checkQuorum: boolean;
  preVote: boolean;
  snapshotChunkBytes: number;
  maxSizePerMsgBytes: number;
  maxInflightMsgs: number;
  /** Take an application snapshot every this many applied entries. */
  snapshotEveryEntries: number;
  /** Entries kept in the log behind a snapshot (etcd's SnapshotCatchUpEntries). */
  keepEntriesAfterSnapshot: number;
}

export interface NodeEnv {
  queue: EventQueue;
  settings: NodeSettings;
  safety: RaftSafetyChecker;
  trace: Trace;
  raftClass: RaftClass | undefined;
  /** Bug variant: send a Ready's messages before its fsync completes. */
  sendBeforeFsync: boolean;
  sendPeer(from: SimNode, m: Message): void;
  replyClient(from: NodeId, to: number, resp: ClientResponse): void;
  /** Read ids unique across the whole run, so a late ReadIndex answer can never match a newer read. */
  nextReadId(): number;
  violation(v: Violation): void;
  onLeader(node: SimNode, term: number): void;
  onConfApplied(node: SimNode, cc: ConfChange, index: number): void;
  /** A leader's commit index advanced from `from` to `to` (the moment a nemesis may strike). */
  onLeaderCommit(node: SimNode, from: number, to: number): void;
}

/** Readies drained in one go; more means hasReady() never settles (a Raft bug), reported as an error. */
export const MAX_READIES_PER_PUMP = 100_000;
/** Client requests a node keeps waiting for; beyond this the oldest is forgotten (the client times out). */
export const MAX_PENDING_CLIENT_REQUESTS = 1024;
const READ_ID_BYTES = 6;

interface PendingRead {
  client: number;
  opId: number;
  attempt: number;
  key: string;
}

export class SimNode {
  readonly disk: SimDisk;
  up = false;
  /** Shut down for good (removed from the cluster). */
  retired = false;
  started = false;
  /** Bumped on every crash and boot: events scheduled by an earlier life check it and do nothing. */
  incarnation = 0;
  raw!: RawNode;
  storage!: MemoryStorage;
  kv!: KvStateMachine;
  /** The configuration as of appliedIndex. */
  conf: ConfState = { voters: [], learners: [] };
  appliedIndex = 0;
  /** A Ready is being persisted (waiting for its fsync). */
  busy = false;
  private pumping = false;
  private leaderTermSeen = -1;
  private commitSeen = 0;
  private nextTickAtMs = 0;
  private readonly pendingWrites = new Map<string, { client: number; opId: number; attempt: number }>();
  private readonly pendingReads = new Map<number, PendingRead>();
  private waitingReads: { index: number; readId: number }[] = [];
  readonly stats = { readies: 0, fsyncs: 0, entriesApplied: 0, snapshotsTaken: 0, snapshotsInstalled: 0, crashes: 0, writesLost: 0 };

  constructor(
    readonly id: NodeId,
    private readonly env: NodeEnv,
    private readonly prng: Prng,
    diskProfile: DiskProfile,
    /** This node's own tick interval (the base interval with its clock drift). */
    readonly tickIntervalMs: number,
  ) {
    this.disk = new SimDisk(diskProfile);
  }

  /** A founding voter: its disk starts with the bootstrap entries, durable by definition. */
  startFounding(voters: NodeId[]): void {
    const st = new MemoryStorage();
    bootstrap(st, voters);
    this.disk.format({ hardState: st.getHardState(), snapshot: undefined, offset: 0, entries: st.entries(1, st.lastIndex() + 1) });
    this.boot();
  }

  /** A joiner: empty disk; it learns everything from the leader. */
  startEmpty(): void {
    this.boot();
  }

  /** Power loss: everything not fsynced is gone, and so is all volatile state. */
  crash(): void {
    if (!this.up) return;
    this.up = false;
    this.incarnation++;
    this.stats.crashes++;
    this.stats.writesLost += this.disk.crash();
    this.busy = false;
    this.pendingWrites.clear();
    this.pendingReads.clear();
    this.waitingReads = [];
  }

  restart(): void {
    if (this.up || this.retired) return;
    this.boot();
  }

  retire(): void {
    this.crash();
    this.stats.crashes--; // a shutdown, not a fault
    this.retired = true;
  }

  private boot(): void {
    const img = this.disk.image();
    const storage = new MemoryStorage();
    if (img.snapshot !== undefined) storage.applySnapshot(img.snapshot);
    storage.append(img.entries);
    storage.setHardState(img.hardState);
    this.storage = storage;
    this.kv = img.snapshot !== undefined ? KvStateMachine.restore(snapshotBytes(img.snapshot)) : new KvStateMachine();
    this.appliedIndex = img.snapshot?.metadata.index ?? 0;
    this.conf = img.snapshot !== undefined ? cloneConf(img.snapshot.metadata.conf) : { voters: [], learners: [] };
    const s = this.env.settings;
    this.raw = new RawNode(
      {
        id: this.id,
        storage,
        applied: this.appliedIndex,
        electionTicks: s.electionTicks,
        heartbeatTicks: s.heartbeatTicks,
        checkQuorum: s.checkQuorum,
        preVote: s.preVote,
        snapshotChunkBytes: s.snapshotChunkBytes,
        maxSizePerMsgBytes: s.maxSizePerMsgBytes,
        maxInflightMsgs: s.maxInflightMsgs,
        random: this.prng.fork(),
      },
      this.env.raftClass,
    );
    this.up = true;
    this.started = true;
    this.busy = false;
    this.incarnation++;
    this.leaderTermSeen = -1;
    this.commitSeen = img.hardState.commit;
    this.env.safety.forgetNode(this.id);
    // The state restored from the disk's snapshot must be the one hashed when it was made.
    if (img.snapshot !== undefined) this.reportState();
    // Ticks start at a random phase: nodes' timers are not aligned.
    this.nextTickAtMs = this.env.queue.nowMs + this.prng.next() * this.tickIntervalMs;
    this.scheduleTick();
    this.afterInput();
  }

  private scheduleTick(): void {
    const inc = this.incarnation;
    this.nextTickAtMs += this.tickIntervalMs;
    this.env.queue.at(Math.max(this.env.queue.nowMs, Math.floor(this.nextTickAtMs)), () => {
      if (inc !== this.incarnation) return;
      this.raw.tick();
      this.afterInput();
      this.scheduleTick();
    });
  }

  /** A message from a peer arrived. */
  deliver(m: Message): void {
    if (!this.up) return;
    try {
      this.raw.step(m);
    } catch (e) {
      // A forwarded proposal the leader refuses is dropped silently, as over a real network.
      if (!(e instanceof RaftError && (e.code === 'PROPOSAL_DROPPED' || e.code === 'CONF_CHANGE_PENDING'))) throw e;
    }
    this.afterInput();
  }

  reportUnreachable(to: NodeId): void {
    if (this.up) this.raw.reportUnreachable(to);
  }

  /** Propose a membership change (the operator's request); false when refused now. */
  proposeConfChange(cc: ConfChange): boolean {
    if (!this.up) return false;
    try {
      this.raw.proposeConfChange(cc);
    } catch (e) {
      if (e instanceof RaftError && (e.code === 'PROPOSAL_DROPPED' || e.code === 'CONF_CHANGE_PENDING')) return false;
      throw e;
    }
    this.afterInput();
    return true;
  }

  onClientRequest(req: ClientRequest): void {
    if (!this.up) return;
    try {
      if (req.op === 'get') {
        const readId = this.env.nextReadId();
        const ctx = new Uint8Array(READ_ID_BYTES);
        new DataView(ctx.buffer).setUint32(0, Math.floor(readId / 65536));
        new DataView(ctx.buffer).setUint16(4, readId % 65536);
        this.raw.readIndex(ctx);
        boundedSet(this.pendingReads, readId, { client: req.clientId, opId: req.opId, attempt: req.attempt, key: req.key });
      } else {
        const data =
          req.op === 'put'
            ? encodeKvCommand({ op: 'put', clientId: req.clientId, seq: req.opId, key: req.key, value: req.value! })
            : encodeKvCommand({ op: 'cas', clientId: req.clientId, seq: req.opId, key: req.key, expected: req.expected ?? null, value: req.value! });
        this.raw.propose(data);
        boundedSet(this.pendingWrites, `${req.clientId}:${req.opId}`, { client: req.clientId, opId: req.opId, attempt: req.attempt });
      }
    } catch (e) {
      if (!(e instanceof RaftError && e.code === 'PROPOSAL_DROPPED')) throw e;
      this.env.replyClient(this.id, req.clientId, { clientId: req.clientId, opId: req.opId, attempt: req.attempt, ok: false, leaderHint: this.raw.raft.lead });
    }
    this.afterInput();
  }

  private afterInput(): void {
    const r = this.raw.raft;
    if (r.role === Role.Leader && r.term !== this.leaderTermSeen) {
      this.leaderTermSeen = r.term;
      this.env.onLeader(this, r.term);
    }
    this.pump();
  }

  /** Drain Readies until one must wait for an fsync. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      let n = 0;
      while (this.up && !this.busy && this.raw.hasReady()) {
        if (++n > MAX_READIES_PER_PUMP) throw new SimError('SIM_RUNAWAY', `node ${this.id}: more than ${MAX_READIES_PER_PUMP} Readies without waiting`);
        this.handleReady(this.raw.ready());
      }
    } finally {
      this.pumping = false;
    }
  }

  private handleReady(rd: Ready): void {
    this.stats.readies++;
    const now = this.env.queue.nowMs;
    // 1. Write: snapshot, entries, hard state (the disk keeps its own copies).
    if (rd.snapshot !== undefined) {
      this.disk.write({ kind: 'installSnapshot', snapshot: rd.snapshot });
      this.storage.applySnapshot(rd.snapshot);
    }
    if (rd.entries.length > 0) {
      const before = rd.entries[0]!.index - 1;
      let prevTerm = -1;
      if (before === 0) prevTerm = 0;
      else if (before >= this.storage.firstIndex() - 1 && before <= this.storage.lastIndex()) prevTerm = this.storage.term(before);
      this.env.safety.observeAppend(this.id, rd.entries, prevTerm, now);
      this.disk.write({ kind: 'append', entries: rd.entries });
      this.storage.append(rd.entries);
    }
    if (rd.hardState !== undefined) {
      this.disk.write({ kind: 'hardState', hardState: rd.hardState });
      this.storage.setHardState(rd.hardState);
      const log = this.raw.raft.log;
      const before = this.commitSeen;
      this.env.safety.observeCommit(this.id, rd.hardState.term, rd.hardState.commit, (i) => log.termOrUndefined(i), now);
      if (rd.hardState.commit > before) {
        this.commitSeen = rd.hardState.commit;
        if (this.raw.raft.role === Role.Leader) this.env.onLeaderCommit(this, before, rd.hardState.commit);
      }
    }
    // A leader's appends and heartbeats may go out in parallel with its own write (its term
    // and vote are already durable; it counts its own entries only once they are).
    if (rd.earlyMessages.length > 0) this.sendAll(rd.earlyMessages);
    if (!rd.mustSync) {
      this.finishReady(rd, false);
      return;
    }
    // 2. fsync, which takes virtual time; the rest of the Ready waits for it.
    this.busy = true;
    this.stats.fsyncs++;
    const barrier = this.disk.beginFsync();
    const inc = this.incarnation;
    let sent = false;
    if (this.env.sendBeforeFsync) {
      this.sendAll(rd.messages);
      sent = true;
    }
    this.env.queue.after(this.disk.fsyncLatencyMs(this.prng), () => {
      if (inc !== this.incarnation) return; // crashed meanwhile: the writes are gone
      this.disk.completeFsync(barrier);
      this.finishReady(rd, sent);
      this.afterInput();
    });
  }

  /** 3. send, 4. apply, 5. serve reads, 6. advance. */
  private finishReady(rd: Ready, alreadySent: boolean): void {
    if (!alreadySent) this.sendAll(rd.messages);
    if (rd.snapshot !== undefined) {
      const meta = rd.snapshot.metadata;
      this.kv = KvStateMachine.restore(snapshotBytes(rd.snapshot));
      this.appliedIndex = meta.index;
      this.conf = cloneConf(meta.conf);
      this.stats.snapshotsInstalled++;
      this.reportState();
      this.env.trace.event(this.env.queue.nowMs, 'raft', [this.id], `node ${this.id} installed snapshot at index ${meta.index} term ${meta.term}`);
    }
    for (const e of rd.committedEntries) this.apply(e);
    for (const rs of rd.readStates) {
      if (rs.context.length !== READ_ID_BYTES) continue;
      const view = new DataView(rs.context.buffer, rs.context.byteOffset, READ_ID_BYTES);
      const readId = view.getUint32(0) * 65536 + view.getUint16(4);
      if (!this.pendingReads.has(readId)) continue;
      if (rs.index <= this.appliedIndex) this.serveRead(readId);
      else this.waitingReads.push({ index: rs.index, readId });
    }
    if (this.waitingReads.length > 0) {
      const still: { index: number; readId: number }[] = [];
      for (const w of this.waitingReads) {
        if (w.index <= this.appliedIndex) this.serveRead(w.readId);
        else still.push(w);
      }
      this.waitingReads = still;
    }
    this.maybeSnapshot();
    this.raw.advance();
    this.busy = false;
  }

  private sendAll(msgs: Message[]): void {
    for (const m of msgs) this.env.sendPeer(this, m);
  }

  private apply(e: Entry): void {
    const now = this.env.queue.nowMs;
    if (e.index !== this.appliedIndex + 1) {
      this.env.violation({
        invariant: 'state-machine-safety',
        message: `node ${this.id} applied index ${e.index} right after ${this.appliedIndex}`,
        atMs: now,
        nodes: [this.id],
      });
    }
    this.env.safety.observeApply(this.id, e, now);
    this.appliedIndex = e.index;
    this.stats.entriesApplied++;
    if (e.type === EntryType.ConfChange) {
      if (e.data.length === 0) return;
      const cc = decodeConfChange(e.data);
      this.conf = this.raw.applyConfChange(cc);
      this.env.onConfApplied(this, cc, e.index);
      return;
    }
    if (e.data.length === 0) return; // a new leader's no-op
    const cmd = decodeKvCommand(e.data);
    const result = this.kv.apply(cmd);
    const key = `${cmd.clientId}:${cmd.seq}`;
    const waiting = this.pendingWrites.get(key);
    if (result === undefined || waiting === undefined) return;
    this.pendingWrites.delete(key);
    this.env.replyClient(this.id, waiting.client, {
      clientId: waiting.client,
      opId: waiting.opId,
      attempt: waiting.attempt,
      ok: true,
      casOk: result.op === 'cas' ? result.ok : undefined,
    });
  }

  /** Tell the safety checker what the state machine holds now (as of appliedIndex). */
  reportState(): void {
    this.env.safety.observeState(this.id, this.appliedIndex, fnv1a(this.kv.snapshot()), this.env.queue.nowMs);
  }

  private serveRead(readId: number): void {
    // A duplicated ReadIndex request can yield two ReadStates for one read: serve it once.
    const r = this.pendingReads.get(readId);
    if (r === undefined) return;
    this.pendingReads.delete(readId);
    this.env.replyClient(this.id, r.client, { clientId: r.client, opId: r.opId, attempt: r.attempt, ok: true, value: this.kv.get(r.key) });
  }

  private maybeSnapshot(): void {
    const s = this.env.settings;
    const snapIndex = this.storage.snapshot().metadata.index;
    if (this.appliedIndex - snapIndex < s.snapshotEveryEntries) return;
    const image = this.kv.snapshot();
    this.env.safety.observeState(this.id, this.appliedIndex, fnv1a(image), this.env.queue.nowMs);
    const snap = this.storage.createSnapshot(this.appliedIndex, this.conf, image);
    this.disk.write({ kind: 'saveSnapshot', snapshot: snap });
    const compactTo = this.appliedIndex - s.keepEntriesAfterSnapshot;
    if (compactTo >= this.storage.firstIndex()) {
      this.storage.compact(compactTo);
      this.disk.write({ kind: 'compact', index: compactTo });
    }
    this.stats.snapshotsTaken++;
  }
}

function boundedSet<K, V>(m: Map<K, V>, k: K, v: V): void {
  m.delete(k);
  m.set(k, v);
  if (m.size > MAX_PENDING_CLIENT_REQUESTS) m.delete(m.keys().next().value as K);
}

