/**
 * The agent's HTTP port: /health (process up), /ready (member of a cluster with a leader),
 * /metrics (Prometheus), plus routes other subsystems register (gossip members, service API).
 * Binds only where the config says.
 *
 * Reads are open to whoever can reach the port (Prometheus, the dashboard); changes (any method
 * but GET and HEAD: keyring rotation, tags) and reads of secrets (the keyring's keys) are
 * answered only to this board itself, as
 * Consul's and etcd's APIs listen on localhost by default: otherwise anyone on the LAN could
 * install a gossip key of their own and read the cluster's gossip. Run `picloud-node keyring …`
 * on a board (over ssh) to change the cluster from afar.
 */
import { IncomingMessage, Server, ServerResponse, createServer } from 'node:http';
import { isIP } from 'node:net';
import { capConnections, type ConnectionCap } from '../core/net/connection-cap.js';
import { Registry, collectDefaultMetrics } from 'prom-client';

export interface Route {
  method: string;
  path: string;
  /** Answered only to this board itself even for GET (it shows secrets, e.g. the gossip keys). */
  localOnly?: boolean;
  handler(req: IncomingMessage, res: ServerResponse): void | Promise<void>;
}

export interface Readiness {
  ready(): { ok: boolean; reason: string };
}

/** `pretty`: indented and newline-terminated, for APIs read by people with curl. */
export function sendJson(res: ServerResponse, status: number, body: unknown, pretty = false): void {
  const data = pretty ? JSON.stringify(body, null, 2) + '\n' : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 addresses. */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return v4.startsWith('127.') || address === '::1';
}

/**
 * Did the request come from this host? Over loopback, or to an address of this host from that
 * same address (the kernel's source for a connection to one of its own addresses, as when the
 * agent is bound to one interface): a TCP peer on the network cannot claim either.
 */
function fromThisHost(req: IncomingMessage): boolean {
  const remote = req.socket.remoteAddress;
  return isLoopback(remote) || (remote !== undefined && remote === req.socket.localAddress);
}

/**
 * Why a request from this host may still not be the board's own: a browser on the board. A
 * web page can send it a POST (a cross-site form or fetch without CORS, which carries an
 * Origin header), or read it through a name of its own resolved to 127.0.0.1 (DNS rebinding,
 * whose Host header is that name). picloud-node's requests carry no Origin and an IP as Host.
 */
function browserRefusal(req: IncomingMessage): string | undefined {
  if (req.headers.origin !== undefined) return 'a request from a web page (it carries an Origin header)';
  const host = req.headers.host ?? '';
  let hostname: string;
  try {
    hostname = new URL(`http://${host}`).hostname.replace(/^\[(.*)\]$/, '$1');
  } catch {
    return `an unreadable Host header (${JSON.stringify(host)})`;
  }
  if (isIP(hostname) === 0 && hostname !== 'localhost') return `a request for the host name ${JSON.stringify(hostname)} (address the board by its IP: a name may be a web page's, resolved here)`;
  return undefined;
}

/** How often the event loop's lag is sampled for nodejs_eventloop_lag_* (prom-client's default: 10). */
export const EVENT_LOOP_LAG_SAMPLE_MS = 100;

export class AgentHttp {
  readonly registry = new Registry();
  private routes: Route[] = [];
  private server: Server | undefined;

  constructor(private readonly readiness: Readiness) {
    // prom-client samples the event loop's lag every 10 ms by default: a hundred wake-ups a second
    // on an idle board. Every 100 ms still shows a stall of that length (Raft ticks at that pace).
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_LAG_SAMPLE_MS });
  }

  addRoutes(routes: Route[]): void {
    this.routes.push(...routes);
  }

  /** `onAcceptError`: a failed accept once listening (out of file descriptors), which must not end the process. */
  async listen(host: string, port: number, connections?: ConnectionCap, onAcceptError?: (err: Error) => void): Promise<void> {
    const server = createServer((req, res) => void this.handle(req, res));
    this.server = server;
    capConnections(server, connections);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        server.on('error', (err) => onAcceptError?.(err));
        resolve();
      });
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!;
    try {
      if (req.method === 'GET' && path === '/health') return sendJson(res, 200, { status: 'ok' });
      if (req.method === 'GET' && path === '/ready') {
        const r = this.readiness.ready();
        return sendJson(res, r.ok ? 200 : 503, { ready: r.ok, reason: r.reason });
      }
      if (req.method === 'GET' && path === '/metrics') {
        const body = await this.registry.metrics();
        res.writeHead(200, { 'content-type': this.registry.contentType });
        res.end(body);
        return;
      }
      const route = this.routes.find((r) => r.method === req.method && r.path === path);
      const change = req.method !== 'GET' && req.method !== 'HEAD';
      if (route && (change || route.localOnly === true)) {
        if (!fromThisHost(req)) {
          return sendJson(res, 403, {
            error: `${req.method} ${path} is taken only from this board itself (loopback): run picloud-node on the board, e.g. over ssh`,
            code: 'NOT_LOCAL',
          });
        }
        const refusal = browserRefusal(req);
        if (refusal !== undefined) return sendJson(res, 403, { error: `${req.method} ${path} refused: ${refusal}`, code: 'NOT_LOCAL' });
      }
      if (route) return await route.handler(req, res);
      sendJson(res, 404, { error: `no route ${req.method} ${path}` });
    } catch (e) {
      if (!res.headersSent) sendJson(res, 500, { error: (e as Error).message });
      else res.destroy();
    }
  }

  async close(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections?.();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }
}
