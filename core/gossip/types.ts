/**
 * The data the gossip state machine exchanges with its embedder: addresses, messages (UDP),
 * stream messages (TCP), member views, events and the effects batch returned by every call.
 * Plain objects only. Messages are treated as immutable once built: the simulator hands the
 * same object to many nodes, and the broadcast queue re-sends received objects unchanged.
 */

export interface Address {
  host: string;
  port: number;
}

/** JSON-like node metadata (role, ports, zone, tags, version). Bounded by MAX_META_BYTES. */
export type MetaValue = string | number | boolean | null | MetaValue[] | { [key: string]: MetaValue };
export type Meta = { [key: string]: MetaValue };

export type MemberStatus = 'alive' | 'suspect' | 'dead' | 'left';

/** Wire codes of member states in push-pull entries. */
export const STATUS_CODE: Record<MemberStatus, number> = { alive: 0, suspect: 1, dead: 2, left: 3 };
export const STATUS_BY_CODE: readonly MemberStatus[] = ['alive', 'suspect', 'dead', 'left'];

export enum MsgType {
  Ping = 0,
  PingReq = 1,
  Ack = 2,
  Nack = 3,
  Alive = 4,
  Suspect = 5,
  Dead = 6,
  // Stream-only messages (TCP).
  StreamPing = 10,
  PushPull = 11,
  StreamError = 12,
  KeyringOp = 13,
  KeyringReply = 14,
}

/** "Are you alive?" `target` guards against an address now used by another node. The answer
 * goes to the packet's source address. */
export interface PingMsg {
  t: MsgType.Ping;
  seq: number;
  target: string;
}

/** "Please ping `target` for me" (SWIM's ping-req); `nack` asks for a nack on timeout (Lifeguard). */
export interface PingReqMsg {
  t: MsgType.PingReq;
  seq: number;
  target: string;
  host: string;
  port: number;
  nack: boolean;
}

export interface AckMsg {
  t: MsgType.Ack;
  seq: number;
}

/** A helper tried the target for us and got no answer: proof that we, the origin, are reachable. */
export interface NackMsg {
  t: MsgType.Nack;
  seq: number;
}

export interface AliveMsg {
  t: MsgType.Alive;
  name: string;
  incarnation: number;
  host: string;
  port: number;
  meta: Meta;
  protocol: number;
}

export interface SuspectMsg {
  t: MsgType.Suspect;
  name: string;
  incarnation: number;
  from: string;
}

/** `from === name` means the node left gracefully. */
export interface DeadMsg {
  t: MsgType.Dead;
  name: string;
  incarnation: number;
  from: string;
}

export type StateMsg = AliveMsg | SuspectMsg | DeadMsg;
export type Message = PingMsg | PingReqMsg | AckMsg | NackMsg | StateMsg;

/** One member's full state in a push-pull exchange. */
export interface PushPullEntry {
  name: string;
  incarnation: number;
  host: string;
  port: number;
  status: MemberStatus;
  meta: Meta;
  protocol: number;
}

export interface StreamPingMsg {
  t: MsgType.StreamPing;
  seq: number;
  target: string;
}

/** Full-state exchange (anti-entropy, and the first contact of a join). */
export interface PushPullMsg {
  t: MsgType.PushPull;
  join: boolean;
  /** Name of the sender, so the receiver can refuse a join whose name is taken. */
  from: string;
  states: PushPullEntry[];
  /**
   * The sender's keyring version (Keyring.version), added by the runner (GossipNode) to the
   * answer to a join, not by the machine: a member joining late learns it, so a recorded older
   * keyring change replayed to it is stale there too. Absent from members before it.
   */
  keyringVersion?: number;
}

export interface StreamErrorMsg {
  t: MsgType.StreamError;
  code: string;
  message: string;
}

export type KeyringOpName = 'install' | 'use' | 'remove' | 'list';

/** Keyring change sent over the encrypted stream to every member (cluster-wide rotation). */
export interface KeyringOpMsg {
  t: MsgType.KeyringOp;
  op: KeyringOpName;
  /** base64 key; empty for list. */
  key: string;
  /** Lamport time of this change (Keyring.version); applied only above the member's own. 0 for list. */
  version: number;
  /** A manager's signature of the change (keyring/authority.ts), base64; absent from a list. */
  sig?: string;
}

export interface KeyringReplyMsg {
  t: MsgType.KeyringReply;
  ok: boolean;
  code: string;
  /** For list: the node's keys (base64), primary first. */
  keys: string[];
  /** The member's keyring version after the op (a GOSSIP_KEYRING_STALE refusal says how far ahead it is). */
  version: number;
}

export type StreamMsg = StreamPingMsg | PushPullMsg | StreamErrorMsg | AckMsg | KeyringOpMsg | KeyringReplyMsg;

/** A member as reported to users and events. */
export interface MemberInfo {
  name: string;
  host: string;
  port: number;
  status: MemberStatus;
  incarnation: number;
  meta: Meta;
  /** Machine time (ms) of the last status change. */
  statusChangedMs: number;
}

export type MemberEventType = 'join' | 'update' | 'leave' | 'fail';

export interface MemberEvent {
  type: MemberEventType;
  member: MemberInfo;
  atMs: number;
}

export interface OutPacket {
  to: Address;
  messages: Message[];
  /** Plaintext size (before sealing) of the encoded compound packet. */
  sizeBytes: number;
}

export interface StreamRequest {
  /** Machine-local id; the embedder reports the outcome with `streamResult(id, …)`. */
  id: number;
  to: Address;
  request: StreamMsg;
  /** The embedder must report a result (possibly a failure) within this many ms. */
  timeoutMs: number;
}

export interface JoinOutcome {
  streamId: number;
  ok: boolean;
  /** Set when !ok: GOSSIP_NAME_CONFLICT, GOSSIP_STREAM_FAILED, … */
  code?: string;
}

/** What one call into the machine asks the embedder to do. */
export interface Effects {
  packets: OutPacket[];
  streams: StreamRequest[];
  events: MemberEvent[];
  joins: JoinOutcome[];
}

export function emptyEffects(): Effects {
  return { packets: [], streams: [], events: [], joins: [] };
}
