/**
 * Small non-cryptographic hashes: FNV-1a over bytes (entry identity in the safety checker)
 * and a rolling 32-bit mix of integers (the trace hash that proves two runs identical).
 */

export function fnv1a(bytes: Uint8Array, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Fold one integer (any safe integer; the high part is folded in) into a running hash. */
export function mix(h: number, v: number): number {
  const lo = v | 0;
  const hi = Math.floor(v / 4294967296) | 0;
  h = Math.imul(h ^ lo, 0x9e3779b1);
  h = Math.imul(h ^ (h >>> 15) ^ hi, 0x85ebca77);
  return (h ^ (h >>> 13)) >>> 0;
}

export function mixString(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) h = mix(h, s.charCodeAt(i));
  return h;
}
