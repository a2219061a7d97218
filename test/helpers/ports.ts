/**
 * Ports for processes that tests and benchmarks start and later restart on the same port.
 *
 * `listen(0)` hands out a port from the kernel's ephemeral range and frees it at once; any
 * outgoing connection (a gRPC client, a peer dial) may then take it as its local port before the
 * agent binds it, and the agent dies with EADDRINUSE. So ports come from below the ephemeral
 * range, where the kernel never picks local ports for outgoing connections, and each one is
 * reserved across processes (tap runs test files in parallel) with an exclusive lock file that
 * holds the owner's pid. Locks of dead owners are taken over; a process releases its own on exit.
 */
import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const LOCK_DIR = join(tmpdir(), 'picloud-ports');
const held = new Set<number>();

/** The span tests may use: below the ephemeral range when there is room, else above it. */
function usableRange(): [number, number] {
  let low = 32768;
  let high = 60999;
  try {
    [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number) as [number, number];
  } catch {
    // Not Linux: keep the kernel's usual defaults.
  }
  if (low - 1 - 20000 >= 2000) return [20000, low - 1];
  if (65535 - (high + 1) >= 2000) return [high + 1, 65535];
  throw new Error(`no port span outside the ephemeral range ${low}-${high}`);
}

function ownerAlive(lockPath: string): boolean {
  try {
    const pid = Number(readFileSync(lockPath, 'utf8'));
    if (!Number.isInteger(pid) || pid <= 0) return false;
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function tryLock(port: number): boolean {
  const path = join(LOCK_DIR, String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || ownerAlive(path)) return false;
      try {
        unlinkSync(path); // the owner died without cleaning up
      } catch {
        return false;
      }
    }
  }
  return false;
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

function releaseAll(): void {
  for (const port of held) {
    try {
      unlinkSync(join(LOCK_DIR, String(port)));
    } catch {
      // already gone
    }
  }
  held.clear();
}
process.once('exit', releaseAll);

/**
 * For the lock tests: this process stops counting `port` as held, leaving its lock file as it
 * is (the test then writes another owner into it, on a port no other process can have).
 */
export function forgetPort(port: number): void {
  held.delete(port);
}

/** A loopback port no other test process holds, outside the ephemeral range; held until exit. */
export async function freePort(): Promise<number> {
  mkdirSync(LOCK_DIR, { recursive: true });
  const [low, high] = usableRange();
  const span = high - low + 1;
  let candidate = low + Math.floor(Math.random() * span);
  for (let tries = 0; tries < span; tries++, candidate = candidate === high ? low : candidate + 1) {
    if (await reservePort(candidate)) return candidate;
  }
  throw new Error(`no free port in ${low}-${high}`);
}

/** Reserve this exact port if no live process holds it and it can be bound; held until exit. */
export async function reservePort(port: number): Promise<boolean> {
  mkdirSync(LOCK_DIR, { recursive: true });
  if (held.has(port) || !tryLock(port)) return false;
  if (await canBind(port)) {
    held.add(port);
    return true;
  }
  unlinkSync(join(LOCK_DIR, String(port)));
  return false;
}
