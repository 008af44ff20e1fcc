/**
 * @module root/api
 * The root service manager's HTTP API: upstream's paths, bodies and text replies (reference section 2.4),
 * with explicit cluster identity (`?cluster_id=`), 404 for unknown jobs, 400 with a message for bad
 * bodies, and an OpenAPI document at /docs/openapi.json.
 */
import swagger from '@fastify/swagger';
import type { Logger } from 'pino';
import { Type } from 'typebox';
import { ForbiddenError, InvalidInputError } from '../errors.ts';
import { callingCluster, installAuth, isClusterCaller, type Principal } from '../protocol/http-auth.ts';
import {
  BODY_LIMIT,
  callerKey,
  installRateLimits,
  inTurn,
  LARGE_BODY_LIMIT,
  LimitCounters,
  type RateLimits,
} from '../protocol/http-limits.ts';
import { createApiServer, type ServerTls } from '../protocol/http-server.ts';
import { requireHostOrIp } from '../protocol/url.ts';
import { fromPathSegment, requireJobName } from '../protocol/names.ts';
import { pagedArray, pagedDescription, pageRequest, sendPage } from '../protocol/pagination.ts';
import { PageCache } from './page-cache.ts';
import {
  AvailableIpQuery,
  AvailableIps,
  ClusterInfo,
  ClusterQuery,
  ClusterRegistration,
  ClustersQuery,
  ErrorReply,
  Health,
  InstanceDeploy,
  JobDocument,
  NetDeployStatus,
  rootPaths,
  RootStatus,
  ServiceDeploy,
  ServiceNetinfo,
  ServicesQuery,
  SubnetQuery,
  SubnetReply,
  WorkerInfo,
  WorkersQuery,
} from '../protocol/root-api.ts';
import { registerRootAuthRoutes, type RootAuthDeps } from './auth-api.ts';
import type { Notifier } from './notifier.ts';
import { Registry } from './registry.ts';

export interface RootApiDeps {
  registry: Registry;
  notifier: Notifier;
  log: Logger;
  bootId: string;
  version: string;
  /** https with this key and chain (secure mode, with `security`). */
  tls?: ServerTls;
  /** Secure mode: the CA, tokens and enrollment; every route checks its caller. Without it: insecure. */
  security?: Omit<RootAuthDeps, 'counters'>;
  /** Per-caller rate limits (the defaults for what is not given). */
  rateLimits?: Partial<RateLimits>;
}

const Text = Type.String();
const TEXT = 'text/plain; charset=utf-8';
const errors = {
  400: ErrorReply,
  401: ErrorReply,
  403: ErrorReply,
  404: ErrorReply,
  409: ErrorReply,
  429: ErrorReply,
  507: ErrorReply,
};

// who may call (secure mode; see protocol/http-auth.ts)
const ANYONE: Principal[] = ['anyone'];
const READ: Principal[] = ['read-only'];
const CLUSTER: Principal[] = ['cluster'];
const CLUSTER_OR_READ: Principal[] = ['cluster', 'read-only'];
const ORCHESTRATOR: Principal[] = ['orchestrator'];

export async function buildRootApi(deps: RootApiDeps) {
  const { registry, notifier } = deps;
  const servicePages = new PageCache<JobDocument>(() => registry.writes);
  const app = createApiServer(deps.log, BODY_LIMIT, deps.tls);
  // the rate limits first: a flood is refused before its credentials cost anything
  const limitCounters = new LimitCounters();
  const limits = await installRateLimits(app, deps.rateLimits, limitCounters);
  const security = deps.security;
  const enrollment = security?.enrollment;
  const counters = installAuth(
    app,
    security && enrollment
      ? {
          mode: 'tls',
          tokens: security.tokens,
          issuers: () => [security.ca.cert],
          // a cluster's certificate authenticates it while it is its current one and it is not revoked
          certificates: (identity, serial) =>
            identity.kind === 'cluster'
              ? enrollment.certificateProblem(identity.clusterId, serial)
              : undefined,
        }
      : { mode: 'insecure' },
  );
  registerRootAuthRoutes(app, security ? { ...security, counters } : undefined, counters);
  await app.register(swagger, {
    openapi: {
      info: {
        title: 'oaknet root service manager',
        version: deps.version,
        description:
          'Upstream Oakestra root service manager API (paths, bodies, text replies), with explicit cluster identity: clusters pass ?cluster_id=.',
      },
    },
  });

  app.get(rootPaths.openapi, { schema: { hide: true }, config: { allow: ANYONE } }, () => app.swagger());

  app.get(
    rootPaths.health,
    { schema: { response: { 200: Health } }, config: { allow: ANYONE, ...limits.exempt } },
    () => ({
      status: 'ok' as const,
      boot_id: deps.bootId,
      version: deps.version,
    }),
  );

  app.get(
    rootPaths.status,
    { schema: { response: { 200: RootStatus, ...errors } }, config: { allow: READ } },
    (req) =>
      inTurn(() => ({ rate_limited: limitCounters.rateLimited, ...registry.status() }), callerKey(req)),
  );

  // ---- clusters
  app.post(
    rootPaths.cluster,
    { schema: { body: ClusterRegistration, response: { 200: Text, ...errors } }, config: { allow: CLUSTER } },
    (req, reply) => {
      callingCluster(req, req.body.cluster_id);
      // the root calls this address back: a URL, a path or a port here would change what it calls
      requireHostOrIp(req.body.cluster_address, 'body/cluster_address');
      const c = registry.registerCluster(req.body);
      notifier.kick(c.id, true);
      void reply.type(TEXT);
      return 'cluster registered';
    },
  );

  app.get(
    rootPaths.clusters,
    {
      schema: {
        description: pagedDescription('Every cluster, in ID order'),
        querystring: ClustersQuery,
        response: { 200: pagedArray(ClusterInfo), ...errors },
      },
      config: { allow: READ },
    },
    (req, reply) =>
      inTurn(
        () => sendPage(reply, rootPaths.clusters, req.query, registry.clustersPage(pageRequest(req.query))),
        callerKey(req),
      ),
  );

  app.delete(
    '/api/net/interest/:job_name',
    {
      schema: {
        params: Type.Object({ job_name: Type.String() }),
        querystring: ClusterQuery,
        response: { 200: Text, ...errors },
      },
      config: { allow: CLUSTER },
    },
    (req, reply) => {
      const clusterId = requireCluster(callingCluster(req, req.query.cluster_id));
      registry.removeInterest(requireJobName(fromPathSegment(req.params.job_name)), clusterId);
      void reply.type(TEXT);
      return 'deregistered';
    },
  );

  // ---- services
  app.get(
    rootPaths.services,
    {
      schema: {
        description: pagedDescription('Every service (job document), in job ID order'),
        querystring: ServicesQuery,
        response: { 200: pagedArray(JobDocument), ...errors },
      },
      config: { allow: READ },
    },
    (req, reply) =>
      inTurn(() => {
        // a flood of readers of the same pages costs one read of each (root/page-cache.ts)
        const page = pageRequest(req.query);
        const { items, next } = servicePages.get(`${page.limit} ${page.after ?? ''}`, () => {
          const read = registry.jobsPage(page);
          return { items: read.items.map((j) => Registry.toDocument(j)), next: read.next };
        });
        return sendPage(reply, rootPaths.services, req.query, { items, next });
      }, callerKey(req)),
  );

  app.post(
    rootPaths.serviceDeploy,
    {
      schema: { body: ServiceDeploy, response: { 200: Text, ...errors } },
      config: { allow: ORCHESTRATOR, ...limits.allocation },
    },
    (req, reply) => {
      registry.deployService(req.body._id, req.body.deployment_descriptor);
      void reply.type(TEXT);
      return 'Instance info added';
    },
  );

  app.delete(
    '/api/net/service/:id',
    {
      schema: {
        params: Type.Object({ id: Type.String() }),
        querystring: Type.Object({ force: Type.Optional(Type.Boolean()) }),
        response: { 200: Text, ...errors },
      },
      config: { allow: ORCHESTRATOR },
    },
    (req, reply) => {
      registry.removeService(req.params.id, req.query.force ?? false);
      void reply.type(TEXT);
      return 'Job removed successfully';
    },
  );

  // ---- instances
  app.post(
    rootPaths.instanceDeploy,
    {
      schema: { body: InstanceDeploy, response: { 200: Text, ...errors } },
      config: { allow: ORCHESTRATOR, ...limits.allocation },
    },
    (req, reply) => {
      registry.deployInstance(req.body._id, req.body.instance_number, req.body.cluster_id);
      void reply.type(TEXT);
      return 'Instance info added';
    },
  );

  app.delete(
    '/api/net/:id/:instance_number',
    {
      schema: {
        params: Type.Object({ id: Type.String(), instance_number: Type.Integer({ minimum: -1 }) }),
        response: { 200: Text, ...errors },
      },
      config: { allow: ORCHESTRATOR },
    },
    (req, reply) => {
      registry.removeInstance(req.params.id, req.params.instance_number);
      void reply.type(TEXT);
      return 'Instance info cleared';
    },
  );

  app.post(
    rootPaths.netDeployStatus,
    {
      bodyLimit: LARGE_BODY_LIMIT,
      schema: { body: NetDeployStatus, response: { 200: Text, ...errors } },
      config: { allow: CLUSTER },
    },
    (req, reply) => {
      // a cluster reports only instances scheduled on itself, on its own workers
      const reporter = isClusterCaller(req) ? callingCluster(req, undefined) : undefined;
      registry.updateDeployStatus(req.body.job_id, req.body.instances, reporter);
      void reply.type(TEXT);
      return 'Status updated';
    },
  );

  // ---- resolution (registers the calling cluster's interest when it names itself)
  app.get(
    '/api/net/service/:name/instances',
    {
      schema: {
        params: Type.Object({ name: Type.String() }),
        querystring: ClusterQuery,
        response: { 200: JobDocument, ...errors },
      },
      config: { allow: CLUSTER_OR_READ },
    },
    (req) =>
      Registry.toDocument(
        registry.resolveByName(
          requireJobName(fromPathSegment(req.params.name)),
          callingCluster(req, req.query.cluster_id),
        ),
      ),
  );

  app.get(
    '/api/net/service/ip/:ip/instances',
    {
      schema: {
        params: Type.Object({ ip: Type.String() }),
        querystring: ClusterQuery,
        response: { 200: JobDocument, ...errors },
      },
      config: { allow: CLUSTER_OR_READ },
    },
    (req) =>
      Registry.toDocument(
        registry.resolveByIp(fromPathSegment(req.params.ip), callingCluster(req, req.query.cluster_id)),
      ),
  );

  // ---- worker subnetworks
  app.get(
    rootPaths.subnet,
    {
      schema: { querystring: SubnetQuery, response: { 200: SubnetReply, ...errors } },
      config: { allow: CLUSTER, ...limits.allocation },
    },
    (req) => {
      const cluster = callingCluster(req, req.query.cluster_id);
      if (security && (cluster === undefined || req.query.worker_id === undefined))
        throw new InvalidInputError('a subnetwork is allocated for a worker: ?worker_id= is needed');
      const w = registry.allocateSubnet(cluster, req.query.worker_id);
      return { subnet_addr: w.subnet, subnet_addr_v6: w.subnetV6 };
    },
  );

  app.delete(
    '/api/net/subnet/:worker_id',
    {
      schema: {
        params: Type.Object({ worker_id: Type.String() }),
        querystring: Type.Object({ ...ClusterQuery.properties, force: Type.Optional(Type.Boolean()) }),
        response: { 200: WorkerInfo, ...errors },
      },
      config: { allow: ['cluster', 'operator'] },
    },
    (req) => {
      // a cluster releases its own workers; an operator any worker, and only with ?force=true (the worker may
      // still be connected: its instances lose their addresses)
      if (req.caller.kind === 'token' && !req.query.force)
        throw new ForbiddenError(
          'releasing a worker subnetwork as an operator needs ?force=true: its node may still be connected',
        );
      const w = registry.releaseSubnet(
        requireCluster(callingCluster(req, req.query.cluster_id)),
        req.params.worker_id,
      );
      const { workerPrefixV4, workerPrefixV6 } = registry.addresses.plan.config;
      // the same form as GET /api/net/workers
      return {
        cluster_id: w.clusterId,
        worker_id: w.workerId,
        subnet: `${w.subnet}/${workerPrefixV4}`,
        subnet_v6: `${w.subnetV6}/${workerPrefixV6}`,
      };
    },
  );

  app.get(
    rootPaths.workers,
    {
      schema: {
        description: pagedDescription(
          'Every worker (of the calling cluster, or of ?cluster_id=, else of all clusters), by cluster and worker ID',
        ),
        querystring: WorkersQuery,
        response: { 200: pagedArray(WorkerInfo), ...errors },
      },
      config: { allow: CLUSTER_OR_READ },
    },
    (req, reply) =>
      inTurn(
        () =>
          sendPage(
            reply,
            rootPaths.workers,
            req.query,
            registry.workersPage(pageRequest(req.query), callingCluster(req, req.query.cluster_id)),
          ),
        callerKey(req),
      ),
  );

  // ---- public netinfo (upstream guards it with a JWT; oaknet serves it read-only without one)
  const available = (count: number, v: '4' | '6' | undefined) => ({
    available_service_ips: registry.availableIps(count, v === undefined ? undefined : v === '4' ? 4 : 6),
  });
  app.get(
    rootPaths.availableIps,
    { schema: { querystring: AvailableIpQuery, response: { 200: AvailableIps } }, config: { allow: READ } },
    (req) => available(1, req.query.v),
  );
  app.get(
    '/api/pubnet/service/netinfo/available-ip/:x',
    {
      schema: {
        params: Type.Object({ x: Type.Integer({ minimum: 1, maximum: 1000 }) }),
        querystring: AvailableIpQuery,
        response: { 200: AvailableIps, ...errors },
      },
      config: { allow: READ },
    },
    (req) => available(req.params.x, req.query.v),
  );
  app.get(
    '/api/pubnet/service/netinfo/ip/:ip',
    {
      schema: { params: Type.Object({ ip: Type.String() }), response: { 200: ServiceNetinfo, ...errors } },
      config: { allow: READ },
    },
    (req) => Registry.toNetinfo(registry.resolveByIp(fromPathSegment(req.params.ip))),
  );
  app.get(
    '/api/pubnet/service/netinfo/:name',
    {
      schema: { params: Type.Object({ name: Type.String() }), response: { 200: ServiceNetinfo, ...errors } },
      config: { allow: READ },
    },
    (req) => Registry.toNetinfo(registry.resolveByName(requireJobName(fromPathSegment(req.params.name)))),
  );

  return app;
}

function requireCluster(id: string | undefined): string {
  if (id === undefined) {
    throw new InvalidInputError(
      'this call needs ?cluster_id=<id>: oaknet identifies clusters explicitly, not by source address',
    );
  }
  return id;
}

/** True when value (parsed JSON) has objects or arrays nested deeper than max; iterative, so any depth is safe. */
