/**
 * The agent's HTTP port takes changes and shows the gossip keys only to the board itself
 * (test/compat/http-api-local.test.ts, from another host), and not to a browser on the board:
 * a web page's cross-site POST carries an Origin header, and a page reading through a name of
 * its own resolved to 127.0.0.1 (DNS rebinding) sends that name as Host. picloud-node's own
 * requests carry neither.
 */
import t from 'tap';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { AgentHttp, sendJson } from '../../agent/http.js';

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** A request with exactly these headers (fetch cannot set Host): its status. */
function send(port: number, method: string, path: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end(method === 'GET' ? undefined : '{}');
  });
}

t.test('changes and the keys refuse a browser on the board: an Origin header, or a Host that is a name', async (t) => {
  const http = new AgentHttp({ ready: () => ({ ok: true, reason: '' }) });
  let changes = 0;
  http.addRoutes([
    { method: 'POST', path: '/v1/agent/keyring/install', handler: (_q, r) => void (changes++, sendJson(r, 200, {})) },
    { method: 'GET', path: '/v1/agent/keyring', localOnly: true, handler: (_q, r) => sendJson(r, 200, { keys: ['secret'] }) },
    { method: 'GET', path: '/v1/agent/members', handler: (_q, r) => sendJson(r, 200, []) },
  ]);
  const port = await freePort();
  await http.listen('127.0.0.1', port);
  t.teardown(() => http.close());
  const self = `127.0.0.1:${port}`;
  t.equal(await send(port, 'POST', '/v1/agent/keyring/install', { host: self }), 200, "picloud-node's request (an IP as Host, no Origin): taken");
  t.equal(await send(port, 'POST', '/v1/agent/keyring/install', { host: self, origin: 'http://evil.example' }), 403, 'a web page’s cross-site POST (Origin): refused');
  t.equal(await send(port, 'POST', '/v1/agent/keyring/install', { host: self, origin: 'null' }), 403, 'a sandboxed page’s (Origin: null) too');
  t.equal(changes, 1, 'only the first was made');
  t.equal(await send(port, 'GET', '/v1/agent/keyring', { host: `rebind.example:${port}` }), 403, 'the keys read through a name resolved here (DNS rebinding): refused');
  t.equal(await send(port, 'GET', '/v1/agent/keyring', { host: self }), 200, 'read by the board itself');
  t.equal(await send(port, 'GET', '/v1/agent/keyring', { host: `localhost:${port}` }), 200, 'also as localhost');
  t.equal(await send(port, 'GET', '/v1/agent/keyring', { host: `[::1]:${port}` }), 200, 'and an IPv6 literal');
  t.equal(await send(port, 'GET', '/v1/agent/members', { host: `rebind.example:${port}`, origin: 'http://rebind.example' }), 200, 'open reads stay open');
});
