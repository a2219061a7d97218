import t from 'tap';
import fc from 'fast-check';
import {
  MAX_JOIN_TOKEN_CHARS,
  MAX_TOKEN_CHARS,
  TOKEN_PREFIX,
  derivePeerKey,
  formatToken,
  formatWorkerToken,
  generateToken,
  parseJoinToken,
  parseToken,
  tokenDigest,
  tokenFromPassphrase,
} from '../../core/net/token.js';
import { NetError } from '../../core/net/errors.js';

t.test('generated tokens parse back to their secret', async (t) => {
  const tok = generateToken();
  t.match(tok, /^PCN1-[0-9a-f]{16}-[0-9a-f]{64}$/);
  const p = parseToken(tok);
  t.equal(p.secret.length, 32);
  t.equal(formatToken(p.secret), tok);
  t.equal(p.digest, tokenDigest(p.secret));
  t.not(generateToken(), tok, 'fresh randomness');
  t.equal(parseToken(`  ${tok}\n`).digest, p.digest, 'surrounding whitespace ignored');
});

t.test('the peer key is deterministic, and differs from the secret', async (t) => {
  const { secret } = parseToken(generateToken());
  t.equal(derivePeerKey(secret).length, 32);
  t.equal(derivePeerKey(Buffer.from(secret)).toString('hex'), derivePeerKey(secret).toString('hex'));
  t.not(derivePeerKey(secret).toString('hex'), Buffer.from(secret).toString('hex'));
});

t.test('worker tokens: the gossip key and the cluster digest, checked; refused where the cluster token is needed', async (t) => {
  const cluster = generateToken();
  const { digest } = parseToken(cluster);
  const key = Buffer.alloc(32, 7);
  const authority = Buffer.alloc(32, 8);
  const worker = formatWorkerToken(digest, key, authority);
  t.match(worker, new RegExp(`^PCW1-${digest}-${key.toString('hex')}${authority.toString('hex')}[0-9a-f]{8}$`));
  t.ok(worker.length <= MAX_JOIN_TOKEN_CHARS, `within the join token length limit (${worker.length})`);
  const parsed = parseJoinToken(`  ${worker}\n`);
  t.same(parsed, { kind: 'worker', gossipKey: key, authorityKey: authority, digest }, 'parses back to its keys and digest');
  t.same(parseJoinToken(cluster), { kind: 'cluster', ...parseToken(cluster) }, 'a cluster token parses as one');
  t.notOk(worker.includes(Buffer.from(parseToken(cluster).secret).toString('hex')), 'the worker token does not carry the secret');
  t.throws(() => parseToken(worker), { code: 'ERR_TOKEN_WORKER', message: /worker token: it joins workers only .*a manager needs the cluster token/ });
  const body = worker.split('-')[2]!;
  const flipped = `PCW1-${digest}-${body.slice(0, 10)}${body[10] === '0' ? '1' : '0'}${body.slice(11)}`;
  t.throws(() => parseJoinToken(flipped), { code: 'ERR_TOKEN_DIGEST', message: /mistyped/ }, 'a mistyped key');
  const otherDigest = digest.slice(0, -1) + (digest.endsWith('0') ? '1' : '0');
  t.throws(() => parseJoinToken(`PCW1-${otherDigest}-${body}`), { code: 'ERR_TOKEN_DIGEST' }, 'a mistyped digest');
  t.throws(() => parseJoinToken(`PCW1-${digest}-${body.slice(0, -1)}`), { code: 'ERR_TOKEN_FORMAT', message: /136 lowercase hex/ }, 'cut short');
  t.throws(() => parseJoinToken(`PCW2-${digest}-${body}`), { code: 'ERR_TOKEN_VERSION', message: /PCW2 is not supported/ });
  t.throws(() => parseJoinToken(`PCW1-${digest}-ab-cd`), { code: 'ERR_TOKEN_FORMAT', message: /expected PCW1-<digest>-<keys>/ }, 'four parts');
  t.throws(() => parseJoinToken(`PCW1-${digest.slice(1)}-${body}`), { code: 'ERR_TOKEN_FORMAT', message: /digest/ });
  t.throws(() => formatWorkerToken(digest, Buffer.alloc(31), authority), { code: 'ERR_TOKEN_FORMAT' });
  t.throws(() => formatWorkerToken(digest, key, Buffer.alloc(33)), { code: 'ERR_TOKEN_FORMAT', message: /authority key/ });
  t.throws(() => formatWorkerToken('xyz', key, authority), { code: 'ERR_TOKEN_FORMAT' });
  const authFlipped = `PCW1-${digest}-${body.slice(0, 70)}${body[70] === '0' ? '1' : '0'}${body.slice(71)}`;
  t.throws(() => parseJoinToken(authFlipped), { code: 'ERR_TOKEN_DIGEST' }, 'a mistyped authority key');
});

t.test('passphrase tokens: same words, same token', async (t) => {
  t.equal(tokenFromPassphrase('correct horse'), tokenFromPassphrase('correct horse'));
  t.not(tokenFromPassphrase('correct horse'), tokenFromPassphrase('correct horsf'));
  t.ok(parseToken(tokenFromPassphrase('x')));
  t.throws(() => tokenFromPassphrase(''), { code: 'ERR_TOKEN_FORMAT' });
});

t.test('bad tokens give clear, typed errors', async (t) => {
  const tok = generateToken();
  const [, digest, secret] = tok.split('-') as [string, string, string];
  t.throws(() => parseToken('hello'), { code: 'ERR_TOKEN_FORMAT', message: /expected PCN1-<digest>-<secret>/ });
  t.throws(() => parseToken(`PCN2-${digest}-${secret}`), { code: 'ERR_TOKEN_VERSION', message: /PCN2 is not supported/ });
  t.throws(() => parseToken(`PCN1-${digest.slice(1)}-${secret}`), { code: 'ERR_TOKEN_FORMAT', message: /digest/ });
  t.throws(() => parseToken(`PCN1-${digest}-${secret.toUpperCase()}`), { code: 'ERR_TOKEN_FORMAT', message: /hex/ });
  t.throws(() => parseToken(`PCN1-${digest}-${secret.slice(0, 31)}`), { code: 'ERR_TOKEN_FORMAT', message: /hex/ }, 'odd length');
  t.throws(() => parseToken(`PCN1-${digest}-${secret.slice(0, 30)}`), { code: 'ERR_TOKEN_FORMAT', message: /16\.\.64 bytes/ });
  const flipped = secret.slice(0, -1) + (secret.endsWith('0') ? '1' : '0');
  t.throws(() => parseToken(`PCN1-${digest}-${flipped}`), { code: 'ERR_TOKEN_DIGEST', message: /mistyped/ });
  t.throws(() => parseToken('x'.repeat(MAX_TOKEN_CHARS + 1)), { code: 'ERR_TOKEN_FORMAT' });
  t.throws(() => formatToken(new Uint8Array(15)), { code: 'ERR_TOKEN_FORMAT' });
  t.ok(parseToken(formatToken(new Uint8Array(16).fill(1))), '16-byte secret is the minimum');
  const max = formatToken(new Uint8Array(64).fill(2));
  t.equal(max.length, MAX_TOKEN_CHARS, 'a 64-byte secret is exactly the length limit');
  t.ok(parseToken(max));
  t.throws(() => formatToken(new Uint8Array(65)), { code: 'ERR_TOKEN_FORMAT' });
  t.equal(TOKEN_PREFIX, 'PCN1');
});

t.test('fuzz: parseToken and parseJoinToken throw only NetError', async (t) => {
  fc.assert(
    fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.stringMatching(/^PC[NW]1-[0-9a-f]{0,20}-[0-9a-f]{0,140}$/)), fc.boolean(), (s, join) => {
      try {
        if (join) parseJoinToken(s);
        else parseToken(s);
        return true;
      } catch (err) {
        return err instanceof NetError && err.code.startsWith('ERR_TOKEN_');
      }
    }),
    { numRuns: 1000 },
  );
});
