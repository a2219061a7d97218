/**
 * The data Raft exchanges with its embedder: log entries, messages, persistent state,
 * snapshots and the Ready batch. Plain objects only, so codecs (proto/raft.proto) and the
 * simulator can copy and inspect them freely.
 */

/** A node's identity inside one Raft group. 0 means "none". Kept below 2^53. */
export type NodeId = number;
export const NONE: NodeId = 0;

export enum EntryType {
  Normal = 0,
  /** data is an encoded ConfChange (see confchange.ts). */
  ConfChange = 1,
}

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  /** Application payload; empty for the leader's no-op entry at the start of its term. */
  data: Uint8Array;
}

/** Durable per-node state: must be fsynced before the messages of the same Ready are sent. */
export interface HardState {
  term: number;
  vote: NodeId;
  commit: number;
}

/** Volatile state worth reporting (leader changes, role). Never persisted. */
export interface SoftState {
  lead: NodeId;
  role: Role;
}

export enum Role {
  Follower = 'follower',
  PreCandidate = 'pre-candidate',
  Candidate = 'candidate',
  Leader = 'leader',
}

/** The membership: voters decide elections and commits; learners only receive the log. */
export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

export interface SnapshotMetadata {
  index: number;
  term: number;
  conf: ConfState;
}

/**
 * Snapshot bytes Raft does not hold: the embedder keeps them (in a file) and moves them. A
 * leader then sends chunk descriptors whose bytes the embedder attaches (SnapshotChunk.
 * bytesToAttach); a follower with `spoolIncomingSnapshots` hands each received chunk to the
 * embedder (Ready.snapshotChunks). Either way no whole image is ever in memory.
 */
export interface ExternalSnapshotData {
  readonly external: true;
  readonly sizeBytes: number;
}

export type SnapshotData = Uint8Array | ExternalSnapshotData;

export interface Snapshot {
  metadata: SnapshotMetadata;
  /** The application's state machine image as of metadata.index, or where the embedder keeps it. */
  data: SnapshotData;
}

export function snapshotSizeBytes(data: SnapshotData): number {
  return data instanceof Uint8Array ? data.length : data.sizeBytes;
}

/** The bytes of a snapshot held in memory; throws for an external one (for embedders that never make those). */
export function snapshotBytes(s: Snapshot): Uint8Array {
  if (s.data instanceof Uint8Array) return s.data;
  throw new TypeError(`snapshot ${s.metadata.term}/${s.metadata.index} is external (${s.data.sizeBytes} bytes kept by the embedder)`);
}

export enum ConfChangeType {
  AddVoter = 0,
  AddLearner = 1,
  RemoveNode = 2,
  /** Changes nothing in the configuration; carries new context (a member's new addresses). */
  UpdateNode = 3,
}

/**
 * One single-server membership change. Promoting a learner is AddVoter on an existing
 * learner; demoting a voter is AddLearner on an existing voter.
 */
export interface ConfChange {
  type: ConfChangeType;
  nodeId: NodeId;
  /** Opaque to Raft (e.g. the member's peer address); carried to the application. */
  context?: Uint8Array;
}

export enum MessageType {
  // Local messages: never sent over the network, produced by tick()/campaign()/propose().
  Hup = 'Hup',
  Beat = 'Beat',
  Prop = 'Prop',
  // Network messages.
  App = 'App',
  AppResp = 'AppResp',
  Vote = 'Vote',
  VoteResp = 'VoteResp',
  PreVote = 'PreVote',
  PreVoteResp = 'PreVoteResp',
  /** One chunk of an InstallSnapshot. */
  Snap = 'Snap',
  /** Acknowledges (or rejects) one snapshot chunk. */
  SnapResp = 'SnapResp',
  Heartbeat = 'Heartbeat',
  HeartbeatResp = 'HeartbeatResp',
  TimeoutNow = 'TimeoutNow',
  ReadIndex = 'ReadIndex',
  ReadIndexResp = 'ReadIndexResp',
  TransferLeader = 'TransferLeader',
  /** Local report from the transport: the peer could not be reached. */
  Unreachable = 'Unreachable',
}

/**
 * Every Raft message. Fields unused by a type are left at their zero value; see raft.ts
 * for what each type carries.
 */
export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** App: index of the entry preceding `entries`; AppResp: the follower's last matching index. */
  index: number;
  /** App: term of the entry at `index`; Vote/PreVote: candidate's last log term. */
  logTerm: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  /** AppResp rejection hint: the follower's guess of the highest index that may match. */
  rejectHint: number;
  /** Opaque context: ReadIndex request ids, the campaign-transfer marker on votes. */
  context: Uint8Array;
  /**
   * App: empty, sent only to carry the commit index to a follower the leader already knows
   * holds its whole log. Its answer would tell the leader nothing, so a follower that accepts
   * it does not answer (a rejection is still sent).
   */
  commitOnly: boolean;
  /** Snap: the chunk being sent, with its place in the snapshot. */
  snapshot?: SnapshotChunk;
}

export interface SnapshotChunk {
  metadata: SnapshotMetadata;
  /** Byte offset of `data` within the whole snapshot. */
  offset: number;
  data: Uint8Array;
  /**
   * Set by a leader whose snapshot is external: `data` is empty and the embedder must attach
   * this many bytes read from `offset` before the message leaves (then delete this field).
   */
  bytesToAttach?: number;
  /** Total size of the snapshot in bytes. */
  totalBytes: number;
  /** True on the last chunk. */
  done: boolean;
}

/** A piece of an incoming snapshot the embedder must write at `offset` of its spool (step 1). */
export interface SnapshotChunkWrite {
  metadata: SnapshotMetadata;
  offset: number;
  data: Uint8Array;
}

/** A linearizable read that may be served once the local applied index reaches `index`. */
export interface ReadState {
  index: number;
  context: Uint8Array;
}

/**
 * What the embedder must do now, in this order:
 *  0. send `earlyMessages` (may overlap with step 1);
 *  1. write `snapshotChunks` to the incoming snapshot's spool, persist `snapshot` (if any),
 *     then `entries`, then `hardState`, and fsync when `mustSync`;
 *  2. send `messages`;
 *  3. apply `committedEntries` to the state machine (and confirm conf changes with
 *     RawNode.applyConfChange);
 *  4. serve `readStates` whose index has been applied;
 *  5. call RawNode.advance().
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  entries: Entry[];
  snapshot?: Snapshot;
  /**
   * Pieces of a snapshot being received (only with `spoolIncomingSnapshots`): the embedder
   * writes them before sending `messages` (which acknowledge them). When the last arrives,
   * `snapshot` is external and its bytes are the spool's.
   */
  snapshotChunks: SnapshotChunkWrite[];
  committedEntries: Entry[];
  /** Send only after the persist of step 1 completed. */
  messages: Message[];
  /**
   * May be sent at once, in parallel with the persist (a leader's appends and heartbeats:
   * its term and vote are already durable, and it counts its own entries toward commit
   * only after advance() confirms them durable).
   */
  earlyMessages: Message[];
  readStates: ReadState[];
  /** Entries or term/vote changed: the write must reach stable storage before messages go out. */
  mustSync: boolean;
}

export const EMPTY_BYTES: Uint8Array = new Uint8Array(0);

export function emptyMessage(type: MessageType, from: NodeId, to: NodeId, term: number): Message {
  return {
    type,
    from,
    to,
    term,
    index: 0,
    logTerm: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    context: EMPTY_BYTES,
    commitOnly: false,
  };
}

export function isLocalMessage(t: MessageType): boolean {
  return t === MessageType.Hup || t === MessageType.Beat || t === MessageType.Unreachable;
}

/** Responses carry no new information about log or term; used by the transport to prioritise. */
export function isResponseMessage(t: MessageType): boolean {
  return (
    t === MessageType.AppResp ||
    t === MessageType.VoteResp ||
    t === MessageType.PreVoteResp ||
    t === MessageType.HeartbeatResp ||
    t === MessageType.SnapResp ||
    t === MessageType.ReadIndexResp
  );
}
