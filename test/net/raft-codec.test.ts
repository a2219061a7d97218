import t from 'tap';
import fc from 'fast-check';
import {
  MAX_CONF_MEMBERS,
  MAX_ENTRIES_PER_MESSAGE,
  MAX_MESSAGES_PER_BATCH,
  decodeEntry,
  decodeHardState,
  decodeMessageBatch,
  decodeStoredSnapshot,
  encodeEntry,
  encodeHardState,
  encodeMessageBatch,
  encodeStoredSnapshot,
  estimateMessageBytes,
} from '../../core/net/raft-codec.js';
import { NetError } from '../../core/net/errors.js';
import { peerType } from '../../core/net/proto-files.js';
import { MessageType, emptyMessage } from '../../core/raft/types.js';
import { entryArb, messageArb } from './arbitraries.js';

/** Byte arrays (Buffer or Uint8Array) as plain arrays, so results compare by content. */
function norm(v: unknown): unknown {
  if (v instanceof Uint8Array) return [...v];
  if (Array.isArray(v)) return v.map(norm);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]));
  return v;
}

t.test('every field of every network message round-trips', async (t) => {
  fc.assert(
    fc.property(fc.array(messageArb, { maxLength: 6 }), (ms) => {
      const back = decodeMessageBatch(encodeMessageBatch(ms));
      return JSON.stringify(back.map(norm)) === JSON.stringify(ms.map(norm));
    }),
    { numRuns: 500 },
  );
});

t.test('estimateMessageBytes never under-estimates the encoding', async (t) => {
  fc.assert(
    fc.property(messageArb, (m) => encodeMessageBatch([m]).length <= estimateMessageBytes(m)),
    { numRuns: 500 },
  );
});

t.test('entries, hard state and snapshot records round-trip', async (t) => {
  fc.assert(fc.property(entryArb, (e) => JSON.stringify(norm(decodeEntry(encodeEntry(e)))) === JSON.stringify(norm(e))));
  t.same(decodeHardState(encodeHardState({ term: 2 ** 53 - 1, vote: 3, commit: 9 })), { term: 2 ** 53 - 1, vote: 3, commit: 9 });
  const rec = { metadata: { index: 5, term: 2, conf: { voters: [1, 2], learners: [3] } }, fileName: 'snap-x.snap', sizeBytes: 77 };
  t.same(decodeStoredSnapshot(encodeStoredSnapshot(rec)), rec);
});

t.test('local message types are never encoded', async (t) => {
  for (const type of [MessageType.Hup, MessageType.Beat, MessageType.Unreachable]) {
    t.throws(() => encodeMessageBatch([emptyMessage(type, 1, 2, 1)]), { code: 'ERR_INVALID_MESSAGE' });
  }
});

t.test('hostile but well-formed protobuf is refused with a typed error', async (t) => {
  const Batch = peerType('picloud.raft.MessageBatch');
  const enc = (o: object): Uint8Array => Batch.encode(Batch.fromObject(o)).finish();
  t.throws(() => decodeMessageBatch(enc({ messages: [{ type: 0 }] })), { code: 'ERR_INVALID_MESSAGE' }, 'unknown type 0');
  t.throws(() => decodeMessageBatch(enc({ messages: [{ type: 99 }] })), { code: 'ERR_INVALID_MESSAGE' }, 'unknown type 99');
  t.throws(() => decodeMessageBatch(enc({ messages: [{ type: 1, term: '18446744073709551615' }] })), { code: 'ERR_INVALID_MESSAGE' }, 'term above 2^53');
  t.throws(() => decodeMessageBatch(enc({ messages: [{ type: 1, entries: [{ type: 7 }] }] })), { code: 'ERR_INVALID_MESSAGE' }, 'bad entry type');
  t.throws(() => decodeMessageBatch(enc({ messages: [{ type: 7 }] })), { code: 'ERR_INVALID_MESSAGE' }, 'Snap without chunk');
  t.throws(
    () => decodeMessageBatch(enc({ messages: [{ type: 7, snapshot: { offset: 10, data: [1, 2, 3], totalBytes: 12 } }] })),
    { code: 'ERR_INVALID_MESSAGE' },
    'chunk past the snapshot end',
  );
  const entries = (n: number): object[] => Array.from({ length: n }, () => ({ term: 1, index: 1 }));
  t.equal(decodeMessageBatch(enc({ messages: [{ type: 1, entries: entries(MAX_ENTRIES_PER_MESSAGE) }] }))[0]!.entries.length, MAX_ENTRIES_PER_MESSAGE, 'entries at the limit');
  t.throws(() => decodeMessageBatch(enc({ messages: [{ type: 1, entries: entries(MAX_ENTRIES_PER_MESSAGE + 1) }] })), { code: 'ERR_INVALID_MESSAGE' }, 'entries over the limit');
  const conf = (n: number): object => ({ type: 7, snapshot: { metadata: { conf: { voters: Array.from({ length: n }, (_, i) => i + 1) } }, totalBytes: 0 } });
  t.equal(decodeMessageBatch(enc({ messages: [conf(MAX_CONF_MEMBERS)] }))[0]!.snapshot!.metadata.conf.voters.length, MAX_CONF_MEMBERS, 'conf members at the limit');
  t.throws(() => decodeMessageBatch(enc({ messages: [conf(MAX_CONF_MEMBERS + 1)] })), { code: 'ERR_INVALID_MESSAGE' }, 'conf members over the limit');
  const many = enc({ messages: Array.from({ length: MAX_MESSAGES_PER_BATCH + 1 }, () => ({ type: 9 })) });
  t.throws(() => decodeMessageBatch(many), { code: 'ERR_INVALID_MESSAGE' }, 'too many messages');
  const atLimit = enc({ messages: Array.from({ length: MAX_MESSAGES_PER_BATCH }, () => ({ type: 9 })) });
  t.equal(decodeMessageBatch(atLimit).length, MAX_MESSAGES_PER_BATCH, 'exactly the limit decodes');
});

function onlyNetErrors(f: () => unknown): boolean {
  try {
    f();
    return true;
  } catch (err) {
    return err instanceof NetError && (err.code === 'ERR_DECODE' || err.code === 'ERR_INVALID_MESSAGE');
  }
}

t.test('fuzz: random, truncated and bit-flipped input never throws anything but NetError', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 512 }), (b) =>
      onlyNetErrors(() => decodeMessageBatch(b)) && onlyNetErrors(() => decodeEntry(b)) && onlyNetErrors(() => decodeHardState(b)) && onlyNetErrors(() => decodeStoredSnapshot(b)),
    ),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(fc.array(messageArb, { minLength: 1, maxLength: 3 }), fc.nat(), fc.nat(255), fc.boolean(), (ms, pos, val, truncate) => {
      const b = Buffer.from(encodeMessageBatch(ms));
      const i = pos % b.length;
      const mutated = truncate ? b.subarray(0, i) : (b[i] = val, b);
      return onlyNetErrors(() => decodeMessageBatch(mutated));
    }),
    { numRuns: 2000 },
  );
});
