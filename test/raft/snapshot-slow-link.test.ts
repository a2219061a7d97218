/**
 * A snapshot sent chunk by chunk over a slow first-in-first-out link (a Pi on Wi-Fi): heartbeats
 * queue behind the chunks, so their answers come late. Only answers to heartbeats sent after the
 * last chunk may count toward a resend; counting every answer resent chunks still on their way
 * (a transfer at 1 MB/s sent its bytes 3.5 times and overflowed the peer queue). A chunk really
 * lost is still resent. Virtual time: a leader and a learner (RawNodes), a link of B bytes/s
 * with the peer transport's 16 MiB queue, heartbeats every 100 ms tick.
 */
import t from 'tap';
import { MemoryStorage, RawNode, type Message } from '../../core/raft/index.js';
import { Prng } from '../../core/sim/prng.js';

const TICK_MS = 100;
const QUEUE_BYTES = 16 << 20;
const MESSAGE_OVERHEAD = 100;

interface Outcome {
  installedMs: number | undefined;
  snapshotBytesSent: number;
  droppedAtQueue: number;
}

function transfer(bytesPerSecond: number, snapshotBytes: number, loseChunkAt?: number): Outcome {
  const conf = { voters: [1], learners: [2] };
  const leaderStorage = new MemoryStorage();
  leaderStorage.applySnapshot({ metadata: { index: 100, term: 1, conf }, data: new Uint8Array(snapshotBytes) });
  leaderStorage.setHardState({ term: 1, vote: 1, commit: 100 });
  const followerMem = new MemoryStorage();
  const followerStorage = Object.create(followerMem) as MemoryStorage;
  followerStorage.initialState = () => ({ hardState: followerMem.getHardState(), confState: conf });
  const make = (id: number, storage: MemoryStorage): RawNode => new RawNode({ id, storage, random: new Prng(id), electionTicks: 10, heartbeatTicks: 1 });
  const leader = make(1, leaderStorage);
  const follower = make(2, followerStorage);
  leader.campaign();

  let now = 0;
  let linkFreeAt = 0;
  let queued = 0;
  const out: Outcome = { installedMs: undefined, snapshotBytesSent: 0, droppedAtQueue: 0 };
  let lost = false;
  // Events in time order (insertion keeps it sorted; ties in insertion order).
  const events: Array<[number, () => void]> = [];
  const at = (time: number, fn: () => void): void => {
    let i = events.length;
    while (i > 0 && events[i - 1]![0] > time) i--;
    events.splice(i, 0, [time, fn]);
  };
  const pump = (rn: RawNode, storage: MemoryStorage, isLeader: boolean): void => {
    while (rn.hasReady()) {
      const rd = rn.ready();
      if (rd.snapshot) {
        storage.applySnapshot(rd.snapshot);
        out.installedMs = now;
      }
      storage.append(rd.entries);
      if (rd.hardState) storage.setHardState(rd.hardState);
      for (const m of [...rd.earlyMessages, ...rd.messages]) {
        if (!isLeader) {
          at(now + 1, () => {
            leader.step(m);
            pump(leader, leaderStorage, true);
          });
          continue;
        }
        const size = MESSAGE_OVERHEAD + (m.snapshot?.data.length ?? 0);
        if (queued + size > QUEUE_BYTES) {
          out.droppedAtQueue++;
          continue;
        }
        if (m.snapshot) out.snapshotBytesSent += m.snapshot.data.length;
        if (m.snapshot && !lost && loseChunkAt !== undefined && m.snapshot.offset >= loseChunkAt) {
          lost = true; // this chunk never arrives (the connection broke under it)
          continue;
        }
        queued += size;
        linkFreeAt = Math.max(now, linkFreeAt) + (size / bytesPerSecond) * 1000;
        const arrive = (msg: Message): void => {
          queued -= size;
          follower.step(msg);
          pump(follower, followerStorage, false);
        };
        at(linkFreeAt + 1, () => arrive(m));
      }
      rn.advance();
    }
  };
  pump(leader, leaderStorage, true);
  const limitMs = 20 * (snapshotBytes / bytesPerSecond) * 1000;
  for (let time = TICK_MS; time < limitMs; time += TICK_MS) {
    at(time, () => {
      leader.tick();
      follower.tick();
      pump(leader, leaderStorage, true);
      pump(follower, followerStorage, false);
    });
  }
  while (events.length > 0 && out.installedMs === undefined) {
    const [time, fn] = events.shift()!;
    now = time;
    fn();
  }
  return out;
}

t.test('over a slow link each snapshot byte crosses once, in the time the link needs', async (t) => {
  const snapshot = 8 << 20;
  for (const bytesPerSecond of [1e6, 3e6, 2e7]) {
    const r = transfer(bytesPerSecond, snapshot);
    const idealMs = (snapshot / bytesPerSecond) * 1000;
    t.ok(r.installedMs !== undefined && r.installedMs < idealMs * 1.2 + 1_000, `${bytesPerSecond / 1e6} MB/s: installed at ${r.installedMs} ms (the link needs ${Math.round(idealMs)} ms)`);
    t.ok(r.snapshotBytesSent <= snapshot * 1.05, `${bytesPerSecond / 1e6} MB/s: ${(r.snapshotBytesSent / snapshot).toFixed(2)}x the snapshot sent`);
    t.equal(r.droppedAtQueue, 0, `${bytesPerSecond / 1e6} MB/s: nothing dropped at the peer queue`);
  }
});

t.test('a chunk lost on the way is resent, and the transfer completes', async (t) => {
  const snapshot = 8 << 20;
  const r = transfer(1e6, snapshot, 3 << 20);
  t.ok(r.installedMs !== undefined, `installed at ${r.installedMs} ms`);
  t.ok(r.snapshotBytesSent > snapshot && r.snapshotBytesSent <= snapshot * 1.6, `${(r.snapshotBytesSent / snapshot).toFixed(2)}x the snapshot sent (the lost window again)`);
});
