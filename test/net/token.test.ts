import t from 'tap';
import fc from 'fast-check';
import {
  MAX_TOKEN_CHARS,
  TOKEN_PREFIX,
  deriveClusterKeys,
  derivePeerKey,
  formatToken,
  generateToken,
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

t.test('peer and gossip keys differ and are deterministic', async (t) => {
  const { secret } = parseToken(generateToken());
  const a = deriveClusterKeys(secret);
  const b = deriveClusterKeys(Buffer.from(secret));
  t.equal(a.peerKey.length, 32);
  t.equal(a.gossipKey.length, 32);
  t.not(a.peerKey.toString('hex'), a.gossipKey.toString('hex'));
  t.equal(a.peerKey.toString('hex'), b.peerKey.toString('hex'));
  t.equal(derivePeerKey(secret).toString('hex'), a.peerKey.toString('hex'));
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

t.test('fuzz: parseToken throws only NetError', async (t) => {
  fc.assert(
    fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.stringMatching(/^PCN1-[0-9a-f]{0,20}-[0-9a-f]{0,140}$/)), (s) => {
      try {
        parseToken(s);
        return true;
      } catch (err) {
        return err instanceof NetError && err.code.startsWith('ERR_TOKEN_');
      }
    }),
    { numRuns: 1000 },
  );
});
