/**
 * Which address a node bound to a wildcard (0.0.0.0, the default) tells others to reach it at,
 * when no --advertise is given: what `picloud-node agent --join manager01 --token T` needs on a
 * Pi. As k3s does, the IPv4 address of the interface the default route leaves through; without
 * a default route, the one private IPv4 address the machine has (as Consul and memberlist do).
 * Anything else is ambiguous and an error that names the candidates, never a silent guess.
 */
import { readFileSync } from 'node:fs';
import { BlockList, isIP } from 'node:net';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';

export class AdvertiseError extends Error {
  readonly code = 'ADVERTISE_UNKNOWN';
}

/** The unspecified addresses, however written (`::`, `0:0:0:0:0:0:0:0`, `[::]`). */
const UNSPECIFIED = new BlockList();
UNSPECIFIED.addAddress('0.0.0.0', 'ipv4');
UNSPECIFIED.addAddress('::', 'ipv6');

export function isWildcard(host: string): boolean {
  if (host === '') return true;
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  const family = isIP(bare);
  return family !== 0 && UNSPECIFIED.check(bare, family === 4 ? 'ipv4' : 'ipv6');
}

/** RTF_UP in /proc/net/route's Flags column. */
const RTF_UP = 0x1;

/**
 * The interface of the IPv4 default route with the lowest metric, from the text of
 * /proc/net/route (columns: Iface Destination Gateway Flags RefCnt Use Metric Mask …).
 */
export function defaultRouteInterface(procNetRoute: string): string | undefined {
  let best: { iface: string; metric: number } | undefined;
  for (const line of procNetRoute.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const [iface, dest, , flags, , , metric, mask] = f as [string, string, string, string, string, string, string, string];
    if (dest !== '00000000' || mask !== '00000000' || (parseInt(flags, 16) & RTF_UP) === 0) continue;
    const m = Number(metric);
    if (best === undefined || m < best.metric) best = { iface, metric: m };
  }
  return best?.iface;
}

/** RFC 1918 private ranges and RFC 6598 shared space (a carrier's NAT). */
export function isPrivateIPv4(address: string): boolean {
  const o = address.split('.').map(Number);
  if (o.length !== 4 || o.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) return false;
  const [a, b] = o as [number, number, number, number];
  return a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127);
}

function usableIPv4(infos: NetworkInterfaceInfo[] | undefined): string[] {
  return (infos ?? []).filter((i) => i.family === 'IPv4' && !i.internal && !i.address.startsWith('169.254.')).map((i) => i.address);
}

/** The address to advertise, given the machine's interfaces and its default route's interface. */
export function chooseAdvertiseAddress(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>, defaultIface: string | undefined): string {
  if (defaultIface !== undefined) {
    const onDefault = usableIPv4(interfaces[defaultIface]);
    if (onDefault.length > 0) return onDefault[0]!;
  }
  const all = Object.entries(interfaces).flatMap(([name, infos]) => usableIPv4(infos).map((address) => ({ name, address })));
  const privates = all.filter((a) => isPrivateIPv4(a.address));
  const pick = privates.length > 0 ? privates : all;
  if (pick.length === 1) return pick[0]!.address;
  const listed = pick.map((a) => `${a.address} (${a.name})`).join(', ');
  throw new AdvertiseError(
    pick.length === 0
      ? 'no network address to advertise (no IPv4 address outside loopback): give --advertise ADDR, or --bind ADDR'
      : `several addresses could be advertised and no default route says which: ${listed}; give --advertise ADDR`,
  );
}

/** chooseAdvertiseAddress for this machine. */
export function defaultAdvertiseAddress(): string {
  let routes = '';
  try {
    routes = readFileSync('/proc/net/route', 'utf8');
  } catch {
    // not Linux: no default route to go by
  }
  return chooseAdvertiseAddress(networkInterfaces(), defaultRouteInterface(routes));
}
