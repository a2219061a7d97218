/**
 * Length-prefixed frames on a byte stream: a 4-byte big-endian payload length, then the
 * payload. The decoder rejects a length above its limit as soon as the header arrives, before
 * buffering anything, so a peer cannot make us hold more than one maximal frame.
 */
import { NetError } from './errors.js';

export const FRAME_HEADER_BYTES = 4;
/** Largest payload on an authenticated peer connection (a sealed batch of Raft messages). */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** Header and payload in one buffer (one socket write). */
export function encodeFrame(payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  out.writeUInt32BE(payload.length, 0);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Payload length of the frame being assembled, once its header is in. */
  private want = -1;

  constructor(private maxFrameBytes: number = MAX_FRAME_BYTES) {}

  /** Changes the limit for frames not yet started (the handshake uses a small one). */
  setMaxFrameBytes(n: number): void {
    this.maxFrameBytes = n;
  }

  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Feeds bytes without parsing; pull frames with next(). */
  append(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.buffered += chunk.length;
  }

  /** Feeds bytes; returns every frame completed by them. Throws ERR_FRAME_TOO_LARGE. */
  push(chunk: Uint8Array): Buffer[] {
    this.append(chunk);
    const out: Buffer[] = [];
    for (let f = this.next(); f !== null; f = this.next()) out.push(f);
    return out;
  }

  /**
   * The next complete frame, or null. One at a time lets the handshake change the limit
   * between frames. Throws ERR_FRAME_TOO_LARGE as soon as an oversized header is seen.
   */
  next(): Buffer | null {
    if (this.want < 0) {
      if (this.buffered < FRAME_HEADER_BYTES) return null;
      const len = this.take(FRAME_HEADER_BYTES).readUInt32BE(0);
      if (len > this.maxFrameBytes) {
        throw new NetError('ERR_FRAME_TOO_LARGE', `frame of ${len} bytes exceeds the limit of ${this.maxFrameBytes}`);
      }
      this.want = len;
    }
    if (this.buffered < this.want) return null;
    const f = this.take(this.want);
    this.want = -1;
    return f;
  }

  /** Call at end of stream: throws ERR_FRAME_TRUNCATED if a frame was cut off. */
  end(): void {
    if (this.buffered > 0 || this.want >= 0) {
      throw new NetError('ERR_FRAME_TRUNCATED', `stream ended inside a frame (${this.buffered} bytes pending)`);
    }
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let off = 0;
      while (off < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length, n - off);
        c.copy(out, off, 0, k);
        off += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.buffered -= n;
    return out;
  }
}
