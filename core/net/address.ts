/** Parses "host:port" addresses as used on the command line and in member records. */

export interface HostPort {
  host: string;
  port: number;
}

export class AddressError extends Error {
  readonly code = 'ERR_BAD_ADDRESS';
  constructor(message: string) {
    super(message);
    this.name = 'AddressError';
  }
}

/**
 * "10.0.0.5:2380", "pi01:2380", "[::1]:2380"; a missing port takes `defaultPort` when given.
 * URLs ("http://10.0.0.5:2380", as etcd's peer URLs) are accepted too.
 */
export function parseHostPort(addr: string, defaultPort?: number): HostPort {
  let s = addr.trim();
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(s);
  if (scheme) s = s.slice(scheme[0].length).replace(/\/.*$/, '');
  let host: string;
  let portText: string | undefined;
  if (s.startsWith('[')) {
    const end = s.indexOf(']');
    if (end < 0) throw new AddressError(`bad address ${JSON.stringify(addr)}: unclosed [`);
    host = s.slice(1, end);
    const rest = s.slice(end + 1);
    if (rest.startsWith(':')) portText = rest.slice(1);
    else if (rest !== '') throw new AddressError(`bad address ${JSON.stringify(addr)}`);
  } else {
    const colon = s.lastIndexOf(':');
    if (colon >= 0 && s.indexOf(':') === colon) {
      host = s.slice(0, colon);
      portText = s.slice(colon + 1);
    } else {
      host = s;
    }
  }
  if (host === '') throw new AddressError(`bad address ${JSON.stringify(addr)}: no host`);
  let port: number;
  if (portText === undefined) {
    if (defaultPort === undefined) throw new AddressError(`bad address ${JSON.stringify(addr)}: no port`);
    port = defaultPort;
  } else {
    port = Number(portText);
    if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535) throw new AddressError(`bad address ${JSON.stringify(addr)}: bad port`);
  }
  return { host, port };
}

export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}
