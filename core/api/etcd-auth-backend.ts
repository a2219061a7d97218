/**
 * etcd's Auth service on a manager, and the check of who is calling for every other request.
 *
 * Changes (users, roles, permissions, enable/disable) go through Raft as KvRequest `auth`
 * entries applied by core/kv's AuthState; reads of it (user get/list, role get/list, status)
 * are linearizable (after a read barrier), as etcd serves them through Raft. Passwords are
 * hashed here, before proposing (core/api/credentials.ts), and checked here at Authenticate,
 * which then issues a signed token (no Raft entry per login).
 *
 * With auth enabled a request needs a valid token (else "user name is empty" when it has none,
 * "invalid auth token" when it is bad or voided); requests that name keys are checked against
 * the user's permissions where they enter and again when applied (core/kv/permissions.ts).
 */
import * as kv from '../kv/index.js';
import { EtcdError } from '../net/etcd/errors.js';
import type * as api from '../net/etcd/service.js';
import { deriveAuthTokenKey, parseToken } from '../net/token.js';
import { etcdErrors } from './etcd-errors.js';
import { AUTH_TOKEN_TTL_SECONDS, AuthTokens, clientAddress, MAX_PASSWORD_BYTES, hashPassword, verifyPassword, type TokenClaims } from './credentials.js';
import type { ManagerNode } from './manager-node.js';

/** Refusals a member that lags behind the cluster may give wrongly (see caughtUp). */
const RETRIED_REFUSALS = new Set<kv.KvErrorCode>(['PERMISSION_DENIED', 'INVALID_AUTH_TOKEN', 'USER_EMPTY']);

const PERM_TYPE: Record<api.PermissionType, number> = { READ: kv.PermType.READ, WRITE: kv.PermType.WRITE, READWRITE: kv.PermType.READWRITE };
const PERM_NAME: Record<number, api.PermissionType> = { 0: 'READ', 1: 'WRITE', 2: 'READWRITE' };

export interface AuthBackendDeps {
  node: ManagerNode;
  header(revision?: number): api.ResponseHeader;
  /** Proposes a request and waits for its outcome (throws the KvError it applied with). */
  replicate(req: kv.KvRequest): Promise<kv.KvResponse>;
}

export class ManagerAuthBackend implements api.EtcdAuthBackend {
  private readonly tokens: AuthTokens;
  private readonly node: ManagerNode;
  /** Token claims of streams already authenticated, by the stream's call context. */
  private readonly verifiedStreams = new WeakMap<api.CallContext, TokenClaims>();

  constructor(private readonly deps: AuthBackendDeps) {
    this.node = deps.node;
    this.tokens = new AuthTokens(deriveAuthTokenKey(parseToken(deps.node.token).secret), deps.node.opts.authTokenTtlSeconds ?? AUTH_TOKEN_TTL_SECONDS);
  }

  private get state(): kv.AuthState {
    return this.node.store.auth;
  }

  /**
   * The calling user when auth is enabled (undefined when it is not). Throws USER_EMPTY without
   * a token, INVALID_AUTH_TOKEN for a forged, expired or voided one. Without a token, a client
   * certificate verified under --client-cert-auth names the user (etcd's AuthInfoFromTLS), who
   * must exist (PERMISSION_DENIED, as etcd's permission check answers).
   */
  caller(ctx: api.CallContext | undefined): string | undefined {
    const state = this.state;
    if (!state.enabled) return undefined;
    const token = ctx?.token;
    if (token === undefined || token === '') {
      const certUser = ctx?.certUser;
      if (certUser === undefined) throw new kv.KvError('USER_EMPTY');
      if (state.user(certUser) === undefined) throw new kv.KvError('PERMISSION_DENIED');
      return certUser;
    }
    // A stream (keep-alive, watch) is authenticated once: its token need not stay fresh for as
    // long as the stream lives (a lease renewed every 20 minutes outlasts any token), but what
    // voids a token (a new password, the user deleted, auth off and on) still ends it.
    const claims = this.verifiedStreams.get(ctx!) ?? this.tokens.verify(token);
    if (claims !== undefined && ctx!.stream === true) this.verifiedStreams.set(ctx!, claims);
    const user = claims === undefined ? undefined : state.user(claims.user);
    if (claims === undefined || user === undefined || claims.revision < user.credentialRevision || claims.revision < state.enabledRevision) {
      throw new kv.KvError('INVALID_AUTH_TOKEN');
    }
    return claims.user;
  }

  /**
   * Runs an auth check; refused, runs it once more after this member has applied everything the
   * leader had committed when asked (a grant, a user, a new password or auth switched off that
   * this member has not applied yet), so a member that lags refuses nothing the cluster allows.
   * What the cluster has taken away is caught the other way: a linearizable read checks after
   * its barrier, a write is checked again when applied (every client entry is, with or without a
   * user), what is never applied checks after a barrier (adminCaughtUp), and a watch holds its
   * events until it is checked again after a barrier (ManagerEtcdBackend.watch).
   */
  async caughtUp<T>(check: () => T): Promise<T> {
    try {
      return check();
    } catch (e) {
      if (!(e instanceof kv.KvError) || !RETRIED_REFUSALS.has(e.code)) throw e;
      await this.node.linearizableBarrier();
      return check();
    }
  }

  /**
   * admin() once this member has applied what the cluster has committed: for what is never
   * checked again at apply (snapshots, membership changes, maintenance), so a member that has
   * not yet applied auth being enabled, or a root role revoked, does not let it through.
   */
  async adminCaughtUp(ctx: api.CallContext | undefined): Promise<string | undefined> {
    try {
      await this.node.linearizableBarrier();
    } catch {
      // No leader (a member left alone after its quorum was lost): its own state decides, as
      // etcd's does, so the data can still be saved (`snapshot save`) for a restore.
    }
    return this.admin(ctx);
  }

  /**
   * A token for forwarding the caller's request to the leader (lease keep-alives): a fresh one
   * for the verified caller, since the client's own may have expired while its stream here
   * lives on (streams are authenticated once), and a new leader checks it afresh. Every member
   * signs with the same key. Undefined when auth is off here.
   */
  forwardingToken(ctx: api.CallContext | undefined): { key: string; token: string } | undefined {
    const user = this.caller(ctx);
    if (user === undefined) return undefined;
    // A certificate's user has no token: the forwarded one is issued at the current revision.
    const token = ctx?.token;
    const claims = this.verifiedStreams.get(ctx!) ?? (token === undefined || token === '' ? undefined : this.tokens.verify(token));
    const revision = claims?.revision ?? this.state.revision;
    return { key: `${user}@${revision}`, token: this.tokens.issue(user, revision) };
  }

  /** The caller, who must hold the root role when auth is enabled. */
  admin(ctx: api.CallContext | undefined): string | undefined {
    const user = this.caller(ctx);
    this.state.checkAdmin(user);
    return user;
  }

  /** Checks a key request's permissions where it enters; returns the user to propose it with. */
  authorize(req: kv.KvRequest, ctx: api.CallContext | undefined): string | undefined {
    const user = this.caller(ctx);
    if (user !== undefined) kv.checkRequestPermission(this.state, user, req, (id) => this.node.store.leaseKeys(id));
    return user;
  }

  private change(req: kv.AuthRequest, ctx: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return etcdErrors(async () => {
      const user = await this.caughtUp(() => this.admin(ctx));
      await this.deps.replicate(kv.clientRequest({ auth: req }, user));
      return { header: this.deps.header() };
    });
  }

  /** A linearizable read of the auth state, for root or for a caller `allowed` lets through. */
  private read<T>(ctx: api.CallContext, allowed: (caller: string) => boolean, fn: (state: kv.AuthState) => T): Promise<T> {
    return etcdErrors(async () => {
      // Caught up first: a revoked role or a changed password must already count.
      await this.node.linearizableBarrier();
      const caller = this.caller(ctx);
      if (caller === undefined || !allowed(caller)) this.state.checkAdmin(caller);
      return fn(this.state);
    });
  }

  authEnable(ctx: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return this.change({ authEnable: {} }, ctx);
  }

  authDisable(ctx: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return this.change({ authDisable: {} }, ctx);
  }

  authStatus(_ctx: api.CallContext): Promise<api.AuthStatusResponse> {
    return etcdErrors(async () => {
      await this.node.linearizableBarrier();
      return { header: this.deps.header(), enabled: this.state.enabled, authRevision: this.state.revision };
    });
  }

  authenticate(name: string, password: string, ctx: api.CallContext): Promise<{ header: api.ResponseHeader; token: string }> {
    return etcdErrors(async () => {
      if (!this.state.enabled) throw new kv.KvError('AUTH_NOT_ENABLED');
      if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) throw new kv.KvError('AUTH_FAILED');
      await this.node.linearizableBarrier();
      const user = this.state.user(name);
      const revision = this.state.revision;
      // The hash is computed even for an unknown user, so the answer's timing does not tell which names exist.
      const ok = await verifyPassword(password, user !== undefined && !user.noPassword ? user.password : DUMMY_HASH, clientAddress(ctx.peer));
      if (user === undefined || user.noPassword || !ok) throw new kv.KvError('AUTH_FAILED');
      return { header: this.deps.header(), token: this.tokens.issue(name, revision) };
    });
  }

  userAdd(name: string, password: string, noPassword: boolean, ctx: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return etcdErrors(async () => {
      await this.caughtUp(() => this.admin(ctx));
      if (name === '') throw new kv.KvError('USER_EMPTY');
      if (this.state.user(name) !== undefined) throw new kv.KvError('USER_ALREADY_EXIST');
      const hash = noPassword ? undefined : await this.hash(password, ctx);
      return this.change({ userAdd: { name, ...(hash ? { password: hash } : {}), noPassword } }, ctx);
    });
  }

  userChangePassword(name: string, password: string, ctx: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return etcdErrors(async () => {
      await this.caughtUp(() => this.admin(ctx));
      if (this.state.user(name) === undefined) throw new kv.KvError('USER_NOT_FOUND');
      return this.change({ userChangePassword: { name, password: await this.hash(password, ctx) } }, ctx);
    });
  }

  private hash(password: string, ctx: api.CallContext): Promise<Buffer> {
    if (password === '') throw new kv.KvError('PASSWORD_EMPTY');
    if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) throw new EtcdError('INVALID_ARGUMENT', `password longer than ${MAX_PASSWORD_BYTES} bytes`);
    return hashPassword(password, clientAddress(ctx.peer));
  }

  userGet(name: string, ctx: api.CallContext): Promise<{ header: api.ResponseHeader; roles: string[] }> {
    // A user may read its own record (etcd's rule), root any.
    return this.read(ctx, (caller) => caller === name, (s) => {
      const u = s.user(name);
      if (u === undefined) throw new kv.KvError('USER_NOT_FOUND');
      return { header: this.deps.header(), roles: [...u.roles] };
    });
  }

  userList(ctx: api.CallContext): Promise<{ header: api.ResponseHeader; users: string[] }> {
    return this.read(ctx, () => false, (s) => ({ header: this.deps.header(), users: s.userNames() }));
  }

  userDelete(name: string, ctx: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return this.change({ userDelete: { name } }, ctx);
  }

  userGrantRole(name: string, role: string, ctx: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return this.change({ userGrantRole: { name, role } }, ctx);
  }

  userRevokeRole(name: string, role: string, ctx: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return this.change({ userRevokeRole: { name, role } }, ctx);
  }

  roleAdd(name: string, ctx: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return this.change({ roleAdd: { name } }, ctx);
  }

  roleGet(name: string, ctx: api.CallContext): Promise<{ header: api.ResponseHeader; perm: api.Permission[] }> {
    // A user may read the roles it holds (etcd's rule), root any.
    return this.read(ctx, (caller) => this.state.user(caller)?.roles.includes(name) === true, (s) => {
      const r = s.role(name);
      // The root role may be granted before it is added (its permissions are implicit), but
      // until added it is not found here, as etcd answers.
      if (r === undefined) throw new kv.KvError('ROLE_NOT_FOUND');
      const perm = r.permissions.map((p) => ({ permType: PERM_NAME[p.permType]!, key: p.key, rangeEnd: p.rangeEnd }));
      return { header: this.deps.header(), perm };
    });
  }

  roleList(ctx: api.CallContext): Promise<{ header: api.ResponseHeader; roles: string[] }> {
    return this.read(ctx, () => false, (s) => ({ header: this.deps.header(), roles: s.roleNames() }));
  }

  roleDelete(name: string, ctx: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return this.change({ roleDelete: { name } }, ctx);
  }

  roleGrantPermission(name: string, perm: api.Permission, ctx: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return this.change({ roleGrantPermission: { name, permType: PERM_TYPE[perm.permType], key: perm.key, rangeEnd: perm.rangeEnd } }, ctx);
  }

  roleRevokePermission(name: string, key: Uint8Array, rangeEnd: Uint8Array, ctx: api.CallContext): Promise<{ header: api.ResponseHeader }> {
    return this.change({ roleRevokePermission: { name, key, rangeEnd } }, ctx);
  }
}

/** A well-formed hash no password matches in practice, for the timing of unknown users. */
const DUMMY_HASH = Buffer.from(`scrypt$14$8$1$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(32).toString('base64')}`);
