/**
 * The agent's HTTP port: /health (process up), /ready (member of a cluster with a leader),
 * /metrics (Prometheus), plus routes other subsystems register (gossip members, service API).
 * Binds only where the config says.
 */
import { IncomingMessage, Server, ServerResponse, createServer } from 'node:http';
import { Registry, collectDefaultMetrics } from 'prom-client';

export interface Route {
  method: string;
  path: string;
  handler(req: IncomingMessage, res: ServerResponse): void | Promise<void>;
}

export interface Readiness {
  ready(): { ok: boolean; reason: string };
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}

export class AgentHttp {
  readonly registry = new Registry();
  private routes: Route[] = [];
  private server: Server | undefined;

  constructor(private readonly readiness: Readiness) {
    collectDefaultMetrics({ register: this.registry });
  }

  addRoutes(routes: Route[]): void {
    this.routes.push(...routes);
  }

  async listen(host: string, port: number): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, host, () => resolve());
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
