/**
 * What decoding a gossip message's CBOR would build, counted before cbor-x builds it. A JS value
 * costs tens of bytes for each CBOR byte of an empty array, so 8 MiB of them (inflated from
 * an 8 KiB frame) took 1.4 s of the event loop and ~340 MB before the push-pull's member limit
 * was looked at; 32 such frames stopped a member for minutes (found by a crash hunt; the sender
 * holds the gossip key). This walk allocates nothing: it reads each item's header and refuses past
 * the limits below. Tags and byte strings, which the gossip protocol never sends, are refused
 * outright: cbor-x gives them meaning (a bignum built a byte at a time, values shared by
 * reference that metadata checks then copy, Error objects), and a review found each of them
 * costing seconds or all the memory from a few kilobytes.
 */
import { GossipDecodeError } from '../errors.js';
import { MAX_MEMBERS, MAX_META_DEPTH } from '../limits.js';

/**
 * Data items in one message: a push-pull of MAX_MEMBERS members with about 200 items of
 * metadata each (a member's tuple is 8). The most a message within these limits makes cbor-x
 * build, measured (test/gossip/inflate-bomb): ~0.4 s and ~70 MB for 2M two-letter strings.
 */
export const MAX_STREAM_ITEMS = 2 ** 21;
/** Maps and lists in one message (the costly items): a member's tuple, its metadata map and 14 more on average. */
export const MAX_STREAM_CONTAINERS = 16 * MAX_MEMBERS;
/** Elements of one array or entries of one map: the push-pull's member list is the longest. */
export const MAX_STREAM_CONTAINER_LENGTH = MAX_MEMBERS;
/**
 * Nesting of items: the message (0), its member list, a member, its metadata map (3), and the
 * values checkMeta allows inside it: containers MAX_META_DEPTH levels deeper, and their scalars.
 */
export const MAX_STREAM_DEPTH = 4 + MAX_META_DEPTH;

const MAJOR_BYTES = 2;
const MAJOR_TEXT = 3;
const MAJOR_ARRAY = 4;
const MAJOR_MAP = 5;
const MAJOR_TAG = 6;
const INDEFINITE = 31;
const BREAK = 0xff;

function notGossip(major: number): never {
  throw new GossipDecodeError('GOSSIP_DECODE_MALFORMED', `bad CBOR: ${major === MAJOR_TAG ? 'a tag' : 'a byte string'}, which gossip never sends`);
}

function oversized(why: string): never {
  throw new GossipDecodeError('GOSSIP_DECODE_OVERSIZED', why);
}

class Walk {
  pos = 0;
  items = 0;
  containers = 0;

  constructor(private readonly buf: Uint8Array) {}

  private byte(): number {
    if (this.pos >= this.buf.length) throw new GossipDecodeError('GOSSIP_DECODE_TRUNCATED', 'truncated CBOR');
    return this.buf[this.pos++]!;
  }

  /** The argument of an item whose initial byte has additional info `ai`. */
  private argument(ai: number): number {
    if (ai < 24) return ai;
    if (ai > 27) throw new GossipDecodeError('GOSSIP_DECODE_MALFORMED', `bad CBOR: reserved additional info ${ai}`);
    let n = 0;
    for (let i = 0; i < 1 << (ai - 24); i++) n = n * 256 + this.byte();
    return n;
  }

  /** Steps over a text string's `n` bytes (their content costs nothing to count). */
  private passOver(n: number): void {
    if (n > this.buf.length - this.pos) throw new GossipDecodeError('GOSSIP_DECODE_TRUNCATED', 'truncated CBOR');
    this.pos += n;
  }

  private length(n: number, what: string): number {
    if (n > MAX_STREAM_CONTAINER_LENGTH) oversized(`CBOR ${what} of ${n} entries, limit ${MAX_STREAM_CONTAINER_LENGTH}`);
    return n;
  }

  item(depth: number): void {
    if (++this.items > MAX_STREAM_ITEMS) oversized(`more than ${MAX_STREAM_ITEMS} CBOR items in one stream message`);
    if (depth > MAX_STREAM_DEPTH) oversized(`CBOR nested deeper than ${MAX_STREAM_DEPTH}`);
    const initial = this.byte();
    const major = initial >> 5;
    const ai = initial & 31;
    if (ai === INDEFINITE) return this.indefinite(major, depth);
    const n = this.argument(ai);
    switch (major) {
      case MAJOR_TEXT:
        return this.passOver(n);
      case MAJOR_BYTES:
      case MAJOR_TAG:
        return notGossip(major);
      case MAJOR_ARRAY:
        this.container();
        for (let i = this.length(n, 'array'); i > 0; i--) this.item(depth + 1);
        return;
      case MAJOR_MAP:
        this.container();
        for (let i = this.length(n, 'map'); i > 0; i--) {
          this.item(depth + 1);
          this.item(depth + 1);
        }
        return;
      default:
        return; // integers, simple values and floats: the argument was the whole item
    }
  }

  private container(): void {
    if (++this.containers > MAX_STREAM_CONTAINERS) oversized(`more than ${MAX_STREAM_CONTAINERS} CBOR maps and lists in one message`);
  }

  private indefinite(major: number, depth: number): void {
    if (major === MAJOR_BYTES || major === MAJOR_TAG) notGossip(major);
    if (major === MAJOR_TEXT) {
      while (this.peekNotBreak()) {
        const chunk = this.byte();
        if (chunk >> 5 !== major || (chunk & 31) === INDEFINITE) throw new GossipDecodeError('GOSSIP_DECODE_MALFORMED', 'bad CBOR: bad chunk in an indefinite string');
        this.passOver(this.argument(chunk & 31));
      }
      return;
    }
    if (major !== MAJOR_ARRAY && major !== MAJOR_MAP) throw new GossipDecodeError('GOSSIP_DECODE_MALFORMED', 'bad CBOR: unexpected break or indefinite length');
    this.container();
    for (let n = 0; this.peekNotBreak(); n++) {
      this.length(n + 1, major === MAJOR_ARRAY ? 'array' : 'map');
      this.item(depth + 1);
      if (major === MAJOR_MAP) this.item(depth + 1);
    }
  }

  /** Consumes a break and returns false, or returns true with nothing consumed. */
  private peekNotBreak(): boolean {
    if (this.pos >= this.buf.length) throw new GossipDecodeError('GOSSIP_DECODE_TRUNCATED', 'truncated CBOR');
    if (this.buf[this.pos] !== BREAK) return true;
    this.pos++;
    return false;
  }
}

/** Throws GossipDecodeError unless the first CBOR item of `buf` stays within the limits above (streams and UDP packets). */
export function checkCborBounds(buf: Uint8Array): void {
  new Walk(buf).item(0);
}
