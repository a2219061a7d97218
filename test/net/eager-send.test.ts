/**
 * The eager-send interceptor's batches (core/net/etcd/eager-send.ts): encoded messages written
 * as one buffer straight onto grpc-js's HTTP/2 stream reach a real grpc-js client as the same
 * messages, in order with the ones sent the usual way; where the direct write cannot be used
 * (headers not sent yet, a message over the size limit) each message takes grpc-js's path and
 * gets grpc-js's checks. The direct-path counter pins the grpc-js internals the interceptor
 * relies on: after an upgrade that moves them, the first test fails rather than the speed
 * quietly going.
 */
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { EagerFrames, EagerMessage, eagerFramesStats, eagerSendInterceptor, GRPC_MESSAGE_PREFIX_BYTES } from '../../core/net/etcd/eager-send.js';

const PATH = '/test.Echo/Stream';
const identity = (b: Buffer): Buffer => b;

/** A server whose one streaming method sends what `script` writes, through the interceptor. */
async function withServer(
  options: grpc.ServerOptions,
  script: (call: grpc.ServerWritableStream<Buffer, unknown>) => void,
  fn: (client: grpc.Client) => Promise<void>,
): Promise<void> {
  const server = new grpc.Server({ ...options, interceptors: [eagerSendInterceptor([PATH])] });
  const def: grpc.ServiceDefinition = {
    Stream: { path: PATH, requestStream: false, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
  };
  server.addService(def, { Stream: script as grpc.handleServerStreamingCall<Buffer, unknown> });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    await fn(client);
  } finally {
    client.close();
    server.forceShutdown();
  }
}

/** Every message of one call, and how it ended. */
function receiveAll(client: grpc.Client): Promise<{ messages: string[]; status: grpc.StatusObject }> {
  return new Promise((resolve) => {
    const messages: string[] = [];
    const call = client.makeServerStreamRequest(PATH, identity, identity, Buffer.from('go'), new grpc.Metadata(), { deadline: Date.now() + 5_000 });
    call.on('data', (m: Buffer) => messages.push(m.toString()));
    call.on('error', () => undefined); // the status below says it
    call.on('status', (status: grpc.StatusObject) => resolve({ messages, status }));
  });
}

const msgs = (prefix: string, n: number): Buffer[] => Array.from({ length: n }, (_, i) => Buffer.from(`${prefix}${i}`));

t.test('a batch after the first message goes out as one write on the HTTP/2 stream, in order with the others', async (t) => {
  const before = { ...eagerFramesStats };
  let sentCallbacks = 0;
  await withServer(
    {},
    (call) => {
      call.write(new EagerMessage(Buffer.from('first'), () => undefined)); // sends the headers
      call.write(EagerFrames.of(msgs('a', 100), () => sentCallbacks++));
      call.write(new EagerMessage(Buffer.from('between'), () => undefined));
      call.write(EagerFrames.of(msgs('b', 3), () => sentCallbacks++));
      call.end();
    },
    async (client) => {
      const { messages, status } = await receiveAll(client);
      t.equal(status.code, grpc.status.OK);
      t.same(messages, ['first', ...msgs('a', 100).map(String), 'between', ...msgs('b', 3).map(String)]);
    },
  );
  t.equal(eagerFramesStats.direct - before.direct, 2, 'both batches took the direct write (grpc-js internals as expected)');
  t.equal(eagerFramesStats.fallback - before.fallback, 0);
  t.equal(sentCallbacks, 2, 'each batch reports its write done once');
});

t.test("a batch before anything else was sent takes grpc-js's own path (it sends the headers)", async (t) => {
  const before = { ...eagerFramesStats };
  await withServer(
    {},
    (call) => {
      call.write(EagerFrames.of(msgs('x', 5), () => undefined));
      call.write(EagerFrames.of(msgs('y', 2), () => undefined));
      call.end();
    },
    async (client) => {
      const { messages, status } = await receiveAll(client);
      t.equal(status.code, grpc.status.OK);
      t.same(messages, [...msgs('x', 5), ...msgs('y', 2)].map(String));
    },
  );
  t.equal(eagerFramesStats.fallback - before.fallback, 1, 'the first batch fell back');
  t.equal(eagerFramesStats.direct - before.direct, 1, 'the second, after the headers, was written directly');
});

t.test("a message over grpc.max_send_message_length gets grpc-js's RESOURCE_EXHAUSTED, not a silent oversize write", async (t) => {
  await withServer(
    { 'grpc.max_send_message_length': 16 },
    (call) => {
      call.write(new EagerMessage(Buffer.from('ok'), () => undefined));
      call.write(EagerFrames.of([Buffer.from('small'), Buffer.alloc(64, 0x7a), Buffer.from('after')], () => undefined));
      call.end();
    },
    async (client) => {
      const { messages, status } = await receiveAll(client);
      t.equal(status.code, grpc.status.RESOURCE_EXHAUSTED);
      t.same(messages.slice(0, 2), ['ok', 'small'], 'the messages before the oversized one arrived');
      t.notOk(messages.includes('z'.repeat(64)));
      t.notOk(messages.includes('after'), 'nothing after it (the call has ended; a write then would leave the client without a status)');
    },
  );
});

t.test('EagerFrames.of: consecutive length-prefixed messages that split back into the input', async (t) => {
  const splitBack = (out: Buffer): Buffer[] | undefined => {
    const back: Buffer[] = [];
    let at = 0;
    while (at < out.length) {
      if (out[at] !== 0) return undefined; // every message uncompressed
      const len = out.readUInt32BE(at + 1);
      back.push(out.subarray(at + GRPC_MESSAGE_PREFIX_BYTES, at + GRPC_MESSAGE_PREFIX_BYTES + len));
      at += GRPC_MESSAGE_PREFIX_BYTES + len;
    }
    return at === out.length ? back : undefined;
  };
  const same = (a: Buffer[] | undefined, b: readonly Buffer[]): boolean => a !== undefined && a.length === b.length && a.every((x, i) => x.equals(b[i]!));
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), (arrays) => {
        const input = arrays.map((a) => Buffer.from(a));
        const f = EagerFrames.of(input, () => undefined);
        const largest = input.reduce((m, b) => Math.max(m, b.length), 0);
        return same(splitBack(f.frames), input) && same(f.messages(), input) && f.count === input.length && f.largest === largest;
      }),
      { numRuns: 300 },
    ),
  );
});
