/** Helpers for gossip tests on real sockets: a node's events as they come, and raw UDP sends. */
import { createSocket } from 'node:dgram';
import type { GossipEvent, GossipNode } from '../../core/net/gossip-node.js';

/** The node's membership events from now on, appended as they arrive (until it stops). */
export function collect(node: GossipNode): GossipEvent[] {
  const seen: GossipEvent[] = [];
  void (async () => {
    try {
      for await (const e of node.events()) seen.push(e);
    } catch {
      // stopped
    }
  })();
  return seen;
}

/** Sends one datagram to host:port from a socket of its own. */
export async function sendUdp(port: number, buf: Uint8Array, host = '127.0.0.1'): Promise<void> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.send(buf, port, host, () => r()));
  s.close();
}
