/** The part of hpack.js (no bundled types) that client-port-listener.ts uses. */
declare module 'hpack.js' {
  interface DecodedHeader {
    name: string;
    value: string;
    neverIndex: boolean;
  }
  interface Decompressor {
    write(chunk: Buffer): boolean;
    /** Decodes what was written; a decoding error is emitted as 'error'. */
    execute(): void;
    read(): DecodedHeader | null;
    on(event: 'error', fn: (err: Error) => void): this;
  }
  const hpack: {
    decompressor: { create(options: { table: { maxSize: number } }): Decompressor };
  };
  export default hpack;
}
