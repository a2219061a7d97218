/**
 * Deep copies of Raft's plain data (messages, entries, snapshots), so simulated nodes never
 * share an object or a byte buffer: what a node sends is frozen at send time, exactly as if
 * it had been serialised onto a wire. Hand-written rather than structuredClone because it
 * runs for every simulated message and is several times faster.
 */
import { snapshotBytes, type ConfState, type Entry, type HardState, type Message, type Snapshot, type SnapshotChunk, type SnapshotMetadata } from '../raft/types.js';

const EMPTY = new Uint8Array(0);

export function cloneBytes(b: Uint8Array): Uint8Array {
  return b.length === 0 ? EMPTY : b.slice();
}

export function cloneConf(c: ConfState): ConfState {
  return { voters: c.voters.slice(), learners: c.learners.slice() };
}

export function cloneEntry(e: Entry): Entry {
  return { term: e.term, index: e.index, type: e.type, data: cloneBytes(e.data) };
}

export function cloneEntries(es: readonly Entry[]): Entry[] {
  const out = new Array<Entry>(es.length);
  for (let i = 0; i < es.length; i++) out[i] = cloneEntry(es[i]!);
  return out;
}

export function cloneMetadata(m: SnapshotMetadata): SnapshotMetadata {
  return { index: m.index, term: m.term, conf: cloneConf(m.conf) };
}

export function cloneSnapshot(s: Snapshot): Snapshot {
  return { metadata: cloneMetadata(s.metadata), data: cloneBytes(snapshotBytes(s)) };
}

export function cloneHardState(h: HardState): HardState {
  return { term: h.term, vote: h.vote, commit: h.commit };
}

function cloneChunk(c: SnapshotChunk): SnapshotChunk {
  const out: SnapshotChunk = { metadata: cloneMetadata(c.metadata), offset: c.offset, data: cloneBytes(c.data), totalBytes: c.totalBytes, done: c.done };
  if (c.bytesToAttach !== undefined) out.bytesToAttach = c.bytesToAttach;
  return out;
}

export function cloneMessage(m: Message): Message {
  const out: Message = {
    type: m.type,
    from: m.from,
    to: m.to,
    term: m.term,
    index: m.index,
    logTerm: m.logTerm,
    entries: m.entries.length === 0 ? [] : cloneEntries(m.entries),
    commit: m.commit,
    reject: m.reject,
    rejectHint: m.rejectHint,
    context: cloneBytes(m.context),
    commitOnly: m.commitOnly,
  };
  if (m.snapshot !== undefined) out.snapshot = cloneChunk(m.snapshot);
  return out;
}
