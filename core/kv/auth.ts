/**
 * etcd's authentication state (users, roles, key permissions, the "enabled" switch) as a
 * replicated state machine: changed only by committed AuthRequests, so every member holds the
 * same users and roles and decides a permission the same way (a write's permission is checked
 * again when it is applied, against the state at that point of the log, as etcd does).
 *
 * Passwords arrive here already hashed (the member a request enters hashes it: no password is
 * ever in the Raft log); tokens are not state (core/api/auth-tokens.ts): a token names a user and
 * the auth revision it was issued at, and is good while `credentialRevision` of the user and
 * `enabledRevision` are not newer, so changing a password, deleting a user or switching auth off
 * invalidates the tokens issued before.
 *
 * Semantics follow etcd 3.4 (auth/store.go): "root" must exist with the root role before auth
 * is enabled; a user with the root role may do everything; while auth is enabled, user root
 * cannot be deleted, nor lose the root role, and the root role cannot be deleted. Permissions
 * are READ, WRITE or READWRITE on a key, a range [key, rangeEnd) or every key from key
 * (rangeEnd "\0"); a request is allowed when the union of its user's permissions covers its
 * whole range.
 */
import { KvError } from './errors.js';
import { keyString } from './keys.js';

export const PermType = { READ: 0, WRITE: 1, READWRITE: 2 } as const;
export const ROOT_USER = 'root';
export const ROOT_ROLE = 'root';

export interface KeyPermission {
  permType: number;
  key: Uint8Array;
  /** Empty: the single key. [0]: every key >= key. Otherwise the end of [key, rangeEnd). */
  rangeEnd: Uint8Array;
}

export interface AuthUser {
  name: string;
  /** The password's hash (core/api/passwords.ts); empty for a user added with no password. */
  password: Uint8Array;
  noPassword: boolean;
  /** Sorted role names. */
  roles: string[];
  /** The auth revision of the user's creation or last password change: older tokens are void. */
  credentialRevision: number;
}

export interface AuthRole {
  name: string;
  /** Sorted by key, those of one key in the order granted; a (key, rangeEnd) may be held twice, as etcd may. */
  permissions: KeyPermission[];
}

/** A change of the auth state; one field set. Names are etcd's request fields, simplified. */
export type AuthRequest =
  | { authEnable: Record<string, never> }
  | { authDisable: Record<string, never> }
  | { userAdd: { name: string; password?: Uint8Array; noPassword?: boolean } }
  | { userDelete: { name: string } }
  | { userChangePassword: { name: string; password?: Uint8Array } }
  | { userGrantRole: { name: string; role: string } }
  | { userRevokeRole: { name: string; role: string } }
  | { roleAdd: { name: string } }
  | { roleDelete: { name: string } }
  | { roleGrantPermission: { name: string; permType?: number; key?: Uint8Array; rangeEnd?: Uint8Array } }
  | { roleRevokePermission: { name: string; key?: Uint8Array; rangeEnd?: Uint8Array } };

export interface AuthResponse {
  /** The auth revision after the request. */
  authRevision: number;
}

/** A half-open interval of binary-string keys; end '' = unbounded. */
interface Interval {
  start: string;
  end: string;
}

const EMPTY = new Uint8Array(0);

/** The interval a key and etcd range end name: a single key k is [k, k+"\0"). */
function intervalOf(key: Uint8Array, rangeEnd: Uint8Array | undefined): Interval {
  const start = keyString(key);
  if (rangeEnd === undefined || rangeEnd.byteLength === 0) return { start, end: start + '\0' };
  if (rangeEnd.byteLength === 1 && rangeEnd[0] === 0) return { start, end: '' };
  return { start, end: keyString(rangeEnd) };
}

function endBefore(a: string, b: string): boolean {
  return a !== '' && (b === '' || a < b);
}

/** Sorted, merged intervals (overlapping or touching ones joined). */
function merge(list: Interval[]): Interval[] {
  const sorted = list.filter((i) => i.end === '' || i.start < i.end).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: Interval[] = [];
  for (const i of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && (last.end === '' || i.start <= last.end)) {
      if (endBefore(last.end, i.end)) last.end = i.end;
    } else {
      out.push({ ...i });
    }
  }
  return out;
}

/** Does one of the merged intervals hold all of `want`? */
function covers(merged: readonly Interval[], want: Interval): boolean {
  // The last interval starting at or before want.start is the only candidate.
  let lo = 0;
  let hi = merged.length - 1;
  let at = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (merged[mid]!.start <= want.start) {
      at = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  if (at < 0) return false;
  const m = merged[at]!;
  return m.end === '' || (want.end !== '' && want.end <= m.end);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

/**
 * A role's permissions are ordered as etcd orders them (permSlice): by key alone, those of one key
 * in the order granted (a stable sort; etcd's sort.Sort keeps that order up to 12 permissions).
 */
function cmpPermissionKey(a: KeyPermission, b: KeyPermission): number {
  return Buffer.compare(a.key, b.key);
}

/**
 * A name from a request as the log holds it: its canonical form (codec.ts) leaves an empty
 * string out, so '' comes back as undefined and must be read as '' (not as a role "undefined").
 */
function text(s: string | undefined): string {
  return s ?? '';
}

function copy(b: Uint8Array | undefined): Uint8Array {
  return b === undefined || b.byteLength === 0 ? EMPTY : Uint8Array.from(b);
}

function insertSorted(list: string[], name: string): void {
  let i = 0;
  while (i < list.length && list[i]! < name) i++;
  list.splice(i, 0, name);
}

export class AuthState {
  private _enabled = false;
  private _revision = 0;
  /** The auth revision of the last enable: tokens issued before it are void. */
  private _enabledRevision = 0;
  private readonly users = new Map<string, AuthUser>();
  private readonly roles = new Map<string, AuthRole>();
  /** Merged read/write intervals per user, for the revision they were computed at. */
  private cache = new Map<string, { read: Interval[]; write: Interval[] }>();
  private cacheRevision = -1;

  get enabled(): boolean {
    return this._enabled;
  }

  get revision(): number {
    return this._revision;
  }

  get enabledRevision(): number {
    return this._enabledRevision;
  }

  user(name: string): AuthUser | undefined {
    return this.users.get(name);
  }

  role(name: string): AuthRole | undefined {
    return this.roles.get(name);
  }

  userNames(): string[] {
    return [...this.users.keys()].sort();
  }

  roleNames(): string[] {
    return [...this.roles.keys()].sort();
  }

  // ---------------------------------------------------------------- checks

  isAdmin(user: string): boolean {
    return this.users.get(user)?.roles.includes(ROOT_ROLE) === true;
  }

  /**
   * May `user` read (or write) every key of [key, rangeEnd) (etcd's range convention)? Throws
   * KvError PERMISSION_DENIED when not, USER_EMPTY for no user; does nothing when auth is off.
   */
  checkKeys(user: string | undefined, write: boolean, key: Uint8Array, rangeEnd?: Uint8Array): void {
    if (!this._enabled) return;
    if (user === undefined || user === '') throw new KvError('USER_EMPTY');
    if (this.isAdmin(user)) return;
    const want = intervalOf(key, rangeEnd);
    const perms = this.permissionsOf(user);
    // An empty or inverted range is refused: it names no key to allow (etcd 3.4.23 lets a
    // user's inverted range through to its other checks; stricter here, README).
    const empty = want.end !== '' && want.end <= want.start;
    if (empty || perms === undefined || !covers(write ? perms.write : perms.read, want)) throw new KvError('PERMISSION_DENIED');
  }

  /** Only users with the root role (auth management, compaction, cluster changes, snapshots). */
  checkAdmin(user: string | undefined): void {
    if (!this._enabled) return;
    if (user === undefined || user === '') throw new KvError('USER_EMPTY');
    if (!this.isAdmin(user)) throw new KvError('PERMISSION_DENIED');
  }

  private permissionsOf(user: string): { read: Interval[]; write: Interval[] } | undefined {
    if (this.cacheRevision !== this._revision) {
      this.cache = new Map();
      this.cacheRevision = this._revision;
    }
    let p = this.cache.get(user);
    if (p === undefined) {
      const u = this.users.get(user);
      if (u === undefined) return undefined;
      const read: Interval[] = [];
      const write: Interval[] = [];
      for (const r of u.roles) {
        for (const perm of this.roles.get(r)?.permissions ?? []) {
          const i = intervalOf(perm.key, perm.rangeEnd);
          if (perm.permType !== PermType.WRITE) read.push(i);
          if (perm.permType !== PermType.READ) write.push(i);
        }
      }
      p = { read: merge(read), write: merge(write) };
      this.cache.set(user, p);
    }
    return p;
  }

  // ---------------------------------------------------------------- changes

  /** Applies a committed change. Throws KvError before changing anything when it is refused. */
  apply(req: AuthRequest): AuthResponse {
    if ('authEnable' in req) this.enable();
    else if ('authDisable' in req) this.disable();
    else if ('userAdd' in req) this.userAdd(text(req.userAdd.name), req.userAdd.password, req.userAdd.noPassword === true);
    else if ('userDelete' in req) this.userDelete(text(req.userDelete.name));
    else if ('userChangePassword' in req) this.userChangePassword(text(req.userChangePassword.name), req.userChangePassword.password);
    else if ('userGrantRole' in req) this.userGrantRole(text(req.userGrantRole.name), text(req.userGrantRole.role));
    else if ('userRevokeRole' in req) this.userRevokeRole(text(req.userRevokeRole.name), text(req.userRevokeRole.role));
    else if ('roleAdd' in req) this.roleAdd(text(req.roleAdd.name));
    else if ('roleDelete' in req) this.roleDelete(text(req.roleDelete.name));
    else if ('roleGrantPermission' in req) {
      const g = req.roleGrantPermission;
      this.roleGrantPermission(text(g.name), { permType: g.permType ?? PermType.READ, key: copy(g.key), rangeEnd: copy(g.rangeEnd) });
    } else if ('roleRevokePermission' in req) {
      const r = req.roleRevokePermission;
      this.roleRevokePermission(text(r.name), r.key ?? EMPTY, r.rangeEnd ?? EMPTY);
    } else throw new KvError('MALFORMED_REQUEST', 'unknown auth request');
    return { authRevision: this._revision };
  }

  private bump(): void {
    this._revision++;
  }

  private enable(): void {
    if (this._enabled) return;
    const root = this.users.get(ROOT_USER);
    if (root === undefined) throw new KvError('ROOT_USER_NOT_EXIST');
    if (!root.roles.includes(ROOT_ROLE)) throw new KvError('ROOT_ROLE_NOT_EXIST');
    this._enabled = true;
    this.bump();
    this._enabledRevision = this._revision;
  }

  private disable(): void {
    if (!this._enabled) return;
    this._enabled = false;
    this.bump();
  }

  private userAdd(name: string, password: Uint8Array | undefined, noPassword: boolean): void {
    if (name === '') throw new KvError('USER_EMPTY');
    if (this.users.has(name)) throw new KvError('USER_ALREADY_EXIST');
    if (!noPassword && (password === undefined || password.byteLength === 0)) throw new KvError('PASSWORD_EMPTY');
    this.bump();
    this.users.set(name, { name, password: noPassword ? EMPTY : copy(password), noPassword, roles: [], credentialRevision: this._revision });
  }

  private mustUser(name: string): AuthUser {
    const u = this.users.get(name);
    if (u === undefined) throw new KvError('USER_NOT_FOUND');
    return u;
  }

  private mustRole(name: string): AuthRole {
    const r = this.roles.get(name);
    if (r === undefined) throw new KvError('ROLE_NOT_FOUND');
    return r;
  }

  private userDelete(name: string): void {
    if (this._enabled && name === ROOT_USER) throw new KvError('INVALID_AUTH_MGMT');
    this.mustUser(name);
    this.bump();
    this.users.delete(name);
  }

  private userChangePassword(name: string, password: Uint8Array | undefined): void {
    const u = this.mustUser(name);
    if (password === undefined || password.byteLength === 0) throw new KvError('PASSWORD_EMPTY');
    this.bump();
    this.users.set(name, { ...u, password: copy(password), noPassword: false, credentialRevision: this._revision });
  }

  private userGrantRole(name: string, role: string): void {
    const u = this.mustUser(name);
    if (role !== ROOT_ROLE) this.mustRole(role);
    if (u.roles.includes(role)) return; // etcd: granting a held role is not an error
    this.bump();
    insertSorted(u.roles, role);
  }

  private userRevokeRole(name: string, role: string): void {
    if (this._enabled && name === ROOT_USER && role === ROOT_ROLE) throw new KvError('INVALID_AUTH_MGMT');
    const u = this.mustUser(name);
    const i = u.roles.indexOf(role);
    if (i < 0) throw new KvError('ROLE_NOT_GRANTED');
    this.bump();
    u.roles.splice(i, 1);
  }

  private roleAdd(name: string): void {
    if (name === '') throw new KvError('ROLE_EMPTY');
    if (this.roles.has(name)) throw new KvError('ROLE_ALREADY_EXIST');
    this.bump();
    this.roles.set(name, { name, permissions: [] });
  }

  private roleDelete(name: string): void {
    if (this._enabled && name === ROOT_ROLE) throw new KvError('INVALID_AUTH_MGMT');
    this.mustRole(name);
    this.bump();
    this.roles.delete(name);
    for (const u of this.users.values()) {
      const i = u.roles.indexOf(name);
      if (i >= 0) u.roles.splice(i, 1);
    }
  }

  private roleGrantPermission(name: string, perm: KeyPermission): void {
    const r = this.mustRole(name);
    if (perm.permType !== PermType.READ && perm.permType !== PermType.WRITE && perm.permType !== PermType.READWRITE) {
      throw new KvError('MALFORMED_REQUEST', `permission type ${perm.permType}`);
    }
    // etcd 3.4.25+: a permission must name a key, and a range must not be empty.
    const fromKey = perm.rangeEnd.byteLength === 1 && perm.rangeEnd[0] === 0;
    if (perm.key.byteLength === 0 || (perm.rangeEnd.byteLength > 0 && !fromKey && Buffer.compare(perm.rangeEnd, perm.key) <= 0)) {
      throw new KvError('INVALID_AUTH_MGMT');
    }
    this.bump();
    // As etcd: only the first permission of the same key is compared, so granting a range of a key
    // that holds another range first adds it again (RoleGet lists both; revoke removes both).
    const first = r.permissions.findIndex((p) => Buffer.compare(p.key, perm.key) >= 0);
    const at = first >= 0 ? r.permissions[first]! : undefined;
    if (at !== undefined && sameBytes(at.key, perm.key) && sameBytes(at.rangeEnd, perm.rangeEnd)) r.permissions[first] = perm;
    else {
      r.permissions.push(perm);
      r.permissions.sort(cmpPermissionKey);
    }
  }

  private roleRevokePermission(name: string, key: Uint8Array, rangeEnd: Uint8Array): void {
    const r = this.mustRole(name);
    // Every permission of that key and end goes (a role may hold one twice: see the grant).
    const kept = r.permissions.filter((p) => !(sameBytes(p.key, key) && sameBytes(p.rangeEnd, rangeEnd)));
    if (kept.length === r.permissions.length) throw new KvError('PERMISSION_NOT_GRANTED');
    this.bump();
    r.permissions = kept;
  }

  // ---------------------------------------------------------------- image

  /** The whole state as a CBOR-friendly value (snapshots and the applied-state store). */
  image(): AuthImage {
    return {
      enabled: this._enabled,
      revision: this._revision,
      enabledRevision: this._enabledRevision,
      users: [...this.users.values()].map((u) => [u.name, u.password, u.noPassword, u.credentialRevision, [...u.roles]]),
      roles: [...this.roles.values()].map((r) => [r.name, r.permissions.map((p) => [p.permType, p.key, p.rangeEnd])]),
    };
  }

  /** Replaces the state with an image (validated; throws KvError SNAPSHOT_CORRUPT); undefined: empty. */
  load(image: unknown): void {
    const next = parseImage(image ?? EMPTY_IMAGE);
    this._enabled = next._enabled;
    this._revision = next._revision;
    this._enabledRevision = next._enabledRevision;
    this.users.clear();
    this.roles.clear();
    for (const [k, v] of next.users) this.users.set(k, v);
    for (const [k, v] of next.roles) this.roles.set(k, v);
    this.cacheRevision = -1;
  }

  /** Hashes what members must agree on (for digest()). */
  describe(): string {
    const users = this.userNames().map((n) => {
      const u = this.users.get(n)!;
      return `${n}:${Buffer.from(u.password).toString('hex')}:${u.noPassword}:${u.credentialRevision}:${u.roles.join(',')}`;
    });
    const roles = this.roleNames().map((n) => `${n}:${this.roles.get(n)!.permissions.map((p) => `${p.permType}/${keyString(p.key)}/${keyString(p.rangeEnd)}`).join(',')}`);
    return JSON.stringify([this._enabled, this._revision, this._enabledRevision, users, roles]);
  }
}

export interface AuthImage {
  enabled: boolean;
  revision: number;
  enabledRevision: number;
  users: Array<[string, Uint8Array, boolean, number, string[]]>;
  roles: Array<[string, Array<[number, Uint8Array, Uint8Array]>]>;
}

const EMPTY_IMAGE: AuthImage = { enabled: false, revision: 0, enabledRevision: 0, users: [], roles: [] };

function corrupt(detail: string): KvError {
  return new KvError('SNAPSHOT_CORRUPT', `auth state: ${detail}`);
}

function isNat(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function parseImage(v: unknown): { _enabled: boolean; _revision: number; _enabledRevision: number; users: Map<string, AuthUser>; roles: Map<string, AuthRole> } {
  if (typeof v !== 'object' || v === null) throw corrupt('not a map');
  const o = v as Record<string, unknown>;
  if (typeof o.enabled !== 'boolean' || !isNat(o.revision) || !isNat(o.enabledRevision)) throw corrupt('bad header');
  if (!Array.isArray(o.users) || !Array.isArray(o.roles)) throw corrupt('bad lists');
  const users = new Map<string, AuthUser>();
  for (const u of o.users as unknown[]) {
    if (!Array.isArray(u) || u.length !== 5) throw corrupt('bad user');
    const [name, password, noPassword, credentialRevision, roles] = u as unknown[];
    if (typeof name !== 'string' || name === '' || users.has(name)) throw corrupt('bad user name');
    if (!(password instanceof Uint8Array) || typeof noPassword !== 'boolean' || !isNat(credentialRevision)) throw corrupt(`bad user ${name}`);
    if (!Array.isArray(roles) || !roles.every((r) => typeof r === 'string')) throw corrupt(`bad roles of ${name}`);
    users.set(name, { name, password: copy(password), noPassword, credentialRevision, roles: [...(roles as string[])].sort() });
  }
  const roles = new Map<string, AuthRole>();
  for (const r of o.roles as unknown[]) {
    if (!Array.isArray(r) || r.length !== 2 || typeof r[0] !== 'string' || r[0] === '' || !Array.isArray(r[1])) throw corrupt('bad role');
    const name = r[0];
    if (roles.has(name)) throw corrupt(`role ${name} twice`);
    const permissions: KeyPermission[] = [];
    for (const p of r[1] as unknown[]) {
      if (!Array.isArray(p) || p.length !== 3 || !(p[0] === 0 || p[0] === 1 || p[0] === 2) || !(p[1] instanceof Uint8Array) || !(p[2] instanceof Uint8Array)) {
        throw corrupt(`bad permission of ${name}`);
      }
      permissions.push({ permType: p[0], key: copy(p[1]), rangeEnd: copy(p[2]) });
    }
    roles.set(name, { name, permissions: permissions.sort(cmpPermissionKey) });
  }
  return { _enabled: o.enabled, _revision: o.revision, _enabledRevision: o.enabledRevision, users, roles };
}
