/**
 * What decoding a peer's batch of Raft messages would build, counted on the wire before
 * protobufjs builds it. protobufjs makes an object per message, entry and conf member (and a
 * Long per uint64), so a 16 MiB frame of 8 million empty messages, or one packed list of 16
 * million voters, took seconds of the event loop and gigabytes before the codec's limits were
 * looked at (found by a crash hunt; the sender needs the cluster token). This walk allocates
 * nothing: it reads tags and lengths with protobufjs's Reader and refuses, with the same
 * limits, before anything is decoded. A singular field given more than once (protobuf would keep
 * the last, ours never sends it twice) is refused too: otherwise one such field repeated fills a
 * frame with objects made and dropped.
 */
import protobuf from 'protobufjs';
import { NetError } from './errors.js';

/** Entries in one decoded message: a frame is bounded anyway, this bounds the object count. */
export const MAX_ENTRIES_PER_MESSAGE = 65_536;
/**
 * Entries in one decoded batch. A batch is at most MAX_BATCH_BYTES (4 MiB) unless it is one
 * message, and a message's entries at most maxSizePerMsgBytes (1 MiB); an entry the leader
 * writes takes 16 bytes or more on the wire, so a real batch holds fewer.
 */
export const MAX_ENTRIES_PER_BATCH = 262_144;
/** Messages in one decoded batch. */
export const MAX_MESSAGES_PER_BATCH = 16_384;
/** Voters + learners in one ConfState. */
export const MAX_CONF_MEMBERS = 1_024;

const WIRE_VARINT = 0;
const WIRE_BYTES = 2;

// Field numbers of proto/raft.proto.
const BATCH_MESSAGES = 1;
const MESSAGE_ENTRIES = 7;
const MESSAGE_SNAPSHOT = 12;
const CHUNK_METADATA = 1;
const METADATA_CONF = 3;
const CONF_VOTERS = 1;
const CONF_LEARNERS = 2;

function invalid(what: string): never {
  throw new NetError('ERR_INVALID_MESSAGE', what);
}

function malformed(what: string): never {
  throw new NetError('ERR_DECODE', `malformed raft message batch: ${what}`);
}

/** Reads one length prefix and returns where that field ends, within `end`. */
function subEnd(r: protobuf.Reader, end: number): number {
  const len = r.uint32();
  if (len > end - r.pos) malformed('a field runs past its message');
  return r.pos + len;
}

/**
 * Calls `field(number, wireType)` for each field of the message from r.pos to `end`; the
 * callback consumes the field or returns false to have it skipped. Singular fields (all but
 * `repeated`) may appear once.
 */
function walk(r: protobuf.Reader, end: number, repeated: readonly number[], field: (n: number, wireType: number) => boolean): void {
  let seen = 0;
  while (r.pos < end) {
    const tag = r.uint32();
    const n = tag >>> 3;
    const wireType = tag & 7;
    if (n === 0) malformed('field number 0');
    if (n < 32 && !repeated.includes(n)) {
      if ((seen & (1 << n)) !== 0) invalid(`field ${n} given more than once`);
      seen |= 1 << n;
    }
    if (!field(n, wireType)) r.skipType(wireType);
    if (r.pos > end) malformed('a field runs past its message');
  }
}

function countConf(r: protobuf.Reader, end: number): void {
  let members = 0;
  walk(r, end, [CONF_VOTERS, CONF_LEARNERS], (n, wireType) => {
    if (n !== CONF_VOTERS && n !== CONF_LEARNERS) return false;
    if (wireType === WIRE_VARINT) {
      members++;
      return false;
    }
    if (wireType !== WIRE_BYTES) return false;
    // Packed: one varint per member, each ending in a byte below 0x80.
    const packedEnd = subEnd(r, end);
    for (; r.pos < packedEnd; r.pos++) if (r.buf[r.pos]! < 0x80) members++;
    if (members > MAX_CONF_MEMBERS) invalid(`conf state with more than ${MAX_CONF_MEMBERS} members`);
    return true;
  });
  if (members > MAX_CONF_MEMBERS) invalid(`conf state with more than ${MAX_CONF_MEMBERS} members`);
}

/** A field that holds one sub-message, walked with `inner` when it is length-delimited. */
function nested(r: protobuf.Reader, end: number, wireType: number, inner: (subEnd: number) => void): boolean {
  if (wireType !== WIRE_BYTES) return false;
  const e = subEnd(r, end);
  inner(e);
  r.pos = e;
  return true;
}

/**
 * Throws NetError (ERR_INVALID_MESSAGE past a limit, ERR_DECODE for a structure that cannot be
 * protobuf) unless decoding `data` as a MessageBatch stays within the limits above.
 */
export function checkBatchBounds(data: Uint8Array): void {
  const r = protobuf.Reader.create(data);
  let messages = 0;
  let entriesInBatch = 0;
  try {
    walk(r, r.len, [BATCH_MESSAGES], (n, wireType) => {
      if (n !== BATCH_MESSAGES) return false;
      if (++messages > MAX_MESSAGES_PER_BATCH) invalid(`more than ${MAX_MESSAGES_PER_BATCH} messages in one batch`);
      return nested(r, r.len, wireType, (messageEnd) => {
        let entries = 0;
        walk(r, messageEnd, [MESSAGE_ENTRIES], (m, mWireType) => {
          if (m === MESSAGE_ENTRIES) {
            if (++entries > MAX_ENTRIES_PER_MESSAGE) invalid(`more than ${MAX_ENTRIES_PER_MESSAGE} entries in one message`);
            if (++entriesInBatch > MAX_ENTRIES_PER_BATCH) invalid(`more than ${MAX_ENTRIES_PER_BATCH} entries in one batch`);
            // An entry's fields are all singular (a review found one term repeated 8M times).
            return nested(r, messageEnd, mWireType, (entryEnd) => walk(r, entryEnd, [], () => false));
          }
          if (m !== MESSAGE_SNAPSHOT) return false;
          return nested(r, messageEnd, mWireType, (chunkEnd) =>
            walk(r, chunkEnd, [], (c, cWireType) =>
              c === CHUNK_METADATA &&
              nested(r, chunkEnd, cWireType, (metadataEnd) =>
                walk(r, metadataEnd, [], (d, dWireType) => d === METADATA_CONF && nested(r, metadataEnd, dWireType, (confEnd) => countConf(r, confEnd))),
              ),
            ),
          );
        });
      });
    });
  } catch (err) {
    if (err instanceof NetError) throw err;
    // The Reader's own errors (a varint or length past the end).
    malformed((err as Error).message);
  }
}
