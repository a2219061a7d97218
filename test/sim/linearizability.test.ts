import t from 'tap';
import { checkLinearizability } from '../../core/sim/linearizability.js';
import type { HistoryOp } from '../../core/sim/history.js';
import { SimError } from '../../core/sim/errors.js';
import { HistoryRecorder } from '../../core/sim/history.js';

const put = (clientId: number, key: string, value: string, call: number, ret: number | null, status: HistoryOp['status'] = 'ok'): HistoryOp => ({
  clientId,
  key,
  op: 'put',
  input: { value },
  output: status === 'ok' ? {} : null,
  call,
  return: ret,
  status,
});
const get = (clientId: number, key: string, value: string | null, call: number, ret: number): HistoryOp => ({
  clientId,
  key,
  op: 'get',
  input: {},
  output: { value },
  call,
  return: ret,
  status: 'ok',
});
const cas = (
  clientId: number,
  key: string,
  expected: string | null,
  value: string,
  ok: boolean | null,
  call: number,
  ret: number | null,
): HistoryOp => ({
  clientId,
  key,
  op: 'cas',
  input: { expected, value },
  output: ok === null ? null : { ok },
  call,
  return: ret,
  status: ok === null ? 'indeterminate' : 'ok',
});

t.test('sequential and concurrent linearizable histories', async (t) => {
  t.equal(checkLinearizability([]).verdict, 'ok', 'empty history');
  const seq = [put(1, 'x', 'a', 0, 10), get(2, 'x', 'a', 11, 20), cas(1, 'x', 'a', 'b', true, 21, 30), get(2, 'x', 'b', 31, 40)];
  t.equal(checkLinearizability(seq).verdict, 'ok');
  // Two overlapping puts; readers see them in either order as long as they agree.
  const conc = [put(1, 'x', 'a', 0, 50), put(2, 'x', 'b', 5, 45), get(3, 'x', 'a', 60, 70), get(3, 'x', 'a', 71, 80)];
  t.equal(checkLinearizability(conc).verdict, 'ok');
  // A read concurrent with a write may see the old or the new value.
  t.equal(checkLinearizability([put(1, 'x', 'a', 0, 10), put(1, 'x', 'b', 20, 40), get(2, 'x', 'a', 25, 30)]).verdict, 'ok');
  t.equal(checkLinearizability([get(2, 'x', null, 0, 5), put(1, 'x', 'a', 3, 10)]).verdict, 'ok', 'initial value is absent');
});

t.test('non-linearizable histories are caught, per key', async (t) => {
  // Stale read: b was acknowledged before the read began.
  const stale = [put(1, 'x', 'a', 0, 10), put(1, 'x', 'b', 11, 20), get(2, 'x', 'a', 21, 30)];
  const r = checkLinearizability(stale);
  t.equal(r.verdict, 'violation');
  t.equal(r.keys[0]!.key, 'x');
  t.match(r.keys[0]!.detail!.join('\n'), /cannot linearize c2 get\(x\) = "a"/);
  // Lost update: two CASes from the same value both succeed.
  const lost = [put(1, 'y', 'a', 0, 10), cas(1, 'y', 'a', 'b', true, 20, 30), cas(2, 'y', 'a', 'c', true, 21, 31)];
  t.equal(checkLinearizability(lost).verdict, 'violation');
  // Readers disagree on the order of two concurrent writes.
  const order = [put(1, 'z', 'a', 0, 50), put(2, 'z', 'b', 0, 50), get(3, 'z', 'a', 60, 61), get(4, 'z', 'b', 62, 63), get(3, 'z', 'a', 64, 65)];
  t.equal(checkLinearizability(order).verdict, 'violation');
  // A value never written.
  t.equal(checkLinearizability([get(1, 'x', 'ghost', 0, 1)]).verdict, 'violation');
  // Violations on one key do not hide behind a clean key.
  const mixed = [...stale, put(3, 'w', 'q', 0, 1), get(3, 'w', 'q', 2, 3)];
  const m = checkLinearizability(mixed);
  t.equal(m.verdict, 'violation');
  t.same(
    m.keys.map((k) => [k.key, k.verdict]),
    [
      ['x', 'violation'],
      ['w', 'ok'],
    ],
  );
});

t.test('failed ops have no effect; indeterminate ops may take effect late or never', async (t) => {
  // A failed put must not be observed.
  t.equal(checkLinearizability([put(1, 'x', 'a', 0, 10, 'fail'), get(2, 'x', 'a', 20, 30)]).verdict, 'violation');
  t.equal(checkLinearizability([put(1, 'x', 'a', 0, 10, 'fail'), get(2, 'x', null, 20, 30)]).verdict, 'ok');
  // An indeterminate put may appear long after its client gave up...
  const late = [put(1, 'x', 'a', 0, null, 'indeterminate'), get(2, 'x', null, 100, 110), get(2, 'x', 'a', 1000, 1010)];
  t.equal(checkLinearizability(late).verdict, 'ok');
  // ...or never.
  t.equal(checkLinearizability([put(1, 'x', 'a', 0, null, 'indeterminate'), get(2, 'x', null, 100, 110)]).verdict, 'ok');
  // But not before it was invoked.
  t.equal(checkLinearizability([get(2, 'x', 'a', 0, 10), put(1, 'x', 'a', 20, null, 'indeterminate')]).verdict, 'violation');
  // And once seen it cannot be unseen (no flip-flop between two reads).
  const flip = [put(1, 'x', 'a', 0, null, 'indeterminate'), get(2, 'x', 'a', 10, 20), get(2, 'x', null, 30, 40)];
  t.equal(checkLinearizability(flip).verdict, 'violation');
  // An indeterminate CAS takes effect only if the register held its expected value.
  const c = [put(1, 'x', 'a', 0, 5), cas(2, 'x', 'zz', 'b', null, 10, null), get(3, 'x', 'b', 20, 30)];
  t.equal(checkLinearizability(c).verdict, 'violation');
  const c2 = [put(1, 'x', 'a', 0, 5), cas(2, 'x', 'a', 'b', null, 10, null), get(3, 'x', 'b', 20, 30)];
  t.equal(checkLinearizability(c2).verdict, 'ok');
  // A failing CAS needs some value other than its expected one at some point of its interval.
  t.equal(checkLinearizability([put(1, 'x', 'a', 0, 5), cas(2, 'x', 'a', 'b', false, 10, 20)]).verdict, 'violation');
  t.equal(checkLinearizability([put(1, 'x', 'a', 0, 5), put(3, 'x', 'c', 8, 12), cas(2, 'x', 'a', 'b', false, 10, 20)]).verdict, 'ok');
});

t.test('many indeterminate writes stay cheap (symmetry reduction)', async (t) => {
  const h: HistoryOp[] = [];
  for (let i = 0; i < 300; i++) h.push(put(100 + i, 'x', `lost-${i}`, i * 10, null, 'indeterminate'));
  for (let i = 0; i < 300; i++) {
    h.push(put(1, 'x', `v${i}`, 5000 + i * 20, 5000 + i * 20 + 5));
    h.push(get(2, 'x', `v${i}`, 5000 + i * 20 + 6, 5000 + i * 20 + 9));
  }
  const r = checkLinearizability(h, { stepBudget: 200_000 });
  t.equal(r.verdict, 'ok');
  t.ok(r.steps < 200_000, `${r.steps} steps`);
});

t.test('a search over its step budget answers unknown, never ok', async (t) => {
  // Many concurrent writes with distinct observed values and no readers to prune the order.
  const h: HistoryOp[] = [];
  for (let i = 0; i < 14; i++) h.push(put(i, 'x', `v${i}`, 0, 100));
  for (let i = 0; i < 14; i++) h.push(get(99, 'x', `v${i}`, 10, 90)); // reads concurrent with all writes
  h.push(get(99, 'x', 'never-written', 200, 210)); // and a final violation the search must reach
  const r = checkLinearizability(h, { stepBudget: 1000 });
  t.equal(r.verdict, 'unknown');
  t.ok(r.steps > 1000);
  // A smaller history of the same shape is linearizable; the budget is an exact limit.
  const small: HistoryOp[] = [];
  for (let i = 0; i < 6; i++) small.push(put(i, 'x', `v${i}`, 0, 100));
  for (let i = 0; i < 6; i++) small.push(get(99, 'x', `v${i}`, 10, 90));
  const full = checkLinearizability(small, { stepBudget: 10_000_000 });
  t.equal(full.verdict, 'ok');
  t.equal(checkLinearizability(small, { stepBudget: full.steps }).verdict, 'ok', 'budget at the limit');
  t.equal(checkLinearizability(small, { stepBudget: full.steps - 1 }).verdict, 'unknown', 'one step short');
});

t.test('malformed histories are rejected with a typed error', async (t) => {
  t.throws(() => checkLinearizability([{ ...put(1, 'x', 'a', 10, 5) }]), SimError);
  t.throws(() => checkLinearizability([{ ...get(1, 'x', 'a', 0, 5), output: null }]), { code: 'LIN_BAD_HISTORY' });
  t.throws(() => checkLinearizability([{ ...put(1, 'x', 'a', 0, 5), op: 'delete' as 'put' }]), { code: 'LIN_BAD_HISTORY' });
  t.throws(() => checkLinearizability([{ ...put(1, 'x', 'a', Number.NaN, 5) }]), { code: 'LIN_BAD_HISTORY' });
});

t.test('an op recorded as called after another returned, in the same clock tick, is ordered after it', async (t) => {
  // The simulator's clock is whole ms and think time can be 0: a client's next call can land
  // in the very ms its previous op returned.
  const h = new HistoryRecorder();
  const w = h.invoke(1, 'x', 'put', { value: 'a' }, 0);
  h.ok(w, {}, 10);
  const r = h.invoke(1, 'x', 'get', {}, 10);
  h.ok(r, { value: null }, 12);
  const stale = checkLinearizability(h.ops);
  t.equal(stale.verdict, 'violation', 'the same client reads ∅ right after its own put returned');

  const fresh = new HistoryRecorder();
  const w2 = fresh.invoke(1, 'x', 'put', { value: 'a' }, 0);
  fresh.ok(w2, {}, 10);
  const r2 = fresh.invoke(1, 'x', 'get', {}, 10);
  fresh.ok(r2, { value: 'a' }, 12);
  t.equal(checkLinearizability(fresh.ops).verdict, 'ok', 'reading the put value is fine');

  // Recorded the other way round (the get called, then the put returned, same ms): concurrent.
  const racing = new HistoryRecorder();
  const w3 = racing.invoke(1, 'x', 'put', { value: 'a' }, 0);
  const r3 = racing.invoke(2, 'x', 'get', {}, 10);
  racing.ok(w3, {}, 10);
  racing.ok(r3, { value: null }, 12);
  t.equal(checkLinearizability(racing.ops).verdict, 'ok', 'a get called before the put returned may precede it');
});

t.test('histories without recording order keep equal times concurrent (wall-clock histories)', async (t) => {
  t.equal(checkLinearizability([put(1, 'x', 'a', 0, 10), get(1, 'x', null, 10, 12)]).verdict, 'ok');
  t.equal(checkLinearizability([put(1, 'x', 'a', 0, 10), get(1, 'x', null, 11, 12)]).verdict, 'violation');
});
