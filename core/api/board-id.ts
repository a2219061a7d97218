/**
 * Which board (machine) this is, so a data dir can tell it was copied or moved to another one.
 * A manager's data dir records the board it was made on; on a Raspberry Pi an SD card image
 * taken with the data dir and flashed onto a second board would otherwise start a second
 * process as the same member (see core/net/duplicate-member.ts for the runtime side).
 *
 * Sources, first found wins: PICLOUD_BOARD_ID (set it where the hardware says nothing useful,
 * e.g. a container that moves between hosts with its volume; empty turns the check off); the
 * device-tree serial number (Raspberry Pi and other boards); the `Serial` line of /proc/cpuinfo
 * (older Pi kernels; the same number, so both name a Pi alike); the DMI product UUID (PCs and
 * VMs, readable by root; a cloned VM gets a new one). Never /etc/machine-id or a MAC address:
 * the first is copied with the image, the second changes with a USB network adapter.
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

/** Printable and short: what identity.json holds and messages show. */
function clean(v: string): string | undefined {
  const s = v.replace(/\0/g, '').trim();
  return /^[\x21-\x7e]{1,128}$/.test(s) && !/^0+$/.test(s.replace(/[-:]/g, '')) ? s : undefined;
}

/** This board's id, or undefined when nothing names it (the check is then skipped). */
export function boardId(src: BoardIdSources = HOST_SOURCES): string | undefined {
  const fromEnv = src.env[BOARD_ID_ENV];
  if (fromEnv !== undefined) {
    if (fromEnv.trim() === '') return undefined;
    const v = clean(fromEnv);
    if (v === undefined) throw new BoardIdError(`${BOARD_ID_ENV}: expected 1-128 printable characters without spaces, got ${JSON.stringify(fromEnv.slice(0, 40))}`);
    return `env:${v}`;
  }
  const dt = src.read('/sys/firmware/devicetree/base/serial-number');
  const serial = dt !== undefined ? clean(dt) : undefined;
  if (serial !== undefined) return `serial:${serial.replace(/^0+(?=.)/, '').toLowerCase()}`;
  const cpu = /^Serial\s*:\s*(\S+)\s*$/m.exec(src.read('/proc/cpuinfo') ?? '')?.[1];
  const cpuSerial = cpu !== undefined ? clean(cpu) : undefined;
  if (cpuSerial !== undefined) return `serial:${cpuSerial.replace(/^0+(?=.)/, '').toLowerCase()}`;
  const dmi = src.read('/sys/class/dmi/id/product_uuid');
  const uuid = dmi !== undefined ? clean(dmi) : undefined;
  if (uuid !== undefined) return `dmi:${uuid.toLowerCase()}`;
  return undefined;
}
