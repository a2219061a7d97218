/** crc-32's CRC-32C (Castagnoli) module, which its package types do not cover. */
declare module 'crc-32/crc32c.js' {
  const CRC32C: {
    /** The checksum of `data` (from `seed`), as a signed 32-bit integer. */
    buf(data: Uint8Array, seed?: number): number;
  };
  export = CRC32C;
}
