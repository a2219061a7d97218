/** A listener's bound on the connections it holds open at once (see agent/open-files.ts). */
import type { Server } from 'node:net';

/** How many connections a listener holds open at once, and who hears of one closed at that cap. */
export interface ConnectionCap {
  max: number;
  /** A connection closed at once because `max` were open (Node's 'drop'). */
  onRefused?: (remoteAddress: string | undefined) => void;
}

/**
 * At the cap Node closes a new connection as soon as it is accepted, so the process's descriptors
 * stay within its budget (agent/open-files.ts) whatever clients open.
 */
export function capConnections(server: Server, cap: ConnectionCap | undefined): void {
  if (cap === undefined) return;
  server.maxConnections = cap.max;
  server.on('drop', (d?: { remoteAddress?: string }) => cap.onRefused?.(d?.remoteAddress));
}
