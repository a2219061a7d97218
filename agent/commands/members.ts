/**
 * `picloud-node members [--json] [--watch] [--http HOST:PORT]`: the cluster's members as the
 * local agent sees them (GET /v1/agent/members), or a live stream of membership events
 * (?watch=1). Talks only to the agent's HTTP port. Also exports the small HTTP helpers the
 * keyring command shares.
 */
import { parseArgs } from 'node:util';
import { request } from 'undici';

export const DEFAULT_AGENT_HTTP = '127.0.0.1:7480';

export interface CommandIo {
  out(line: string): void;
  err(line: string): void;
}

const stdio: CommandIo = {
  out: (l) => process.stdout.write(l + '\n'),
  err: (l) => process.stderr.write(l + '\n'),
};

/** A usage error: exit code 2 with the message. */
export class UsageError extends Error {}

/** Validates --http HOST:PORT and returns the base URL. */
export function agentBaseUrl(http: string | undefined): string {
  const target = http ?? DEFAULT_AGENT_HTTP;
  const m = /^(\[[^\]]+\]|[^:\s/]+):(\d{1,5})$/.exec(target);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new UsageError(`--http must be HOST:PORT (got "${target}")`);
  return `http://${m[1]}:${m[2]}`;
}

/** The agent's reply: its status and body (read as text, or as a stream of chunks). */
export interface AgentResponse {
  status: number;
  ok: boolean;
  body: AsyncIterable<Uint8Array>;
  text(): Promise<string>;
}

/**
 * A request to the agent, with an agent-oriented error message on connection failure. undici's
 * request, not fetch: fetch refuses the ports browsers block (6000, 6665-6669, 10080, ...), which
 * are fine --http-port values.
 */
export async function agentFetch(base: string, path: string, init: { method?: string; headers?: Record<string, string>; body?: string; signal?: AbortSignal } = {}): Promise<AgentResponse> {
  try {
    const res = await request(base + path, { method: (init.method ?? 'GET') as 'GET', headers: init.headers, body: init.body, signal: init.signal });
    return { status: res.statusCode, ok: res.statusCode >= 200 && res.statusCode < 300, body: res.body, text: () => res.body.text() };
  } catch (err) {
    if (init.signal?.aborted) throw err;
    const e = err as { code?: string; message?: string };
    throw new Error(`cannot reach the agent at ${base.replace('http://', '')}: ${e.code ?? e.message}`);
  }
}

/** Reads a JSON reply; non-2xx replies become an Error carrying the agent's message. */
export async function agentJson<T>(res: AgentResponse): Promise<T> {
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`agent answered ${res.status} with non-JSON: ${text.slice(0, 200)}`);
  }
  if (!res.ok) {
    const e = (body as { error?: { code?: string; message?: string } }).error;
    throw new Error(e ? `${e.code}: ${e.message}` : `agent answered ${res.status}`);
  }
  return body as T;
}

interface MemberRow {
  name: string;
  address: string;
  port: number;
  role: string | null;
  state: string;
  incarnation: number;
  meta: Record<string, unknown>;
  type?: string;
  at?: string;
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
}

function tagsText(meta: Record<string, unknown>): string {
  const tags = meta.tags;
  const parts: string[] = [];
  for (const k of ['zone', 'version']) if (meta[k] !== undefined) parts.push(`${k}=${String(meta[k])}`);
  if (tags && typeof tags === 'object' && !Array.isArray(tags)) {
    for (const [k, v] of Object.entries(tags)) parts.push(`${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  }
  return parts.join(',');
}

function eventLine(e: MemberRow): string {
  return `${e.at ?? ''} ${e.type ?? '?'} ${e.name} ${e.address}:${e.port} ${e.state} role=${e.role ?? '-'} incarnation=${e.incarnation} ${tagsText(e.meta)}`.trim();
}

async function watch(base: string, json: boolean, io: CommandIo): Promise<number> {
  const ac = new AbortController();
  const onSig = (): void => ac.abort();
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);
  try {
    const res = await agentFetch(base, '/v1/agent/members?watch=1', { signal: ac.signal });
    if (!res.ok) {
      await agentJson(res);
      return 1;
    }
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const ev = JSON.parse(line) as MemberRow & { error?: { code: string; message: string } };
        if (ev.error) {
          io.err(`error: ${ev.error.code}: ${ev.error.message}`);
          return 1;
        }
        io.out(json ? line : eventLine(ev));
      }
    }
    return 0;
  } catch (err) {
    if (ac.signal.aborted) return 0;
    const cause = (err as { cause?: { message?: string } }).cause;
    throw new Error(`lost the watch stream from the agent: ${cause?.message ?? (err as Error).message}`);
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
  }
}

export async function run(argv: string[], io: CommandIo = stdio): Promise<number> {
  let values: { json?: boolean; watch?: boolean; http?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { json: { type: 'boolean' }, watch: { type: 'boolean' }, http: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    io.err(`error: ${(err as Error).message}`);
    io.err('usage: picloud-node members [--json] [--watch] [--http HOST:PORT]');
    return 2;
  }
  if (values.help) {
    io.out('usage: picloud-node members [--json] [--watch] [--http HOST:PORT (default 127.0.0.1:7480)]');
    return 0;
  }
  try {
    const base = agentBaseUrl(values.http);
    if (values.watch) return await watch(base, !!values.json, io);
    const members = await agentJson<MemberRow[]>(await agentFetch(base, '/v1/agent/members'));
    if (values.json) {
      io.out(JSON.stringify(members, null, 2));
      return 0;
    }
    const rows = [['NAME', 'ADDRESS', 'STATE', 'ROLE', 'INCARNATION', 'TAGS']];
    for (const m of members) rows.push([m.name, `${m.address}:${m.port}`, m.state, m.role ?? '-', String(m.incarnation), tagsText(m.meta)]);
    for (const l of table(rows)) io.out(l);
    return 0;
  } catch (err) {
    io.err(`error: ${(err as Error).message}`);
    return err instanceof UsageError ? 2 : 1;
  }
}
