import t from 'tap';
import { decodeKvCommand, encodeKvCommand, KvStateMachine, MAX_KEY_BYTES, MAX_VALUE_BYTES, type KvCommand } from '../../core/sim/kv.js';
import { SimError } from '../../core/sim/errors.js';

t.test('commands round-trip; malformed input is rejected with a typed error', async (t) => {
  const cmds: KvCommand[] = [
    { op: 'put', clientId: 1, seq: 2, key: 'k', value: 'v' },
    { op: 'cas', clientId: 0xffffffff, seq: 0, key: 'k', expected: null, value: 'x' },
    { op: 'cas', clientId: 3, seq: 9, key: 'κ', expected: 'é', value: '' },
    { op: 'put', clientId: 1, seq: 2, key: 'k'.repeat(MAX_KEY_BYTES), value: 'v'.repeat(MAX_VALUE_BYTES) },
  ];
  for (const c of cmds) t.same(decodeKvCommand(encodeKvCommand(c)), c);
  t.throws(() => encodeKvCommand({ op: 'put', clientId: 1, seq: 1, key: 'k'.repeat(MAX_KEY_BYTES + 1), value: '' }), { code: 'KV_OP_MALFORMED' });
  t.throws(() => encodeKvCommand({ op: 'put', clientId: 1, seq: 1, key: 'k', value: 'v'.repeat(MAX_VALUE_BYTES + 1) }), { code: 'KV_OP_MALFORMED' });
  const good = encodeKvCommand(cmds[2]!);
  for (let n = 0; n < good.length; n++) t.throws(() => decodeKvCommand(good.subarray(0, n)), SimError, `truncated to ${n}`);
  const extra = new Uint8Array(good.length + 1);
  extra.set(good);
  t.throws(() => decodeKvCommand(extra), { code: 'KV_OP_MALFORMED' });
  // Random bytes never throw anything but SimError.
  let seed = 1;
  for (let i = 0; i < 2000; i++) {
    const b = new Uint8Array(1 + (i % 40));
    for (let j = 0; j < b.length; j++) b[j] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
    if (i % 2 === 0) b[0] = 1;
    try {
      decodeKvCommand(b);
    } catch (e) {
      if (!(e instanceof SimError)) t.fail(`threw ${String(e)}`);
    }
  }
});

t.test('the state machine applies each (client, seq) once', async (t) => {
  const kv = new KvStateMachine();
  t.same(kv.apply({ op: 'cas', clientId: 1, seq: 1, key: 'a', expected: null, value: 'x' }), { op: 'cas', ok: true });
  t.same(kv.apply({ op: 'cas', clientId: 1, seq: 1, key: 'a', expected: null, value: 'x' }), { op: 'cas', ok: true }, 'retry gets the first result');
  t.same(kv.apply({ op: 'cas', clientId: 2, seq: 1, key: 'a', expected: null, value: 'y' }), { op: 'cas', ok: false });
  t.same(kv.apply({ op: 'put', clientId: 1, seq: 2, key: 'a', value: 'z' }), { op: 'put' });
  t.equal(kv.apply({ op: 'put', clientId: 1, seq: 1, key: 'a', value: 'old' }), undefined, 'an abandoned older command is ignored');
  t.equal(kv.get('a'), 'z');
  t.equal(kv.get('b'), null);
  const copy = KvStateMachine.restore(kv.snapshot());
  t.same(copy.snapshot(), kv.snapshot());
  t.equal(copy.get('a'), 'z');
  t.same(copy.apply({ op: 'cas', clientId: 2, seq: 1, key: 'a', expected: null, value: 'y' }), { op: 'cas', ok: false }, 'sessions survive snapshots');
  t.equal(KvStateMachine.restore(new Uint8Array(0)).get('a'), null);
  t.throws(() => KvStateMachine.restore(new Uint8Array([1, 2, 3])), { code: 'KV_SNAPSHOT_MALFORMED' });
  t.throws(() => KvStateMachine.restore(new TextEncoder().encode('{"v":1,"data":[[1,2]],"sessions":[]}')), { code: 'KV_SNAPSHOT_MALFORMED' });
});
