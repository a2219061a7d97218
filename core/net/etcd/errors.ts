/**
 * etcd's client-visible errors: gRPC status code plus the exact "etcdserver: ..." message.
 * etcd clients (clientv3, etcdctl, the npm etcd3 client) map errors back by message text, so
 * these strings are a wire contract copied from etcd 3.4's rpctypes. An EtcdBackend throws
 * EtcdError; the gRPC server turns it into the status.
 */
import { status } from '@grpc/grpc-js';

export const ETCD_ERRORS = {
  EMPTY_KEY: [status.INVALID_ARGUMENT, 'etcdserver: key is not provided'],
  KEY_NOT_FOUND: [status.INVALID_ARGUMENT, 'etcdserver: key not found'],
  INVALID_SORT_OPTION: [status.INVALID_ARGUMENT, 'etcdserver: invalid sort option'],
  VALUE_PROVIDED: [status.INVALID_ARGUMENT, 'etcdserver: value is provided'],
  LEASE_PROVIDED: [status.INVALID_ARGUMENT, 'etcdserver: lease is provided'],
  TOO_MANY_OPS: [status.INVALID_ARGUMENT, 'etcdserver: too many operations in txn request'],
  DUPLICATE_KEY: [status.INVALID_ARGUMENT, 'etcdserver: duplicate key given in txn request'],
  COMPACTED: [status.OUT_OF_RANGE, 'etcdserver: mvcc: required revision has been compacted'],
  FUTURE_REV: [status.OUT_OF_RANGE, 'etcdserver: mvcc: required revision is a future revision'],
  NO_SPACE: [status.RESOURCE_EXHAUSTED, 'etcdserver: mvcc: database space exceeded'],
  LEASE_NOT_FOUND: [status.NOT_FOUND, 'etcdserver: requested lease not found'],
  LEASE_EXIST: [status.FAILED_PRECONDITION, 'etcdserver: lease already exists'],
  LEASE_TTL_TOO_LARGE: [status.OUT_OF_RANGE, 'etcdserver: too large lease TTL'],
  WATCH_CANCELED: [status.CANCELLED, 'etcdserver: watch canceled'],
  MEMBER_EXIST: [status.FAILED_PRECONDITION, 'etcdserver: member ID already exist'],
  PEER_URL_EXIST: [status.FAILED_PRECONDITION, 'etcdserver: Peer URLs already exists'],
  MEMBER_NOT_ENOUGH_STARTED: [status.FAILED_PRECONDITION, 'etcdserver: re-configuration failed due to not enough started members'],
  MEMBER_BAD_URLS: [status.INVALID_ARGUMENT, 'etcdserver: given member URLs are invalid'],
  MEMBER_NOT_FOUND: [status.NOT_FOUND, 'etcdserver: member not found'],
  MEMBER_NOT_LEARNER: [status.FAILED_PRECONDITION, 'etcdserver: can only promote a learner member'],
  LEARNER_NOT_READY: [status.FAILED_PRECONDITION, 'etcdserver: can only promote a learner member which is in sync with leader'],
  TOO_MANY_LEARNERS: [status.FAILED_PRECONDITION, 'etcdserver: too many learner members in cluster'],
  /** picloud's own: the peer codec holds at most 1,024 members (manager-node.ts MAX_MEMBERS). */
  TOO_MANY_MEMBERS: [status.FAILED_PRECONDITION, 'etcdserver: too many members in cluster'],
  REQUEST_TOO_LARGE: [status.INVALID_ARGUMENT, 'etcdserver: request is too large'],
  TOO_MANY_REQUESTS: [status.RESOURCE_EXHAUSTED, 'etcdserver: too many requests'],
  NO_LEADER: [status.UNAVAILABLE, 'etcdserver: no leader'],
  NOT_LEADER: [status.FAILED_PRECONDITION, 'etcdserver: not leader'],
  LEADER_CHANGED: [status.UNAVAILABLE, 'etcdserver: leader changed'],
  NOT_CAPABLE: [status.UNAVAILABLE, 'etcdserver: not capable'],
  STOPPED: [status.UNAVAILABLE, 'etcdserver: server stopped'],
  TIMEOUT: [status.UNAVAILABLE, 'etcdserver: request timed out'],
  TIMEOUT_DUE_TO_LEADER_FAIL: [status.UNAVAILABLE, 'etcdserver: request timed out, possibly due to previous leader failure'],
  TIMEOUT_DUE_TO_CONNECTION_LOST: [status.UNAVAILABLE, 'etcdserver: request timed out, possibly due to connection lost'],
  TIMEOUT_WAIT_APPLIED_INDEX: [status.UNAVAILABLE, 'etcdserver: request timed out, waiting for the applied index took too long'],
  UNHEALTHY: [status.UNAVAILABLE, 'etcdserver: unhealthy cluster'],
  CORRUPT: [status.DATA_LOSS, 'etcdserver: corrupt cluster'],
  NOT_SUPPORTED_FOR_LEARNER: [status.UNAVAILABLE, 'etcdserver: rpc not supported for learner'],
  BAD_LEADER_TRANSFEREE: [status.FAILED_PRECONDITION, 'etcdserver: bad leader transferee'],
  TIMEOUT_LEADER_TRANSFER: [status.UNAVAILABLE, 'etcdserver: request timed out, leader transfer took too long'],
  PERMISSION_DENIED: [status.PERMISSION_DENIED, 'etcdserver: permission denied'],
  USER_EMPTY: [status.INVALID_ARGUMENT, 'etcdserver: user name is empty'],
  USER_ALREADY_EXIST: [status.FAILED_PRECONDITION, 'etcdserver: user name already exists'],
  USER_NOT_FOUND: [status.FAILED_PRECONDITION, 'etcdserver: user name not found'],
  ROLE_ALREADY_EXIST: [status.FAILED_PRECONDITION, 'etcdserver: role name already exists'],
  ROLE_NOT_FOUND: [status.FAILED_PRECONDITION, 'etcdserver: role name not found'],
  ROLE_EMPTY: [status.INVALID_ARGUMENT, 'etcdserver: role name is empty'],
  PASSWORD_EMPTY: [status.INVALID_ARGUMENT, 'picloud: the password is empty (a user without one is added with --no-password)'],
  AUTH_FAILED: [status.INVALID_ARGUMENT, 'etcdserver: authentication failed, invalid user ID or password'],
  ROLE_NOT_GRANTED: [status.FAILED_PRECONDITION, 'etcdserver: role is not granted to the user'],
  PERMISSION_NOT_GRANTED: [status.FAILED_PRECONDITION, 'etcdserver: permission is not granted to the role'],
  AUTH_NOT_ENABLED: [status.FAILED_PRECONDITION, 'etcdserver: authentication is not enabled'],
  INVALID_AUTH_TOKEN: [status.UNAUTHENTICATED, 'etcdserver: invalid auth token'],
  INVALID_AUTH_MGMT: [status.INVALID_ARGUMENT, 'etcdserver: invalid auth management'],
  ROOT_USER_NOT_EXIST: [status.FAILED_PRECONDITION, 'etcdserver: root user does not exist'],
  ROOT_ROLE_NOT_EXIST: [status.FAILED_PRECONDITION, 'etcdserver: root user does not have root role'],
  // picloud's own, where etcd has no equivalent (the message says so and names the limit).
  TOO_MANY_WATCHERS: [status.RESOURCE_EXHAUSTED, 'picloud: too many watchers on this connection'],
  WATCH_TOO_SLOW: [status.RESOURCE_EXHAUSTED, 'picloud: watch stream send buffer full (client too slow); watch canceled'],
  UNSUPPORTED: [status.UNIMPLEMENTED, 'picloud: not supported'],
  INVALID_ARGUMENT: [status.INVALID_ARGUMENT, 'picloud: invalid argument'],
} as const satisfies Record<string, readonly [status, string]>;

export type EtcdErrorCode = keyof typeof ETCD_ERRORS;

export class EtcdError extends Error {
  readonly code: EtcdErrorCode;
  /** gRPC status code sent to the client. */
  readonly grpcCode: status;
  /** @param detail appended to the message for picloud-only errors; etcd's own keep the exact text. */
  constructor(code: EtcdErrorCode, detail?: string) {
    const [grpcCode, message] = ETCD_ERRORS[code];
    super(detail === undefined ? message : `${message}: ${detail}`);
    this.name = 'EtcdError';
    this.code = code;
    this.grpcCode = grpcCode;
  }
}

export function etcdError(code: EtcdErrorCode, detail?: string): EtcdError {
  return new EtcdError(code, detail);
}

export function isEtcdError(err: unknown, code?: EtcdErrorCode): err is EtcdError {
  return err instanceof EtcdError && (code === undefined || err.code === code);
}

/**
 * The etcd error a gRPC call (one forwarded to the leader) failed with, known by its exact
 * message; undefined for any other failure.
 */
export function forwardedEtcdError(e: unknown): EtcdError | undefined {
  const details = (e as { details?: unknown }).details;
  const code = (Object.keys(ETCD_ERRORS) as EtcdErrorCode[]).find((c) => ETCD_ERRORS[c][1] === details);
  return code === undefined ? undefined : new EtcdError(code);
}

/** Go's names of the status codes an auth refusal carries. */
const GO_CODE_NAMES: Partial<Record<number, string>> = {
  [status.INVALID_ARGUMENT]: 'InvalidArgument',
  [status.PERMISSION_DENIED]: 'PermissionDenied',
  [status.UNAUTHENTICATED]: 'Unauthenticated',
};
const AUTH_REFUSALS = new Set(['USER_EMPTY', 'PERMISSION_DENIED', 'INVALID_AUTH_TOKEN']);

/**
 * The cancel reason of a refused watch. etcd puts an auth refusal's whole gRPC error text there
 * ("rpc error: code = PermissionDenied desc = etcdserver: permission denied"), and clients show
 * or match it; other refusals carry the message alone.
 */
export function watchRefusalReason(err: EtcdError): string {
  const name = GO_CODE_NAMES[err.grpcCode];
  return AUTH_REFUSALS.has(err.code) && name !== undefined ? `rpc error: code = ${name} desc = ${err.message}` : err.message;
}
