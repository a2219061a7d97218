/**
 * The pre-shared-key handshake that opens every peer and join connection (see README.md):
 *
 *   client -> server  ClientHello  { version, client_nonce, purpose, node_id, advertise, instance_id, uptime_ms }
 *   server -> client  ServerHello  { version, server_nonce, server_proof, node_id }
 *   client -> server  ClientFinish { client_proof }
 *
 *   transcript   = SHA-256(ClientHello bytes || u32be(version) || server_nonce || u64be(server node_id))
 *   server_proof = HMAC-SHA256(peerKey, "picloud server proof" || transcript)
 *   client_proof = HMAC-SHA256(peerKey, "picloud client proof" || transcript)
 *   session keys = HKDF-SHA256(peerKey, salt = transcript, info = "... c2s" / "... s2c")
 *
 * The server proves itself first, so a client never sends anything that depends on the key to
 * an impostor; neither side ever sends the key. Fresh nonces on both sides make a recorded
 * handshake useless; distinct labels stop a proof being reflected. This module holds the pure
 * parts (codecs, proofs, key derivation) and the socket glue that runs them with a deadline.
 */
import { createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import type protobuf from 'protobufjs';
import { NetError } from './errors.js';
import { parseHostPort } from './address.js';
import { FrameDecoder, MAX_FRAME_BYTES, encodeFrame } from './frame.js';
import { peerType } from './proto-files.js';
import { SecureChannel, type SessionKeys } from './secure-channel.js';

/** 2: the ClientHello says where the dialer is reached, the ServerHello which member answers. */
export const HANDSHAKE_VERSION = 2;
export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
/** Handshake frames are small; anything bigger is an attack or garbage. */
export const MAX_HANDSHAKE_FRAME_BYTES = 512;
/** A host name (253) and a port, with room to spare. */
export const MAX_ADVERTISED_ADDRESS_CHARS = 300;
/** Whole handshake, from connect to the last proof. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;

export enum Purpose {
  Raft = 1,
  Join = 2,
}

export interface ClientHello {
  version: number;
  clientNonce: Uint8Array;
  purpose: Purpose;
  /** The dialing node's Raft id (Raft purpose), 0 otherwise. */
  nodeId: number;
  /**
   * Raft purpose: host:port where the dialer's own peer port is reached now, '' if not said.
   * Inside the transcript, so as authenticated as the node id: a member whose address changed
   * (a new DHCP lease) is reached at the new one by everyone it dials.
   */
  advertise: string;
  /**
   * Raft purpose: the dialing process's random instance id and its uptime in ms (0: not said),
   * so two processes under one node id are found (duplicate-member.ts). New fields of version
   * 2: an older receiver ignores them, an older dialer sends none and is not judged.
   */
  instanceId: number;
  uptimeMs: number;
}

export interface ServerHello {
  version: number;
  serverNonce: Uint8Array;
  serverProof: Uint8Array;
  /** The server's Raft id (Raft purpose), 0 otherwise. */
  nodeId: number;
}

const SERVER_LABEL = Buffer.from('picloud server proof');
const CLIENT_LABEL = Buffer.from('picloud client proof');
const C2S_INFO = 'picloud session c2s v1';
const S2C_INFO = 'picloud session s2c v1';

let types: { hello: protobuf.Type; server: protobuf.Type; finish: protobuf.Type; reject: protobuf.Type } | undefined;
function t(): NonNullable<typeof types> {
  types ??= {
    hello: peerType('picloud.peer.ClientHello'),
    server: peerType('picloud.peer.ServerHello'),
    finish: peerType('picloud.peer.ClientFinish'),
    reject: peerType('picloud.peer.HandshakeReject'),
  };
  return types;
}

function decode(type: protobuf.Type, data: Uint8Array, what: string): Record<string, unknown> {
  try {
    return type.decode(data) as unknown as Record<string, unknown>;
  } catch (err) {
    throw new NetError('ERR_DECODE', `malformed ${what}: ${(err as Error).message}`, { cause: err });
  }
}

function fixedBytes(v: unknown, n: number, what: string): Uint8Array {
  if (!(v instanceof Uint8Array) || v.length !== n) throw new NetError('ERR_INVALID_MESSAGE', `${what} must be ${n} bytes`);
  return v;
}

function u32(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new NetError('ERR_INVALID_MESSAGE', `bad ${what}`);
  return v;
}

function u53(v: unknown, what: string): number {
  if (typeof v === 'number') return u32(v, what);
  if (v !== null && typeof v === 'object' && 'high' in v && 'low' in v) {
    const { high, low } = v as { high: number; low: number };
    if (high >>> 0 >= 0x200000) throw new NetError('ERR_INVALID_MESSAGE', `${what} above 2^53`);
    return (high >>> 0) * 0x1_0000_0000 + (low >>> 0);
  }
  throw new NetError('ERR_INVALID_MESSAGE', `bad ${what}`);
}

// ---------------------------------------------------------------- codecs

export function encodeClientHello(h: ClientHello): Uint8Array {
  return t()
    .hello.encode({ version: h.version, clientNonce: h.clientNonce, purpose: h.purpose, nodeId: h.nodeId, advertise: h.advertise, instanceId: h.instanceId, uptimeMs: h.uptimeMs })
    .finish();
}

/** Decodes and checks a ClientHello. The version is returned as sent (the caller compares it). */
export function decodeClientHello(data: Uint8Array): ClientHello {
  const o = decode(t().hello, data, 'ClientHello');
  const purpose = o.purpose;
  if (purpose !== Purpose.Raft && purpose !== Purpose.Join) throw new NetError('ERR_INVALID_MESSAGE', `unknown purpose ${String(purpose)}`);
  return {
    version: u32(o.version, 'version'),
    clientNonce: fixedBytes(o.clientNonce, NONCE_BYTES, 'client nonce'),
    purpose,
    nodeId: u53(o.nodeId, 'node id'),
    advertise: advertisedAddress(o.advertise),
    instanceId: u53(o.instanceId ?? 0, 'instance id'),
    uptimeMs: u53(o.uptimeMs ?? 0, 'uptime'),
  };
}

function advertisedAddress(v: unknown): string {
  if (v === undefined || v === null || v === '') return '';
  if (typeof v !== 'string' || v.length > MAX_ADVERTISED_ADDRESS_CHARS) throw new NetError('ERR_INVALID_MESSAGE', 'bad advertised address');
  try {
    parseHostPort(v);
  } catch {
    throw new NetError('ERR_INVALID_MESSAGE', `advertised address ${JSON.stringify(v.slice(0, 80))} is not host:port`);
  }
  return v;
}

export function encodeServerHello(h: ServerHello): Uint8Array {
  return t().server.encode({ version: h.version, serverNonce: h.serverNonce, serverProof: h.serverProof, nodeId: h.nodeId }).finish();
}

export function decodeServerHello(data: Uint8Array): ServerHello {
  const o = decode(t().server, data, 'ServerHello');
  return {
    version: u32(o.version, 'version'),
    serverNonce: fixedBytes(o.serverNonce, NONCE_BYTES, 'server nonce'),
    serverProof: fixedBytes(o.serverProof, PROOF_BYTES, 'server proof'),
    nodeId: u53(o.nodeId, 'node id'),
  };
}

export function encodeClientFinish(proof: Uint8Array): Uint8Array {
  return t().finish.encode({ clientProof: proof }).finish();
}

export function decodeClientFinish(data: Uint8Array): Uint8Array {
  return fixedBytes(decode(t().finish, data, 'ClientFinish').clientProof, PROOF_BYTES, 'client proof');
}

export function encodeHandshakeReject(reason: string): Uint8Array {
  return t().reject.encode({ reason: reason.slice(0, 128) }).finish();
}

// ---------------------------------------------------------------- proofs and keys

export function transcriptHash(clientHelloBytes: Uint8Array, version: number, serverNonce: Uint8Array, serverNodeId = 0): Buffer {
  const v = Buffer.allocUnsafe(12);
  v.writeUInt32BE(version, 0);
  const id = Buffer.allocUnsafe(8);
  id.writeBigUInt64BE(BigInt(serverNodeId), 0);
  return createHash('sha256').update(clientHelloBytes).update(v.subarray(0, 4)).update(serverNonce).update(id).digest();
}

export function serverProof(peerKey: Uint8Array, transcript: Uint8Array): Buffer {
  return createHmac('sha256', peerKey).update(SERVER_LABEL).update(transcript).digest();
}

export function clientProof(peerKey: Uint8Array, transcript: Uint8Array): Buffer {
  return createHmac('sha256', peerKey).update(CLIENT_LABEL).update(transcript).digest();
}

export function sessionKeys(peerKey: Uint8Array, transcript: Uint8Array, role: 'client' | 'server'): SessionKeys {
  const c2s = Buffer.from(hkdfSync('sha256', peerKey, transcript, C2S_INFO, 32));
  const s2c = Buffer.from(hkdfSync('sha256', peerKey, transcript, S2C_INFO, 32));
  return role === 'client' ? { sendKey: c2s, recvKey: s2c } : { sendKey: s2c, recvKey: c2s };
}

function proofsEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

// ---------------------------------------------------------------- socket glue

/** Reads handshake frames from a socket until the caller hands the socket to a SecureChannel. */
class HandshakeReader {
  readonly decoder = new FrameDecoder(MAX_HANDSHAKE_FRAME_BYTES);
  private waiter: { resolve: (f: Buffer) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  private readonly onData = (d: Buffer): void => {
    this.decoder.append(d);
    this.pump();
  };
  private readonly onEnd = (): void => this.fail(new NetError('ERR_CONNECTION_CLOSED', 'connection closed during the handshake'));
  private readonly onError = (err: Error): void => this.fail(new NetError('ERR_CONNECTION_CLOSED', `connection failed during the handshake: ${err.message}`, { cause: err }));

  constructor(private readonly socket: Socket) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  next(): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.pump();
    });
  }

  private pump(): void {
    if (this.waiter === undefined) return;
    let f: Buffer | null;
    try {
      f = this.decoder.next();
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    if (f !== null) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(f);
    }
  }

  fail(err: Error): void {
    this.failure ??= err;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(this.failure);
  }

  /** Stops listening; the decoder keeps any bytes that arrived after the last handshake frame. */
  detach(): FrameDecoder {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    return this.decoder;
  }
}

async function withDeadline<T>(socket: Socket, reader: HandshakeReader, timeoutMs: number, body: () => Promise<T>): Promise<T> {
  const timer = setTimeout(() => reader.fail(new NetError('ERR_HANDSHAKE_TIMEOUT', `handshake not done in ${timeoutMs} ms`)), timeoutMs);
  try {
    return await body();
  } catch (err) {
    reader.detach();
    socket.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

export interface ClientHandshakeOptions {
  peerKey: Uint8Array;
  purpose: Purpose;
  nodeId?: number;
  /** Raft purpose: host:port of this node's peer port as others should reach it. */
  advertise?: string;
  /** Raft purpose: the member we mean to reach; a server that names another is refused (ERR_WRONG_PEER). */
  expectNodeId?: number;
  /** Raft purpose: this process's instance id, and its uptime in ms when the hello is sent. */
  instanceId?: number;
  uptimeMs?: () => number;
  timeoutMs?: number;
  maxFrameBytes?: number;
}

/** Runs the client side on a connected socket; resolves with the sealed channel. */
export function clientHandshake(socket: Socket, opts: ClientHandshakeOptions): Promise<SecureChannel> {
  const reader = new HandshakeReader(socket);
  return withDeadline(socket, reader, opts.timeoutMs ?? HANDSHAKE_TIMEOUT_MS, async () => {
    const helloBytes = encodeClientHello({
      version: HANDSHAKE_VERSION,
      clientNonce: randomBytes(NONCE_BYTES),
      purpose: opts.purpose,
      nodeId: opts.nodeId ?? 0,
      advertise: opts.advertise ?? '',
      instanceId: opts.instanceId ?? 0,
      uptimeMs: opts.uptimeMs === undefined ? 0 : Math.max(0, Math.floor(opts.uptimeMs())),
    });
    socket.write(encodeFrame(helloBytes));
    const sh = decodeServerHello(await reader.next());
    if (sh.version !== HANDSHAKE_VERSION) {
      throw new NetError('ERR_VERSION', `server speaks handshake version ${sh.version}, this node ${HANDSHAKE_VERSION}`);
    }
    const transcript = transcriptHash(helloBytes, sh.version, sh.serverNonce, sh.nodeId);
    if (!proofsEqual(serverProof(opts.peerKey, transcript), sh.serverProof)) {
      throw new NetError('ERR_AUTH_FAILED', 'the server does not hold this cluster\'s secret (wrong token or wrong address)');
    }
    if (opts.expectNodeId !== undefined && sh.nodeId !== 0 && sh.nodeId !== opts.expectNodeId) {
      throw new NetError('ERR_WRONG_PEER', `member ${sh.nodeId.toString(16)} answers at this address, not ${opts.expectNodeId.toString(16)}`);
    }
    socket.write(encodeFrame(encodeClientFinish(clientProof(opts.peerKey, transcript))));
    const decoder = reader.detach();
    return new SecureChannel(socket, decoder, sessionKeys(opts.peerKey, transcript, 'client'), opts.maxFrameBytes ?? MAX_FRAME_BYTES);
  });
}

export interface ServerHandshakeOptions {
  peerKey: Uint8Array;
  purposes: readonly Purpose[];
  /** This node's Raft id, told to Raft dialers (0 or absent: not said). */
  nodeId?: number;
  timeoutMs?: number;
  maxFrameBytes?: number;
}

/** Runs the server side on an accepted socket; resolves with the channel and what the client said. */
export function serverHandshake(socket: Socket, opts: ServerHandshakeOptions): Promise<{ channel: SecureChannel; hello: ClientHello }> {
  const reader = new HandshakeReader(socket);
  return withDeadline(socket, reader, opts.timeoutMs ?? HANDSHAKE_TIMEOUT_MS, async () => {
    const helloBytes = await reader.next();
    const hello = decodeClientHello(helloBytes);
    if (hello.version !== HANDSHAKE_VERSION) {
      socket.write(encodeFrame(encodeHandshakeReject(`handshake version ${hello.version} not supported; this node speaks ${HANDSHAKE_VERSION}`)));
      throw new NetError('ERR_VERSION', `client speaks handshake version ${hello.version}`);
    }
    if (!opts.purposes.includes(hello.purpose)) {
      throw new NetError('ERR_INVALID_MESSAGE', `purpose ${hello.purpose} not served on this port`);
    }
    const serverNonce = randomBytes(NONCE_BYTES);
    const nodeId = hello.purpose === Purpose.Raft ? (opts.nodeId ?? 0) : 0;
    const transcript = transcriptHash(helloBytes, HANDSHAKE_VERSION, serverNonce, nodeId);
    socket.write(
      encodeFrame(encodeServerHello({ version: HANDSHAKE_VERSION, serverNonce, serverProof: serverProof(opts.peerKey, transcript), nodeId })),
    );
    const proof = decodeClientFinish(await reader.next());
    if (!proofsEqual(clientProof(opts.peerKey, transcript), proof)) {
      throw new NetError('ERR_AUTH_FAILED', 'client does not hold the cluster secret');
    }
    const decoder = reader.detach();
    const channel = new SecureChannel(socket, decoder, sessionKeys(opts.peerKey, transcript, 'server'), opts.maxFrameBytes ?? MAX_FRAME_BYTES);
    return { channel, hello };
  });
}
