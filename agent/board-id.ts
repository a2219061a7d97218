/**
 * Which board (machine) this is, so a manager's data dir can tell it was copied or moved to
 * another one (core/api/manager-node.ts checks it at start; core/net/duplicate-member.ts is the
 * run-time side). On a Raspberry Pi an SD card image taken with the data dir and flashed onto a
 * second board would otherwise start a second process as the same member.
 *
 * PICLOUD_BOARD_ID, when set, is the id (for where the hardware's id does not follow the data
 * dir as it should, e.g. a container that moves between hosts with its volume: give it a name
 * of its own; empty turns the check off). Otherwise, first found: the device-tree serial number
 * (Raspberry Pi and other boards); the `Serial` line of /proc/cpuinfo (the same number, where
 * /sys/firmware is hidden, as in Docker); the DMI product UUID (PCs and VMs, readable by root;
 * a cloned VM gets a new one), unless it is one of the placeholders firmware leaves in place.
 * Never /etc/machine-id or a MAC address: the first is copied with the image, the second
 * changes with a USB network adapter. No id: the check is skipped, never failed.
 */
import { readFileSync } from 'node:fs';

export const BOARD_ID_ENV = 'PICLOUD_BOARD_ID';

export class BoardIdError extends Error {
  readonly code = 'BAD_BOARD_ID';
  constructor(message: string) {
    super(message);
    this.name = 'BoardIdError';
  }
}

export interface BoardIdSources {
  env: Record<string, string | undefined>;
  /** Reads a file's text, or undefined when it is missing or unreadable. */
  read: (path: string) => string | undefined;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

const HOST_SOURCES: BoardIdSources = { env: process.env, read: readText };

/**
 * DMI UUIDs that name no board: firmware left the vendor's placeholder in (many boards share
 * it, and some BIOS updates reset a real one to it). Compared without dashes, lower case.
 */
const PLACEHOLDER_UUIDS = new Set([
  '03000200040005000006000700080009',
  '00020003000400050006000700080009',
  '123456781234567890abcddeefaabbcc',
  'ffffffffffffffffffffffffffffffff',
]);

/** Printable, short, not all zeros: what identity.json holds and messages show. */
function printable(v: string): string | undefined {
  const s = v.replace(/\0/g, '').trim();
  return /^[\x21-\x7e]{1,128}$/.test(s) && !/^[0:-]+$/.test(s) ? s : undefined;
}

/** A serial number, as the device tree and /proc/cpuinfo both name one board. */
function serialId(raw: string | undefined): string | undefined {
  const s = raw === undefined ? undefined : printable(raw);
  return s === undefined ? undefined : `serial:${s.replace(/^0+/, '').toLowerCase()}`;
}

/** This board's id, or undefined when nothing names it (the check is then skipped). */
export function boardId(src: BoardIdSources = HOST_SOURCES): string | undefined {
  const fromEnv = src.env[BOARD_ID_ENV];
  if (fromEnv !== undefined) {
    if (fromEnv.trim() === '') return undefined;
    const v = printable(fromEnv);
    if (v === undefined) {
      throw new BoardIdError(`${BOARD_ID_ENV}: expected 1-128 printable characters without spaces, not only zeros, got ${JSON.stringify(fromEnv.slice(0, 40))}`);
    }
    return `env:${v}`;
  }
  const fromTree = serialId(src.read('/sys/firmware/devicetree/base/serial-number'));
  if (fromTree !== undefined) return fromTree;
  const fromCpuinfo = serialId(/^Serial[ \t]*:[ \t]*(\S+)[ \t]*$/m.exec(src.read('/proc/cpuinfo') ?? '')?.[1]);
  if (fromCpuinfo !== undefined) return fromCpuinfo;
  const dmi = src.read('/sys/class/dmi/id/product_uuid');
  const uuid = dmi === undefined ? undefined : printable(dmi)?.toLowerCase();
  if (uuid !== undefined && !PLACEHOLDER_UUIDS.has(uuid.replace(/-/g, ''))) return `dmi:${uuid}`;
  return undefined;
}
