/**
 * Every port the agent will listen on, tried before anything is written: a port in use (or an
 * address this board does not have) found after bootstrapping the data dir, or after joining
 * the cluster as a learner, leaves a member that never starts. The listeners open later, so a
 * port taken in between still fails there; this catches the usual case, a second service or a
 * typo, and names the flag.
 */
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import type { AgentConfig } from './config.js';

/** A port the agent needs cannot be bound. */
export class PortUnavailableError extends Error {
  readonly code = 'PORT_UNAVAILABLE';
  constructor(message: string) {
    super(message);
    this.name = 'PortUnavailableError';
  }
}

function tryTcp(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve()));
  });
}

function tryUdp(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    socket.once('error', (err) => {
      socket.close();
      reject(err);
    });
    socket.bind({ address: host, port, exclusive: true }, () => socket.close(() => resolve()));
  });
}

function reason(err: NodeJS.ErrnoException): string {
  if (err.code === 'EADDRINUSE') return 'is in use by another program';
  if (err.code === 'EADDRNOTAVAIL') return 'cannot be bound: this board has no such address';
  if (err.code === 'EACCES') return 'needs privileges this process does not have (ports below 1024)';
  return `cannot be bound (${err.message})`;
}

/** Refuses, naming the flag, if any listener of this role cannot be bound on the bind address. */
export async function checkPortsFree(config: AgentConfig): Promise<void> {
  const tcp: Array<[flag: string, port: number]> = [['gossip-port', config.gossipPort], ['http-port', config.httpPort]];
  if (config.role === 'manager') tcp.unshift(['client-port', config.clientPort], ['peer-port', config.peerPort]);
  const at = (port: number): string => `${config.bindAddr.includes(':') ? `[${config.bindAddr}]` : config.bindAddr}:${port}`;
  for (const [flag, port] of tcp) {
    await tryTcp(config.bindAddr, port).catch((err: NodeJS.ErrnoException) => {
      throw new PortUnavailableError(`--${flag} ${port}: ${at(port)} ${reason(err)} (TCP)`);
    });
  }
  await tryUdp(config.bindAddr, config.gossipPort).catch((err: NodeJS.ErrnoException) => {
    throw new PortUnavailableError(`--gossip-port ${config.gossipPort}: ${at(config.gossipPort)} ${reason(err)} (UDP)`);
  });
}
