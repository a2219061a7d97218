/**
 * Typed errors of the key-value state machine. Each carries a stable `code` to branch on, the
 * gRPC status code the client port must answer with, and — where etcd has one — etcd's exact
 * message, because etcd clients match on those strings (e.g. clientv3 maps
 * "etcdserver: mvcc: required revision has been compacted" back to ErrCompacted).
 * Sources: etcd api/v3rpc/rpctypes/error.go, server/storage/mvcc/{kvstore,watcher}.go.
 */

/** gRPC status codes used here (google.golang.org/grpc/codes). */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcCode = (typeof GrpcCode)[keyof typeof GrpcCode];

interface ErrorSpec {
  grpcCode: GrpcCode;
  message: string;
}

/** Every error code the kv layer produces, with its gRPC code and message. */
export const KV_ERRORS = {
  EMPTY_KEY: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'etcdserver: key is not provided' },
  KEY_NOT_FOUND: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'etcdserver: key not found' },
  VALUE_PROVIDED: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'etcdserver: value is provided' },
  LEASE_PROVIDED: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'etcdserver: lease is provided' },
  TOO_MANY_OPS: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'etcdserver: too many operations in txn request' },
  DUPLICATE_KEY: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'etcdserver: duplicate key given in txn request' },
  INVALID_SORT_OPTION: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'etcdserver: invalid sort option' },
  COMPACTED: { grpcCode: GrpcCode.OUT_OF_RANGE, message: 'etcdserver: mvcc: required revision has been compacted' },
  FUTURE_REV: { grpcCode: GrpcCode.OUT_OF_RANGE, message: 'etcdserver: mvcc: required revision is a future revision' },
  LEASE_NOT_FOUND: { grpcCode: GrpcCode.NOT_FOUND, message: 'etcdserver: requested lease not found' },
  LEASE_EXISTS: { grpcCode: GrpcCode.FAILED_PRECONDITION, message: 'etcdserver: lease already exists' },
  LEASE_TTL_TOO_LARGE: { grpcCode: GrpcCode.OUT_OF_RANGE, message: 'etcdserver: too large lease TTL' },
  REQUEST_TOO_LARGE: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'etcdserver: request is too large' },
  NO_SPACE: { grpcCode: GrpcCode.RESOURCE_EXHAUSTED, message: 'etcdserver: mvcc: database space exceeded' },
  WATCH_CANCELED: { grpcCode: GrpcCode.CANCELLED, message: 'etcdserver: watch canceled' },
  // Authentication (etcd api/v3rpc/rpctypes/error.go).
  USER_EMPTY: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'etcdserver: user name is empty' },
  USER_ALREADY_EXIST: { grpcCode: GrpcCode.FAILED_PRECONDITION, message: 'etcdserver: user name already exists' },
  USER_NOT_FOUND: { grpcCode: GrpcCode.FAILED_PRECONDITION, message: 'etcdserver: user name not found' },
  ROLE_ALREADY_EXIST: { grpcCode: GrpcCode.FAILED_PRECONDITION, message: 'etcdserver: role name already exists' },
  ROLE_NOT_FOUND: { grpcCode: GrpcCode.FAILED_PRECONDITION, message: 'etcdserver: role name not found' },
  ROLE_EMPTY: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'etcdserver: role name is empty' },
  PASSWORD_EMPTY: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'picloud: the password is empty (a user without one is added with --no-password)' },
  AUTH_FAILED: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'etcdserver: authentication failed, invalid user ID or password' },
  PERMISSION_DENIED: { grpcCode: GrpcCode.PERMISSION_DENIED, message: 'etcdserver: permission denied' },
  ROLE_NOT_GRANTED: { grpcCode: GrpcCode.FAILED_PRECONDITION, message: 'etcdserver: role is not granted to the user' },
  PERMISSION_NOT_GRANTED: { grpcCode: GrpcCode.FAILED_PRECONDITION, message: 'etcdserver: permission is not granted to the role' },
  AUTH_NOT_ENABLED: { grpcCode: GrpcCode.FAILED_PRECONDITION, message: 'etcdserver: authentication is not enabled' },
  INVALID_AUTH_TOKEN: { grpcCode: GrpcCode.UNAUTHENTICATED, message: 'etcdserver: invalid auth token' },
  INVALID_AUTH_MGMT: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'etcdserver: invalid auth management' },
  ROOT_USER_NOT_EXIST: { grpcCode: GrpcCode.FAILED_PRECONDITION, message: 'etcdserver: root user does not exist' },
  ROOT_ROLE_NOT_EXIST: { grpcCode: GrpcCode.FAILED_PRECONDITION, message: 'etcdserver: root user does not have root role' },
  // Watch-stream errors: etcd reports these as a WatchResponse cancel_reason, not a status.
  WATCHER_RANGE_EMPTY: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'mvcc: watcher range is empty' },
  WATCHER_DUPLICATE_ID: {
    grpcCode: GrpcCode.INVALID_ARGUMENT,
    message: 'mvcc: duplicate watch ID provided on the WatchStream',
  },
  WATCHER_NOT_EXIST: { grpcCode: GrpcCode.NOT_FOUND, message: 'mvcc: watcher does not exist' },
  // picloud's own limits (no etcd equivalent).
  KEY_TOO_LARGE: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'picloud: key is too large' },
  TXN_TOO_DEEP: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'picloud: txn nesting is too deep' },
  RANGE_TOO_LARGE: {
    grpcCode: GrpcCode.RESOURCE_EXHAUSTED,
    message: 'picloud: range response is too large; use a limit or a narrower range',
  },
  TOO_MANY_WATCHERS: { grpcCode: GrpcCode.RESOURCE_EXHAUSTED, message: 'picloud: too many watchers on this stream' },
  STREAM_UNSUPPORTED: {
    grpcCode: GrpcCode.UNIMPLEMENTED,
    message: 'picloud: paged range does not support custom sort orders',
  },
  MALFORMED_REQUEST: { grpcCode: GrpcCode.INVALID_ARGUMENT, message: 'picloud: malformed kv request' },
  SNAPSHOT_CORRUPT: { grpcCode: GrpcCode.DATA_LOSS, message: 'picloud: kv snapshot is corrupt' },
} as const satisfies Record<string, ErrorSpec>;

export type KvErrorCode = keyof typeof KV_ERRORS;

/**
 * An error a client can see. `message` is etcd's string (or picloud's, for its own limits);
 * `detail` adds context for logs without changing the string clients compare.
 */
export class KvError extends Error {
  readonly code: KvErrorCode;
  readonly grpcCode: GrpcCode;
  readonly detail: string | undefined;

  constructor(code: KvErrorCode, detail?: string) {
    super(KV_ERRORS[code].message);
    this.name = 'KvError';
    this.code = code;
    this.grpcCode = KV_ERRORS[code].grpcCode;
    this.detail = detail;
  }

  /** Plain form for logs and for handing across module boundaries. */
  toJSON(): { code: KvErrorCode; grpcCode: GrpcCode; message: string; detail?: string } {
    return this.detail === undefined
      ? { code: this.code, grpcCode: this.grpcCode, message: this.message }
      : { code: this.code, grpcCode: this.grpcCode, message: this.message, detail: this.detail };
  }
}

export function kvError(code: KvErrorCode, detail?: string): KvError {
  return new KvError(code, detail);
}

export function isKvError(e: unknown): e is KvError {
  return e instanceof KvError;
}
