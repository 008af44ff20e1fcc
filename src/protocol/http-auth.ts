/**
 * @module protocol/http-auth
 * Who calls, and may they: the authentication and authorization of the root's and the cluster's HTTP APIs.
 * A caller is a TLS client certificate from the platform CA (the root, a cluster, a node: the identity is
 * the certificate's URI SAN) or a bearer token with an API role (read-only, operator, orchestrator). Every
 * route says who may call it (`config.allow`); a call without valid credentials is 401, with credentials
 * outside the route's principals 403, each with a message that names the problem, and each is counted.
 * In insecure mode (plain http, `--insecure`) every caller may call everything, as upstream's APIs allow.
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ForbiddenError, OakNetError, UnauthenticatedError } from '../errors.ts';
import { identityUri, peerIdentityOf, type Identity } from '../security/pki.ts';
import { API_ROLES, type Role, type TokenInfo } from '../security/tokens.ts';
import { errorReply } from './http-errors.ts';

/** Who may call a route. `read-only` admits every API role (operators and orchestrators may read). */
export type Principal = 'anyone' | 'root' | 'cluster' | 'node' | 'read-only' | 'operator' | 'orchestrator';

export type Caller =
  | { kind: 'insecure' }
  | { kind: 'anonymous'; /** why a presented certificate was refused */ certProblem?: string }
  | { kind: 'cert'; identity: Identity }
  | { kind: 'token'; role: Role; id: string };

/** Checks a bearer token (the root's own store, or the root asked by a cluster). */
export interface TokenVerifier {
  verify(token: string, roles: readonly Role[]): Promise<TokenInfo> | TokenInfo;
}

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller;
  }
  interface FastifyContextConfig {
    /** Who may call this route; a route without it is open to anyone. */
    allow?: readonly Principal[];
  }
}

export interface AuthCounters {
  /** Calls refused with 401. */
  unauthenticated: number;
  /** Calls refused with 403. */
  forbidden: number;
}

/**
 * A further check of a valid client certificate, run on every request (the root's: is a cluster's
 * certificate still its current one, or was the cluster revoked?). Returns the problem, or undefined.
 * It must be cheap: no I/O on the common path.
 */
export type CertificateCheck = (identity: Identity, serial: string) => string | undefined;

export type AuthMode =
  | { mode: 'insecure' }
  | {
      mode: 'tls';
      tokens: TokenVerifier;
      certificates?: CertificateCheck;
      /** The CAs that sign this server's clients (for resumed TLS sessions, which keep no chain). */
      issuers: () => readonly X509Certificate[];
    };

/** Each API server's issuers (AuthMode), by its HTTP server: the rate limits read certificates too. */
const issuersByServer = new WeakMap<object, () => readonly X509Certificate[]>();

/** Installs the hook on an API server; returns its counters. */
export function installAuth(app: FastifyInstance, auth: AuthMode): AuthCounters {
  const counters: AuthCounters = { unauthenticated: 0, forbidden: 0 };
  app.decorateRequest('caller', null as unknown as { getter: () => Caller });
  if (auth.mode === 'tls') issuersByServer.set(app.server, auth.issuers);
  // before the body is read, and after the routes' onRequest hooks (the rate limits: a flood is refused
  // before its credentials cost anything)
  app.addHook('preParsing', async (req: FastifyRequest, reply: FastifyReply, payload) => {
    if (auth.mode === 'insecure') {
      req.caller = { kind: 'insecure' };
      return payload;
    }
    const allow = req.routeOptions.config.allow;
    try {
      req.caller = await callerOf(req, auth.tokens, auth.certificates);
      if (!allow || allow.includes('anyone')) return payload;
      check(req.caller, allow);
      return payload;
    } catch (err) {
      if (!(err instanceof OakNetError)) throw err;
      if (err.code === 'E_FORBIDDEN') counters.forbidden++;
      else counters.unauthenticated++;
      req.log.info({ code: err.code, msg: err.message, url: req.url }, 'call refused');
      const { status, body } = errorReply(err);
      return reply.status(status).send(body);
    }
  });
  return counters;
}

async function callerOf(
  req: FastifyRequest,
  tokens: TokenVerifier,
  certificates: CertificateCheck | undefined,
): Promise<Caller> {
  const header = req.headers.authorization;
  if (header !== undefined) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) throw new UnauthenticatedError('the Authorization header must be "Bearer <token>"');
    const info = await tokens.verify(m[1]!, API_ROLES);
    return { kind: 'token', role: info.role, id: info.id };
  }
  const caller = certificateCaller(req);
  if (caller.kind !== 'cert' || !certificates) return caller;
  // on every request, not once per connection: a revocation ends kept-alive connections too
  const problem = certificates(caller.identity, serialOf(req) ?? '');
  return problem === undefined ? caller : { kind: 'anonymous', certProblem: problem };
}

/** What a connection's client certificate says, worked out once per connection. */
const byConnection = new WeakMap<object, { caller: Caller; serial?: string }>();

function serialOf(req: FastifyRequest): string | undefined {
  const socket = req.raw.socket as object | undefined;
  return socket ? byConnection.get(socket)?.serial : undefined;
}

function certificateCaller(req: FastifyRequest): Caller {
  const socket = req.raw.socket as Partial<TLSSocket> | undefined;
  if (!socket) return { kind: 'anonymous' };
  const known = byConnection.get(socket);
  if (known) return known.caller;
  const peer = socket.getPeerCertificate?.();
  let caller: Caller;
  let serial: string | undefined;
  if (!peer || !peer.raw) caller = { kind: 'anonymous' };
  else if (!socket.authorized) {
    caller = {
      kind: 'anonymous',
      certProblem: `the client certificate was refused: ${String(socket.authorizationError ?? 'not from the platform CA')}`,
    };
  } else {
    const identity = peerIdentityOf(socket, issuersByServer.get(req.server.server)?.() ?? []);
    serial = new X509Certificate(peer.raw).serialNumber;
    caller = identity
      ? { kind: 'cert', identity }
      : {
          kind: 'anonymous',
          certProblem: 'the client certificate names no oaknet identity its issuer may sign',
        };
  }
  byConnection.set(socket, serial === undefined ? { caller } : { caller, serial });
  return caller;
}

/**
 * The identity (URI) of a request's valid client certificate, before any token is checked: what rate limits
 * count a request against. Undefined without one (plain http, no or a refused certificate).
 */
export function certificateIdentityOf(req: FastifyRequest): string | undefined {
  const c = certificateCaller(req);
  return c.kind === 'cert' ? identityUri(c.identity) : undefined;
}

function check(caller: Caller, allow: readonly Principal[]): void {
  const who = principalOf(caller);
  if (who === undefined) {
    const problem = caller.kind === 'anonymous' && caller.certProblem ? `${caller.certProblem}; ` : '';
    throw new UnauthenticatedError(`${problem}this call needs ${describe(allow)}`);
  }
  if (allow.includes(who)) return;
  if (allow.includes('read-only') && (who === 'operator' || who === 'orchestrator')) return;
  throw new ForbiddenError(`${describeCaller(caller)} may not make this call; it needs ${describe(allow)}`);
}

function principalOf(caller: Caller): Principal | undefined {
  switch (caller.kind) {
    case 'insecure':
      return undefined;
    case 'anonymous':
      return undefined;
    case 'cert':
      return caller.identity.kind === 'root' ||
        caller.identity.kind === 'cluster' ||
        caller.identity.kind === 'node'
        ? caller.identity.kind
        : undefined;
    case 'token':
      return caller.role;
  }
}

function describe(allow: readonly Principal[]): string {
  const certs = allow.filter((p) => p === 'root' || p === 'cluster' || p === 'node');
  const roles = allow.filter((p) => p === 'read-only' || p === 'operator' || p === 'orchestrator');
  const parts: string[] = [];
  if (certs.length) parts.push(`the client certificate of a ${certs.join(' or ')}`);
  if (roles.length) parts.push(`a bearer token with the role ${roles.join(' or ')}`);
  return parts.join(', or ');
}

export function describeCaller(caller: Caller): string {
  switch (caller.kind) {
    case 'insecure':
      return 'an unauthenticated caller (insecure mode)';
    case 'anonymous':
      return 'an anonymous caller';
    case 'cert':
      return identityUri(caller.identity);
    case 'token':
      return `token ${caller.id} (${caller.role})`;
  }
}

/**
 * The cluster a call comes from: its certificate's, which `?cluster_id=` must repeat when given; in insecure
 * mode the query's. Undefined when the caller is no cluster and named none.
 */
export function callingCluster(req: FastifyRequest, queryId: string | undefined): string | undefined {
  const c = req.caller;
  if (c.kind === 'cert' && c.identity.kind === 'cluster') {
    if (queryId !== undefined && queryId !== c.identity.clusterId)
      throw new ForbiddenError(
        `cluster ${c.identity.clusterId} may not act as cluster ${queryId} (?cluster_id= must be its own)`,
      );
    return c.identity.clusterId;
  }
  return queryId;
}

/** True when the caller is a cluster by certificate (its identity is proven, not claimed). */
export function isClusterCaller(req: FastifyRequest): boolean {
  return req.caller.kind === 'cert' && req.caller.identity.kind === 'cluster';
}
