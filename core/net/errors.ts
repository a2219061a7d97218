/**
 * Typed errors of the peer transport, its codecs, the handshake and join tokens. Callers
 * branch on `code`, which is stable; the message is for people.
 */

export type NetErrorCode =
  /** A frame announced a length above the limit. */
  | 'ERR_FRAME_TOO_LARGE'
  /** The stream ended inside a frame. */
  | 'ERR_FRAME_TRUNCATED'
  /** Bytes that do not decode as the expected message. */
  | 'ERR_DECODE'
  /** A message that decodes but breaks a rule (unknown type, number out of range, ...). */
  | 'ERR_INVALID_MESSAGE'
  /** The peer did not prove it holds the cluster secret, or sent a bad seal. */
  | 'ERR_AUTH_FAILED'
  /** The peer speaks another handshake version. */
  | 'ERR_VERSION'
  | 'ERR_HANDSHAKE_TIMEOUT'
  | 'ERR_CONNECTION_CLOSED'
  /** The address dialed is another member's now (its own handshake says so). */
  | 'ERR_WRONG_PEER'
  /** We kept writing to a peer that stayed silent: the connection is presumed stalled. */
  | 'ERR_PEER_STALLED'
  | 'ERR_TOKEN_FORMAT'
  | 'ERR_TOKEN_VERSION'
  | 'ERR_TOKEN_DIGEST'
  /** A worker token where the cluster token is needed (a manager's --token). */
  | 'ERR_TOKEN_WORKER'
  /** The join server refused the request (its reason is in the message). */
  | 'ERR_JOIN_REFUSED'
  | 'ERR_JOIN_TIMEOUT'
  /** The listener's budget for frames still arriving (PendingFrameBytes) is spent. */
  | 'ERR_BUSY'
  | 'ERR_CLOSED';

export class NetError extends Error {
  readonly code: NetErrorCode;
  constructor(code: NetErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NetError';
    this.code = code;
  }
}

export function isNetError(err: unknown, code?: NetErrorCode): err is NetError {
  return err instanceof NetError && (code === undefined || err.code === code);
}
