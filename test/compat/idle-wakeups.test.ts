/**
 * An idle agent lets its board sleep: its main thread wakes for its own timers (Raft ticks,
 * gossip, leases), not a hundred times a second for a metrics sampler. prom-client samples the
 * event loop's lag every 10 ms unless told otherwise (agent/http.ts EVENT_LOOP_LAG_SAMPLE_MS).
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { AgentCluster } from '../helpers/agents.js';

/** Far below the 100 a second of a 10 ms sampler alone; an idle one-node agent makes ~15–40. */
const MAX_IDLE_WAKEUPS_PER_SECOND = 70;
const WINDOW_MS = 4_000;

function sleeps(pid: number): number {
  const m = /voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1]);
}

t.test('an idle one-node agent wakes its main thread a few dozen times a second, and still reports event-loop lag', async (t) => {
  const cluster = new AgentCluster([]);
  t.teardown(() => cluster.stopAll());
  const a = await cluster.add('idle');
  cluster.start(a, true);
  await cluster.ready(a);
  await new Promise((r) => setTimeout(r, 1_000)); // past start-up work
  const pid = a.proc!.pid!;
  const before = sleeps(pid);
  await new Promise((r) => setTimeout(r, WINDOW_MS));
  const perSecond = ((sleeps(pid) - before) * 1000) / WINDOW_MS;
  t.ok(perSecond < MAX_IDLE_WAKEUPS_PER_SECOND, `${perSecond.toFixed(0)} wake-ups a second (fewer than ${MAX_IDLE_WAKEUPS_PER_SECOND})`);
  const metrics = await (await fetch(`http://${a.host}:${a.ports.http}/metrics`)).text();
  t.match(metrics, /^nodejs_eventloop_lag_p99_seconds \d/m, 'the lag is still sampled');
});
