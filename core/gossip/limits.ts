/**
 * Every size and count limit of the gossip layer, in one place so each has a name, a
 * reason and a test at the limit (test/gossip/limits.test.ts). Decoders, the keyring, the
 * transport and the state machine all read these; nothing else hard-codes a bound.
 */

/** Largest UDP datagram we accept. The sender keeps to `udpBudgetBytes` (1,400 by default,
 * under a 1,500-byte Ethernet MTU); 9,216 leaves room for jumbo frames on a LAN while keeping
 * the work an unauthenticated junk datagram can cause small. */
export const MAX_UDP_PACKET_BYTES = 9_216;

/** Smallest sending budget a config may ask for: a ping with two 128-byte names must fit. */
export const MIN_UDP_BUDGET_BYTES = 512;

/** Bytes the keyring adds to every sealed packet or stream frame: 1 version byte, a 12-byte
 * AES-GCM nonce and a 16-byte authentication tag. */
export const SEAL_OVERHEAD_BYTES = 1 + 12 + 16;

/** TCP stream frames carry a 4-byte big-endian length before the sealed bytes. */
export const STREAM_FRAME_HEADER_BYTES = 4;

/** Largest sealed stream frame (a push-pull of MAX_MEMBERS members with large metadata fits). */
export const MAX_STREAM_FRAME_BYTES = 8 * 1024 * 1024;

/** Node names: enough for FQDNs (Serf uses the same 128-byte bound). */
export const MAX_NAME_BYTES = 128;

/** Host part of an address as text: IPv6 is at most 45 characters. */
export const MAX_HOST_BYTES = 64;

/** Encoded node metadata (memberlist's MetaMaxSize is 512 too). Metadata rides in every
 * alive message, so it must stay small enough to share a 1,400-byte packet with others. */
export const MAX_META_BYTES = 512;

/** Nesting depth of metadata values (objects/arrays inside objects). */
export const MAX_META_DEPTH = 4;

/** Members one node tracks (alive, suspect, and dead/left tombstones). */
export const MAX_MEMBERS = 10_000;

/** Reaped members whose last incarnation is remembered (machine.ts: a replayed alive message
 * must not bring a departed member back). About 150 bytes each, so at most ~1.5 MB; past it the
 * oldest is forgotten. */
export const MAX_REAPED_MEMBERS = MAX_MEMBERS;

/** Messages in one compound UDP packet; the smallest message (an ack) is 3 bytes, so a full
 * 1,400-byte packet stays far below this. */
export const MAX_MESSAGES_PER_PACKET = 256;

/** Broadcasts waiting in the piggyback queue; beyond this the most-retransmitted are dropped
 * (they have already reached most of the cluster). */
export const MAX_BROADCAST_QUEUE = 4_096;

/** Keys in a keyring (one primary + accepted keys during a rotation). */
export const MAX_KEYS = 16;

/** AES-256 key length. */
export const KEY_BYTES = 32;

/** Concurrent inbound TCP streams one node serves; more are refused at accept. */
export const MAX_INBOUND_STREAMS = 32;

/** Of those, at most this many from one remote address (other than the node's own: several
 * nodes of one machine, as in tests and --dev, share it). Honest peers hold one or two at once
 * (a push-pull, a TCP fallback ping, a keyring op); without it one host reconnecting as each
 * connection times out keeps every slot and so every other node's streams refused. */
export const MAX_INBOUND_STREAMS_PER_ADDRESS = 8;

/** Recently seen nonces remembered to drop replayed packets (see keyring/replay.ts). */
export const REPLAY_CACHE_ENTRIES = 16_384;

/** Events buffered per `events()` subscriber before a slow consumer is cancelled. */
export const MAX_EVENT_BUFFER = 4_096;

/** Suspicion timers running at once on one node (one per suspected member). */
export const MAX_SUSPICIONS = MAX_MEMBERS;

/** Ping-req relays one node serves at once; more are ignored (the origin has other helpers). */
export const MAX_RELAYS = 256;

/** Largest incarnation on the wire: the largest integer a JavaScript number holds exactly.
 * (It was 0xffffffff; see MAX_INCARNATION_STEP for why the space must be too large to use up.) */
export const MAX_INCARNATION = Number.MAX_SAFE_INTEGER;

/**
 * How far above the incarnation a node knows of a member (itself included) a message about
 * that member may claim and still be believed. An honest incarnation rises by one per
 * refutation or metadata update, so a jump this large never happens; a key holder's claim of
 * a huge incarnation does. Believed, it made the member refute above the largest incarnation
 * the decoders accept, after which every packet it sent was dropped as malformed: one packet
 * evicted a member for good (its incarnation is persisted across restarts). The bound is taken
 * from what the node knew when the packet (or push-pull) arrived, however many messages about
 * the member it carries, so an attacker needs ~MAX_INCARNATION / MAX_INCARNATION_STEP (2^37)
 * packets to use the space up. (A name never heard of is believed at any incarnation: bounding
 * it let a key holder push a member, by one refuted claim, above what every later joiner takes.)
 */
export const MAX_INCARNATION_STEP = 65_536;


/** How far above a member's keyring version (Keyring.version) a keyring change may be and
 * still be taken. Honest versions rise by one per change; a key holder's change at the largest
 * version would leave every later change unencodable (stale for ever). */
export const MAX_KEYRING_VERSION_STEP = 65_536;

/** Wire protocol version carried in alive messages and push-pull entries. */
export const PROTOCOL_VERSION = 1;
