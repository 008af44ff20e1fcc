/**
 * @module protocol/root-api
 * HTTP contract of the root service manager (upstream reference section 2.4), plus what upstream lacks:
 * the calling cluster names itself with `cluster_id` (query), never by its source address.
 */
import { Type, type Static } from 'typebox';
import {
  encodePathSegment as seg,
  ID_PATTERN,
  JOB_NAME_PATTERN,
  NAME_PART_PATTERN,
  WG_PUBLIC_KEY_PATTERN,
} from './names.ts';
import { pageCursor, PageLimit } from './pagination.ts';

const Id = Type.String({
  pattern: ID_PATTERN,
  description: 'ID: 1-128 of A-Z a-z 0-9 _ . - (24-hex ObjectIds fit)',
});
const NamePart = Type.String({ pattern: NAME_PART_PATTERN });
const JobName = Type.String({
  pattern: JOB_NAME_PATTERN,
  description: 'job name app.appns.service.servicens, each part 1-30 letters or digits',
});
const Port = Type.Union([
  Type.Integer({ minimum: 1, maximum: 65535 }),
  // the same range as text (upstream sends host_port as a string): 1-65535, no leading zeros
  Type.String({
    pattern: '^(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$',
  }),
]);

/** The route's response when upstream answers with plain text. */
export const TextReply = Type.String();

export const ErrorReply = Type.Object({
  error: Type.String({ description: 'stable error code, E_*' }),
  message: Type.String(),
});
export type ErrorReply = Static<typeof ErrorReply>;

export const ClusterRegistration = Type.Object({
  cluster_id: Id,
  cluster_address: Type.String({
    minLength: 1,
    maxLength: 255,
    description: 'IP address or host name the root calls back (no scheme, port or path)',
  }),
  cluster_port: Port,
});
export type ClusterRegistration = Static<typeof ClusterRegistration>;

/** `?cluster_id=` names the calling cluster (required where upstream used the source address). */
export const ClusterQuery = Type.Object({ cluster_id: Type.Optional(Id) });
export type ClusterQuery = Static<typeof ClusterQuery>;

export const DeploymentDescriptor = Type.Object(
  {
    app_name: NamePart,
    app_ns: NamePart,
    service_name: Type.Optional(NamePart),
    service_ns: Type.Optional(NamePart),
    microservice_name: Type.Optional(NamePart),
    microservice_namespace: Type.Optional(NamePart),
    RR_ip: Type.Optional(Type.String()),
    RR_ip_v6: Type.Optional(Type.String()),
    closest_ip: Type.Optional(Type.String()),
    closest_ip_v6: Type.Optional(Type.String()),
  },
  { additionalProperties: true },
);
export type DeploymentDescriptor = Static<typeof DeploymentDescriptor>;

export const ServiceDeploy = Type.Object({ _id: Id, deployment_descriptor: DeploymentDescriptor });
export type ServiceDeploy = Static<typeof ServiceDeploy>;

export const InstanceDeploy = Type.Object({
  _id: Id,
  instance_number: Type.Integer({ minimum: 0, maximum: 1_000_000 }),
  cluster_id: Id,
});
export type InstanceDeploy = Static<typeof InstanceDeploy>;

export const DeployedInstance = Type.Object({
  instance_number: Type.Integer({ minimum: 0 }),
  namespace_ip: Type.String(),
  namespace_ip_v6: Type.Optional(Type.String()),
  host_ip: Type.String(),
  host_port: Port,
  wg_public_key: Type.Optional(Type.String({ pattern: WG_PUBLIC_KEY_PATTERN })),
  worker_id: Type.Optional(Id),
});
export type DeployedInstance = Static<typeof DeployedInstance>;

export const NetDeployStatus = Type.Object({
  job_id: Id,
  instances: Type.Array(DeployedInstance, { maxItems: 10_000 }),
});
export type NetDeployStatus = Static<typeof NetDeployStatus>;

export const SubnetQuery = Type.Object({ cluster_id: Type.Optional(Id), worker_id: Type.Optional(Id) });
export type SubnetQuery = Static<typeof SubnetQuery>;

export const SubnetReply = Type.Object({
  subnet_addr: Type.String({ description: "network address of the worker's IPv4 /26" }),
  subnet_addr_v6: Type.String({ description: "network address of the worker's IPv6 /120" }),
});
export type SubnetReply = Static<typeof SubnetReply>;

export const ServiceIp = Type.Object({
  IpType: Type.String({ description: 'RR, Closest or instance_ip' }),
  Address: Type.Union([Type.String(), Type.Null()]),
  Address_v6: Type.Union([Type.String(), Type.Null()]),
});

export const JobInstance = Type.Object({
  instance_number: Type.Integer(),
  instance_ip: Type.String(),
  instance_ip_v6: Type.String(),
  cluster_id: Type.String(),
  namespace_ip: Type.Optional(Type.String()),
  namespace_ip_v6: Type.Optional(Type.String()),
  host_ip: Type.Optional(Type.String()),
  host_port: Type.Optional(Type.Integer()),
  wg_public_key: Type.Optional(Type.String()),
  worker_id: Type.Optional(Type.String()),
});
export type JobInstance = Static<typeof JobInstance>;

/** The root's job document (upstream's shape: descriptor fields spread in, then these). */
export const JobDocument = Type.Object(
  {
    _id: Type.String(),
    system_job_id: Type.String(),
    job_name: JobName,
    service_ip_list: Type.Array(ServiceIp),
    instance_list: Type.Array(JobInstance),
  },
  { additionalProperties: true },
);
export type JobDocument = Static<typeof JobDocument>;

/** Root -> cluster: POST /api/net/job/update. instance_number -1 means every instance of the job. */
export const JobUpdateNotification = Type.Object({
  job_name: JobName,
  instance_number: Type.Integer({ minimum: -1 }),
  type: Type.Union([Type.Literal('DEPLOYMENT'), Type.Literal('UNDEPLOYMENT')]),
});
export type JobUpdateNotification = Static<typeof JobUpdateNotification>;

export const ClusterInfo = Type.Object({
  cluster_id: Type.String(),
  cluster_address: Type.String(),
  cluster_port: Type.Integer(),
  status: Type.String({ description: 'ACTIVE, or ERROR while notifications fail' }),
  pending_notifications: Type.Integer(),
  last_error: Type.Optional(Type.String()),
});
export type ClusterInfo = Static<typeof ClusterInfo>;

/** GET /api/net/service: a page of jobs; the cursor is a job ID. */
export const ServicesQuery = Type.Object({ limit: PageLimit, after: pageCursor(ID_PATTERN, 'job ID') });

/** GET /api/net/clusters: a page of clusters; the cursor is a cluster ID. */
export const ClustersQuery = Type.Object({ limit: PageLimit, after: pageCursor(ID_PATTERN, 'cluster ID') });

/** A worker cursor: cluster ID (`_` for the workers of requests without one) / worker ID. */
const WORKER_CURSOR_PATTERN = `^(?:_|${ID_PATTERN.slice(1, -1)})/${ID_PATTERN.slice(1)}`;

/** GET /api/net/workers: a page of the workers of one cluster or of all; the cursor is cluster/worker. */
export const WorkersQuery = Type.Object({
  cluster_id: Type.Optional(Id),
  limit: PageLimit,
  after: pageCursor(WORKER_CURSOR_PATTERN, 'cluster_id/worker_id'),
});

export const WorkerInfo = Type.Object({
  cluster_id: Type.String(),
  worker_id: Type.String(),
  subnet: Type.String(),
  subnet_v6: Type.String(),
});
export type WorkerInfo = Static<typeof WorkerInfo>;

export const Health = Type.Object({
  status: Type.Literal('ok'),
  boot_id: Type.String({ description: 'changes at every start of the process' }),
  version: Type.String(),
});
export type Health = Static<typeof Health>;

const Usage = Type.Object({ used: Type.Integer(), capacity: Type.Integer() });

/** GET /api/net/status: how close the root is to its limits. */
export const RootStatus = Type.Object({
  rate_limited: Type.Integer({ description: 'requests refused with 429 since this process started' }),
  services: Type.Integer({ description: 'services that exist' }),
  quotas: Type.Object({
    max_services: Type.Integer(),
    max_instances_per_service: Type.Integer(),
    max_workers_per_cluster: Type.Integer(),
  }),
  pools: Type.Record(Type.String(), Usage, { description: 'allocated entries of every address pool' }),
});
export type RootStatus = Static<typeof RootStatus>;

export const AvailableIpQuery = Type.Object({
  v: Type.Optional(Type.Union([Type.Literal('4'), Type.Literal('6')])),
});

export const AvailableIps = Type.Object({ available_service_ips: Type.Array(ServiceIp) });
export type AvailableIps = Static<typeof AvailableIps>;

/** Public netinfo view of a service (upstream /api/pubnet/service/netinfo). */
export const ServiceNetinfo = Type.Object({
  system_job_id: Type.String(),
  app_name: Type.String(),
  app_ns: Type.String(),
  service_name: Type.String(),
  service_ns: Type.String(),
  job_name: Type.String(),
  service_ip_list: Type.Array(ServiceIp),
  instance_list: Type.Array(
    Type.Object({
      cluster_id: Type.String(),
      instance_number: Type.Integer(),
      instance_ip: Type.String(),
      instance_ip_v6: Type.String(),
    }),
  ),
});
export type ServiceNetinfo = Static<typeof ServiceNetinfo>;

/**
 * Paths, built here only. Names and IPv4 addresses travel with `.` written as `_`. A segment that cannot be
 * encoded (a lone surrogate) is an InvalidInputError, never a URIError.
 */
export const rootPaths = {
  cluster: '/api/net/cluster',
  clusters: '/api/net/clusters',
  interest: (job: string) => `/api/net/interest/${seg(job)}`,
  serviceDeploy: '/api/net/service/deploy',
  service: (id: string) => `/api/net/service/${seg(id)}`,
  services: '/api/net/service',
  instanceDeploy: '/api/net/instance/deploy',
  instance: (id: string, n: number) => `/api/net/${seg(id)}/${n}`,
  netDeployStatus: '/api/net/service/net_deploy_status',
  instancesByName: (pathName: string) => `/api/net/service/${seg(pathName)}/instances`,
  instancesByIp: (pathIp: string) => `/api/net/service/ip/${seg(pathIp)}/instances`,
  subnet: '/api/net/subnet',
  workerSubnet: (worker: string) => `/api/net/subnet/${seg(worker)}`,
  workers: '/api/net/workers',
  health: '/api/net/health',
  status: '/api/net/status',
  openapi: '/docs/openapi.json',
  availableIps: '/api/pubnet/service/netinfo/available-ip/',
  netinfoByName: (pathName: string) => `/api/pubnet/service/netinfo/${seg(pathName)}`,
  netinfoByIp: (pathIp: string) => `/api/pubnet/service/netinfo/ip/${seg(pathIp)}`,
} as const;
