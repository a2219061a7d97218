// The agent's command line (DESIGN.md's contract): defaults, every flag's validation with a
// message naming the flag, and the CLI's exit code 2 with that message and no stack trace.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, DEFAULT_PORTS, parseAgentArgs } from '../../agent/config.js';
import { hasOpenssl, makeTestCerts } from '../helpers/certs.js';
import { formatWorkerToken, generateToken, parseToken } from '../../core/net/token.js';
import { clusterKeyringAuthority } from '../../agent/gossip-subsystem.js';

/** A cluster token and a worker token of its cluster. */
const TOKEN = generateToken();
const WORKER_TOKEN = formatWorkerToken(parseToken(TOKEN).digest, Buffer.alloc(32, 5), clusterKeyringAuthority(TOKEN).publicKey);

const CLI = join(process.cwd(), 'dist/agent/cli.js');

t.test('--dev needs nothing else: a one-node cluster on the default ports, loopback only', async (t) => {
  const c = parseAgentArgs(['--dev']);
  t.match(c, { name: 'dev', bootstrap: true, role: 'manager', bindAddr: '127.0.0.1', ...DEFAULT_PORTS });
  t.equal(c.quotaBackendBytes, undefined, 'quota: the default for this machine');
  t.equal(c.autoCompaction, undefined, 'auto-compaction: the default (one hour)');
  t.equal(c.snapshotCount, 10_000, 'log compaction every 10,000 entries');
  t.equal(c.snapshotCatchUpEntries, 5_000, "5,000 entries kept behind it, etcd's default");
  t.equal(c.authTokenTtlSeconds, 300, "auth tokens last 300 s after their last use, etcd's default");
  t.equal(c.watchProgressNotifyIntervalMs, 600_000, "watch progress notifications every 10 minutes, etcd's default");
  t.equal(c.httpPort, 7480);
});

t.test('every flag of the contract is accepted', async (t) => {
  const c = parseAgentArgs([
    '--name', 'm2', '--data-dir', '/tmp/x', '--join', 'manager01', '--join', '10.0.0.2:7946', '--token', WORKER_TOKEN, '--role', 'worker',
    '--bind', '0.0.0.0', '--advertise', '192.168.1.5', '--client-port', '2479', '--peer-port', '2480', '--gossip-port', '8046',
    '--http-port', '7580', '--lb-port', '8081', '--s3-port', '9001', '--dns-port', '8601',
    '--quota-backend-bytes', '1048576', '--auto-compaction-mode', 'revision', '--auto-compaction-retention', '5000',
    '--snapshot-count', '2000', '--snapshot-catchup-entries', '50', '--auth-token-ttl', '60',
    '--experimental-watch-progress-notify-interval', '1m30s',
  ]);
  t.match(c, {
    name: 'm2', dataDir: '/tmp/x', join: ['manager01', '10.0.0.2:7946'], token: WORKER_TOKEN, role: 'worker', bootstrap: false,
    advertiseAddr: '192.168.1.5', clientPort: 2479, dnsPort: 8601, quotaBackendBytes: 1_048_576,
    autoCompaction: { mode: 'revision', retentionRevisions: 5000 }, snapshotCount: 2000, snapshotCatchUpEntries: 50, authTokenTtlSeconds: 60,
    watchProgressNotifyIntervalMs: 90_000,
  });
  t.same(parseAgentArgs(['--dev', '--auto-compaction-retention', '30m']).autoCompaction, { mode: 'periodic', retentionMs: 1_800_000 }, 'retention alone means periodic');
  t.equal(c.newBoard, undefined, 'a data dir stays on its board unless told');
  t.equal(parseAgentArgs(['--dev', '--new-board', 'serial:abc123']).newBoard, 'serial:abc123', '--new-board names the board it replaces');
});

t.test('a manager whose data dir holds its member restarts with neither --bootstrap nor --join; others need one', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'picloud-flags-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.throws(() => parseAgentArgs(['--name', 'm1', '--data-dir', dir]), /either --bootstrap .* is required \(a manager restarting from its data dir needs neither\)/, 'an empty data dir');
  writeFileSync(join(dir, 'identity.json'), '{}');
  t.match(parseAgentArgs(['--name', 'm1', '--data-dir', dir]), { bootstrap: false, join: [], role: 'manager' }, 'a data dir with identity.json');
  t.throws(() => parseAgentArgs(['--name', 'w1', '--data-dir', dir, '--role', 'worker']), /--role worker: .* holds a manager's data \(identity\.json\): start it as a manager/, "a manager's data dir is not run as a worker (the cluster would lose a voter)");
  t.throws(() => parseAgentArgs(['--name', 'w1', '--data-dir', dir, '--role', 'worker', '--join', '127.0.0.1', '--token', TOKEN]), /holds a manager's data/, 'not even joining');
});

t.test('a worker whose data dir shows it joined before (gossip keyring and live peers saved) restarts with neither --join nor --token', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'picloud-flags-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const worker = (...more: string[]) => parseAgentArgs(['--name', 'w1', '--data-dir', dir, '--role', 'worker', ...more]);
  const firstStart = /a worker joins an existing cluster: --join HOST\[:PORT\] --token T is required/;
  t.throws(() => worker(), { name: 'ConfigError', message: firstStart }, 'an empty data dir: the first start needs --join and --token');
  mkdirSync(join(dir, 'gossip'));
  writeFileSync(join(dir, 'gossip', 'keyring.json'), '{}');
  t.throws(() => worker(), { message: firstStart }, 'a keyring but no peers saved (its first join never got through)');
  writeFileSync(join(dir, 'gossip', 'peers.json'), 'not json');
  t.throws(() => worker(), { message: firstStart }, 'a damaged peers file: nothing to rejoin through');
  writeFileSync(join(dir, 'gossip', 'peers.json'), JSON.stringify(['127.0.0.1:7946']));
  t.match(worker(), { role: 'worker', bootstrap: false, join: [], token: undefined }, 'keyring and peers saved: neither flag needed');
  t.match(worker('--token', WORKER_TOKEN), { join: [], token: WORKER_TOKEN }, '--token alone is taken (checked against the saved keyring at start)');
  t.throws(() => worker('--join', '10.0.0.1'), /--join needs --token/, '--join still needs --token');
  rmSync(join(dir, 'gossip', 'keyring.json'));
  t.throws(() => worker(), { message: firstStart }, 'peers but no keyring');
});

t.test('--token: either kind of join token, checked against the role before anything starts', async (t) => {
  const join = ['--data-dir', '/tmp/x', '--join', 'manager01', '--token'];
  t.throws(() => parseAgentArgs(['--name', 'a', ...join, 'T']), { name: 'ConfigError', message: /^--token: not a picloud join token: expected PCN1-<digest>-<secret>/ }, 'not a token');
  t.throws(() => parseAgentArgs(['--name', 'a', ...join, WORKER_TOKEN.slice(0, -1) + (WORKER_TOKEN.endsWith('0') ? '1' : '0')]), { message: /^--token: worker token check does not match its keys: the token was mistyped or cut/ }, 'a mistyped worker token');
  t.throws(() => parseAgentArgs(['--name', 'a', ...join, WORKER_TOKEN]), { name: 'ConfigError', message: /^--token: this is a worker token: it joins workers only \(--role worker\); a manager needs the cluster token/ }, 'a manager given a worker token');
  t.throws(() => parseAgentArgs(['--name', 'a', '--data-dir', '/tmp/x', '--bootstrap', '--token', WORKER_TOKEN]), { message: /this is a worker token/ }, 'nor may it bootstrap one');
  t.same(parseAgentArgs(['--name', 'a', ...join, TOKEN]).notices, [], 'a manager with the cluster token: nothing to say');
  t.same(parseAgentArgs(['--name', 'w', ...join, WORKER_TOKEN, '--role', 'worker']).notices, [], 'a worker with a worker token: nothing to say');
  t.match(parseAgentArgs(['--name', 'w', ...join, TOKEN, '--role', 'worker']).notices, [/this worker holds the cluster token, which also speaks Raft .*picloud-node token --worker/], 'a worker with the cluster token: told a worker token is enough');
});

t.test('picloud-node token [--worker]: the data dir\'s token, or a worker token from its gossip keyring; a damaged one named', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'picloud-token-cmd-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const token = (...more: string[]) => spawnSync(process.execPath, [CLI, 'token', '--data-dir', dir, ...more], { encoding: 'utf8' });
  writeFileSync(join(dir, 'token'), TOKEN + '\n');
  t.equal(token().stdout, TOKEN + '\n', 'the cluster token');
  const noKeyring = token('--worker');
  t.equal(noKeyring.status, 2);
  t.match(noKeyring.stderr, /no readable gossip keyring in .*gossip\/keyring\.json .*start this manager once/, '--worker before the manager ever ran gossip');
  const key = Buffer.alloc(32, 3);
  mkdirSync(join(dir, 'gossip'));
  writeFileSync(join(dir, 'gossip', 'keyring.json'), JSON.stringify({ primary: key.toString('base64'), keys: [Buffer.alloc(32, 4).toString('base64'), key.toString('base64')], version: 3 }));
  t.equal(token('--worker').stdout, formatWorkerToken(parseToken(TOKEN).digest, key, clusterKeyringAuthority(TOKEN).publicKey) + '\n', "--worker: the keyring's primary key, the managers' public keyring key, the cluster's digest");
  writeFileSync(join(dir, 'token'), 'garbage\n');
  for (const more of [[], ['--worker']]) {
    const r = token(...more);
    t.same([r.status, r.stdout], [2, ''], `a damaged token file: exit 2, nothing printed (${more.join(' ') || 'plain'})`);
    t.match(r.stderr, /the token in .* is damaged \(not a picloud join token/);
  }
});

t.test("Raft timing: etcd's --heartbeat-interval / --election-timeout (ms), or ticks", async (t) => {
  t.match(parseAgentArgs(['--dev']), { tickMs: 100, electionTicks: 10 }, "etcd's defaults: 100 ms heartbeats, 1 s election timeout");
  t.match(parseAgentArgs(['--dev', '--heartbeat-interval', '50', '--election-timeout', '500']), { tickMs: 50, electionTicks: 10 });
  t.match(parseAgentArgs(['--dev', '--heartbeat-interval', '200']), { tickMs: 200, electionTicks: 5 }, 'the election timeout stays 1 s in ms');
  t.match(parseAgentArgs(['--dev', '--election-timeout', '5000']), { tickMs: 100, electionTicks: 50 }, 'a slow SD card: 5 s');
  t.match(parseAgentArgs(['--dev', '--heartbeat-interval', '150', '--election-timeout', '1000']), { tickMs: 150, electionTicks: 6 }, 'rounded down to whole ticks, as etcd does');
  t.match(parseAgentArgs(['--dev', '--tick-ms', '50']), { tickMs: 50, electionTicks: 10 }, 'ticks: the election timeout stays 10 ticks');
  t.match(parseAgentArgs(['--dev', '--heartbeat-interval', '50', '--election-ticks', '20']), { tickMs: 50, electionTicks: 20 });
  const dir = mkdtempSync(join(tmpdir(), 'picloud-flags-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'agent.json');
  writeFileSync(file, JSON.stringify({ 'heartbeat-interval': 250, 'election-timeout': 2500 }));
  t.match(parseAgentArgs(['--dev', '--config', file]), { tickMs: 250, electionTicks: 10 }, 'numbers in a config file');
  t.match(parseAgentArgs(['--dev', '--config', file, '--election-timeout', '5000']), { tickMs: 250, electionTicks: 20 }, 'a flag overrides the file');
  const bad: Array<[string[], RegExp]> = [
    [['--election-timeout', '400'], /--election-timeout \(400 ms\) must be at least 5 times --heartbeat-interval \(100 ms\)/],
    [['--heartbeat-interval', '500'], /--election-timeout \(1000 ms\) must be at least 5 times --heartbeat-interval \(500 ms\)/],
    [['--election-timeout', '50001'], /--election-timeout: expected an integer 1-50000/],
    [['--heartbeat-interval', '0'], /--heartbeat-interval: expected an integer/],
    [['--heartbeat-interval', '1.5'], /--heartbeat-interval: expected an integer/],
    [['--election-timeout', '1s'], /--election-timeout: expected an integer/],
    [['--heartbeat-interval', '50', '--tick-ms', '50'], /--heartbeat-interval and --tick-ms set the same thing/],
    [['--election-timeout', '1000', '--election-ticks', '10'], /--election-timeout and --election-ticks set the same thing/],
    [['--election-ticks', '1'], /--election-ticks: expected at least 2/],
  ];
  for (const [argv, message] of bad) t.throws(() => parseAgentArgs(['--dev', ...argv]), { name: 'ConfigError', message }, argv.join(' '));
});

t.test('--new-board is command line only: in a config file it would stay', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'picloud-flags-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'agent.json');
  writeFileSync(file, JSON.stringify({ 'new-board': 'serial:abc123' }));
  t.throws(() => parseAgentArgs(['--dev', '--config', file]), { message: /new-board: command line only/ });
});

t.test('a config file: unknown keys and values of the wrong type are refused, naming them', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'picloud-flags-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const withFile = (content: object): AgentConfigResult => {
    const file = join(dir, 'agent.json');
    writeFileSync(file, JSON.stringify(content));
    try {
      return { config: parseAgentArgs(['--config', file]) };
    } catch (e) {
      return { error: e as Error };
    }
  };
  const base = { name: 'a', 'data-dir': join(dir, 'd'), bootstrap: true };
  const ok = withFile({ ...base, 'client-port': 2479, 'snapshot-count': '500', join: undefined });
  t.equal(ok.config?.clientPort, 2479, 'a port as a JSON number');
  t.equal(ok.config?.snapshotCount, 500, 'or as the flag\'s text');
  const bad: Array<[object, RegExp]> = [
    [{ ...base, clientport: 1 }, /unknown key "clientport"/],
    [{ ...base, client_port: 2479 }, /unknown key "client_port"/],
    [{ ...base, config: 'other.json' }, /unknown key "config"/],
    [{ ...base, 'snapshot-count': true }, /"snapshot-count" must be a number or a string, not true/],
    [{ ...base, 'election-timeout': [1000] }, /"election-timeout" must be a number or a string/],
    [{ ...base, name: 123 }, /"name" must be a string, not 123/],
    [{ ...base, 'data-dir': 5 }, /"data-dir" must be a string/],
    [{ ...base, token: 12345 }, /"token" must be a string/],
    [{ name: 'a', 'data-dir': '/tmp/x', join: [5], token: 'T' }, /"join" must be a list of strings/],
    [{ ...base, bootstrap: 'yes' }, /"bootstrap" must be true or false/],
    // Object.prototype's names are not flags.
    [{ ...base, toString: 'x' }, /unknown key "toString"/],
    [{ ...base, constructor: 'x' }, /unknown key "constructor"/],
    [JSON.parse('{"__proto__": "x", "name": "a"}') as object, /unknown key "__proto__"/],
  ];
  for (const [content, message] of bad) {
    const r = withFile(content);
    t.ok(r.error instanceof ConfigError && message.test(r.error.message), `${JSON.stringify(content)} → ${r.error?.message ?? 'accepted'}`);
  }
  // Not a regular file, or too large: refused before reading (/dev/zero would be read for ever).
  t.throws(() => parseAgentArgs(['--config', '/dev/zero']), { message: /--config \/dev\/zero: not a regular file/ });
  const huge = join(dir, 'huge.json');
  writeFileSync(huge, ' '.repeat(2 << 20) + '{}');
  t.throws(() => parseAgentArgs(['--config', huge]), { message: /huge\.json: 2097154 bytes: a config file is at most 1048576/ });
});

type AgentConfigResult = { config?: ReturnType<typeof parseAgentArgs>; error?: Error };

t.test('bad flags: a ConfigError that names the flag', async (t) => {
  const bad: Array<[string[], RegExp]> = [
    [['--dev', '--client-port', '0'], /--client-port: expected a port 1-65535, got "0"/],
    [['--dev', '--http-port', 'http'], /--http-port: expected a port/],
    [['--dev', '--bind', 'localhost'], /--bind: expected an IP address/],
    [['--data-dir', '/tmp/x', '--bootstrap'], /--name is required/],
    [['--name', 'bad name', '--data-dir', '/tmp/x', '--bootstrap'], /--name: "bad name" must be/],
    [['--name', 'a', '--data-dir', '/tmp/x', '--bootstrap', '--join', 'h', '--token', 'T'], /mutually exclusive/],
    [['--name', 'a', '--data-dir', '/tmp/x', '--join', 'h'], /--join needs --token/],
    [['--name', 'a', '--data-dir', '/tmp/x'], /either --bootstrap/],
    [['--dev', '--role', 'boss'], /--role: expected manager or worker/],
    [['--dev', '--tick-ms', '0'], /--tick-ms: expected an integer/],
    [['--dev', '--quota-backend-bytes', '1000'], /--quota-backend-bytes: expected an integer 65536-/],
    [['--dev', '--quota-backend-bytes', '2GB'], /--quota-backend-bytes: expected an integer/],
    [['--dev', '--auto-compaction-mode', 'daily'], /auto-compaction.*periodic, revision or off/],
    [['--dev', '--auto-compaction-mode', 'revision', '--auto-compaction-retention', '1h'], /positive number of revisions/],
    [['--dev', '--snapshot-count', '0'], /--snapshot-count: expected an integer 1-10000000, got "0"/],
    [['--dev', '--snapshot-count', '1e9'], /--snapshot-count: expected an integer 1-10000000/],
    [['--dev', '--snapshot-catchup-entries', '0'], /--snapshot-catchup-entries: expected an integer/],
    [['--dev', '--auth-token-ttl', '0'], /--auth-token-ttl: expected an integer 1-86400, got "0"/],
    [['--dev', '--auth-token-ttl', '5m'], /--auth-token-ttl: expected an integer/],
    [['--dev', '--experimental-watch-progress-notify-interval', '10'], /--experimental-watch-progress-notify-interval: expected a duration from 100ms to 24h \(e.g. 10m, 5s\), got "10"/],
    [['--dev', '--experimental-watch-progress-notify-interval', '50ms'], /--experimental-watch-progress-notify-interval: expected a duration/],
    [['--dev', '--experimental-watch-progress-notify-interval', '25h'], /--experimental-watch-progress-notify-interval: expected a duration/],
    [['--dev', '--no-such-flag'], /no-such-flag/],
    [['--dev', '--new-board', 'has space'], /--new-board: expected the board id the data dir last ran on/],
    [['--name', 'a', '--data-dir', '/tmp/x', '--join', '127.0.0.1:99999', '--token', 'T'], /--join: bad address "127.0.0.1:99999"/],
    [['--name', 'a', '--data-dir', '/tmp/x', '--join', '127.0.0.1:abc', '--token', 'T'], /--join: bad address/],
    [['--dev', '--advertise', '0.0.0.0'], /--advertise: "0.0.0.0" is a wildcard/],
    [['--dev', '--advertise', '::'], /--advertise: "::" is a wildcard/],
    [['--dev', '--client-port', '4000', '--peer-port', '4000'], /--client-port and --peer-port are both 4000/],
    [['--dev', '--gossip-port', String(DEFAULT_PORTS.httpPort)], /--gossip-port and --http-port are both 7480/],
    // Numbers in decimal digits only.
    [['--dev', '--client-port', '0x7d0'], /--client-port: expected a port 1-65535, got "0x7d0"/],
    [['--dev', '--client-port', '1e3'], /--client-port: expected a port/],
    [['--dev', '--client-port', ' 2379 '], /--client-port: expected a port/],
    [['--dev', '--snapshot-count', '0x10'], /--snapshot-count: expected an integer/],
    // The ports reserved for the load balancer, S3 and DNS are checked too.
    [['--dev', '--lb-port', String(DEFAULT_PORTS.clientPort)], /--client-port and --lb-port are both 2379/],
    [['--dev', '--s3-port', '8600', '--dns-port', '8600'], /--s3-port and --dns-port are both 8600/],
    // Refused here, before the data dir is made.
    [['--name', 'w', '--data-dir', '/tmp/x', '--role', 'worker', '--bootstrap'], /a worker joins an existing cluster: use --join/],
  ];
  for (const [argv, message] of bad) {
    let err: unknown;
    try {
      parseAgentArgs(argv);
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof ConfigError && message.test(err.message), `${argv.join(' ')} → ${(err as Error | undefined)?.message}`);
  }
  // The reserved ports' defaults are no one's yet: a listener may use them.
  t.equal(parseAgentArgs(['--dev', '--http-port', '8080']).httpPort, 8080, '--http-port 8080 (the load balancer\'s default) is taken');
  t.equal(parseAgentArgs(['--dev', '--client-port', '9000']).clientPort, 9000, "--client-port 9000 (S3's default) is taken");
  // A worker opens no client or peer port: its http port may be what a manager's peer port is.
  const worker = parseAgentArgs(['--name', 'w', '--data-dir', '/tmp/x', '--role', 'worker', '--join', '127.0.0.1', '--token', WORKER_TOKEN, '--http-port', String(DEFAULT_PORTS.peerPort)]);
  t.equal(worker.httpPort, DEFAULT_PORTS.peerPort, "a worker's --http-port 2380 is taken");
});

t.test('client TLS flags (etcd\'s names): read and checked before anything listens', { skip: hasOpenssl() ? false : 'openssl not installed' }, async (t) => {
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  t.equal(parseAgentArgs(['--dev']).clientTls, undefined, 'plain by default');
  const tls = parseAgentArgs(['--dev', '--cert-file', certs.serverCert, '--key-file', certs.serverKey, '--trusted-ca-file', certs.caCert, '--client-cert-auth']).clientTls;
  t.ok(tls?.cert.toString().includes('BEGIN CERTIFICATE') && tls.key.toString().includes('PRIVATE KEY') && tls.ca?.toString().includes('BEGIN CERTIFICATE'), 'the PEM files are read');
  t.equal(tls?.clientCertAuth, true);
  t.equal(parseAgentArgs(['--dev', '--cert-file', certs.serverCert, '--key-file', certs.serverKey]).clientTls?.clientCertAuth, false, 'server TLS alone');
  const bad: Array<[string[], RegExp]> = [
    [['--cert-file', certs.serverCert], /--cert-file and --key-file go together/],
    [['--key-file', certs.serverKey], /--cert-file and --key-file go together/],
    [['--trusted-ca-file', certs.caCert], /need --cert-file and --key-file/],
    [['--client-cert-auth'], /need --cert-file and --key-file/],
    [['--cert-file', certs.serverCert, '--key-file', certs.serverKey, '--client-cert-auth'], /--client-cert-auth needs --trusted-ca-file/],
    [['--cert-file', join(certs.dir, 'missing.crt'), '--key-file', certs.serverKey], /--cert-file .*missing\.crt: ENOENT/],
    [['--cert-file', certs.serverCert, '--key-file', certs.clientKey], /--key-file is not the key of --cert-file's certificate.*key values mismatch/],
    [['--cert-file', certs.serverKey, '--key-file', certs.serverKey], /--cert-file: not a PEM certificate/],
    [['--cert-file', certs.serverCert, '--key-file', certs.serverCert], /--key-file: not a PEM private key/],
    [['--cert-file', certs.serverCert, '--key-file', certs.serverKey, '--trusted-ca-file', certs.serverKey], /--trusted-ca-file: not a PEM certificate/],
  ];
  for (const [argv, message] of bad) {
    t.throws(() => parseAgentArgs(['--dev', ...argv]), { name: 'ConfigError', message }, argv.join(' '));
  }
  const file = join(certs.dir, 'agent.json');
  for (const v of ['true', 1, 'yes']) {
    writeFileSync(file, JSON.stringify({ 'cert-file': certs.serverCert, 'key-file': certs.serverKey, 'trusted-ca-file': certs.caCert, 'client-cert-auth': v }));
    t.throws(() => parseAgentArgs(['--dev', '--config', file]), { name: 'ConfigError', message: /client-cert-auth" must be true or false/ }, `a config file's client-cert-auth ${JSON.stringify(v)} is refused, not read as off`);
  }
  writeFileSync(file, JSON.stringify({ 'cert-file': certs.serverCert, 'key-file': certs.serverKey, 'trusted-ca-file': certs.caCert, 'client-cert-auth': true }));
  t.equal(parseAgentArgs(['--dev', '--config', file]).clientTls?.clientCertAuth, true, 'true in a config file');
});

t.test('--auto-tls and --peer-auto-tls (etcd\'s): explicit certificate files win; the peer port needs nothing', { skip: hasOpenssl() ? false : 'openssl not installed' }, async (t) => {
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  const plain = parseAgentArgs(['--dev']);
  t.equal(plain.autoTls, undefined, 'off by default');
  t.same(plain.notices, []);
  const auto = parseAgentArgs(['--dev', '--auto-tls']);
  t.same(auto.autoTls, { clientCertAuth: false }, 'a certificate to make at start');
  t.equal(auto.clientTls, undefined, 'none read from files');
  t.same(auto.notices, []);
  const files = parseAgentArgs(['--dev', '--auto-tls', '--cert-file', certs.serverCert, '--key-file', certs.serverKey]);
  t.equal(files.autoTls, undefined, 'with --cert-file and --key-file, --auto-tls does nothing (as in etcd)');
  t.ok(files.clientTls?.cert.toString().includes('BEGIN CERTIFICATE'), 'the files are served');
  t.match(files.notices, [/--auto-tls: ignored, as etcd ignores it, since --cert-file and --key-file are given/]);
  // etcd 3.4 drops both here and lets any client in; picloud requires what it was told to.
  const mtls = parseAgentArgs(['--dev', '--auto-tls', '--trusted-ca-file', certs.caCert, '--client-cert-auth']);
  t.equal(mtls.autoTls?.clientCertAuth, true, '--client-cert-auth kept');
  t.ok(mtls.autoTls?.ca?.toString().includes('BEGIN CERTIFICATE'), '--trusted-ca-file read');
  t.equal(mtls.autoTls?.caFile, certs.caCert);
  t.throws(() => parseAgentArgs(['--dev', '--auto-tls', '--client-cert-auth']), { name: 'ConfigError', message: /--client-cert-auth needs --trusted-ca-file/ });
  t.throws(() => parseAgentArgs(['--dev', '--auto-tls', '--trusted-ca-file', certs.serverKey]), { name: 'ConfigError', message: /--trusted-ca-file: not a PEM certificate/ });
  t.throws(() => parseAgentArgs(['--dev', '--auto-tls', '--trusted-ca-file', join(certs.dir, 'missing.crt')]), { name: 'ConfigError', message: /--trusted-ca-file .*missing\.crt: ENOENT/ });
  t.throws(() => parseAgentArgs(['--dev', '--auto-tls', '--cert-file', certs.serverCert]), { name: 'ConfigError', message: /--cert-file and --key-file go together/ }, 'half a pair is still refused');
  t.match(parseAgentArgs(['--dev', '--peer-auto-tls']).notices, [/--peer-auto-tls: nothing to do, the peer port is always authenticated and encrypted with the cluster token's secret/], 'taken from an etcd unit file, with a warning');
  const file = join(certs.dir, 'auto.json');
  writeFileSync(file, JSON.stringify({ 'auto-tls': true, 'peer-auto-tls': true }));
  const fromFile = parseAgentArgs(['--dev', '--config', file]);
  t.same(fromFile.autoTls, { clientCertAuth: false }, 'true in a config file');
  t.equal(fromFile.notices.length, 1);
  writeFileSync(file, JSON.stringify({ 'auto-tls': 'true' }));
  t.throws(() => parseAgentArgs(['--dev', '--config', file]), { name: 'ConfigError', message: /"auto-tls" must be true or false/ });
});

t.test('the CLI: a bad flag exits 2 with the message, no stack trace', async (t) => {
  const r = spawnSync(process.execPath, [CLI, 'agent', '--dev', '--quota-backend-bytes', 'lots'], { encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 2);
  t.match(r.stderr, /^picloud-node agent: --quota-backend-bytes: expected an integer/);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  const u = spawnSync(process.execPath, [CLI, 'launch'], { encoding: 'utf8', timeout: 20_000 });
  t.equal(u.status, 2);
  t.match(u.stderr, /unknown command "launch"/);
  for (const argv of [['--help'], ['agent', '--help'], ['snapshot', '-h']]) {
    const h = spawnSync(process.execPath, [CLI, ...argv], { encoding: 'utf8', timeout: 20_000 });
    t.equal(h.status, 0, `${argv.join(' ')}: exit 0`);
    t.match(h.stdout, /^usage: picloud-node <command> \[flags\][\s\S]*agent --name NAME --data-dir DIR/, `${argv.join(' ')}: the usage`);
  }
});
