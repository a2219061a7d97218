/**
 * A connection after the handshake: every frame's payload is sealed with AES-256-GCM under a
 * per-direction session key. The nonce is an implicit per-direction counter (never sent), so a
 * frame that is replayed, reordered, dropped or forged fails to open and the connection is
 * closed. Knows nothing of what the frames carry.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import type { Socket } from 'node:net';
import { NetError } from './errors.js';
import { FRAME_HEADER_BYTES, FrameDecoder, MAX_FRAME_BYTES } from './frame.js';

export const GCM_TAG_BYTES = 16;
/** Largest plaintext one sealed frame carries. */
export const MAX_SEALED_PLAINTEXT_BYTES = MAX_FRAME_BYTES - GCM_TAG_BYTES;

/** How long an orderly close waits for the peer before dropping the socket. */
export const CLOSE_LINGER_MS = 1_000;

export interface SessionKeys {
  sendKey: Buffer;
  recvKey: Buffer;
}

function nonce(counter: bigint): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(counter, 4);
  return n;
}

/** Ciphertext and tag after `room` bytes left for the caller (a frame header), in one buffer. */
function sealAfter(room: number, key: Buffer, counter: bigint, plain: Uint8Array): Buffer {
  const c = createCipheriv('aes-256-gcm', key, nonce(counter));
  const body = c.update(plain);
  c.final();
  const out = Buffer.allocUnsafe(room + body.length + GCM_TAG_BYTES);
  out.set(body, room);
  out.set(c.getAuthTag(), room + body.length);
  return out;
}

/** Seals one payload; exported for tests and fuzzing. */
export function seal(key: Buffer, counter: bigint, plain: Uint8Array): Buffer {
  return sealAfter(0, key, counter, plain);
}

/** Opens one sealed payload; throws ERR_AUTH_FAILED on any tampering. */
export function open(key: Buffer, counter: bigint, sealed: Uint8Array): Buffer {
  if (sealed.length < GCM_TAG_BYTES) throw new NetError('ERR_AUTH_FAILED', 'sealed frame shorter than its tag');
  const d = createDecipheriv('aes-256-gcm', key, nonce(counter));
  d.setAuthTag(sealed.subarray(sealed.length - GCM_TAG_BYTES));
  const body = d.update(sealed.subarray(0, sealed.length - GCM_TAG_BYTES));
  try {
    d.final();
  } catch (err) {
    throw new NetError('ERR_AUTH_FAILED', 'sealed frame failed authentication', { cause: err });
  }
  return body;
}

/**
 * Bytes of frames still arriving, over every inbound channel of one listener. A frame is held
 * until it is whole (up to MAX_FRAME_BYTES), so without a shared bound 128 connections each one
 * byte short of a 16 MiB frame held 2 GiB (a crash hunt's, with the token), more than a Pi has.
 * When a channel's new bytes would pass the bound, the channels holding the most are closed
 * first: a member's frames (batches of at most 4 MiB) outlast connections sitting on larger ones.
 */
export class PendingFrameBytes {
  private held = 0;
  private readonly holders = new Map<SecureChannel, number>();

  constructor(readonly maxBytes: number) {}

  get heldBytes(): number {
    return this.held;
  }

  /**
   * Sets what `channel` holds to `bytes`. Past the bound, closes (ERR_BUSY) channels holding
   * more than `channel` would until the bytes fit; false when `channel` itself would hold the
   * most (it keeps what it had).
   */
  hold(channel: SecureChannel, bytes: number): boolean {
    const had = this.holders.get(channel) ?? 0;
    // Holding less never closes anything (a closing channel gives its bytes back here).
    while (bytes > had && this.held - had + bytes > this.maxBytes) {
      let largest: SecureChannel | undefined;
      let most = bytes;
      for (const [other, n] of this.holders) {
        if (other !== channel && n > most) {
          largest = other;
          most = n;
        }
      }
      if (largest === undefined) return false;
      largest.close(new NetError('ERR_BUSY', `frames still arriving on this listener's connections passed ${this.maxBytes} bytes, and this one held the most (${most})`));
    }
    this.held += bytes - had;
    if (bytes === 0) this.holders.delete(channel);
    else this.holders.set(channel, bytes);
    return true;
  }
}

export interface ChannelHandlers {
  /** One opened frame. Throwing closes the connection with that error. */
  onFrame(plain: Buffer): void;
  /** Called once, when the connection is gone (err undefined on an orderly close). */
  onClose(err?: Error): void;
}

export class SecureChannel {
  /** Bytes of frames received since the handshake, whole or not (the peer's bytesSent). */
  bytesReceived = 0;
  /** Bytes of frames written since the handshake. */
  bytesSent = 0;
  private sendCounter = 0n;
  private recvCounter = 0n;
  private handlers: ChannelHandlers | undefined;
  private closed = false;
  private pendingBudget: PendingFrameBytes | undefined;

  constructor(
    readonly socket: Socket,
    private readonly decoder: FrameDecoder,
    private readonly keys: SessionKeys,
    maxFrameBytes: number = MAX_FRAME_BYTES,
  ) {
    decoder.setMaxFrameBytes(maxFrameBytes);
  }

  /** Counts the bytes of frames still arriving against `budget`; past it the channel closes (ERR_BUSY). Before start(). */
  limitPendingBytes(budget: PendingFrameBytes): void {
    this.pendingBudget = budget;
  }

  /** Starts delivering frames, including any that arrived with the end of the handshake. */
  start(handlers: ChannelHandlers): void {
    this.handlers = handlers;
    // Frames that arrived with the end of the handshake are already in the decoder.
    this.bytesReceived = this.decoder.bufferedBytes;
    this.socket.on('data', (d: Buffer) => this.onData(d));
    this.socket.on('error', (err) => this.close(err));
    this.socket.on('close', () => this.close());
    this.socket.on('end', () => {
      try {
        this.decoder.end();
        this.close();
      } catch (err) {
        this.close(err as Error);
      }
    });
    this.onData(Buffer.alloc(0));
  }

  private onData(d: Buffer): void {
    if (this.closed) return;
    this.bytesReceived += d.length;
    try {
      this.decoder.append(d);
      for (let f = this.decoder.next(); f !== null && !this.closed; f = this.decoder.next()) {
        const plain = open(this.keys.recvKey, this.recvCounter++, f);
        this.handlers!.onFrame(plain);
      }
      this.holdPending();
    } catch (err) {
      this.close(err as Error);
    }
  }

  /** Brings this channel's share of the pending budget to what its decoder holds now. */
  private holdPending(): void {
    if (this.pendingBudget === undefined || this.closed) return;
    if (!this.pendingBudget.hold(this, this.decoder.bufferedBytes)) {
      throw new NetError('ERR_BUSY', `frames still arriving on this listener's connections would hold more than ${this.pendingBudget.maxBytes} bytes, and this one the most`);
    }
  }

  /** Seals and writes one frame. Returns false when the socket's buffer is full ('drain' follows). */
  send(plain: Uint8Array): boolean {
    if (this.closed) throw new NetError('ERR_CONNECTION_CLOSED', 'channel closed');
    if (plain.length > MAX_SEALED_PLAINTEXT_BYTES) {
      throw new NetError('ERR_FRAME_TOO_LARGE', `payload of ${plain.length} bytes exceeds ${MAX_SEALED_PLAINTEXT_BYTES}`);
    }
    // Header, ciphertext and tag in one buffer: one socket write per frame.
    const frame = sealAfter(FRAME_HEADER_BYTES, this.keys.sendKey, this.sendCounter++, plain);
    frame.writeUInt32BE(frame.length - FRAME_HEADER_BYTES, 0);
    this.bytesSent += frame.length;
    return this.socket.write(frame);
  }

  /** Bytes written but not yet handed to the kernel. */
  get bufferedBytes(): number {
    return this.socket.writableLength;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Whether start() was called (frames are being delivered). */
  get isStarted(): boolean {
    return this.handlers !== undefined;
  }

  close(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.pendingBudget?.hold(this, 0);
    if (err !== undefined) {
      this.socket.destroy();
    } else {
      // Let written frames reach the peer, but do not wait forever for it to close its side.
      this.socket.end();
      setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
    }
    this.handlers?.onClose(err);
  }
}
