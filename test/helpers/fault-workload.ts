/**
 * The client side of the real-process fault tests: concurrent clients doing put / get / CAS
 * on a few keys against random members, every call recorded in a history, and the checks
 * run on it at the end (core/sim's linearizability checker, with teeth: the same history with
 * one read made provably stale must be reported as a violation).
 */
import type { Test } from 'tap';
import { checkLinearizability } from '../../core/sim/linearizability.js';
import { HistoryRecorder, type HistoryOp } from '../../core/sim/history.js';
import type { Prng } from '../../core/sim/prng.js';
import { SimpleKv, writeNotApplied } from './kv-client.js';

export const WORKLOAD_KEYS = ['k0', 'k1', 'k2'];
/** Pause between one client's calls. */
const THINK_MS = 5;

export class FaultWorkload {
  readonly history = new HistoryRecorder();
  /** Acknowledged puts. */
  writes = 0;
  /** Acknowledged writes (puts and successful CAS) with the revision their response named. */
  readonly ackedWrites: Array<{ key: string; value: string; revision: number }> = [];
  /** Writes the server refused before any log held them (recorded as failed). */
  refusedWrites = 0;
  private running = true;
  private readonly clients: Array<{ id: number; conns: SimpleKv[] }>;
  private readonly workers: Promise<void>[];
  private readonly now = (): number => performance.now();

  /** Starts `clients` clients, each with a connection to every endpoint. */
  constructor(
    endpoints: string[],
    private readonly rng: Prng,
    clients = 4,
    deadlineMs?: number,
  ) {
    this.clients = Array.from({ length: clients }, (_, id) => ({ id, conns: endpoints.map((e) => new SimpleKv(e, deadlineMs)) }));
    this.workers = this.clients.map((c) => this.work(c));
  }

  /** Client 0's connection to the member at `index` (for filler writes). */
  connection(index: number): SimpleKv {
    return this.clients[0]!.conns[index]!;
  }

  private async work(c: { id: number; conns: SimpleKv[] }): Promise<void> {
    const { rng, history, now } = this;
    let n = 0;
    while (this.running) {
      const kv = c.conns[rng.int(c.conns.length)]!;
      const key = rng.pick(WORKLOAD_KEYS);
      const roll = rng.next();
      if (roll < 0.4) {
        const h = history.invoke(c.id, key, 'get', {}, now());
        try {
          history.ok(h, { value: await kv.get(key) }, now());
        } catch {
          history.fail(h, now()); // a failed read changed nothing
        }
      } else {
        const value = `c${c.id}-${n++}`;
        const cas = roll >= 0.75;
        const expected = cas ? (rng.chance(0.5) ? null : `c${rng.int(this.clients.length)}-${rng.int(Math.max(1, n))}`) : undefined;
        const h = cas ? history.invoke(c.id, key, 'cas', { expected: expected!, value }, now()) : history.invoke(c.id, key, 'put', { value }, now());
        try {
          if (cas) {
            const rev = await kv.casRevision(key, expected!, value);
            history.ok(h, { ok: rev !== undefined }, now());
            if (rev !== undefined) this.ackedWrites.push({ key, value, revision: rev });
          } else {
            const revision = await kv.put(key, value);
            history.ok(h, {}, now());
            this.ackedWrites.push({ key, value, revision });
            this.writes++;
          }
        } catch (e) {
          // Refused before any log held it: failed. Otherwise it may or may not have been applied.
          if (writeNotApplied(e)) {
            history.fail(h, now());
            this.refusedWrites++;
          } else history.indeterminate(h);
        }
      }
      await new Promise((r) => setTimeout(r, THINK_MS));
    }
  }

  /**
   * Stops the clients, then reads every key linearizably through `endpointIndex` (retrying
   * while the cluster settles): those reads are part of the history, so a lost acknowledged
   * write would make them unexplainable.
   */
  async stop(endpointIndex = 0): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
    const kv = this.connection(endpointIndex);
    for (const key of WORKLOAD_KEYS) {
      for (let attempt = 0; attempt < 20; attempt++) {
        const h = this.history.invoke(99, key, 'get', {}, this.now());
        try {
          this.history.ok(h, { value: await kv.get(key) }, this.now());
          break;
        } catch {
          this.history.fail(h, this.now());
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    }
  }

  close(): void {
    this.running = false;
    for (const c of this.clients) for (const k of c.conns) k.close();
  }

  /** Asserts the history is linearizable, and that the checker rejects it with one read made stale. */
  check(t: Test, minWrites: number): void {
    const ops = this.history.ops;
    const acked = ops.filter((o) => o.status === 'ok').length;
    const indeterminate = ops.filter((o) => o.status === 'indeterminate').length;
    t.ok(this.writes > minWrites, `${this.writes} acknowledged puts, ${acked} acknowledged operations of ${ops.length}; ${this.refusedWrites} writes refused before the log, ${indeterminate} indeterminate`);
    const result = checkLinearizability(ops);
    t.equal(result.verdict, 'ok', `history of ${ops.length} ops is linearizable${result.verdict === 'violation' ? ': ' + JSON.stringify(result.keys.find((k) => k.verdict !== 'ok')?.detail) : ''}`);
    checkTeeth(t, ops);
  }
}

/**
 * Teeth: the same history with one read turned stale must be reported as a violation. Stale
 * means provably overwritten: W1 acknowledged, then a second acknowledged write W2 invoked
 * after W1 returned and finished before the read began (values are unique, so nothing can
 * have written W1's value again). The earliest such read is used: refuting a read late in a
 * long history with many indeterminate writes exceeds the search budget ('unknown', never 'ok').
 */
function checkTeeth(t: Test, ops: readonly HistoryOp[]): void {
  const written = (o: HistoryOp): string | undefined =>
    o.status === 'ok' && (o.op === 'put' || (o.op === 'cas' && o.output?.ok === true)) ? (o.input.value ?? undefined) : undefined;
  let caught: boolean | undefined;
  const reads = ops.filter((o) => o.op === 'get' && o.status === 'ok').sort((a, b) => a.call - b.call);
  for (const read of reads) {
    const w1 = ops.find((a) => a.key === read.key && written(a) !== undefined && written(a) !== read.output?.value &&
      ops.some((b) => b.key === read.key && written(b) !== undefined && b !== a && b.call > a.return! && b.return! < read.call));
    if (!w1) continue;
    const tampered = ops.map((o) => (o === read ? { ...o, output: { value: written(w1)! } } : o));
    const verdict = checkLinearizability(tampered).verdict;
    caught = verdict === 'violation';
    t.ok(caught, `a read of ${read.key} turned stale (${written(w1)}) is caught (verdict ${verdict})`);
    break;
  }
  t.not(caught, undefined, 'found a provably stale value to tamper with');
}
