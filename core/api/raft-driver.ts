/**
 * RaftDriver: runs a RawNode in a real process — a wall-clock tick, the Ready loop (persist,
 * send, apply, advance), and promises for proposals and linearizable reads. Persistence,
 * transport and the state machine are injected, so the same driver runs with LevelDB and
 * TCP in the agent and with memory in tests. Not responsible for what entries mean.
 */
import { randomBytes } from 'node:crypto';
import {
  ConfChange,
  ConfState,
  Entry,
  EntryType,
  HardState,
  Message,
  NONE,
  NodeId,
  RaftError,
  RawNode,
  RawNodeConfig,
  Ready,
  Role,
  Snapshot,
  SnapshotChunkWrite,
  SnapshotMetadata,
  Storage,
  decodeConfChange,
} from '../raft/index.js';
import { MemoryStorage } from '../raft/storage.js';
import { ValueSlab } from '../kv/keys.js';

export interface PersistBatch {
  hardState?: HardState;
  entries: Entry[];
  snapshot?: Snapshot;
  snapshotChunks?: SnapshotChunkWrite[];
}

export interface RaftPersistence {
  /** The read mirror RawNode consults; updated by save() once data is durable. */
  readonly storage: Storage;
  /**
   * Spool snapshot chunks, then write snapshot, entries and hard state; resolve only when
   * durable if `sync`. Rejects with SnapshotRefusedError, having written nothing but chunks,
   * when the batch's snapshot fails its check (bytes the state machine cannot restore).
   */
  save(batch: PersistBatch, sync: boolean): Promise<void>;
  /**
   * Bytes of the snapshot `of` from `offset`, for a chunk Raft sends without holding them
   * (storage whose snapshots are external must provide this). Rejects if that snapshot is gone.
   */
  readSnapshotChunk?(of: SnapshotMetadata, offset: number, length: number): Promise<Uint8Array>;
}

export interface RaftTransport {
  send(messages: Message[]): void;
  /** Writes what send() queued now instead of at the end of the turn (optional). */
  flushNow?(): void;
}

export interface RaftStateMachine {
  /** Apply one committed normal entry; the result goes to the proposer's promise. */
  apply(entry: Entry, payload: Uint8Array): unknown;
  /** A membership change was applied (after RawNode.applyConfChange). */
  applyConfChange?(cc: ConfChange, conf: ConfState, index: number): void;
  /**
   * An entry with nothing for apply() was applied (a membership change, after
   * applyConfChange; a leader's no-op): the applied index moves past it, so whatever is
   * persisted or imaged next describes the same index as the membership it holds.
   */
  noteApplied?(entry: Entry): void;
  /**
   * A committed membership change that cannot be made (removing the last voter, an encoding
   * this version cannot read) was skipped; noteApplied follows. Every member skips it alike.
   */
  skippedConfChange?(entry: Entry, reason: string): void;
  /** Replace the whole state with a snapshot received from the leader. */
  restore(snapshot: Snapshot): void | Promise<void>;
  /** After each Ready's entries were applied (e.g. persist the applied state in one batch). */
  afterApply?(): void | Promise<void>;
}

/** A received snapshot failed its check before it was installed; nothing else of the batch was written. */
export class SnapshotRefusedError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SnapshotRefusedError';
  }
}

export class RaftDriverError extends Error {
  constructor(
    readonly code: 'TIMEOUT' | 'STOPPED' | 'DROPPED' | 'LEADER_CHANGED',
    message: string,
  ) {
    super(message);
    this.name = 'RaftDriverError';
  }
}

/** Proposal framing: 16 random request-id bytes, then the payload. */
const REQUEST_ID_BYTES = 16;

interface Waiter {
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
  /** A proposal handed to Raft while this node led: a step-down may lose it (noticeRole). */
  asLeader?: boolean;
}

export interface RaftDriverOptions {
  tickMs: number;
  /** How long a proposal or read may wait before failing with TIMEOUT. */
  requestTimeoutMs: number;
  /**
   * The RawNode's configuration as of what is durable and applied now. After a refused
   * snapshot the driver drops the RawNode (whose memory already holds that snapshot) and
   * builds a new one from this, as a restart would; the leader then sends the snapshot again.
   * Without it a refused snapshot stops the loop.
   */
  reloadConfig?: () => RawNodeConfig;
  /**
   * The Ready loop failed (a write to the Raft log failed: a full or failing disk) and has
   * stopped for good: the driver is stopped (waiting requests fail) and this node must not
   * take part any more. Without it the error is thrown from the loop (an unhandled rejection).
   */
  onFatal?: (err: Error) => void;
}

/** Counters of the Ready loop, for /metrics and tuning (how well proposals batch). */
export interface RaftDriverStats {
  /** Ready cycles handled. */
  readies: number;
  /** Entries written to the log (one save per Ready that has any). */
  entriesPersisted: number;
  /** Saves (one durable write each). */
  saves: number;
  /** Committed entries applied. */
  entriesApplied: number;
  /** Messages handed to the transport. */
  messagesSent: number;
  /** Proposals accepted by Raft. */
  proposals: number;
  /** Leader changes seen. */
  leaderChanges: number;
}

/** Who asked for a proposal (a client's call), asked before a parked proposal is made. */
export interface Requester {
  /** False once the requester gave up (cancelled, or past its deadline). */
  wanted?(): boolean;
}

export class RaftDriver {
  private node_: RawNode;
  readonly stats: RaftDriverStats = { readies: 0, entriesPersisted: 0, saves: 0, entriesApplied: 0, messagesSent: 0, proposals: 0, leaderChanges: 0 };
  /** Our proposals in flight, by the counter half of their request id. */
  private readonly proposals = new Map<number, Waiter>();
  /**
   * Proposals made while Raft knew no leader (an election), by counter: handed to Raft once
   * one is known, as etcd's node holds proposals while it has no leader, so a write during an
   * election is slower rather than refused. Their waiters are in `proposals`.
   */
  private readonly parked = new Map<number, { data: Uint8Array; requester: Requester | undefined }>();
  /** Per follower, the last snapshot chunk waiting for its bytes: chunks are read and sent in order. */
  private readonly chunkSends = new Map<NodeId, Promise<void>>();
  /** Per follower, bumped when a chunk read fails: chunks queued before that are dropped (Raft starts over). */
  private readonly chunkGeneration = new Map<NodeId, number>();
  private readonly reads = new Map<string, Waiter>();
  /** The term and leader Raft had when each unanswered read round started (see failUnconfirmedReads). */
  private readonly readEpoch = new Map<string, string>();
  /** Reads whose index is known, waiting for apply to catch up. */
  private readonly readsByIndex: Array<{ index: number; key: string }> = [];
  private running = false;
  private scheduled = false;
  private stopped = false;
  private ticker: NodeJS.Timeout | undefined;
  private lastRole: Role = Role.Follower;
  private lastLead: NodeId = 0;
  private leaderListeners: Array<(lead: NodeId, role: Role) => void> = [];
  private loopError: Error | undefined;
  private readonly requestIdPrefix = randomBytes(8);
  /** The prefix as two big-endian u32s, to recognise our own entries without allocating. */
  private readonly prefixHi = this.requestIdPrefix.readUInt32BE(0);
  private readonly prefixLo = this.requestIdPrefix.readUInt32BE(4);
  private requestCounter = 0;
  /** Memory of the entries this node proposes (see propose). */
  private readonly entrySlab = new ValueSlab();
  /** Read barriers waiting for the ReadIndex round in flight to finish, to share the next one. */
  private readsWaitingForNextRound: Array<{ resolve(roundStartMs: number): void; reject(e: Error): void }> = [];
  private readRoundInFlight = false;

  constructor(
    config: RawNodeConfig,
    private readonly persistence: RaftPersistence,
    private readonly transport: RaftTransport,
    private readonly sm: RaftStateMachine,
    private readonly opts: RaftDriverOptions,
  ) {
    this.node_ = new RawNode(config);
  }

  get node(): RawNode {
    return this.node_;
  }

  start(): void {
    this.ticker = setInterval(() => {
      this.node.tick();
      this.releaseParked();
      this.schedule();
    }, this.opts.tickMs);
    this.ticker.unref?.();
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.ticker) clearInterval(this.ticker);
    const err = new RaftDriverError('STOPPED', 'raft node stopped');
    const neverProposed = new RaftDriverError('DROPPED', 'raft node stopped before a leader was known');
    for (const [key, w] of this.proposals) {
      clearTimeout(w.timer);
      w.reject(this.parked.has(key) ? neverProposed : err);
    }
    for (const w of this.reads.values()) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.proposals.clear();
    this.parked.clear();
    this.reads.clear();
    for (const w of this.readsWaitingForNextRound) w.reject(err);
    this.readsWaitingForNextRound = [];
  }

  onLeaderChange(fn: (lead: NodeId, role: Role) => void): void {
    this.leaderListeners.push(fn);
  }

  /** Deliver a message from a peer. Bad messages from peers are dropped, never thrown. */
  step(m: Message): void {
    if (this.stopped) return;
    try {
      this.node.step(m);
    } catch (e) {
      if (!(e instanceof RaftError) || e.code === 'INVARIANT') throw e;
    }
    this.schedule();
  }

  /**
   * Propose `payload`; resolves with the state machine's result once applied here. A requester
   * that gave up while the proposal was parked (no leader) has it dropped rather than proposed
   * later (etcd drops a proposal whose context ends before its node has a leader).
   */
  propose(payload: Uint8Array, requester?: Requester): Promise<unknown> {
    if (this.stopped) return Promise.reject(new RaftDriverError('STOPPED', 'raft node stopped'));
    const counter = ++this.requestCounter;
    // Not Node's pool: the log keeps the entry until its next compaction, and a pool slice would
    // keep its whole 8 KiB slab (and every transient buffer cut from it) alive that long.
    const data = this.entrySlab.alloc(REQUEST_ID_BYTES + payload.length);
    this.writeRequestId(data, counter);
    data.set(payload, REQUEST_ID_BYTES);
    return this.track(this.proposals, counter, () => {
      if (this.node.raft.lead === NONE) {
        this.parked.set(counter, { data, requester });
        return;
      }
      this.handToRaft(counter, data);
    });
  }

  /** Proposes `data`, noting whether this node leads (a forwarded proposal is the leader's to lose). */
  private handToRaft(counter: number, data: Uint8Array): void {
    const asLeader = this.node.raft.role === Role.Leader;
    this.node.propose(data);
    this.stats.proposals++;
    if (asLeader) this.proposals.get(counter)!.asLeader = true;
  }

  /** Hands parked proposals to Raft once it knows a leader; those it refuses fail as DROPPED. */
  private releaseParked(): void {
    if (this.parked.size === 0 || this.node.raft.lead === NONE) return;
    for (const [counter, { data, requester }] of this.parked) {
      this.parked.delete(counter);
      try {
        if (requester?.wanted?.() === false) throw new RaftError('PROPOSAL_DROPPED', 'the client gave up before a leader was elected');
        this.handToRaft(counter, data);
      } catch (e) {
        const w = this.proposals.get(counter);
        if (w === undefined) continue;
        clearTimeout(w.timer);
        this.proposals.delete(counter);
        w.reject(e instanceof RaftError ? new RaftDriverError('DROPPED', e.message) : (e as Error));
      }
    }
    this.schedule();
  }

  proposeConfChange(cc: ConfChange): void {
    this.node.proposeConfChange(cc);
    this.schedule();
  }

  /**
   * Linearizable read barrier. Resolves, with the instant (performance.now()) its ReadIndex
   * round started, once this node has confirmed it led at that instant and applied everything
   * committed before it. A caller
   * that needs leadership recent (a lease renewal) counts from that instant: the round may have
   * waited behind another, and the apply behind a slow disk, long after it.
   */
  readBarrier(): Promise<number> {
    if (this.stopped) return Promise.reject(new RaftDriverError('STOPPED', 'raft node stopped'));
    // One ReadIndex round at a time (as etcd does): reads that arrive while a round is in
    // flight cannot use it (it may have started before they arrived), so they share the next.
    return new Promise<number>((resolve, reject) => {
      this.readsWaitingForNextRound.push({ resolve, reject });
      if (!this.readRoundInFlight) this.startReadRound();
    });
  }

  private startReadRound(): void {
    const waiters = this.readsWaitingForNextRound;
    this.readsWaitingForNextRound = [];
    if (waiters.length === 0) return;
    this.readRoundInFlight = true;
    const startedMs = performance.now();
    const ctx = Buffer.allocUnsafe(REQUEST_ID_BYTES);
    this.writeRequestId(ctx, ++this.requestCounter);
    const key = ctx.toString('hex');
    this.readEpoch.set(key, this.epoch());
    this.track(this.reads, key, () => this.node.readIndex(ctx)).finally(() => this.readEpoch.delete(key)).then(
      () => waiters.forEach((w) => w.resolve(startedMs)),
      (e: Error) => waiters.forEach((w) => w.reject(e)),
    ).finally(() => {
      this.readRoundInFlight = false;
      if (!this.stopped) this.startReadRound();
    });
  }

  /**
   * Register a waiter under `key` in `waiters`, then start the request. The waiter fails with
   * TIMEOUT after requestTimeoutMs, or DROPPED when Raft refuses the request at once.
   */
  private track<K>(waiters: Map<K, Waiter>, key: K, start: () => void): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(key);
        // Never handed to Raft: certainly not applied, which "no leader" tells a client.
        if (typeof key === 'number' && this.parked.delete(key)) reject(new RaftDriverError('DROPPED', 'no leader was elected within the request timeout'));
        else reject(new RaftDriverError('TIMEOUT', 'request timed out'));
      }, this.opts.requestTimeoutMs);
      waiters.set(key, { resolve, reject, timer });
      try {
        start();
      } catch (e) {
        clearTimeout(timer);
        waiters.delete(key);
        reject(e instanceof RaftError ? new RaftDriverError('DROPPED', e.message) : e);
        return;
      }
      this.schedule();
    });
  }

  transferLeadership(to: NodeId): void {
    this.node.transferLeadership(to);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.running || this.stopped || this.loopError !== undefined) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.loop();
    });
  }

  /** The Ready loop. Proposals arriving during a save join the next Ready: group commit. */
  private async loop(): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    try {
      while (!this.stopped && this.node.hasReady()) {
        const rd = this.node.ready();
        try {
          await this.handleReady(rd);
        } catch (e) {
          if (!(e instanceof SnapshotRefusedError) || this.opts.reloadConfig === undefined) throw e;
          this.reload();
          continue;
        }
        this.node.advance();
        // A read waiting for entries this Ready applied: log.applied moved only now.
        this.releaseReads();
      }
    } catch (e) {
      this.loopError = e as Error;
      if (this.opts.onFatal === undefined) throw e;
      // Nothing more goes through this node: waiting requests fail now, new ones at once.
      this.stop();
      this.opts.onFatal(this.loopError);
    } finally {
      this.running = false;
    }
    if (!this.stopped && this.loopError === undefined && this.node.hasReady()) this.schedule();
  }

  /** Unique across nodes and restarts: a random per-process prefix and a counter (cheaper than 16 random bytes per request). */
  private writeRequestId(out: Buffer, counter: number): void {
    this.requestIdPrefix.copy(out, 0);
    out.writeUInt32BE(Math.floor(counter / 2 ** 32), 8);
    out.writeUInt32BE(counter >>> 0, 12);
  }

  /** The counter of a request id this process made, or undefined for another member's. */
  private ownCounter(d: Uint8Array): number | undefined {
    if (readU32BE(d, 0) !== this.prefixHi || readU32BE(d, 4) !== this.prefixLo) return undefined;
    return readU32BE(d, 8) * 2 ** 32 + readU32BE(d, 12);
  }

  private lastHardState(): HardState {
    return this.node.raft.hardState();
  }

  lastError(): Error | undefined {
    return this.loopError;
  }

  private async handleReady(rd: Ready): Promise<void> {
    const st = this.stats;
    st.readies++;
    st.messagesSent += rd.earlyMessages.length + rd.messages.length;
    st.entriesApplied += rd.committedEntries.length;
    // A hard state whose only change is the commit index is not written on its own: the
    // commit index is a hint (a restarted node learns it from the leader, and the applied
    // state records how far it got), so it rides along with the next entries instead.
    const mustSave = !!rd.snapshot || rd.entries.length > 0 || rd.snapshotChunks.length > 0 || (rd.hardState !== undefined && rd.mustSync);
    if (rd.earlyMessages.length > 0) {
      this.send(rd.earlyMessages);
      // A leader's messages leave now, not at the end of the turn (the transport's flush): its
      // appends before the save's synchronous part (building the batch, handing it to LevelDB's
      // thread), so the followers' fsyncs, the longest step of a commit, start that much sooner;
      // its commit (appends carrying the new commit index) before it applies, as etcd's does, so
      // the followers apply, and serve their watchers, beside the leader's apply rather than
      // after it and its answers.
      if (mustSave || rd.committedEntries.length > 0) this.transport.flushNow?.();
    }
    let saving: Promise<void> | undefined;
    if (mustSave) {
      st.saves++;
      st.entriesPersisted += rd.entries.length;
      const batch: PersistBatch = { hardState: rd.hardState ?? this.lastHardState(), entries: rd.entries, snapshot: rd.snapshot };
      if (rd.snapshotChunks.length > 0) batch.snapshotChunks = rd.snapshotChunks;
      saving = this.persistence.save(batch, rd.mustSync);
    }
    // Committed entries this node already holds durably are applied while the save's fsync
    // runs, as etcd applies beside its WAL write: committed means durable on a quorum, and
    // the state machine never gets ahead of this node's own log. (A leader counts itself
    // only once persisted, so on a leader that is every committed entry.)
    const early = rd.snapshot ? 0 : durablePrefix(rd.committedEntries, rd.entries);
    for (let i = 0; i < early; i++) this.applyEntry(rd.committedEntries[i]!);
    if (saving) await saving;
    // Stopped during the save (another process is this member, or a fatal error): nothing more
    // leaves this node, votes least of all.
    if (this.stopped) return;
    if (rd.messages.length > 0) this.send(rd.messages);
    if (rd.snapshot) await this.sm.restore(rd.snapshot);
    for (let i = early; i < rd.committedEntries.length; i++) this.applyEntry(rd.committedEntries[i]!);
    if (rd.committedEntries.length > 0 || rd.snapshot) await this.sm.afterApply?.();
    const leadChanged = rd.softState !== undefined && this.noticeRole(rd.softState.lead, rd.softState.role);
    for (const rs of rd.readStates) {
      const key = Buffer.from(rs.context).toString('hex');
      if (this.reads.has(key)) this.readsByIndex.push({ index: rs.index, key });
    }
    if (leadChanged) this.failUnconfirmedReads();
    this.releaseReads();
    this.releaseParked();
  }

  /**
   * A refused snapshot: the RawNode already took it into memory (log, commit index), so it is
   * replaced by one built from storage, which holds none of it. Nothing of that Ready left
   * this node. Our proposals stay (the leader may still commit them); ReadIndex rounds are
   * failed, since the new RawNode knows nothing of them.
   */
  private reload(): void {
    this.node_ = new RawNode(this.opts.reloadConfig!());
    const err = new RaftDriverError('DROPPED', 'raft state reloaded after a refused snapshot');
    for (const w of this.reads.values()) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.reads.clear();
    this.readsByIndex.length = 0;
  }

  /** Hands messages to the transport; snapshot chunks whose bytes Raft does not hold leave once read. */
  private send(messages: Message[]): void {
    if (!messages.some(needsSnapshotBytes)) {
      this.transport.send(messages);
      return;
    }
    for (const m of messages) if (needsSnapshotBytes(m)) this.queueChunk(m);
    const now = messages.filter((m) => !needsSnapshotBytes(m));
    if (now.length > 0) this.transport.send(now);
  }

  /** Chunks of a window leave in offset order: a later one read first would look like a gap to the follower. */
  private queueChunk(m: Message): void {
    const generation = this.chunkGeneration.get(m.to) ?? 0;
    const next = (this.chunkSends.get(m.to) ?? Promise.resolve()).then(() => this.attachAndSend(m, generation));
    this.chunkSends.set(m.to, next);
    void next.then(() => {
      if (this.chunkSends.get(m.to) === next) this.chunkSends.delete(m.to);
    });
  }

  /** Reads a snapshot chunk's bytes, then sends it. Never rejects. */
  private async attachAndSend(m: Message, generation: number): Promise<void> {
    // A chunk behind one whose read failed would reach the follower after a gap.
    if ((this.chunkGeneration.get(m.to) ?? 0) !== generation) return;
    const chunk = m.snapshot!;
    try {
      if (this.persistence.readSnapshotChunk === undefined) throw new Error('persistence cannot read snapshot chunks');
      const data = await this.persistence.readSnapshotChunk(chunk.metadata, chunk.offset, chunk.bytesToAttach!);
      if (data.length !== chunk.bytesToAttach) throw new Error(`read ${data.length} of ${chunk.bytesToAttach} snapshot bytes at ${chunk.offset}`);
      chunk.data = data;
      delete chunk.bytesToAttach;
    } catch {
      // The snapshot was replaced (or its file is unreadable): Raft starts over with the current one.
      if (this.stopped) return;
      this.chunkGeneration.set(m.to, generation + 1);
      this.node.reportSnapshotFailure(m.to, chunk.metadata.index);
      this.schedule();
      return;
    }
    if (!this.stopped) this.transport.send([m]);
  }

  private applyEntry(e: Entry): void {
    if (e.type === EntryType.ConfChange) {
      let cc: ConfChange;
      let conf: ConfState;
      try {
        cc = decodeConfChange(e.data);
        conf = this.node.applyConfChange(cc); // throws before changing anything
      } catch (err) {
        if (!(err instanceof RaftError) || err.code !== 'INVALID_CONF_CHANGE') throw err;
        // Committed, so every member reaches it and skips it alike (etcd-raft leaves such a
        // change out too). Thrown, it stopped every member, and again at every restart.
        this.sm.skippedConfChange?.(e, err.message);
        this.sm.noteApplied?.(e);
        return;
      }
      this.sm.applyConfChange?.(cc, conf, e.index);
      this.sm.noteApplied?.(e);
      return;
    }
    // A leader's no-op, or not ours (ignored rather than crash).
    if (e.data.length < REQUEST_ID_BYTES) {
      this.sm.noteApplied?.(e);
      return;
    }
    const counter = this.ownCounter(e.data);
    let result: unknown;
    let error: Error | undefined;
    try {
      result = this.sm.apply(e, e.data.subarray(REQUEST_ID_BYTES));
    } catch (err) {
      error = err as Error;
    }
    const w = counter === undefined ? undefined : this.proposals.get(counter);
    if (!w) return;
    this.proposals.delete(counter!);
    clearTimeout(w.timer);
    if (error) w.reject(error);
    else w.resolve(result);
  }

  private releaseReads(): void {
    // Read the field directly: status() builds the leader's whole progress map.
    const applied = this.node.raft.log.applied;
    for (let i = 0; i < this.readsByIndex.length; ) {
      const r = this.readsByIndex[i]!;
      if (r.index <= applied) {
        const w = this.reads.get(r.key);
        this.reads.delete(r.key);
        this.readsByIndex.splice(i, 1);
        if (w) {
          clearTimeout(w.timer);
          w.resolve(undefined);
        }
      } else i++;
    }
  }

  /** Raft's term and leader as they stand (ahead of what the driver last reported). */
  private epoch(): string {
    const r = this.node.raft;
    return `${r.term}/${r.lead}`;
  }

  /** Records the leader and role Raft reports; true if the leader changed. */
  private noticeRole(lead: NodeId, role: Role): boolean {
    const leadChanged = lead !== this.lastLead;
    if (leadChanged && lead !== 0) this.stats.leaderChanges++;
    this.lastLead = lead;
    if (this.lastRole === Role.Leader && role !== Role.Leader) {
      // What we proposed as leader may never commit; fail fast rather than at the timeout.
      // (Parked ones were never proposed, and those forwarded to another leader since are that
      // leader's to commit: they wait.)
      for (const [key, w] of this.proposals) {
        if (w.asLeader !== true) continue;
        clearTimeout(w.timer);
        w.reject(new RaftDriverError('LEADER_CHANGED', 'leader changed; the request may or may not have been applied'));
        this.proposals.delete(key);
      }
    }
    this.lastRole = role;
    for (const fn of this.leaderListeners) fn(lead, role);
    return leadChanged;
  }

  /**
   * The leader changed: ReadIndex rounds not yet answered never will be (a deposed leader drops
   * its pending ones, and a follower's went to the old leader), so they fail now with
   * LEADER_CHANGED, as etcd's reads do, instead of at the request timeout. Reads already
   * confirmed (waiting only for this node to apply) stay.
   */
  private failUnconfirmedReads(): void {
    const confirmed = new Set(this.readsByIndex.map((r) => r.key));
    const now = this.epoch();
    for (const [key, w] of this.reads) {
      if (confirmed.has(key)) continue;
      // Started under the leader Raft knows now (the driver hears of a change only after a
      // save): it went to that leader, which will answer.
      if (this.readEpoch.get(key) === now) continue;
      clearTimeout(w.timer);
      this.reads.delete(key);
      w.reject(new RaftDriverError('LEADER_CHANGED', 'leader changed'));
    }
  }
}

function needsSnapshotBytes(m: Message): boolean {
  return m.snapshot?.bytesToAttach !== undefined;
}

/** Entry data arrives as a plain Uint8Array (no Buffer read methods): read it by hand. */
function readU32BE(d: Uint8Array, o: number): number {
  return ((d[o]! << 24) | (d[o + 1]! << 16) | (d[o + 2]! << 8) | d[o + 3]!) >>> 0;
}

/** How many of `committed` lie below the first of `unsaved` (the entries this Ready persists). */
export function durablePrefix(committed: readonly Entry[], unsaved: readonly Entry[]): number {
  if (unsaved.length === 0) return committed.length;
  const firstUnsaved = unsaved[0]!.index;
  let n = 0;
  while (n < committed.length && committed[n]!.index < firstUnsaved) n++;
  return n;
}

/** Persistence in memory only (dev node, tests): "durable" as soon as it is stored. */
export class MemoryPersistence implements RaftPersistence {
  readonly storage = new MemoryStorage();
  async save(batch: { hardState?: HardState; entries: Entry[]; snapshot?: Snapshot }): Promise<void> {
    if (batch.snapshot) this.storage.applySnapshot(batch.snapshot);
    this.storage.append(batch.entries);
    if (batch.hardState) this.storage.setHardState(batch.hardState);
  }
}
