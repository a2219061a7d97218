import { assertProperty } from '../helpers/property.js';
import t from 'tap';
import fc from 'fast-check';
import { ConfChangeType, RaftError, applyToConfState, decodeConfChange, encodeConfChange } from '../../core/raft/index.js';

t.test('conf change codec round-trips every valid change', async (t) => {
  assertProperty(t, 'encode then decode returns the same change', 
    fc.property(
      fc.constantFrom(ConfChangeType.AddVoter, ConfChangeType.AddLearner, ConfChangeType.RemoveNode, ConfChangeType.UpdateNode),
      fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      fc.uint8Array({ maxLength: 64 }),
      (type, nodeId, context) => {
        const cc = decodeConfChange(encodeConfChange({ type, nodeId, context }));
        return cc.type === type && cc.nodeId === nodeId && Buffer.from(cc.context!).equals(Buffer.from(context));
      },
    ),
  );
});

t.test('conf change decoder rejects garbage with a typed error only', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 32 }), (bytes) => {
      try {
        decodeConfChange(bytes);
        return true;
      } catch (e) {
        return e instanceof RaftError && e.code === 'INVALID_CONF_CHANGE';
      }
    }),
  );
  t.throws(() => decodeConfChange(new Uint8Array(3)), { code: 'INVALID_CONF_CHANGE' }, 'truncated');
  t.throws(() => decodeConfChange(new Uint8Array([9, 0, 0, 0, 0, 0, 0, 0, 1])), { code: 'INVALID_CONF_CHANGE' }, 'unknown type');
  t.throws(() => decodeConfChange(new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0])), { code: 'INVALID_CONF_CHANGE' }, 'node id 0');
});

t.test('applyToConfState: promote, demote, remove; never remove the last voter', async (t) => {
  let conf = { voters: [1, 2], learners: [3] };
  conf = applyToConfState(conf, { type: ConfChangeType.AddVoter, nodeId: 3 });
  t.same(conf, { voters: [1, 2, 3], learners: [] }, 'learner promoted');
  conf = applyToConfState(conf, { type: ConfChangeType.AddLearner, nodeId: 2 });
  t.same(conf, { voters: [1, 3], learners: [2] }, 'voter demoted');
  conf = applyToConfState(conf, { type: ConfChangeType.RemoveNode, nodeId: 2 });
  t.same(conf, { voters: [1, 3], learners: [] });
  t.throws(() => applyToConfState({ voters: [1], learners: [] }, { type: ConfChangeType.RemoveNode, nodeId: 1 }), { code: 'INVALID_CONF_CHANGE' });
  for (const nodeId of [1, 3, 9]) {
    t.same(applyToConfState(conf, { type: ConfChangeType.UpdateNode, nodeId, context: new Uint8Array([1]) }), conf, `UpdateNode of ${nodeId} leaves voters and learners as they are`);
  }
  const learnerConf = { voters: [1, 2], learners: [3] };
  t.same(applyToConfState(learnerConf, { type: ConfChangeType.UpdateNode, nodeId: 3 }), learnerConf, 'a learner updated stays a learner');
});
