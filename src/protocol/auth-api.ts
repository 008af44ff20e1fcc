/**
 * @module protocol/auth-api
 * HTTP contract of the platform's identities (oaknet's own; upstream has none): the CA, tokens, and the
 * enrollment of clusters at the root and of NetManagers at their cluster.
 */
import { Type, type Static } from 'typebox';
import { TokenInfo } from '../security/tokens.ts';
import { ID_PATTERN } from './names.ts';

const Id = Type.String({ pattern: ID_PATTERN });
const Pem = Type.String({ minLength: 1, maxLength: 16_384 });
const TokenText = Type.String({ minLength: 1, maxLength: 256 });

export const authPaths = {
  ca: '/api/auth/ca',
  status: '/api/auth/status',
  tokens: '/api/auth/tokens',
  token: (id: string) => `/api/auth/tokens/${encodeURIComponent(id)}`,
  verifyToken: '/api/auth/tokens/verify',
  enrollCluster: '/api/auth/clusters/enroll',
  renewCluster: '/api/auth/clusters/renew',
  cluster: (id: string) => `/api/auth/clusters/${encodeURIComponent(id)}`,
  enrollNode: '/api/auth/nodes/enroll',
  renewNode: '/api/auth/nodes/renew',
} as const;

/**
 * Days past its expiry a certificate (a cluster's at the root, a NetManager's at its cluster) may still renew
 * itself (its holder was cut off for a while); later it must enroll again with a token.
 */
export const RENEW_EXPIRED_DAYS = 30;

export const CaReply = Type.Object({
  ca: Pem,
  pin: Type.String({ description: 'sha256:<hex> of the CA certificate SubjectPublicKeyInfo' }),
});
export type CaReply = Static<typeof CaReply>;

export const AuthStatus = Type.Object({
  mode: Type.Union([Type.Literal('tls'), Type.Literal('insecure')]),
  ca_pin: Type.Union([Type.String(), Type.Null()]),
  refused: Type.Object({
    unauthenticated: Type.Integer({ minimum: 0 }),
    forbidden: Type.Integer({ minimum: 0 }),
  }),
});
export type AuthStatus = Static<typeof AuthStatus>;

export const TokenCreate = Type.Object({
  role: Type.Union([
    Type.Literal('cluster'),
    Type.Literal('node'),
    Type.Literal('read-only'),
    Type.Literal('operator'),
    Type.Literal('orchestrator'),
  ]),
  ttl_seconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 10 * 366 * 86400 })),
  description: Type.Optional(Type.String({ maxLength: 200 })),
});
export type TokenCreate = Static<typeof TokenCreate>;

export const TokenCreated = Type.Object({ token: Type.String(), info: TokenInfo });
export type TokenCreated = Static<typeof TokenCreated>;

export const TokenList = Type.Array(TokenInfo);

export const TokenVerify = Type.Object({
  token: TokenText,
  roles: Type.Array(TokenCreate.properties.role, { minItems: 1, maxItems: 5 }),
});
export type TokenVerify = Static<typeof TokenVerify>;

export const ClusterEnroll = Type.Object({
  token: TokenText,
  cluster_id: Id,
  /** PKCS#10 for urn:oaknet:cluster:<id>: the cluster's TLS identity. */
  csr: Pem,
  /** PKCS#10 for urn:oaknet:cluster-ca:<id>: the CA the cluster signs its NetManagers' certificates with. */
  ca_csr: Pem,
});
export type ClusterEnroll = Static<typeof ClusterEnroll>;

export const ClusterRenew = Type.Object({ csr: Pem, ca_csr: Pem });
export type ClusterRenew = Static<typeof ClusterRenew>;

export const ClusterCertificates = Type.Object({
  cert: Pem,
  node_ca: Pem,
  ca: Pem,
});
export type ClusterCertificates = Static<typeof ClusterCertificates>;

/** DELETE /api/auth/clusters/:id: the revoked cluster. */
export const ClusterRevoked = Type.Object({
  cluster_id: Type.String(),
  revoked: Type.String({ description: 'ISO time of the revocation' }),
});
export type ClusterRevoked = Static<typeof ClusterRevoked>;

export const NodeEnroll = Type.Object({ token: TokenText, worker_id: Id, csr: Pem });
export type NodeEnroll = Static<typeof NodeEnroll>;

export const NodeRenew = Type.Object({ csr: Pem });
export type NodeRenew = Static<typeof NodeRenew>;

/** A NetManager's certificate chain (its certificate, then its cluster's node CA) and the platform CA. */
export const NodeCertificates = Type.Object({ chain: Pem, ca: Pem });
export type NodeCertificates = Static<typeof NodeCertificates>;
