/**
 * @module root/auth-api
 * The root's identity routes: the CA (anyone may fetch it; joiners check it against their token's pin),
 * the security status, tokens (operators), token checks (clusters ask for their nodes' and callers'
 * tokens), and cluster enrollment, renewal and revocation (operators).
 */
import type { TLSSocket } from 'node:tls';
import type { ApiServer } from '../protocol/http-server.ts';
import { Type } from 'typebox';
import {
  AuthStatus,
  authPaths,
  CaReply,
  ClusterCertificates,
  ClusterEnroll,
  ClusterRenew,
  ClusterRevoked,
  TokenCreate,
  TokenCreated,
  TokenList,
  TokenVerify,
} from '../protocol/auth-api.ts';
import type { AuthCounters } from '../protocol/http-auth.ts';
import { ID_PATTERN } from '../protocol/names.ts';
import { ErrorReply } from '../protocol/root-api.ts';
import { caPin, type CertificateAuthority } from '../security/pki.ts';
import { TokenInfo, type TokenStore } from '../security/tokens.ts';
import type { Enrollment } from './enrollment.ts';

export interface RootAuthDeps {
  ca: CertificateAuthority;
  tokens: TokenStore;
  enrollment: Enrollment;
  counters: AuthCounters;
}

const errors = { 400: ErrorReply, 401: ErrorReply, 403: ErrorReply, 404: ErrorReply };

/** Registers the routes; `deps` undefined: insecure mode (only the status, which says so). */
export function registerRootAuthRoutes(
  app: ApiServer,
  deps: RootAuthDeps | undefined,
  counters: AuthCounters,
): void {
  app.get(
    authPaths.status,
    { schema: { response: { 200: AuthStatus, ...errors } }, config: { allow: ['read-only', 'cluster'] } },
    () => ({
      mode: deps ? ('tls' as const) : ('insecure' as const),
      ca_pin: deps ? caPin(deps.ca.cert) : null,
      refused: { ...counters },
    }),
  );
  if (!deps) return;
  const { ca, tokens, enrollment } = deps;

  app.get(authPaths.ca, { schema: { response: { 200: CaReply } }, config: { allow: ['anyone'] } }, () => ({
    ca: ca.certPem,
    pin: caPin(ca.cert),
  }));

  app.post(
    authPaths.tokens,
    {
      schema: { body: TokenCreate, response: { 200: TokenCreated, ...errors } },
      config: { allow: ['operator'] },
    },
    (req) =>
      tokens.create(req.body.role, {
        ...(req.body.ttl_seconds !== undefined ? { ttlSeconds: req.body.ttl_seconds } : {}),
        ...(req.body.description !== undefined ? { description: req.body.description } : {}),
      }),
  );

  app.get(
    authPaths.tokens,
    { schema: { response: { 200: TokenList, ...errors } }, config: { allow: ['operator'] } },
    () => tokens.list(),
  );

  app.delete(
    '/api/auth/tokens/:id',
    {
      schema: {
        params: Type.Object({ id: Type.String({ pattern: '^[0-9a-f]{16}$' }) }),
        response: { 200: TokenInfo, ...errors },
      },
      config: { allow: ['operator'] },
    },
    (req) => tokens.revoke(req.params.id),
  );

  app.post(
    authPaths.verifyToken,
    {
      schema: { body: TokenVerify, response: { 200: TokenInfo, ...errors } },
      config: { allow: ['cluster'] },
    },
    (req) => tokens.verify(req.body.token, req.body.roles),
  );

  app.post(
    authPaths.enrollCluster,
    {
      schema: { body: ClusterEnroll, response: { 200: ClusterCertificates, ...errors } },
      config: { allow: ['anyone'] },
    },
    async (req) => {
      const certs = await enrollment.enroll(req.body);
      req.log.info({ cluster: req.body.cluster_id }, 'cluster enrolled');
      return certs;
    },
  );

  app.post(
    authPaths.renewCluster,
    {
      schema: { body: ClusterRenew, response: { 200: ClusterCertificates, ...errors } },
      config: { allow: ['anyone'] },
    },
    (req) => enrollment.renew(req.raw.socket as Partial<TLSSocket>, req.body),
  );

  app.delete(
    '/api/auth/clusters/:id',
    {
      schema: {
        description:
          'Revokes a cluster: its certificates stop authenticating at once and never renew; it must enroll again with a new cluster token',
        params: Type.Object({ id: Type.String({ pattern: ID_PATTERN }) }),
        response: { 200: ClusterRevoked, ...errors },
      },
      config: { allow: ['operator'] },
    },
    (req) => {
      const revoked = enrollment.revoke(req.params.id);
      req.log.warn({ cluster: req.params.id }, 'cluster revoked');
      return revoked;
    },
  );
}
