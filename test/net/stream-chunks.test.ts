/**
 * core/net/etcd/stream-chunks.ts: a request stream's chunks that are small views of a large
 * socket read are copied, and a stream sent more tiny DATA frames than any client sends while it
 * is paused is reset with ENHANCE_YOUR_CALM. A unit test on a stand-in stream, then a raw HTTP/2
 * client against a real EtcdGrpcServer (frames built by hand: node's client merges small writes).
 */
import t from 'tap';
import { Readable } from 'node:stream';
import { connect as netConnect, type Socket } from 'node:net';
import { constants, type ServerHttp2Stream } from 'node:http2';
import { boundUnreadChunks, MAX_UNREAD_CHUNKS } from '../../core/net/etcd/stream-chunks.js';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import { FakeEtcdBackend } from './fake-etcd-backend.js';
import { until } from '../helpers/wait.js';
import { http2Frame } from '../helpers/h2-frame.js';

/** A readable with the stream's close(code), recording the codes. */
class StandIn extends Readable {
  closedWith: number[] = [];
  override _read(): void {}
  close(code: number): void {
    this.closedWith.push(code);
    this.destroy();
  }
}

t.test('a small view of a large buffer is copied; a whole buffer, or a large part, is passed as it is', async (t) => {
  const s = new StandIn();
  boundUnreadChunks(s as unknown as ServerHttp2Stream);
  const got: Buffer[] = [];
  s.on('data', (c: Buffer) => got.push(c));
  const read = Buffer.alloc(64 * 1024, 7);
  s.push(read.subarray(100, 101));
  s.push(read.subarray(0, 32 * 1024));
  const own = Buffer.allocUnsafeSlow(10).fill(1);
  s.push(own);
  await new Promise((r) => setImmediate(r));
  t.same(got.map((c) => [c.length, c.buffer.byteLength]), [[1, 1], [32 * 1024, 64 * 1024], [10, 10]], 'the 1-byte view no longer holds the 64 KiB read');
  t.equal(got[0]![0], 7, 'the bytes are the same');
  t.equal(got[2], own, 'a buffer of its own is not copied');
});

t.test('a paused stream is reset once more than the bound of chunks was pushed into it; resuming starts the count again', async (t) => {
  const s = new StandIn();
  boundUnreadChunks(s as unknown as ServerHttp2Stream, 4);
  s.on('data', () => undefined);
  for (let i = 0; i < 10; i++) s.push(Buffer.alloc(1)); // flowing: not counted
  s.pause();
  for (let i = 0; i < 4; i++) s.push(Buffer.alloc(1));
  t.same(s.closedWith, [], 'four unread: within the bound');
  s.resume();
  await new Promise((r) => setImmediate(r));
  s.pause();
  for (let i = 0; i < 4; i++) s.push(Buffer.alloc(1));
  t.same(s.closedWith, [], 'the count started again at the resume');
  s.push(Buffer.alloc(1));
  t.same(s.closedWith, [constants.NGHTTP2_ENHANCE_YOUR_CALM], 'the fifth: reset with ENHANCE_YOUR_CALM');
});

const frame = http2Frame;

/** A HEADERS frame (END_HEADERS) opening a gRPC call to `path`, every field a literal without indexing. */
function grpcHeaders(id: number, path: string): Buffer {
  const fields = { ':method': 'POST', ':scheme': 'http', ':path': path, ':authority': '127.0.0.1', 'content-type': 'application/grpc', te: 'trailers' };
  const block = Buffer.concat(Object.entries(fields).map(([k, v]) => Buffer.concat([Buffer.from([0, k.length]), Buffer.from(k, 'latin1'), Buffer.from([v.length]), Buffer.from(v, 'latin1')])));
  return frame(1, 0x4, id, block);
}

/** A gRPC message prefix announcing `announced` bytes, then `body`. */
const grpcMessage = (body: Buffer, announced: number): Buffer => {
  const p = Buffer.alloc(5);
  p.writeUInt32BE(announced, 1);
  return Buffer.concat([p, body]);
};

t.test('a real server: a request waiting for room and fed 1-byte DATA frames is reset, the others untouched', async (t) => {
  const server = await EtcdGrpcServer.start({ backend: new FakeEtcdBackend(), port: 0, limits: { maxHeldRequestBytesPerConnection: 0 } });
  t.teardown(() => server.close());
  const resets = new Map<number, number>();
  const socket: Socket = netConnect(server.port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  let buf = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
      const len = buf.readUIntBE(0, 3);
      const [type, flags, id] = [buf[3]!, buf[4]!, buf.readUInt32BE(5) & 0x7fffffff];
      if (type === 4 && !(flags & 1)) socket.write(frame(4, 1, 0)); // SETTINGS ack
      if (type === 3) resets.set(id, buf.readUInt32BE(9));
      buf = buf.subarray(9 + len);
    }
  });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), frame(4, 0, 0)]));
  const put = '/etcdserverpb.KV/Put';
  // The connection's room (one largest request, the gateway's) taken by two unfinished puts; the third waits.
  socket.write(Buffer.concat([grpcHeaders(1, put), frame(0, 0, 1, grpcMessage(Buffer.alloc(10), 2_097_000))]));
  socket.write(Buffer.concat([grpcHeaders(3, put), frame(0, 0, 3, grpcMessage(Buffer.alloc(10), 524_000))]));
  await until('two puts reserved', () => server.requestBytes!.heldBytes === 2_097_000 + 524_000, 5_000);
  socket.write(Buffer.concat([grpcHeaders(5, put), frame(0, 0, 5, grpcMessage(Buffer.alloc(10), 100_000))]));
  await until('the third put waiting', () => server.requestBytes!.waitingStreams === 1, 5_000);
  const tiny = frame(0, 0, 5, Buffer.alloc(1));
  for (let sent = 0; sent < MAX_UNREAD_CHUNKS + 100; sent += 500) {
    socket.write(Buffer.concat(Array.from({ length: 500 }, () => tiny)));
    await new Promise((r) => setTimeout(r, 2));
  }
  await until('stream 5 reset', () => resets.has(5), 5_000);
  t.equal(resets.get(5), constants.NGHTTP2_ENHANCE_YOUR_CALM, 'the waiting stream: ENHANCE_YOUR_CALM');
  t.notOk(resets.has(1) || resets.has(3), 'the other streams are untouched');
  await until('its wait given up', () => server.requestBytes!.waitingStreams === 0, 5_000);
  t.equal(server.requestBytes!.waitingStreams, 0, 'nothing left waiting');
});
