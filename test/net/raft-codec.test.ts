import t from 'tap';
import fc from 'fast-check';
import {
  MAX_CONF_MEMBERS,
  MAX_ENTRIES_PER_BATCH,
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

t.test('frames built to make the decoder build millions of objects are refused on the wire, before any decoding', async (t) => {
  // Found by a crash hunt (the sender holds the token): each took seconds and up to 1.3 GB.
  const Batch = peerType('picloud.raft.MessageBatch');
  const decode = Batch.decode.bind(Batch);
  let decodes = 0;
  Batch.decode = ((...args: Parameters<typeof decode>) => {
    decodes++;
    return decode(...args);
  }) as typeof Batch.decode;
  t.teardown(() => void (Batch.decode = decode));
  const varint = (n: number): number[] => {
    const out: number[] = [];
    for (; n >= 0x80; n = Math.floor(n / 0x80)) out.push((n % 0x80) | 0x80);
    out.push(n);
    return out;
  };
  /** A length-delimited field: tag (field, wire type 2), length, bytes. */
  const field = (n: number, body: Uint8Array): Buffer => Buffer.concat([Buffer.from([...varint((n << 3) | 2), ...varint(body.length)]), body]);
  const MiB16 = 16 * 1024 * 1024 - 64;
  const emptyMessages = Buffer.alloc(MiB16 - (MiB16 % 2));
  for (let i = 0; i < emptyMessages.length; i += 2) emptyMessages[i] = 0x0a; // field 1, length 0
  const oneEntry = field(7, Buffer.alloc(0));
  const entriesMessage = (n: number): Buffer => field(1, Buffer.concat([Buffer.from([0x08, 0x01]), ...Array.from({ length: n }, () => oneEntry)]));
  const packedVoters = Buffer.alloc(MiB16 - 32, 0x01); // one byte per voter id
  const votersBomb = field(1, Buffer.concat([Buffer.from([0x08, 0x07]), field(12, field(1, field(3, field(1, packedVoters))))]));
  const repeatedTerm = field(1, Buffer.concat([Buffer.from([0x08, 0x09]), Buffer.from(Array.from({ length: 100_000 }, () => [0x20, 0x01]).flat())]));
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['8 million empty messages', emptyMessages, /messages in one batch/],
    ['one message over the per-message entry limit', entriesMessage(MAX_ENTRIES_PER_MESSAGE + 1), /entries in one message/],
    ['entries spread over messages past the per-batch limit', Buffer.concat(Array.from({ length: Math.ceil((MAX_ENTRIES_PER_BATCH + 1) / 60_000) }, () => entriesMessage(60_000))), /entries in one batch/],
    ['16 million packed voters', votersBomb, /conf state with more than/],
    ['a singular field repeated 100,000 times', repeatedTerm, /given more than once/],
    ['an entry\'s term repeated 100,000 times', field(1, Buffer.concat([Buffer.from([0x08, 0x01]), field(7, Buffer.from(Array.from({ length: 100_000 }, () => [0x08, 0x01]).flat()))])), /given more than once/],
  ];
  for (const [what, bytes, message] of cases) {
    t.throws(() => decodeMessageBatch(bytes), { code: 'ERR_INVALID_MESSAGE', message }, what);
  }
  t.equal(decodes, 0, 'none reached protobufjs');
  const truncated = field(1, Buffer.from([0x08, 0x09, 0x3a, 0x10])); // an entry of 16 bytes, none there
  t.throws(() => decodeMessageBatch(truncated), { code: 'ERR_DECODE' }, 'a length past the end');
  // At the limits they still decode.
  const spread = Buffer.concat(Array.from({ length: MAX_ENTRIES_PER_BATCH / MAX_ENTRIES_PER_MESSAGE }, () => entriesMessage(MAX_ENTRIES_PER_MESSAGE)));
  t.equal(decodeMessageBatch(spread).reduce((n, m) => n + m.entries.length, 0), MAX_ENTRIES_PER_BATCH, 'exactly the per-batch entry limit decodes');
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
