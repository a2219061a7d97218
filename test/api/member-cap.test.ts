// A cluster holds at most MAX_MEMBERS members: the peer codec and a joiner refuse a larger
// configuration or member list, so one more would have stopped every later join and snapshot
// (a crash hunt added 1,025 learners by joining; the next join then failed for good).
import t from 'tap';
import { MAX_MEMBERS } from '../../core/api/manager-node.js';
import { MAX_CONF_MEMBERS } from '../../core/net/raft-codec.js';
import { MAX_JOIN_MEMBERS } from '../../core/net/join.js';
import { EtcdError } from '../../core/net/etcd/errors.js';
import { withInProcessMember } from '../../bench/kv/in-process.js';

t.test('member add is refused at MAX_MEMBERS, through the etcd API and by join, and the cluster serves on', async (t) => {
  t.equal(MAX_MEMBERS, Math.min(MAX_CONF_MEMBERS, MAX_JOIN_MEMBERS));
  await withInProcessMember('member-cap', async (node, backend) => {
    // Learners at addresses nobody listens on (the added members never start).
    const started = Date.now();
    for (let i = 1; node.members.size < MAX_MEMBERS; i++) {
      await backend.memberAdd([`http://127.1.${i >> 8}.${i & 255}:1`], true);
    }
    t.comment(`${MAX_MEMBERS - 1} learners added in ${Date.now() - started} ms`);
    t.equal(node.members.size, MAX_MEMBERS);
    await t.rejects(backend.memberAdd(['http://127.2.0.1:1'], true), new EtcdError('TOO_MANY_MEMBERS'), 'the API refuses one more');
    await t.rejects(
      (node as unknown as { handleJoin(req: object): Promise<unknown> }).handleJoin({ name: 'one-more', peerAddr: '127.2.0.2:1', clientAddr: '127.2.0.2:2', remoteAddress: '127.2.0.2:3' }),
      { code: 'TOO_MANY_MEMBERS' },
      'a join is refused with a reason',
    );
    t.equal(node.members.size, MAX_MEMBERS, 'nothing added');
    const put = await backend.put({ key: Buffer.from('k'), value: Buffer.from('v'), lease: 0, prevKv: false, ignoreValue: false, ignoreLease: false });
    t.ok(put.header.revision > 1, 'writes still commit');
    const removed = [...node.members.keys()].find((id) => id !== node.id)!;
    await backend.memberRemove(removed);
    await backend.memberAdd(['http://127.2.0.3:1'], true);
    t.equal(node.members.size, MAX_MEMBERS, 'after a removal one can be added again');
  });
});
