/**
 * @module security/tokens
 * Tokens: bearer credentials with a role, kept by the root. A token is
 * `oaknet1.<CA pin>.<id>.<secret>`: the CA pin (the platform CA's SPKI SHA-256, base64url) lets a joiner
 * check whom it joined before it sends anything, as kubeadm's `--discovery-token-ca-cert-hash` and k3s's
 * `K10<hash>` tokens do; the ID names the token in lists and logs; the secret (256 random bits) is stored only
 * as its SHA-256, so the store leaks no usable token. Tokens are revocable at once (the root checks its store
 * on every use) and expire when given a TTL.
 *
 * Roles: `cluster` and `node` tokens only join (a cluster gets its certificate from the root, a NetManager
 * from its cluster); `read-only`, `operator` and `orchestrator` tokens authenticate API calls.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { Type, type Static } from 'typebox';
import { ForbiddenError, InvalidInputError, NotFoundError, UnauthenticatedError } from '../errors.ts';
import type { Store } from '../store/store.ts';

export const ROLES = ['cluster', 'node', 'read-only', 'operator', 'orchestrator'] as const;
export type Role = (typeof ROLES)[number];
/** Roles whose tokens authenticate API calls (the others are join tokens). */
export const API_ROLES: readonly Role[] = ['read-only', 'operator', 'orchestrator'];

export function isRole(text: string): text is Role {
  return (ROLES as readonly string[]).includes(text);
}

const PREFIX = 'oaknet1';
const TOKEN_RE = /^oaknet1\.([A-Za-z0-9_-]{43})\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/;

export const TokenInfo = Type.Object({
  id: Type.String(),
  role: Type.Union([
    Type.Literal('cluster'),
    Type.Literal('node'),
    Type.Literal('read-only'),
    Type.Literal('operator'),
    Type.Literal('orchestrator'),
  ]),
  description: Type.String(),
  created: Type.String({ description: 'ISO time' }),
  expires: Type.Union([Type.String(), Type.Null()], { description: 'ISO time, or null: never' }),
  revoked: Type.Union([Type.String(), Type.Null()], { description: 'ISO time of revocation, or null' }),
  uses: Type.Integer({ minimum: 0 }),
  last_used: Type.Union([Type.String(), Type.Null()]),
});
export type TokenInfo = Static<typeof TokenInfo>;

interface TokenRecord {
  id: string;
  role: Role;
  description: string;
  /** SHA-256 of the secret, hex. */
  hash: string;
  created: string;
  expires: string | null;
  revoked: string | null;
  uses: number;
  lastUsed: string | null;
}

/** The pin part of a token: the CA's `sha256:<hex>` pin as base64url. */
export function pinToTokenPart(pin: string): string {
  const hex = pin.replace(/^sha256:/, '');
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new InvalidInputError(`not a CA pin: ${pin}`);
  return Buffer.from(hex, 'hex').toString('base64url');
}

/** The parts of a token's text; throws UnauthenticatedError when it is not one. */
export function parseToken(text: string): { pin: string; id: string; secret: string } {
  const m = TOKEN_RE.exec(text.trim());
  if (!m) {
    throw new UnauthenticatedError(
      text.startsWith(PREFIX)
        ? 'malformed token (expected oaknet1.<CA pin>.<id>.<secret>; was it cut when copied?)'
        : 'not an oaknet token (expected oaknet1.<CA pin>.<id>.<secret>)',
    );
  }
  return { pin: `sha256:${Buffer.from(m[1]!, 'base64url').toString('hex')}`, id: m[2]!, secret: m[3]! };
}

const KEY = 'auth/token/';

/** Uses of a token are written to the store at most this often (each write is an fsync). */
const USE_SAVE_MS = 60_000;

export class TokenStore {
  /** Uses not yet written, per token ID: lost on a crash (at most a minute of counts). */
  private readonly unsaved = new Map<string, { uses: number; lastUsed: string; savedAt: number }>();

  constructor(
    private readonly store: Store,
    /** The platform CA's pin, carried in every token. */
    private readonly pin: string,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** Creates a token; `ttlSeconds` 0 or undefined: it never expires. Returns its text (shown once) and info. */
  create(
    role: Role,
    opts: { ttlSeconds?: number; description?: string } = {},
  ): { token: string; info: TokenInfo } {
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const now = this.now();
    const ttl = opts.ttlSeconds ?? 0;
    if (!Number.isInteger(ttl) || ttl < 0 || ttl > 10 * 366 * 86400)
      throw new InvalidInputError('ttl must be 0 (never expires) or 1 s to 10 years');
    const rec: TokenRecord = {
      id,
      role,
      description: (opts.description ?? '').slice(0, 200),
      hash: sha256(secret),
      created: now.toISOString(),
      expires: ttl > 0 ? new Date(now.getTime() + ttl * 1000).toISOString() : null,
      revoked: null,
      uses: 0,
      lastUsed: null,
    };
    this.store.transact((tx) => tx.put(KEY + id, rec as never));
    return { token: `${PREFIX}.${pinToTokenPart(this.pin)}.${id}.${secret}`, info: toInfo(rec) };
  }

  /**
   * The token's info when it is valid now and has one of `roles`; throws UnauthenticatedError naming why not
   * (ForbiddenError when valid but of another role). Counts the use.
   */
  verify(text: string, roles: readonly Role[]): TokenInfo {
    const { pin, id, secret } = parseToken(text);
    if (pin !== this.pin)
      throw new UnauthenticatedError('the token was made for another platform (its CA pin is not this CA)');
    return this.store.transact((tx) => {
      const rec = tx.get<TokenRecord>(KEY + id);
      if (!rec || !timingSafeEqual(Buffer.from(rec.hash, 'hex'), Buffer.from(sha256(secret), 'hex')))
        throw new UnauthenticatedError(`unknown token ${id}`);
      const now = this.now();
      if (rec.revoked !== null) throw new UnauthenticatedError(`token ${id} was revoked at ${rec.revoked}`);
      if (rec.expires !== null && Date.parse(rec.expires) <= now.getTime())
        throw new UnauthenticatedError(`token ${id} expired at ${rec.expires}`);
      if (!roles.includes(rec.role))
        throw new ForbiddenError(`token ${id} has the role ${rec.role}; this needs ${roles.join(' or ')}`);
      // counted in memory and written once a minute: a write per request would be an fsync per request
      const u = this.unsaved.get(id) ?? { uses: 0, lastUsed: '', savedAt: 0 };
      u.uses += 1;
      u.lastUsed = now.toISOString();
      this.unsaved.set(id, u);
      if (now.getTime() - u.savedAt >= USE_SAVE_MS) {
        rec.uses += u.uses;
        rec.lastUsed = u.lastUsed;
        tx.put(KEY + id, rec as never);
        u.uses = 0;
        u.savedAt = now.getTime();
        return toInfo(rec);
      }
      return this.info(rec);
    });
  }

  list(): TokenInfo[] {
    return this.store.transact((tx) => tx.list<TokenRecord>(KEY).map(([, r]) => this.info(r)));
  }

  /** A record's info with the uses not written yet. */
  private info(r: TokenRecord): TokenInfo {
    const u = this.unsaved.get(r.id);
    return u && u.uses > 0 ? toInfo({ ...r, uses: r.uses + u.uses, lastUsed: u.lastUsed }) : toInfo(r);
  }

  /** Revokes a token by ID (idempotent); returns its info. */
  revoke(id: string): TokenInfo {
    return this.store.transact((tx) => {
      const rec = tx.get<TokenRecord>(KEY + id);
      if (!rec) throw new NotFoundError(`no token ${id}`);
      rec.revoked ??= this.now().toISOString();
      tx.put(KEY + id, rec as never);
      return this.info(rec);
    });
  }
}

function toInfo(r: TokenRecord): TokenInfo {
  return {
    id: r.id,
    role: r.role,
    description: r.description,
    created: r.created,
    expires: r.expires,
    revoked: r.revoked,
    uses: r.uses,
    last_used: r.lastUsed,
  };
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
