/**
 * Membership changes: one server at a time (Ongaro §4.1), plus learners.
 *
 * Why single-server changes rather than joint consensus: a Pi cluster grows and shrinks one
 * board at a time, and any two majorities of configurations that differ by one voter overlap,
 * so safety needs no intermediate joint configuration. The leader allows one change in flight
 * (it refuses a new one until the previous is applied) and only after it has committed an
 * entry of its own term — the fix for the single-server bug Ongaro published in 2015.
 * A change takes effect when the application applies the committed entry (as in etcd-io/raft).
 */
import { RaftError } from './errors.js';
import { ConfChange, ConfChangeType, ConfState, NodeId } from './types.js';

const HEADER_BYTES = 9; // type (1) + node id (8, big-endian float64-safe integer)

export function encodeConfChange(cc: ConfChange): Uint8Array {
  const ctx = cc.context ?? new Uint8Array(0);
  const out = new Uint8Array(HEADER_BYTES + ctx.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, cc.type);
  view.setUint32(1, Math.floor(cc.nodeId / 2 ** 32));
  view.setUint32(5, cc.nodeId >>> 0);
  out.set(ctx, HEADER_BYTES);
  return out;
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  if (data.length < HEADER_BYTES) throw new RaftError('INVALID_CONF_CHANGE', `conf change truncated: ${data.length} bytes`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const type = view.getUint8(0);
  if (type !== ConfChangeType.AddVoter && type !== ConfChangeType.AddLearner && type !== ConfChangeType.RemoveNode && type !== ConfChangeType.UpdateNode) {
    throw new RaftError('INVALID_CONF_CHANGE', `unknown conf change type ${type}`);
  }
  const hi = view.getUint32(1);
  if (hi >= 2 ** 21) throw new RaftError('INVALID_CONF_CHANGE', 'node id above 2^53');
  const nodeId = hi * 2 ** 32 + view.getUint32(5);
  if (nodeId === 0) throw new RaftError('INVALID_CONF_CHANGE', 'node id 0');
  return { type, nodeId, context: data.slice(HEADER_BYTES) };
}

/** The configuration after applying `cc` to `conf`. Pure; throws on a change that makes no sense. */
export function applyToConfState(conf: ConfState, cc: ConfChange): ConfState {
  if (cc.type === ConfChangeType.UpdateNode) return cloneConfState(conf);
  const voters = conf.voters.filter((id) => id !== cc.nodeId);
  const learners = conf.learners.filter((id) => id !== cc.nodeId);
  switch (cc.type) {
    case ConfChangeType.AddVoter:
      voters.push(cc.nodeId);
      break;
    case ConfChangeType.AddLearner:
      learners.push(cc.nodeId);
      break;
    case ConfChangeType.RemoveNode:
      break;
  }
  if (voters.length === 0) throw new RaftError('INVALID_CONF_CHANGE', 'removing the last voter');
  return { voters: voters.sort((a, b) => a - b), learners: learners.sort((a, b) => a - b) };
}

export function isVoter(conf: ConfState, id: NodeId): boolean {
  return conf.voters.includes(id);
}

export function cloneConfState(conf: ConfState): ConfState {
  return { voters: [...conf.voters], learners: [...conf.learners] };
}
