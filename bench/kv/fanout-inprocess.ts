/**
 * `node dist/bench/kv/fanout-inprocess.js [WATCHERS] [PUTS]`: the watch fan-out of one member
 * without the network: a one-member manager in this process, WATCHERS watchers on one key
 * through the etcd API adapter (a turn's responses encoded together as the gRPC server does), then PUTS
 * sequential puts. Prints this process's CPU per put; run it with 0 watchers for the put's own
 * cost. For working on the hub and the adapter; what the client sees comes from watch-only.ts.
 */
import { encodeEventsFrames, type EventsResponse } from '../../core/net/etcd/watch-encoding.js';
import { withInProcessMember } from './in-process.js';
import { runProbe } from './probe.js';

const WARMUP_PUTS = 50;

async function main(): Promise<void> {
  const watchers = Number(process.argv[2] ?? 1000);
  const puts = Number(process.argv[3] ?? 300);
  if (!(Number.isInteger(watchers) && watchers >= 0 && watchers <= 100_000)) throw new Error('WATCHERS must be 0..100000');
  if (!(Number.isInteger(puts) && puts >= 1 && puts <= 100_000)) throw new Error('PUTS must be 1..100000');
  await withInProcessMember('fanout', async (_node, backend) => {
    const key = Buffer.from('fanout/key');
    let received = 0;
    // As the gRPC server does: a turn's responses encoded together as gRPC messages.
    let pending: EventsResponse[] = [];
    const flush = (): void => {
      encodeEventsFrames(pending);
      pending = [];
    };
    for (let i = 0; i < watchers; i++) {
      const id = i + 1;
      const create = { key, rangeEnd: Buffer.alloc(0), startRevision: 0, progressNotify: false, filters: [], prevKv: false, watchId: id, fragment: false };
      backend.watch(create, {
        events: (events, header) => {
          received += events.length;
          if (pending.length === 0) queueMicrotask(flush);
          pending.push({ watchId: id, header, events });
        },
        progress: () => undefined,
        congested: () => false,
        cancel: (reason) => {
          throw new Error(`watch canceled: ${reason}`);
        },
      });
    }
    const value = Buffer.alloc(256, 0x61);
    const put = () => backend.put({ key, value, lease: 0, prevKv: false, ignoreValue: false, ignoreLease: false });
    for (let i = 0; i < WARMUP_PUTS; i++) await put();
    await new Promise((r) => setImmediate(r));
    received = 0;
    const before = process.cpuUsage();
    for (let i = 0; i < puts; i++) await put();
    await new Promise((r) => setImmediate(r));
    const cpu = process.cpuUsage(before);
    if (received !== watchers * puts) throw new Error(`${received} events delivered, expected ${watchers * puts}`);
    process.stdout.write(`${watchers} watchers: ${((cpu.user + cpu.system) / 1000 / puts).toFixed(3)} ms CPU per put (${puts} puts, ${received} events)\n`);
    backend.close();
  });
}

runProbe(main);
