/**
 * Encodes and decodes Raft's plain objects (core/raft/types.ts) with proto/raft.proto: batches
 * of messages for the peer transport, entries, hard state and snapshot records for
 * core/storage. Decoders check every field and throw only NetError (ERR_DECODE for bytes that
 * are not protobuf of the right shape, ERR_INVALID_MESSAGE for values Raft must never see).
 */
import type protobuf from 'protobufjs';
import {
  EntryType,
  MessageType,
  type ConfState,
  type Entry,
  type HardState,
  type Message,
  type SnapshotChunk,
  type SnapshotMetadata,
} from '../raft/types.js';
import { NetError } from './errors.js';
import { peerType } from './proto-files.js';

import { MAX_CONF_MEMBERS, MAX_ENTRIES_PER_MESSAGE, MAX_MESSAGES_PER_BATCH, checkBatchBounds } from './raft-wire-bounds.js';
export { MAX_CONF_MEMBERS, MAX_ENTRIES_PER_BATCH, MAX_ENTRIES_PER_MESSAGE, MAX_MESSAGES_PER_BATCH } from './raft-wire-bounds.js';

const WIRE_TYPE: ReadonlyMap<MessageType, number> = new Map([
  [MessageType.App, 1],
  [MessageType.AppResp, 2],
  [MessageType.Vote, 3],
  [MessageType.VoteResp, 4],
  [MessageType.PreVote, 5],
  [MessageType.PreVoteResp, 6],
  [MessageType.Snap, 7],
  [MessageType.SnapResp, 8],
  [MessageType.Heartbeat, 9],
  [MessageType.HeartbeatResp, 10],
  [MessageType.TimeoutNow, 11],
  [MessageType.ReadIndex, 12],
  [MessageType.ReadIndexResp, 13],
  [MessageType.TransferLeader, 14],
  [MessageType.Prop, 15],
]);
const FROM_WIRE_TYPE: ReadonlyMap<number, MessageType> = new Map([...WIRE_TYPE].map(([k, v]) => [v, k]));

/** True for the message types that may cross a socket. */
export function isWireMessageType(t: MessageType): boolean {
  return WIRE_TYPE.has(t);
}

let types:
  | { batch: protobuf.Type; entry: protobuf.Type; hardState: protobuf.Type; stored: protobuf.Type }
  | undefined;
function t(): NonNullable<typeof types> {
  if (types === undefined) {
    types = {
      batch: peerType('picloud.raft.MessageBatch'),
      entry: peerType('picloud.raft.Entry'),
      hardState: peerType('picloud.raft.HardState'),
      stored: peerType('picloud.raft.StoredSnapshot'),
    };
  }
  return types;
}

// ---------------------------------------------------------------- encoding

function wireEntry(e: Entry): object {
  return { term: e.term, index: e.index, type: e.type, data: e.data };
}

function wireMetadata(m: SnapshotMetadata): object {
  return { index: m.index, term: m.term, conf: { voters: m.conf.voters, learners: m.conf.learners } };
}

function wireChunk(c: SnapshotChunk): object {
  return {
    metadata: wireMetadata(c.metadata),
    offset: c.offset,
    data: c.data,
    totalBytes: c.totalBytes,
    done: c.done,
  };
}

function wireMessage(m: Message): object {
  const type = WIRE_TYPE.get(m.type);
  if (type === undefined) throw new NetError('ERR_INVALID_MESSAGE', `raft message type ${m.type} is local and never sent`);
  return {
    type,
    from: m.from,
    to: m.to,
    term: m.term,
    index: m.index,
    logTerm: m.logTerm,
    entries: m.entries.map(wireEntry),
    commit: m.commit,
    reject: m.reject,
    rejectHint: m.rejectHint,
    context: m.context,
    snapshot: m.snapshot === undefined ? undefined : wireChunk(m.snapshot),
    commitOnly: m.commitOnly,
  };
}

export function encodeMessageBatch(messages: readonly Message[]): Uint8Array {
  return t().batch.encode({ messages: messages.map(wireMessage) }).finish();
}

export function encodeEntry(e: Entry): Uint8Array {
  return t().entry.encode(wireEntry(e)).finish();
}

export function encodeHardState(h: HardState): Uint8Array {
  return t().hardState.encode({ term: h.term, vote: h.vote, commit: h.commit }).finish();
}

export interface StoredSnapshotRecord {
  metadata: SnapshotMetadata;
  fileName: string;
  sizeBytes: number;
}

export function encodeStoredSnapshot(s: StoredSnapshotRecord): Uint8Array {
  return t()
    .stored.encode({ metadata: wireMetadata(s.metadata), fileName: s.fileName, sizeBytes: s.sizeBytes })
    .finish();
}

// ---------------------------------------------------------------- decoding

interface LongLike {
  low: number;
  high: number;
  unsigned: boolean;
}

/** A uint64 from protobufjs (number or Long) as a JS number, refusing values above 2^53 - 1. */
function num(v: unknown, field: string): number {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) throw new NetError('ERR_INVALID_MESSAGE', `${field} out of range`);
    return v;
  }
  if (v !== null && typeof v === 'object' && 'low' in v && 'high' in v) {
    const l = v as LongLike;
    const high = l.high >>> 0;
    if (high >= 0x200000) throw new NetError('ERR_INVALID_MESSAGE', `${field} above 2^53`);
    return high * 0x1_0000_0000 + (l.low >>> 0);
  }
  if (v === undefined || v === null) return 0;
  throw new NetError('ERR_INVALID_MESSAGE', `${field} is not a number`);
}

function bytes(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return v;
  return new Uint8Array(0);
}

function decodeWith(type: protobuf.Type, data: Uint8Array, what: string): Record<string, unknown> {
  try {
    return type.decode(data) as unknown as Record<string, unknown>;
  } catch (err) {
    throw new NetError('ERR_DECODE', `malformed ${what}: ${(err as Error).message}`, { cause: err });
  }
}

function entryFrom(o: Record<string, unknown>): Entry {
  const type = o.type;
  if (type !== EntryType.Normal && type !== EntryType.ConfChange) {
    throw new NetError('ERR_INVALID_MESSAGE', `unknown entry type ${String(type)}`);
  }
  return { term: num(o.term, 'entry.term'), index: num(o.index, 'entry.index'), type, data: bytes(o.data) };
}

function confFrom(o: unknown): ConfState {
  const c = (o ?? {}) as Record<string, unknown>;
  const voters = Array.isArray(c.voters) ? c.voters : [];
  const learners = Array.isArray(c.learners) ? c.learners : [];
  if (voters.length + learners.length > MAX_CONF_MEMBERS) {
    throw new NetError('ERR_INVALID_MESSAGE', `conf state with more than ${MAX_CONF_MEMBERS} members`);
  }
  return {
    voters: voters.map((v) => num(v, 'conf.voter')),
    learners: learners.map((v) => num(v, 'conf.learner')),
  };
}

function metadataFrom(o: unknown): SnapshotMetadata {
  const m = (o ?? {}) as Record<string, unknown>;
  return { index: num(m.index, 'snapshot.index'), term: num(m.term, 'snapshot.term'), conf: confFrom(m.conf) };
}

function chunkFrom(o: Record<string, unknown>): SnapshotChunk {
  const chunk: SnapshotChunk = {
    metadata: metadataFrom(o.metadata),
    offset: num(o.offset, 'chunk.offset'),
    data: bytes(o.data),
    totalBytes: num(o.totalBytes, 'chunk.totalBytes'),
    done: o.done === true,
  };
  if (chunk.offset + chunk.data.length > chunk.totalBytes) {
    throw new NetError('ERR_INVALID_MESSAGE', 'snapshot chunk extends past the snapshot size');
  }
  return chunk;
}

function messageFrom(o: Record<string, unknown>): Message {
  const type = FROM_WIRE_TYPE.get(o.type as number);
  if (type === undefined) throw new NetError('ERR_INVALID_MESSAGE', `unknown raft message type ${String(o.type)}`);
  const entries = Array.isArray(o.entries) ? (o.entries as Record<string, unknown>[]) : [];
  if (entries.length > MAX_ENTRIES_PER_MESSAGE) {
    throw new NetError('ERR_INVALID_MESSAGE', `more than ${MAX_ENTRIES_PER_MESSAGE} entries in one message`);
  }
  const m: Message = {
    type,
    from: num(o.from, 'from'),
    to: num(o.to, 'to'),
    term: num(o.term, 'term'),
    index: num(o.index, 'index'),
    logTerm: num(o.logTerm, 'logTerm'),
    entries: entries.map(entryFrom),
    commit: num(o.commit, 'commit'),
    reject: o.reject === true,
    rejectHint: num(o.rejectHint, 'rejectHint'),
    context: bytes(o.context),
    commitOnly: o.commitOnly === true,
  };
  if (o.snapshot !== null && o.snapshot !== undefined) m.snapshot = chunkFrom(o.snapshot as Record<string, unknown>);
  if (type === MessageType.Snap && m.snapshot === undefined) {
    throw new NetError('ERR_INVALID_MESSAGE', 'Snap message without a snapshot chunk');
  }
  return m;
}

export function decodeMessageBatch(data: Uint8Array): Message[] {
  // Counted on the wire first: what the decode would build is bounded before it is built.
  checkBatchBounds(data);
  const o = decodeWith(t().batch, data, 'raft message batch');
  const messages = Array.isArray(o.messages) ? (o.messages as Record<string, unknown>[]) : [];
  if (messages.length > MAX_MESSAGES_PER_BATCH) {
    throw new NetError('ERR_INVALID_MESSAGE', `more than ${MAX_MESSAGES_PER_BATCH} messages in one batch`);
  }
  return messages.map(messageFrom);
}

export function decodeEntry(data: Uint8Array): Entry {
  return entryFrom(decodeWith(t().entry, data, 'raft entry'));
}

export function decodeHardState(data: Uint8Array): HardState {
  const o = decodeWith(t().hardState, data, 'raft hard state');
  return { term: num(o.term, 'term'), vote: num(o.vote, 'vote'), commit: num(o.commit, 'commit') };
}

export function decodeStoredSnapshot(data: Uint8Array): StoredSnapshotRecord {
  const o = decodeWith(t().stored, data, 'stored snapshot record');
  const fileName = typeof o.fileName === 'string' ? o.fileName : '';
  return { metadata: metadataFrom(o.metadata), fileName, sizeBytes: num(o.sizeBytes, 'sizeBytes') };
}

/**
 * Bytes a message will take in a frame, without encoding it: what the transport counts
 * against its per-peer queue budget. Over-estimates the fixed fields on purpose.
 */
export function estimateMessageBytes(m: Message): number {
  let n = 96 + m.context.length;
  for (const e of m.entries) n += 32 + e.data.length;
  if (m.snapshot !== undefined) n += 64 + m.snapshot.data.length + 16 * (m.snapshot.metadata.conf.voters.length + m.snapshot.metadata.conf.learners.length);
  return n;
}
