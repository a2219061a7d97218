/**
 * Which client calls a learner answers, as etcd 3.4 decides it (its v3rpc interceptors and
 * isRPCSupportedForLearner): Maintenance.Status, and a serializable KV.Range. Every other call,
 * and every stream (Watch, LeaseKeepAlive, Snapshot), is refused with NOT_SUPPORTED_FOR_LEARNER
 * (gRPC UNAVAILABLE), so a client holding several endpoints takes the next one: a learner's log
 * may lag, so it does not speak for the cluster. Not responsible for knowing whether this member
 * is a learner (the backend says) nor for calls the member makes itself (its /health).
 */

/** The unary methods a learner serves whatever the request. */
const ALWAYS_SERVED = new Set(['Status']);

/**
 * Whether a learner serves unary `method` (a name of etcd's services, unique across them) with
 * `request` as decoded from the wire.
 */
export function learnerServesUnary(method: string, request: { serializable?: unknown } | undefined): boolean {
  if (ALWAYS_SERVED.has(method)) return true;
  return method === 'Range' && request?.serializable === true;
}
