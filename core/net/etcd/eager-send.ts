/**
 * Lets a server stream hand all the messages it produces in one turn to HTTP/2 in that turn.
 *
 * grpc-js gives a stream's next message to its HTTP/2 stream only once the previous one has
 * been written (the call's Writable waits for each write's callback), so a watch fan-out of
 * 100 responses on one stream is 100 rounds of nghttp2 and 100 socket writes, and the client
 * 100 reads. This server interceptor (grpc-js's public interceptor API) acknowledges an
 * EagerMessage to the Writable at once and passes the real completion on to the message's
 * own callback: the messages queue on the HTTP/2 stream in order and leave in one write.
 * Flow control stays with the sender, which counts its unsent bytes from those callbacks.
 * Other messages, and every other method, pass through unchanged.
 */
import * as grpc from '@grpc/grpc-js';

/** A response whose write completion goes to `sent` instead of holding back the next one. */
export class EagerMessage {
  constructor(
    readonly message: unknown,
    readonly sent: () => void,
  ) {}
}

/**
 * grpc-js's interceptor base class with its default (synchronous, pass-through) responder;
 * only sendMessage differs.
 */
class EagerSendCall extends grpc.ServerInterceptingCall {
  override sendMessage(message: unknown, callback: () => void): void {
    if (message instanceof EagerMessage) {
      super.sendMessage(message.message, message.sent);
      callback();
    } else {
      super.sendMessage(message, callback);
    }
  }
}

/** An interceptor that applies eager sends to the methods whose paths are given. */
export function eagerSendInterceptor(paths: readonly string[]): grpc.ServerInterceptor {
  const set = new Set(paths);
  // Other methods get their call back untouched (no extra layer on every unary request);
  // grpc-js chains interceptors through the interface, whatever the declared return type.
  return (method, call) => (set.has(method.path) ? new EagerSendCall(call) : (call as grpc.ServerInterceptingCall));
}
