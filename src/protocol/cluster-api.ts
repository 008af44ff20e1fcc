/**
 * @module protocol/cluster-api
 * HTTP contract of the cluster service manager (upstream reference section 2.3).
 */
import { Type, type Static } from 'typebox';
import { encodePathSegment, JOB_NAME_PATTERN } from './names.ts';

/** The cluster manager announces a job scheduled on one of this cluster's nodes. */
export const DeploymentRequest = Type.Object({
  job_name: Type.String({
    pattern: JOB_NAME_PATTERN,
    description: 'job name app.appns.service.servicens, each part 1-30 letters or digits',
  }),
});
export type DeploymentRequest = Static<typeof DeploymentRequest>;

export const ClusterStatus = Type.Object({
  cluster_id: Type.String(),
  root: Type.String(),
  root_reachable: Type.Boolean(),
  mqtt: Type.String(),
  allow_plaintext_peers: Type.Boolean({
    description:
      'whether its NetManagers tunnel in plaintext to peers without a WireGuard key (--allow-plaintext-peers)',
  }),
  nodes: Type.Array(
    Type.Object({
      worker_id: Type.String(),
      subnet: Type.String(),
      subnet_v6: Type.String(),
      last_seen: Type.String({
        description: 'ISO time of the last MQTT message from the node since this process started, or empty',
      }),
    }),
  ),
  pending_status_reports: Type.Integer({ description: 'deployment reports not yet accepted by the root' }),
  rate_limited: Type.Integer({ description: 'requests refused with 429 since this process started' }),
  security: Type.Object({
    mode: Type.Union([Type.Literal('tls'), Type.Literal('insecure')]),
    certificate_expires: Type.Union([Type.String(), Type.Null()], {
      description: "ISO time the cluster's certificate expires (null: insecure)",
    }),
    refused: Type.Object({
      unauthenticated: Type.Integer({ minimum: 0 }),
      forbidden: Type.Integer({ minimum: 0 }),
    }),
    mqtt_refused: Type.Optional(
      Type.Object({
        connectRefused: Type.Integer({ minimum: 0 }),
        publishRefused: Type.Integer({ minimum: 0 }),
        subscribeRefused: Type.Integer({ minimum: 0 }),
      }),
    ),
    mqtt_ignored: Type.Optional(
      Type.Object(
        {
          retained: Type.Integer({ minimum: 0 }),
          unenrolled: Type.Integer({ minimum: 0 }),
          conflicting: Type.Optional(Type.Integer({ minimum: 0 })),
        },
        {
          description:
            "node messages the cluster ignored: published retained, from a worker it did not enroll, or deployment reports that claim another worker's tunnel endpoint or key (conflicting)",
        },
      ),
    ),
  }),
  cached_jobs: Type.Array(
    Type.Object({
      job_name: Type.String(),
      instances: Type.Integer(),
      interested_nodes: Type.Array(Type.String()),
    }),
  ),
});
export type ClusterStatus = Static<typeof ClusterStatus>;

export const clusterPaths = {
  deployment: '/api/net/deployment',
  /** A job that cannot be encoded (a lone surrogate) is an InvalidInputError, never a URIError. */
  deploymentOf: (job: string) => `/api/net/deployment/${encodePathSegment(job)}`,
  jobUpdate: '/api/net/job/update',
  status: '/api/net/status',
  health: '/api/net/health',
  openapi: '/docs/openapi.json',
} as const;
