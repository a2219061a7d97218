/**
 * Two live processes with one member identity: the same data dir started twice, which on a
 * Raspberry Pi means an SD card image taken of a manager and flashed onto another board. Both
 * would take part in Raft as one member (votes cast twice in a term, acknowledgements from a
 * log that is not the member's), which breaks Raft's safety, so one of them must stop.
 *
 * Every process draws a random instance id when its transport starts and names it, with how
 * long it has been running, in each Raft handshake it dials (the ClientHello, inside the
 * authenticated transcript). A member that already hears a peer under one instance id, over
 * an open connection that delivered a frame within the live window, and is dialed by that
 * peer's id under another, has found two processes: the one that started later is told so
 * (a sealed notice) and stops. Ages are compared on the receiver's own clock (its now minus
 * the uptime said), so the boards' clocks need not agree (a Pi has no real-time clock).
 *
 * A restarted member is not a duplicate: its old process's connections closed when it died,
 * or (a power cut) have been silent for longer than the window by the time it is back. The
 * same process reconnecting (a partition healed, a new DHCP lease) keeps its instance id.
 * A dialer that names no instance id (0: a build before this check) is never judged.
 */
import { randomInt } from 'node:crypto';

/** A peer that delivered a frame this recently over an open connection is live. */
export const DUPLICATE_LIVE_WINDOW_MS = 3_000;

/** A fresh instance id (never 0, which means "not said"). */
export function newInstanceId(): number {
  return randomInt(1, 2 ** 48);
}

/** What the receiver knows of one connection from a peer id. */
export interface PeerInstance {
  instanceId: number;
  /** When that process started, on the receiver's performance.now() clock. */
  startedAt: number;
  /** Last frame from it, same clock. */
  lastFrameAt: number;
  /** Where it connected from, for the message. */
  remote: string;
}

export type DuplicateVerdict = 'accept' | 'refuse-newcomer' | 'stop-holder';

/**
 * The receiver's decision when `newcomer` dials under the id an open connection `holder` is
 * already using: accept (no holder, the same process, an unnamed instance, or a holder silent
 * past the window), else stop whichever of the two started later (the newcomer on a tie).
 */
export function judgeDuplicate(holder: PeerInstance | undefined, newcomer: PeerInstance, now: number, liveWindowMs = DUPLICATE_LIVE_WINDOW_MS): DuplicateVerdict {
  if (holder === undefined || holder.instanceId === 0 || newcomer.instanceId === 0) return 'accept';
  if (holder.instanceId === newcomer.instanceId) return 'accept';
  if (now - holder.lastFrameAt > liveWindowMs) return 'accept';
  return newcomer.startedAt >= holder.startedAt ? 'refuse-newcomer' : 'stop-holder';
}

/** The sealed notice a receiver sends the process that must stop: this prefix, then JSON. */
export const DUPLICATE_NOTICE_PREFIX: Uint8Array = Buffer.from('picloud/duplicate-member ');
/** The JSON part is small; a longer frame is not a duplicate notice. */
const MAX_NOTICE_BYTES = 1024;

/** What a peer may put in the notice's address: an address's characters, nothing a terminal would act on. */
function addressText(v: unknown): string {
  return typeof v === 'string' && /^[0-9A-Za-z:.[\]%_-]{1,200}$/.test(v) ? v : 'unknown';
}

export interface DuplicateNotice {
  /** Where the other process (the one that goes on) connected from. */
  otherRemote: string;
  /** How long the other process had been running when the receiver judged, ms. */
  otherUptimeMs: number;
}

export function encodeDuplicateNotice(n: DuplicateNotice): Buffer {
  const json = JSON.stringify({ otherRemote: addressText(n.otherRemote), otherUptimeMs: Math.max(0, Math.round(n.otherUptimeMs)) });
  return Buffer.concat([DUPLICATE_NOTICE_PREFIX, Buffer.from(json)]);
}

/** The notice in a frame, or undefined for any other frame (never throws: peers' bytes). */
export function decodeDuplicateNotice(plain: Uint8Array): DuplicateNotice | undefined {
  const p = DUPLICATE_NOTICE_PREFIX;
  if (plain.length < p.length || plain.length > MAX_NOTICE_BYTES) return undefined;
  if (Buffer.compare(plain.subarray(0, p.length), p) !== 0) return undefined;
  try {
    const o = JSON.parse(Buffer.from(plain.subarray(p.length)).toString('utf8')) as Record<string, unknown>;
    const otherRemote = addressText(o.otherRemote);
    const otherUptimeMs = typeof o.otherUptimeMs === 'number' && Number.isFinite(o.otherUptimeMs) && o.otherUptimeMs >= 0 ? o.otherUptimeMs : 0;
    return { otherRemote, otherUptimeMs };
  } catch {
    return { otherRemote: 'unknown', otherUptimeMs: 0 };
  }
}
