/**
 * Watch streams whose client stops reading cannot take a member's memory: one connection opens
 * 200 watch streams on a prefix and stops reading them (HTTP/2 flow control then holds every
 * response on the member), while 2,000 puts of 1 KB go in. Each stream may hold up to 8 MiB
 * before it counts as too slow, so before the shared bound these streams held ~2 MB each, 440 MB
 * in all (500 of them, 1.6 GB; etcd 3.4 ~0.3 GB in the same probe). Now the streams' unwritten
 * responses together stay under MAX_WATCH_BUFFERS_BYTES (picloud_watch_buffered_bytes, sampled
 * throughout), and once the client reads again every stream gets every event, in order, caught up
 * from the history.
 */
import t from 'tap';
import http2 from 'node:http2';
import { AgentCluster, scrapeMetrics } from '../helpers/agents.js';
import { SimpleKv } from '../helpers/kv-client.js';
import { until } from '../helpers/wait.js';
import { decodeWatchReply } from '../../bench/kv/client.js';
import { GRPC_MESSAGE_PREFIX_BYTES } from '../../core/net/etcd/eager-send.js';
import { MAX_WATCH_BUFFERS_BYTES } from '../../core/net/etcd/server.js';

const STREAMS = 100;
const PUTS = 1_000;
const IN_FLIGHT = 16;
const VALUE = 'v'.repeat(1_024);

/** A Watch request creating a watch of keys under `prefix` (WatchRequest.create_request, hand-encoded). */
function createFrame(prefix: string): Buffer {
  const key = Buffer.from(prefix);
  const end = Buffer.from(prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1));
  const inner = Buffer.concat([Buffer.from([0x0a, key.length]), key, Buffer.from([0x12, end.length]), end]);
  const msg = Buffer.concat([Buffer.from([0x0a, inner.length]), inner]);
  const out = Buffer.alloc(GRPC_MESSAGE_PREFIX_BYTES + msg.length);
  out.writeUInt32BE(msg.length, 1);
  msg.copy(out, GRPC_MESSAGE_PREFIX_BYTES);
  return out;
}

/** One watch stream: whether it was created, and the revisions of the PUT events it received. */
class ReadWatch {
  created = false;
  readonly revisions: number[] = [];
  private pending = Buffer.alloc(0);
  constructor(readonly stream: http2.ClientHttp2Stream) {
    stream.on('data', (chunk: Buffer) => {
      let buf = Buffer.concat([this.pending, chunk]);
      while (buf.length >= GRPC_MESSAGE_PREFIX_BYTES && buf.length >= GRPC_MESSAGE_PREFIX_BYTES + buf.readUInt32BE(1)) {
        const len = buf.readUInt32BE(1);
        const reply = decodeWatchReply(buf.subarray(GRPC_MESSAGE_PREFIX_BYTES, GRPC_MESSAGE_PREFIX_BYTES + len));
        if (reply.created) this.created = true;
        for (const r of reply.puts) this.revisions.push(r);
        buf = buf.subarray(GRPC_MESSAGE_PREFIX_BYTES + len);
      }
      this.pending = Buffer.from(buf);
    });
    stream.on('error', () => undefined);
  }
}

t.test('unread watch streams hold a bounded amount of the member, and catch up once read', { timeout: 180_000 }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['sw1']);
  const a = cluster.agents[0]!;
  const kv = new SimpleKv(cluster.endpoints(), 10_000);
  t.teardown(() => kv.close());

  const session = http2.connect(`http://${a.host}:${a.ports.client}`);
  session.on('error', () => undefined);
  t.teardown(() => session.destroy());
  const watches: ReadWatch[] = [];
  for (let i = 0; i < STREAMS; i++) {
    const stream = session.request({ ':method': 'POST', ':path': '/etcdserverpb.Watch/Watch', 'content-type': 'application/grpc', te: 'trailers' });
    stream.write(createFrame('s/'));
    watches.push(new ReadWatch(stream));
  }
  const t0 = Date.now();
  await until('every watch is created', () => watches.every((w) => w.created) || undefined, 20_000);
  // Not reading: the client stops consuming, so HTTP/2 flow control holds the responses on the member.
  for (const w of watches) w.stream.pause();

  t.comment(`created in ${Date.now() - t0} ms`);
  let peak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const m = await scrapeMetrics(a.ports.http).catch(() => undefined);
      peak = Math.max(peak, m?.get('picloud_watch_buffered_bytes') ?? 0);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const revisions: number[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < PUTS) {
        const i = next++;
        revisions.push(await kv.put(`s/${i % 50}`, VALUE));
      }
    }),
  );
  t.comment(`puts done at ${Date.now() - t0} ms`);
  await new Promise((r) => setTimeout(r, 500));
  sampling = false;
  await sampler;
  t.ok(peak > 1024 * 1024, `the unread streams did buffer (peak ${(peak / 2 ** 20).toFixed(1)} MiB)`);
  t.ok(peak <= MAX_WATCH_BUFFERS_BYTES, `all streams together stayed within ${MAX_WATCH_BUFFERS_BYTES / 2 ** 20} MiB (peak ${(peak / 2 ** 20).toFixed(1)} MiB; ${((STREAMS * PUTS * VALUE.length) / 2 ** 20).toFixed(0)} MiB of events were sent)`);
  t.equal(a.proc!.exitCode, null, 'the member is running');

  for (const w of watches) w.stream.resume();
  revisions.sort((x, y) => x - y);
  await until('every stream has every event', () => watches.every((w) => w.revisions.length >= PUTS) || undefined, 90_000);
  t.comment(`caught up at ${Date.now() - t0} ms`);
  const wrong = watches.filter((w) => w.revisions.length !== PUTS || w.revisions.some((r, i) => r !== revisions[i]));
  t.equal(wrong.length, 0, `every stream got the ${PUTS} events once each, in revision order${wrong.length > 0 ? ` (first wrong: ${wrong[0]!.revisions.length} events)` : ''}`);
  const after = await until('the buffers drain', async () => {
    const b = (await scrapeMetrics(a.ports.http)).get('picloud_watch_buffered_bytes') ?? -1;
    return b === 0 ? b : undefined;
  });
  t.equal(after, 0, 'nothing is left buffered once the client has read everything');

  // A client that goes away with responses still queued: they are not counted any longer.
  const gone = http2.connect(`http://${a.host}:${a.ports.client}`);
  gone.on('error', () => undefined);
  const leaving = Array.from({ length: 20 }, () => {
    const stream = gone.request({ ':method': 'POST', ':path': '/etcdserverpb.Watch/Watch', 'content-type': 'application/grpc', te: 'trailers' });
    stream.write(createFrame('s/'));
    return new ReadWatch(stream);
  });
  await until('the leaving client\'s watches are created', () => leaving.every((w) => w.created) || undefined, 20_000);
  for (const w of leaving) w.stream.pause();
  let k = 0;
  await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
    while (k < 200) await kv.put(`s/${k++ % 50}`, VALUE);
  }));
  const queued = (await scrapeMetrics(a.ports.http)).get('picloud_watch_buffered_bytes') ?? 0;
  t.ok(queued > 0, `responses were queued for the client that leaves (${queued} bytes)`);
  gone.destroy();
  const left = await until('its queued responses are released', async () => {
    const b = (await scrapeMetrics(a.ports.http)).get('picloud_watch_buffered_bytes') ?? -1;
    return b === 0 ? b : undefined;
  }, 10_000).catch(() => -1);
  t.equal(left, 0, 'a closed stream\'s unwritten responses no longer count against the bound');
});
