#!/usr/bin/env node
// Makes sure the Debian tools the compatibility tests drive are present. As root it installs
// what is missing with apt-get; otherwise it prints exactly what to install and the tests
// that need them report themselves as skipped with that reason.
import { spawnSync } from 'node:child_process';

const NEEDED = [
  { bin: 'etcdctl', pkg: 'etcd-client' },
  { bin: 'etcd', pkg: 'etcd-server' },
  { bin: 'promtool', pkg: 'prometheus' },
  { bin: 'curl', pkg: 'curl' },
  // libfaketime, for the wall-clock step test (test/compat/clock-step.test.ts).
  { bin: 'faketime', pkg: 'faketime' },
  // Test certificates for the client port's TLS (test/helpers/certs.ts).
  { bin: 'openssl', pkg: 'openssl' },
  // A C compiler, for the slow-disk test's fsync shim (test/compat/fixtures/stall-fsync.c).
  { bin: 'cc', pkg: 'gcc libc6-dev' },
  // Debian's Python etcd clients (test/compat/python-clients.test.ts), for Debian's python3
  // (a python3 of one's own, e.g. pyenv's, may come first on PATH without them).
  { bin: 'python3 modules etcd3, etcd3gw', check: 'python3 -c "import etcd3, etcd3gw" || /usr/bin/python3 -c "import etcd3, etcd3gw"', pkg: 'python3-etcd3 python3-etcd3gw' },
];

const has = (n) => spawnSync('sh', ['-c', n.check ?? `command -v ${n.bin}`], { stdio: 'ignore' }).status === 0;
const missing = NEEDED.filter((n) => !has(n));
if (missing.length === 0) process.exit(0);
const pkgs = [...new Set(missing.flatMap((m) => m.pkg.split(' ')))];
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
if (!isRoot) {
  console.error(`pretest: missing ${missing.map((m) => m.bin).join(', ')}; install with: sudo apt-get install -y ${pkgs.join(' ')}`);
  process.exit(0);
}
console.error(`pretest: installing ${pkgs.join(' ')} with apt-get`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
let r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], { stdio: 'inherit', env });
if (r.status !== 0) {
  spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], { stdio: 'inherit', env });
}
if (r.status !== 0) console.error(`pretest: apt-get install ${pkgs.join(' ')} failed; compatibility tests will be skipped`);
