/**
 * Typed errors of the gossip layer. Each has a stable `code` callers can branch on (as
 * undici does); messages are for humans and may change.
 */
export type GossipErrorCode =
  | 'GOSSIP_DECODE_MALFORMED'
  | 'GOSSIP_DECODE_TRUNCATED'
  | 'GOSSIP_DECODE_OVERSIZED'
  | 'GOSSIP_DECODE_UNKNOWN_TYPE'
  | 'GOSSIP_AUTH_FAILED'
  | 'GOSSIP_REPLAYED'
  | 'GOSSIP_KEY_INVALID'
  | 'GOSSIP_KEY_NOT_FOUND'
  | 'GOSSIP_KEY_IS_PRIMARY'
  | 'GOSSIP_KEYRING_FULL'
  /** The keyring changed in memory but the embedder could not save it (a full disk). */
  | 'GOSSIP_KEYRING_NOT_SAVED'
  /** A keyring change for others without a manager's signature (keyring/authority.ts). */
  | 'GOSSIP_KEYRING_UNSIGNED'
  | 'GOSSIP_META_TOO_LARGE'
  | 'GOSSIP_META_INVALID'
  | 'GOSSIP_NAME_INVALID'
  | 'GOSSIP_NAME_CONFLICT'
  | 'GOSSIP_CONFIG_INVALID'
  | 'GOSSIP_JOIN_FAILED'
  /** The data dir's gossip keys are another cluster's (it was joined with another token). */
  | 'GOSSIP_OTHER_CLUSTER'
  | 'GOSSIP_STREAM_FAILED'
  | 'GOSSIP_STREAM_TIMEOUT'
  | 'GOSSIP_STREAM_TOO_LARGE'
  | 'GOSSIP_STREAM_BUSY'
  | 'GOSSIP_WRONG_TARGET'
  | 'GOSSIP_WATCH_OVERFLOW'
  | 'GOSSIP_STOPPED'
  | 'GOSSIP_LEFT';

export class GossipError extends Error {
  readonly code: GossipErrorCode;
  constructor(code: GossipErrorCode, message: string) {
    super(message);
    this.name = 'GossipError';
    this.code = code;
  }
}

/** Raised by every decoder for any input it cannot accept; never anything else. */
export class GossipDecodeError extends GossipError {
  constructor(
    code: 'GOSSIP_DECODE_MALFORMED' | 'GOSSIP_DECODE_TRUNCATED' | 'GOSSIP_DECODE_OVERSIZED' | 'GOSSIP_DECODE_UNKNOWN_TYPE',
    message: string,
  ) {
    super(code, message);
    this.name = 'GossipDecodeError';
  }
}
