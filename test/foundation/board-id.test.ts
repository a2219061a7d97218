// Which board this is (agent/board-id.ts), from each source a machine may have, read
// through an injected file reader: what a Pi, an older Pi kernel, a PC and a bare container say.
import t from 'tap';
import { BOARD_ID_ENV, boardId } from '../../agent/board-id.js';

const files = (m: Record<string, string>) => (p: string): string | undefined => m[p];
const DT = '/sys/firmware/devicetree/base/serial-number';
const CPUINFO = '/proc/cpuinfo';
const DMI = '/sys/class/dmi/id/product_uuid';

t.test('a Raspberry Pi: the device-tree serial, named alike from /proc/cpuinfo on older kernels', async (t) => {
  t.equal(boardId({ env: {}, read: files({ [DT]: '10000000ABCDEF12\0', [DMI]: 'x' }) }), 'serial:10000000abcdef12', 'NUL-terminated, upper case');
  const cpuinfo = 'processor\t: 0\nHardware\t: BCM2835\nRevision\t: c03111\nSerial\t\t: 10000000abcdef12\nModel\t\t: Raspberry Pi 4\n';
  t.equal(boardId({ env: {}, read: files({ [CPUINFO]: cpuinfo }) }), 'serial:10000000abcdef12', 'the same board, the same id');
  t.equal(boardId({ env: {}, read: files({ [DT]: '0000000000000000\0', [DMI]: 'F00D-1\n' }) }), 'dmi:f00d-1', 'an all-zero serial says nothing: the next source');
  t.equal(boardId({ env: {}, read: files({ [DT]: '00000000abcdef12\0' }) }), 'serial:abcdef12', 'leading zeros dropped');
  t.equal(boardId({ env: {}, read: files({ [CPUINFO]: 'Serial\t\t: 00000000ABCDEF12\n' }) }), 'serial:abcdef12', 'and the same from /proc/cpuinfo');
  t.equal(boardId({ env: {}, read: files({ [CPUINFO]: 'Serial\t\t:\nModel\t\t: Raspberry Pi 4\n' }) }), undefined, 'an empty Serial line names nothing (not the next line)');
});

t.test('a PC or VM: the DMI product UUID; nothing readable: no id (the check is skipped)', async (t) => {
  t.equal(boardId({ env: {}, read: files({ [DMI]: '4C4C4544-0042-3510-8052-B4C04F4E4B32\n' }) }), 'dmi:4c4c4544-0042-3510-8052-b4c04f4e4b32');
  t.equal(boardId({ env: {}, read: files({ [DMI]: '00000000-0000-0000-0000-000000000000\n' }) }), undefined, 'an unset UUID');
  for (const placeholder of ['03000200-0400-0500-0006-000700080009', '00020003-0004-0005-0006-000700080009', '12345678-1234-5678-90AB-CDDEEFAABBCC', 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF']) {
    t.equal(boardId({ env: {}, read: files({ [DMI]: `${placeholder}\n` }) }), undefined, `a firmware placeholder shared by many boards (${placeholder})`);
  }
  t.equal(boardId({ env: {}, read: files({}) }), undefined);
  t.equal(boardId({ env: {}, read: files({ [DMI]: 'two words\n' }) }), undefined, 'not an id');
});

t.test(`${BOARD_ID_ENV} overrides; empty turns the check off; garbage is an error that names it`, async (t) => {
  const hw = files({ [DT]: '10000000abcdef12\0' });
  t.equal(boardId({ env: { [BOARD_ID_ENV]: 'pod-manager-0' }, read: hw }), 'env:pod-manager-0');
  t.equal(boardId({ env: { [BOARD_ID_ENV]: '' }, read: hw }), undefined);
  t.throws(() => boardId({ env: { [BOARD_ID_ENV]: 'has space' }, read: hw }), { code: 'BAD_BOARD_ID', message: new RegExp(BOARD_ID_ENV) });
  t.throws(() => boardId({ env: { [BOARD_ID_ENV]: '0000' }, read: hw }), { code: 'BAD_BOARD_ID', message: /not only zeros/ });
});
