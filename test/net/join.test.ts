import t from 'tap';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import {
  JOIN_STREAM_MAGIC,
  JoinServer,
  MAX_JOIN_CONNECTIONS_PER_ADDRESS,
  MAX_JOIN_MEMBERS,
  MAX_JOIN_ID_CHARS,
  MAX_MEMBER_NAME_CHARS,
  decodeJoinRequest,
  decodeJoinResponse,
  encodeJoinRequest,
  encodeJoinResponse,
  joinCluster,
  type JoinRequest,
} from '../../core/net/join.js';
import { Purpose, clientHandshake } from '../../core/net/handshake.js';
import { PeerTransport } from '../../core/net/peer-transport.js';
import { NetError } from '../../core/net/errors.js';
import { derivePeerKey, generateToken, parseToken } from '../../core/net/token.js';

const key = derivePeerKey(parseToken(generateToken()).secret);
const members = [{ id: 1, name: 'pi01', peerAddr: '127.0.0.1:2380', clientAddr: '127.0.0.1:2379' }];

t.test('a joiner with the secret is added; the callback sees its request', async (t) => {
  const seen: (JoinRequest & { remoteAddress: string })[] = [];
  const server = await JoinServer.listen({
    peerKey: key,
    port: 0,
    onJoin: async (req) => {
      seen.push(req);
      return { memberId: 2 ** 40 + 5, members: [...members, { id: 2 ** 40 + 5, name: req.name, peerAddr: req.peerAddr, clientAddr: req.clientAddr }] };
    },
  });
  t.teardown(() => server.close());
  const r = await joinCluster({
    address: `127.0.0.1:${server.address!.port}`,
    peerKey: key,
    request: { name: 'pi02', peerAddr: '127.0.0.1:12380', clientAddr: '127.0.0.1:12379' },
  });
  t.equal(r.memberId, 2 ** 40 + 5);
  t.same(r.members.map((m) => m.name), ['pi01', 'pi02']);
  t.equal(seen.length, 1);
  t.equal(seen[0]!.name, 'pi02');
  t.match(seen[0]!.remoteAddress, /^127\.0\.0\.1:\d+$/);
  t.equal(server.stats.joined, 1);
});

t.test('silent connections from one address hold at most MAX_JOIN_CONNECTIONS_PER_ADDRESS slots: a board still joins', async (t) => {
  const server = await JoinServer.listen({ peerKey: key, port: 0, onJoin: async () => ({ memberId: 7, members }) });
  t.teardown(() => server.close());
  const port = server.address!.port;
  const silent = await Promise.all(
    Array.from({ length: 40 }, () => new Promise<ReturnType<typeof connect>>((resolve) => {
      // From 127.0.0.2 (the joiner below dials from 127.0.0.1): the join magic, then silence.
      const s = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' }, () => {
        s.write(JOIN_STREAM_MAGIC);
        resolve(s);
      });
      s.on('error', () => undefined);
    })),
  );
  t.teardown(() => silent.forEach((s) => s.destroy()));
  // The server counts each refusal as it handles the connection: on a loaded machine that can
  // take longer than the connects did.
  const expected = 40 - MAX_JOIN_CONNECTIONS_PER_ADDRESS;
  for (const deadline = Date.now() + 5_000; server.stats.rejectedHandshakes < expected && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 100)); // and no more than that
  t.equal(server.stats.rejectedHandshakes, expected, 'beyond the per-address bound, closed on arrival');
  const r = await joinCluster({ address: `127.0.0.1:${port}`, peerKey: key, request: { name: 'pi03', peerAddr: '127.0.0.1:13380', clientAddr: '127.0.0.1:13379' } });
  t.equal(r.memberId, 7, 'a board joins meanwhile');
});

t.test('default port, refusals and wrong secrets', async (t) => {
  let calls = 0;
  const server = await JoinServer.listen({
    peerKey: key,
    port: 0,
    onJoin: async () => {
      calls++;
      throw Object.assign(new Error('name pi01 is taken'), { code: 'ERR_NAME_TAKEN' });
    },
  });
  t.teardown(() => server.close());
  const req = { name: 'pi01', peerAddr: '127.0.0.1:1', clientAddr: '' };
  await t.rejects(joinCluster({ address: '127.0.0.1', defaultPort: server.address!.port, peerKey: key, request: req }), {
    code: 'ERR_JOIN_REFUSED',
    message: /name pi01 is taken \(ERR_NAME_TAKEN\)/,
  });
  t.equal(calls, 1);
  await t.rejects(joinCluster({ address: `127.0.0.1:${server.address!.port}`, peerKey: randomBytes(32), request: req }), { code: 'ERR_AUTH_FAILED' });
  t.equal(calls, 1, 'an intruder never reaches the callback');
  // A member's Raft connection is not a join, and a join is not a Raft connection.
  const s = connect(server.address!.port, '127.0.0.1');
  s.on('error', () => undefined);
  await new Promise((r) => s.once('connect', r));
  const ch = await clientHandshake(s, { peerKey: key, purpose: Purpose.Raft, nodeId: 3 }).catch((e: unknown) => e);
  t.ok(ch instanceof NetError, 'raft purpose refused on the join port');
  const peer = new PeerTransport({ nodeId: 1, peerKey: key, onMessage: () => undefined });
  const { port } = await peer.listen(0);
  t.teardown(() => peer.close());
  await t.rejects(joinCluster({ address: `127.0.0.1:${port}`, peerKey: key, request: req, timeoutMs: 2_000 }));
  t.equal(peer.stats().rejectedHandshakes, 1, 'join purpose refused on the peer port');
});

t.test('a slow callback times out into a refusal the joiner can retry', async (t) => {
  const server = await JoinServer.listen({ peerKey: key, port: 0, handlerTimeoutMs: 100, onJoin: () => new Promise(() => undefined) });
  t.teardown(() => server.close());
  await t.rejects(
    joinCluster({ address: `127.0.0.1:${server.address!.port}`, peerKey: key, request: { name: 'x', peerAddr: 'h:1', clientAddr: '' } }),
    { code: 'ERR_JOIN_REFUSED', message: /ERR_JOIN_TIMEOUT/ },
  );
  t.ok(await joinCluster({ address: `127.0.0.1:1`, peerKey: key, request: { name: 'x', peerAddr: 'h:1', clientAddr: '' } }).catch((e: NetError) => e.code === 'ERR_CONNECTION_CLOSED'), 'nobody listening: connection error');
});

t.test('join request/response codecs: limits and hostile input', async (t) => {
  const ok = { name: 'n'.repeat(63), peerAddr: '[::1]:2380', clientAddr: 'a:1' };
  t.same(decodeJoinRequest(encodeJoinRequest(ok)), ok, 'name at the limit of --name');
  t.throws(() => decodeJoinRequest(encodeJoinRequest({ ...ok, name: ok.name + 'n' })), { code: 'ERR_INVALID_MESSAGE' }, 'name over the limit');
  t.throws(() => decodeJoinRequest(encodeJoinRequest({ ...ok, name: 'n'.repeat(MAX_MEMBER_NAME_CHARS + 1) })), { code: 'ERR_INVALID_MESSAGE' }, 'name over the codec\'s limit');
  for (const name of ['a b', '-lead', '.hidden', 'pi\u00e9', '../x', 'x\ny']) {
    t.throws(() => decodeJoinRequest(encodeJoinRequest({ ...ok, name })), { code: 'ERR_INVALID_MESSAGE' }, `${JSON.stringify(name)}: no name --name takes`);
  }
  t.same(decodeJoinRequest(encodeJoinRequest({ ...ok, name: 'pi-4.rack_2' })).name, 'pi-4.rack_2');
  t.throws(() => decodeJoinRequest(encodeJoinRequest({ ...ok, name: '' })), { code: 'ERR_INVALID_MESSAGE' });
  t.throws(() => decodeJoinRequest(encodeJoinRequest({ ...ok, peerAddr: 'no-port' })), { code: 'ERR_INVALID_MESSAGE' });
  t.same(decodeJoinRequest(encodeJoinRequest({ ...ok, quotaBytes: 2 ** 40 })), { ...ok, quotaBytes: 2 ** 40 }, 'the joiner\'s quota');
  t.notOk('quotaBytes' in decodeJoinRequest(encodeJoinRequest({ ...ok, quotaBytes: 0 })), 'a quota of 0 is none said (an older joiner)');
  const joinId = 'j'.repeat(MAX_JOIN_ID_CHARS);
  t.same(decodeJoinRequest(encodeJoinRequest({ ...ok, joinId })), { ...ok, joinId }, 'the join id, at the limit');
  t.throws(() => decodeJoinRequest(encodeJoinRequest({ ...ok, joinId: joinId + 'j' })), { code: 'ERR_INVALID_MESSAGE' }, 'a join id over the limit');
  t.notOk('joinId' in decodeJoinRequest(encodeJoinRequest({ ...ok, joinId: '' })), 'an empty join id is none (an older joiner)');
  // Field 4 (quota_bytes), varint 2^64 - 1, after a valid request.
  const huge = Buffer.concat([encodeJoinRequest(ok), Buffer.from([0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])]);
  t.throws(() => decodeJoinRequest(huge), { code: 'ERR_INVALID_MESSAGE' }, 'a quota beyond 2^53 is refused, not rounded');
  const many = Array.from({ length: MAX_JOIN_MEMBERS + 1 }, (_, i) => ({ id: i + 1, name: 'm', peerAddr: 'a:1', clientAddr: '' }));
  t.throws(() => decodeJoinResponse(encodeJoinResponse({ ok: true, result: { memberId: 1, members: many } })), { code: 'ERR_INVALID_MESSAGE' });
  t.equal((decodeJoinResponse(encodeJoinResponse({ ok: true, result: { memberId: 1, members: many.slice(1) } })) as { ok: true; result: { members: unknown[] } }).result.members.length, MAX_JOIN_MEMBERS);
  t.same(decodeJoinResponse(encodeJoinResponse({ ok: false, code: 'E', message: 'no' })), { ok: false, code: 'E', message: 'no' });
  const withQuotas = [
    { id: 7, name: 'a', peerAddr: 'a:1', clientAddr: 'a:2', quotaBytes: 2 ** 27 },
    { id: 9, name: 'b', peerAddr: 'b:1', clientAddr: 'b:2' },
  ];
  t.same(decodeJoinResponse(encodeJoinResponse({ ok: true, result: { memberId: 7, members: withQuotas } })), { ok: true, result: { memberId: 7, members: withQuotas } }, 'members\' quotas, where on record');
  t.throws(() => decodeJoinResponse(encodeJoinResponse({ ok: true, result: { memberId: 0, members: [] } })), { code: 'ERR_INVALID_MESSAGE' });
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), (b) => {
      for (const f of [decodeJoinRequest, decodeJoinResponse]) {
        try {
          f(b);
        } catch (err) {
          if (!(err instanceof NetError)) return false;
        }
      }
      return true;
    }),
    { numRuns: 2000 },
  );
});

t.test('failed joins are reported at most once per rejectReportMs, with a count of the rest; every one with 0', async (t) => {
  const garbage = async (port: number): Promise<void> =>
    new Promise<void>((resolve) => {
      const s = connect(port, '127.0.0.1', () => s.write(Buffer.concat([JOIN_STREAM_MAGIC, Buffer.alloc(64, 0xff)])));
      s.on('error', () => undefined);
      s.once('close', () => resolve());
    });
  for (const [rejectReportMs, expected] of [[undefined, 1], [0, 5]] as const) {
    const reasons: string[] = [];
    const server = await JoinServer.listen({ peerKey: key, port: 0, onJoin: async () => ({ memberId: 7, members }), onReject: (r) => reasons.push(r), ...(rejectReportMs === undefined ? {} : { rejectReportMs }) });
    t.teardown(() => server.close());
    for (let i = 0; i < 5; i++) await garbage(server.address!.port);
    t.equal(server.stats.rejectedHandshakes, 5, 'all five refused');
    t.equal(reasons.length, expected, `reports with rejectReportMs ${rejectReportMs ?? 'default'}`);
  }
});

t.test('a failed accept (out of file descriptors) is reported, not thrown: the join and peer listeners serve on', async (t) => {
  const reasons: string[] = [];
  const server = await JoinServer.listen({ peerKey: key, port: 0, onJoin: async () => ({ memberId: 7, members }), onReject: (r) => reasons.push(r) });
  t.teardown(() => server.close());
  const emfile = Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' });
  // What node:net does when accept() fails: an 'error' on the server, which throws with no listener.
  (server as unknown as { server: import('node:net').Server }).server.emit('error', emfile);
  t.match(reasons, [/accepting a join connection: accept EMFILE/]);
  const r = await joinCluster({ address: `127.0.0.1:${server.address!.port}`, peerKey: key, request: { name: 'pi02', peerAddr: '127.0.0.1:12380', clientAddr: '127.0.0.1:12379' } });
  t.equal(r.memberId, 7, 'a join after it is answered');

  const peerReasons: string[] = [];
  const peer = new PeerTransport({ nodeId: 1, peerKey: key, onMessage: () => undefined, onReject: (r) => peerReasons.push(r), limits: { handshakeFailureReportMs: 0 } });
  await peer.listen(0);
  t.teardown(() => peer.close());
  (peer as unknown as { server: import('node:net').Server }).server.emit('error', emfile);
  t.match(peerReasons, [/accepting a peer connection: accept EMFILE/]);
});
