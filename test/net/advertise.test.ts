/**
 * The address a node bound to every interface advertises (core/net/advertise.ts): the default
 * route's interface, else the one private address, else an error naming the candidates.
 */
import t from 'tap';
import type { NetworkInterfaceInfo } from 'node:os';
import { AdvertiseError, chooseAdvertiseAddress, defaultRouteInterface, isPrivateIPv4, isWildcard } from '../../core/net/advertise.js';

const HEADER = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT';

function v4(address: string, internal = false): NetworkInterfaceInfo {
  return { address, netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:00:01', internal, cidr: `${address}/24` };
}
function v6(address: string): NetworkInterfaceInfo {
  return { address, netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '02:00:00:00:00:01', internal: false, cidr: `${address}/64`, scopeid: 0 };
}

function thrownBy(f: () => unknown): Error | undefined {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  return undefined;
}

t.test('the default route is read from /proc/net/route: up, 0.0.0.0/0, lowest metric', async (t) => {
  const routes = [
    HEADER,
    'eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
    'wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0',
    'eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0',
    'usb0\t00000000\t01010A0A\t0002\t0\t0\t1\t00000000\t0\t0\t0',
  ].join('\n');
  t.equal(defaultRouteInterface(routes), 'eth0', 'wired (metric 100) before Wi-Fi (600); a route that is down does not count');
  t.equal(defaultRouteInterface(HEADER + '\neth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n'), undefined, 'no default route');
  t.equal(defaultRouteInterface(''), undefined, 'nothing to read (not Linux)');
  t.equal(defaultRouteInterface('garbage\nmore garbage here\n\t\t\n'), undefined, 'garbage is no route');
});

t.test('private ranges: RFC 1918 and the carrier-NAT range', async (t) => {
  for (const a of ['10.0.0.1', '172.16.0.1', '172.31.255.254', '192.168.1.20', '100.64.0.1']) t.ok(isPrivateIPv4(a), a);
  for (const a of ['172.15.0.1', '172.32.0.1', '192.0.2.2', '8.8.8.8', '100.128.0.1', '1.2.3', 'x.y.z.w', '300.1.1.1']) t.notOk(isPrivateIPv4(a), a);
});

t.test('which address is advertised', async (t) => {
  const pi = { lo: [v4('127.0.0.1', true)], eth0: [v6('fe80::1'), v4('192.168.1.20')], wlan0: [v4('192.168.1.21')] };
  t.equal(chooseAdvertiseAddress(pi, 'eth0'), '192.168.1.20', 'the default route\'s interface, past its IPv6 address');
  t.equal(chooseAdvertiseAddress(pi, 'wlan0'), '192.168.1.21');
  t.equal(chooseAdvertiseAddress({ lo: [v4('127.0.0.1', true)], eth0: [v4('10.0.0.7')] }, undefined), '10.0.0.7', 'no default route: the one private address');
  t.equal(
    chooseAdvertiseAddress({ eth0: [v4('10.0.0.7')], docker0: [v4('203.0.113.9')] }, undefined),
    '10.0.0.7',
    'a private address before a public one',
  );
  t.equal(chooseAdvertiseAddress({ eth0: [v4('203.0.113.9')], lo: [v4('127.0.0.1', true)] }, undefined), '203.0.113.9', 'the only address, public');
  t.equal(chooseAdvertiseAddress({ eth0: [v4('169.254.3.4'), v4('10.1.1.1')] }, 'eth0'), '10.1.1.1', 'link-local addresses are never advertised');
  t.equal(chooseAdvertiseAddress({ eth0: [v6('fd00::2')], wlan0: [v4('10.0.0.9')] }, 'eth0'), '10.0.0.9', 'a default route through an interface without IPv4: the one private address');
  const ambiguous = thrownBy(() => chooseAdvertiseAddress(pi, undefined));
  t.ok(ambiguous instanceof AdvertiseError, 'two private addresses and no default route: an error');
  t.match(ambiguous?.message, /192\.168\.1\.20 \(eth0\), 192\.168\.1\.21 \(wlan0\); give --advertise ADDR/, 'naming both');
  const none = thrownBy(() => chooseAdvertiseAddress({ lo: [v4('127.0.0.1', true)] }, undefined));
  t.ok(none instanceof AdvertiseError, 'loopback only: an error');
  t.match(none?.message, /no network address to advertise/);
  t.ok(thrownBy(() => chooseAdvertiseAddress({}, 'eth0')) instanceof AdvertiseError, 'a default route through an interface that is gone: an error');
});

t.test('isWildcard: the unspecified address however written, and nothing else', async (t) => {
  for (const h of ['', '0.0.0.0', '::', '[::]', '0:0:0:0:0:0:0:0', '0::0', '[0:0::0]']) t.ok(isWildcard(h), `${JSON.stringify(h)} is a wildcard`);
  for (const h of ['127.0.0.1', '::1', '[::1]', '0.0.0.1', 'localhost', 'manager01', '::ffff:127.0.0.1']) t.notOk(isWildcard(h), `${JSON.stringify(h)} is not`);
});
