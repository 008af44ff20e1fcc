/**
 * @module cluster/api
 * The cluster service manager's HTTP API (upstream reference section 2.3): the cluster manager announces
 * deployments, the root pushes job updates. A job update is answered only after the cache was refreshed and
 * the nodes were told, so a failure makes the root retry instead of losing the update.
 */
import swagger from '@fastify/swagger';
import type { Logger } from 'pino';
import { Type } from 'typebox';
import { NotFoundError } from '../errors.ts';
import type { TLSSocket } from 'node:tls';
import { authPaths, NodeCertificates, NodeEnroll, NodeRenew } from '../protocol/auth-api.ts';
import { ClusterStatus, clusterPaths, DeploymentRequest } from '../protocol/cluster-api.ts';
import { installAuth, type AuthMode, type Principal } from '../protocol/http-auth.ts';
import {
  BODY_LIMIT,
  installRateLimits,
  type LimitCounters,
  type RateLimits,
} from '../protocol/http-limits.ts';
import { createApiServer, type ServerTls } from '../protocol/http-server.ts';
import { JOB_NAME_PATTERN } from '../protocol/names.ts';
import { ErrorReply, Health, JobUpdateNotification } from '../protocol/root-api.ts';
import type { ClusterCache } from './cache.ts';
import type { NodeChannel } from './node-channel.ts';
import type { NodeEnrollment } from './node-enrollment.ts';
import type { Resolver } from './resolver.ts';

export interface ClusterApiDeps {
  cache: ClusterCache;
  resolver: Resolver;
  channel: NodeChannel;
  log: Logger;
  status: () => ClusterStatus;
  bootId: string;
  version: string;
  /** https with this key and chain (secure mode, with auth tls). */
  tls?: ServerTls;
  auth: AuthMode;
  /** Secure mode: NetManagers enroll and renew here. */
  nodeEnrollment?: NodeEnrollment;
  /** Per-caller rate limits (the defaults for what is not given). */
  rateLimits?: Partial<RateLimits>;
  /** Where the rate limits count their refusals (the status shows them). */
  counters: LimitCounters;
}

const TEXT = 'text/plain; charset=utf-8';
const errors = {
  400: ErrorReply,
  401: ErrorReply,
  403: ErrorReply,
  404: ErrorReply,
  429: ErrorReply,
  503: ErrorReply,
};
const ANYONE: Principal[] = ['anyone'];

export async function buildClusterApi(deps: ClusterApiDeps) {
  const app = createApiServer(deps.log, BODY_LIMIT, deps.tls);
  // the rate limits first: a flood is refused before its credentials cost anything
  const limits = await installRateLimits(app, deps.rateLimits, deps.counters);
  const counters = installAuth(app, deps.auth);
  await app.register(swagger, {
    openapi: { info: { title: 'oaknet cluster service manager', version: deps.version } },
  });
  app.get(clusterPaths.openapi, { schema: { hide: true }, config: { allow: ANYONE } }, () => app.swagger());

  app.get(
    clusterPaths.health,
    { schema: { response: { 200: Health } }, config: { allow: ANYONE, ...limits.exempt } },
    () => ({
      status: 'ok' as const,
      boot_id: deps.bootId,
      version: deps.version,
    }),
  );

  app.get(
    clusterPaths.status,
    { schema: { response: { 200: ClusterStatus, ...errors } }, config: { allow: ['read-only', 'root'] } },
    () => deps.status(),
  );

  app.post(
    clusterPaths.deployment,
    {
      schema: { body: DeploymentRequest, response: { 200: Type.String(), ...errors } },
      config: { allow: ['orchestrator'] },
    },
    async (req, reply) => {
      const doc = await deps.resolver.refresh(req.body.job_name);
      if (!doc) throw new NotFoundError(`the root knows no service ${req.body.job_name}`);
      void reply.type(TEXT);
      return 'job stored succesfully';
    },
  );

  app.delete(
    '/api/net/deployment/:job_name',
    {
      schema: {
        params: Type.Object({ job_name: Type.String({ pattern: JOB_NAME_PATTERN }) }),
        response: { 200: Type.String(), ...errors },
      },
      config: { allow: ['orchestrator'] },
    },
    async (req, reply) => {
      deps.cache.removeJob(req.params.job_name);
      await deps.channel.publishUpdates(req.params.job_name, 'UNDEPLOYMENT');
      void reply.type(TEXT);
      return 'job removed succesfully';
    },
  );

  app.post(
    clusterPaths.jobUpdate,
    {
      schema: { body: JobUpdateNotification, response: { 200: Type.String(), ...errors } },
      config: { allow: ['root'] },
    },
    async (req, reply) => {
      const { job_name: job, instance_number: n, type } = req.body;
      if (type === 'DEPLOYMENT') await deps.resolver.refresh(job);
      else if (n === -1) deps.cache.removeJob(job);
      else deps.cache.removeInstance(job, n);
      await deps.channel.publishUpdates(job, type);
      req.log.debug({ job, instance: n, type }, 'job update from root');
      void reply.type(TEXT);
      return 'update notification received';
    },
  );

  const enrollment = deps.nodeEnrollment;
  if (enrollment) {
    app.post(
      authPaths.enrollNode,
      {
        schema: { body: NodeEnroll, response: { 200: NodeCertificates, ...errors } },
        config: { allow: ANYONE },
      },
      async (req) => {
        const certs = await enrollment.enroll(req.body);
        req.log.info({ worker: req.body.worker_id }, 'node enrolled');
        return certs;
      },
    );
    app.post(
      authPaths.renewNode,
      {
        schema: { body: NodeRenew, response: { 200: NodeCertificates, ...errors } },
        config: { allow: ANYONE },
      },
      (req) => enrollment.renew(req.raw.socket as Partial<TLSSocket>, req.body),
    );
  }

  return { app, counters };
}
