/**
 * The agent's members watch (GET /v1/agent/members?watch=1, agent/gossip-subsystem.ts
 * watchMembers) waits for a client that stops reading instead of buffering every event for it:
 * the gossip event queue's own bound (MAX_EVENT_BUFFER) then ends that watch. A fake event
 * source that never runs dry, a real HTTP server on 127.0.0.1, a client that reads nothing.
 */
import t from 'tap';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { watchMembers } from '../../agent/gossip-subsystem.js';

const EVENTS_OFFERED = 200_000;

t.test('a members watch whose client stops reading takes no more events once the socket is full', async (t) => {
  let taken = 0;
  const event = { type: 'update', name: 'x'.repeat(64), address: '127.0.0.1:7946', state: 'alive', incarnation: 1, meta: { role: 'worker' } };
  const sub = {
    events: () => ({
      next: async () => (taken < EVENTS_OFFERED ? (taken++, { done: false as const, value: event as never }) : { done: true as const, value: undefined }),
      return: async () => ({ done: true as const, value: undefined }),
      [Symbol.asyncIterator]() {
        return this;
      },
    }),
  };
  let buffered = 0;
  const server = createServer((req, res) => {
    watchMembers(sub as never, req, res);
    const sample = setInterval(() => (buffered = Math.max(buffered, res.writableLength)), 20);
    res.on('close', () => clearInterval(sample));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const socket = connect(port, '127.0.0.1', () => socket.write('GET /v1/agent/members?watch=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
  socket.on('error', () => undefined);
  socket.pause(); // reads nothing
  t.teardown(() => socket.destroy());
  await new Promise((r) => setTimeout(r, 1_500));
  const eventBytes = JSON.stringify(event).length + 1;
  t.ok(taken < EVENTS_OFFERED / 2, `it stopped taking events: ${taken} of ${EVENTS_OFFERED} (${((taken * eventBytes) / 2 ** 20).toFixed(1)} MiB)`);
  t.ok(buffered < 2 ** 20, `the process held at most ${(buffered / 1024).toFixed(0)} KiB for the client`);
  socket.resume(); // reading again: the watch goes on
  const before = taken;
  await new Promise((r) => setTimeout(r, 300));
  t.ok(taken > before, 'events flow again once the client reads');
});
