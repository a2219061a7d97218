/**
 * LeaseForwarder against two real gRPC front ends (in-memory fake backends): keep-alives
 * forwarded to one leader, then to another after a leader change.
 */
import t from 'tap';
import { LeaseForwarder, MAX_FORWARD_STREAMS } from '../../core/api/lease-forwarder.js';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import { FakeEtcdBackend } from '../net/fake-etcd-backend.js';

t.test('after a leader change, keep-alives to the new leader are not failed by the old stream closing', async (t) => {
  const servers = await Promise.all(
    [0, 1].map(async () => {
      const backend = new FakeEtcdBackend();
      const server = await EtcdGrpcServer.start({ backend, port: 0, onInternalError: (e, m) => t.fail(`internal error in ${m}: ${String(e)}`) });
      t.teardown(() => server.close());
      return { backend, addr: `127.0.0.1:${server.port}` };
    }),
  );
  const [a, b] = servers as [(typeof servers)[0], (typeof servers)[0]];
  const idA = (await a.backend.leaseGrant({ ttlSeconds: 30, id: 0 })).id;
  const idB = (await b.backend.leaseGrant({ ttlSeconds: 45, id: 0 })).id;
  const fwd = new LeaseForwarder();
  t.teardown(() => fwd.close());
  t.equal(await fwd.keepAlive(a.addr, idA), 30, 'forwarded to the first leader');
  t.equal(await fwd.keepAlive(a.addr, 999_999), 0, 'an unknown lease answers TTL 0');
  // The leader changes: the next keep-alives go to b while the stream to a is being torn down.
  const after = await Promise.allSettled([fwd.keepAlive(b.addr, idB), fwd.keepAlive(b.addr, idB)]);
  t.same(after.map((r) => (r.status === 'fulfilled' ? r.value : String(r.reason))), [45, 45], 'both answered by the new leader');
  t.equal(await fwd.keepAlive(b.addr, idB), 45, 'and the stream to it keeps working');
  // Time-to-live is asked of the leader too, on the same client.
  const left = await fwd.timeToLive(b.addr, idB);
  t.ok(left > 40 && left <= 45, `time-to-live from the leader (${left} s)`);
  t.equal(await fwd.timeToLive(b.addr, 999_999), -1, 'an unknown lease: -1');
  t.equal(await fwd.keepAlive(b.addr, idB), 45, 'the keep-alive stream is untouched by it');
  const backToA = await fwd.timeToLive(a.addr, idA);
  t.ok(backToA > 25 && backToA <= 30, 'a leader change moves the call to the new leader');
});

t.test('streams per caller are bounded: the least recently used goes, keep-alives go on', async (t) => {
  const backend = new FakeEtcdBackend();
  const server = await EtcdGrpcServer.start({ backend, port: 0, onInternalError: (e, m) => t.fail(`internal error in ${m}: ${String(e)}`) });
  t.teardown(() => server.close());
  const addr = `127.0.0.1:${server.port}`;
  const id = (await backend.leaseGrant({ ttlSeconds: 30, id: 0 })).id;
  const fwd = new LeaseForwarder();
  t.teardown(() => fwd.close());
  const callers = MAX_FORWARD_STREAMS + 44;
  const ttls: number[] = [];
  for (let i = 0; i < callers; i++) ttls.push(await fwd.keepAlive(addr, id, { key: `user-${i}@1`, token: `token-${i}` }));
  t.ok(ttls.every((ttl) => ttl === 30), `${callers} callers each renewed through their own stream`);
  t.equal(fwd.streamCount, MAX_FORWARD_STREAMS, `at most ${MAX_FORWARD_STREAMS} streams stay open`);
  t.equal(await fwd.keepAlive(addr, id, { key: 'user-0@1', token: 'token-0b' }), 30, 'a caller whose stream was closed gets a new one');
  t.equal(await fwd.keepAlive(addr, id), 30, 'and so does one without a token');
});
