/**
 * The simulated client's verdicts must be sound, or the linearizability checker reports
 * false violations: a write counts as failed only if no copy of any attempt can still be
 * appended. The network may duplicate a request, and a refusal answers one copy only
 * (seed 466 of the 5-node run: a refused put's duplicate reached a node that had a leader
 * by then and was applied after the client had recorded the put as failed).
 */
import t from 'tap';
import { SimClient, type ClientRequest, type ClientResponse } from '../../core/sim/client.js';
import { EventQueue } from '../../core/sim/events.js';
import { HistoryRecorder } from '../../core/sim/history.js';
import { Prng } from '../../core/sim/prng.js';
import { Trace } from '../../core/sim/trace.js';

/** One client whose every request is refused; `copies` says how many copies the network carries. */
function refusedWrites(copies: number): { history: HistoryRecorder; counts: SimClient['counts'] } {
  const queue = new EventQueue();
  const history = new HistoryRecorder();
  let client: SimClient | undefined = undefined;
  const refuse = (req: ClientRequest): void => {
    const resp: ClientResponse = { clientId: req.clientId, opId: req.opId, attempt: req.attempt, ok: false, leaderHint: 0 };
    queue.after(1, () => client!.onResponse(resp));
  };
  client = new SimClient(
    1000,
    {
      queue,
      history,
      trace: new Trace(10),
      send: (_from, _to, req) => {
        refuse(req);
        return copies;
      },
      targets: () => [1],
    },
    new Prng(1),
    { keys: 1, thinkMsMax: 0, requestTimeoutMs: 100, opDeadlineMs: 300 },
  );
  client.start();
  queue.runUntil(2_000);
  client.stopped = true;
  return { history, counts: client.counts };
}

t.test('a write refused on every attempt, each delivered once, failed', async (t) => {
  const { history } = refusedWrites(1);
  const failedWrites = history.ops.filter((o) => o.op !== 'get' && o.status === 'fail');
  t.ok(failedWrites.length > 0, 'recorded as failed: it was never appended');
});

t.test('a write whose refused attempts were duplicated by the network is indeterminate', async (t) => {
  const { history, counts } = refusedWrites(2);
  t.same(history.ops.filter((o) => o.op !== 'get' && o.status === 'fail'), [], 'never "failed": the other copy may still be appended');
  t.ok(counts.indeterminate > 0, 'the client gave up on them as indeterminate');
});

t.test('a paused client sends nothing until the pause ends, then sends its pending attempt once', async (t) => {
  const queue = new EventQueue();
  const sentAt: number[] = [];
  let client: SimClient | undefined = undefined;
  client = new SimClient(
    1000,
    {
      queue,
      history: new HistoryRecorder(),
      trace: new Trace(10),
      send: (_from, _to, req) => {
        sentAt.push(queue.nowMs);
        // Refused at once: both the refusal's retry and the attempt's timeout then wait out the pause.
        const resp: ClientResponse = { clientId: req.clientId, opId: req.opId, attempt: req.attempt, ok: false, leaderHint: 0 };
        queue.after(1, () => client!.onResponse(resp));
        return 1;
      },
      targets: () => [1],
    },
    new Prng(3),
    { keys: 1, thinkMsMax: 0, requestTimeoutMs: 100, opDeadlineMs: 100_000 },
  );
  client.start();
  queue.runUntil(300);
  const before = sentAt.length;
  t.ok(before > 0, 'it sent before the pause');
  client.pauseUntil(1_000);
  queue.runUntil(999);
  t.equal(sentAt.length, before, 'nothing sent while paused');
  queue.runUntil(1_000);
  t.same(sentAt.slice(before), [1_000], 'one attempt when the pause ends, though a retry and a timeout were both waiting');
  queue.runUntil(1_200);
  t.ok(sentAt.length > before + 1, 'and it carries on after');
  client.stopped = true;
});

t.test('a paused client whose operation ran out of time meanwhile gives it up at the end of the pause instead of sending it', async (t) => {
  const queue = new EventQueue();
  const sent: Array<{ opId: number; at: number }> = [];
  const client = new SimClient(
    1000,
    {
      queue,
      history: new HistoryRecorder(),
      trace: new Trace(10),
      send: (_from, _to, req) => {
        sent.push({ opId: req.opId, at: queue.nowMs });
        return 1; // never answered: every attempt times out
      },
      targets: () => [1],
    },
    new Prng(5),
    { keys: 1, thinkMsMax: 0, requestTimeoutMs: 100, opDeadlineMs: 500 },
  );
  client.start();
  queue.runUntil(50);
  const first = sent[0]!.opId;
  client.pauseUntil(1_000); // the first operation's deadline (500 ms) passes during the pause
  queue.runUntil(1_000);
  t.notOk(sent.some((s) => s.opId === first && s.at >= 1_000), 'no attempt of the expired operation after the pause');
  t.equal(client.counts.fail + client.counts.indeterminate, 1, 'it was given up');
  client.stopped = true;
});
