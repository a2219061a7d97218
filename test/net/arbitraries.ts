/** fast-check generators of Raft messages for the codec and transport tests. */
import fc from 'fast-check';
import { EntryType, MessageType, type Entry, type Message, type SnapshotChunk } from '../../core/raft/types.js';

export const WIRE_TYPES: MessageType[] = [
  MessageType.App, MessageType.AppResp, MessageType.Vote, MessageType.VoteResp, MessageType.PreVote,
  MessageType.PreVoteResp, MessageType.Snap, MessageType.SnapResp, MessageType.Heartbeat,
  MessageType.HeartbeatResp, MessageType.TimeoutNow, MessageType.ReadIndex, MessageType.ReadIndexResp,
  MessageType.TransferLeader, MessageType.Prop,
];

const u53 = fc.oneof(fc.nat(1000), fc.maxSafeNat());
const bytes = fc.uint8Array({ maxLength: 64 }).map((b) => new Uint8Array(b));

export const entryArb: fc.Arbitrary<Entry> = fc.record({
  term: u53,
  index: u53,
  type: fc.constantFrom(EntryType.Normal, EntryType.ConfChange),
  data: bytes,
});

export const chunkArb: fc.Arbitrary<SnapshotChunk> = fc
  .record({
    index: u53,
    term: u53,
    voters: fc.array(u53, { maxLength: 5 }),
    learners: fc.array(u53, { maxLength: 3 }),
    offset: fc.nat(1 << 20),
    data: bytes,
    extra: fc.nat(1000),
    done: fc.boolean(),
  })
  .map((c) => ({
    metadata: { index: c.index, term: c.term, conf: { voters: c.voters, learners: c.learners } },
    offset: c.offset,
    data: c.data,
    totalBytes: c.offset + c.data.length + c.extra,
    done: c.done,
  }));

export const messageArb: fc.Arbitrary<Message> = fc
  .record({
    type: fc.constantFrom(...WIRE_TYPES),
    from: u53,
    to: u53,
    term: u53,
    index: u53,
    logTerm: u53,
    entries: fc.array(entryArb, { maxLength: 4 }),
    commit: u53,
    reject: fc.boolean(),
    rejectHint: u53,
    context: bytes,
    commitOnly: fc.boolean(),
    snapshot: chunkArb,
    hasSnap: fc.boolean(),
  })
  .map(({ hasSnap, snapshot, ...m }) => (m.type === MessageType.Snap || hasSnap ? { ...m, snapshot } : m));
