/**
 * @module protocol/root-client
 * A typed client of the root service manager's HTTP API, used by clusters (with their cluster_id) and by
 * the operator CLI. Replies are validated; failures come back as OakNetErrors: the root's own error code
 * when it answered with one (RateLimitedError, with the root's Retry-After, for a 429), UnavailableError
 * when it could not be reached or timed out. Lists are fetched page after page to the end.
 */
import { randomBytes } from 'node:crypto';
import type { Static, TSchema } from 'typebox';
import { NotFoundError, OakNetError, RateLimitedError, UnavailableError } from '../errors.ts';
import { toPathSegment } from './names.ts';
import { MAX_PAGE_LIMIT, nextCursorOf } from './pagination.ts';
import {
  ClusterInfo,
  Health,
  JobDocument,
  rootPaths,
  SubnetReply,
  WorkerInfo,
  type ClusterRegistration,
  type DeploymentDescriptor,
  type NetDeployStatus,
} from './root-api.ts';
import { TokenInfo, type Role } from '../security/tokens.ts';
import { AuthStatus, authPaths, ClusterRevoked, TokenCreated, TokenList } from './auth-api.ts';
import { HttpTransport, type Credentials, type HttpResponse } from './http-client.ts';
import { parser, type Parser } from './validate.ts';
import { Type } from 'typebox';

export interface RootClientOptions {
  /** The calling cluster; sent as ?cluster_id= where the root needs to know who asks. */
  clusterId?: string;
  /** Per-request timeout (default 5 s). */
  timeoutMs?: number;
  /** TLS (for an https root) and a bearer token. */
  credentials?: Credentials;
}

const parsers = {
  health: parser(Health),
  job: parser(JobDocument),
  jobs: parser(Type.Array(JobDocument)),
  subnet: parser(SubnetReply),
  worker: parser(WorkerInfo),
  workers: parser(Type.Array(WorkerInfo)),
  clusters: parser(Type.Array(ClusterInfo)),
  tokenInfo: parser(TokenInfo),
  tokenList: parser(TokenList),
  tokenCreated: parser(TokenCreated),
  authStatus: parser(AuthStatus),
  clusterRevoked: parser(ClusterRevoked),
};

export class RootClient {
  readonly baseUrl: string;
  private readonly timeoutMs: number;
  private transport: HttpTransport;

  constructor(
    baseUrl: string,
    private readonly options: RootClientOptions = {},
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.transport = new HttpTransport(this.baseUrl, options.credentials, 'root');
  }

  /** Uses new credentials from now on (a renewed certificate). */
  setCredentials(credentials: Credentials): void {
    this.transport.close();
    this.transport = new HttpTransport(this.baseUrl, credentials, 'root');
  }

  close(): void {
    this.transport.close();
  }

  health(): Promise<Health> {
    return this.json('GET', rootPaths.health, parsers.health);
  }

  async registerCluster(reg: ClusterRegistration): Promise<void> {
    await this.text('POST', rootPaths.cluster, { body: reg });
  }

  /** The subnetworks of a worker of this cluster (the same ones on every call for a known worker). */
  subnet(workerId: string): Promise<SubnetReply> {
    return this.json('GET', rootPaths.subnet, parsers.subnet, {
      query: { worker_id: workerId },
      withCluster: true,
    });
  }

  /** Releases a worker's subnetworks; `force` (operators): even while the worker may be connected. */
  releaseSubnet(workerId: string, force = false): Promise<WorkerInfo> {
    return this.json('DELETE', rootPaths.workerSubnet(workerId), parsers.worker, {
      withCluster: true,
      ...(force ? { query: { force: 'true' } } : {}),
    });
  }

  /** Every worker (of this client's cluster when it has a cluster_id), page after page. */
  workers(): Promise<WorkerInfo[]> {
    return this.all(rootPaths.workers, parsers.workers, true);
  }

  /** Every cluster, page after page. */
  clusters(): Promise<ClusterInfo[]> {
    return this.all(rootPaths.clusters, parsers.clusters);
  }

  async deployStatus(status: NetDeployStatus): Promise<void> {
    await this.text('POST', rootPaths.netDeployStatus, { body: status });
  }

  /** The job named `name` (registers this cluster's interest when a cluster_id is set). */
  jobByName(name: string): Promise<JobDocument> {
    return this.json('GET', rootPaths.instancesByName(toPathSegment(name)), parsers.job, {
      withCluster: true,
    });
  }

  /** The job owning a ServiceIP or instance IP (registers interest like jobByName). */
  jobByIp(ip: string): Promise<JobDocument> {
    return this.json('GET', rootPaths.instancesByIp(toPathSegment(ip)), parsers.job, { withCluster: true });
  }

  async removeInterest(jobName: string): Promise<void> {
    await this.text('DELETE', rootPaths.interest(toPathSegment(jobName)), { withCluster: true });
  }

  async deployService(id: string, descriptor: DeploymentDescriptor): Promise<void> {
    await this.text('POST', rootPaths.serviceDeploy, {
      body: { _id: id, deployment_descriptor: descriptor },
    });
  }

  /**
   * Creates the service named app.appns.service.servicens (a fresh system job ID, as an orchestrator would
   * give it), with chosen ServiceIPs where given; returns the job ID.
   */
  async createService(
    name: string,
    chosen: { RR_ip?: string; RR_ip_v6?: string; closest_ip?: string; closest_ip_v6?: string } = {},
  ): Promise<string> {
    const [app, appNs, svc, svcNs] = name.split('.') as [string, string, string, string];
    const id = randomBytes(12).toString('hex');
    await this.deployService(id, {
      app_name: app,
      app_ns: appNs,
      service_name: svc,
      service_ns: svcNs,
      microservice_name: svc,
      microservice_namespace: svcNs,
      ...chosen,
    });
    return id;
  }

  async removeService(id: string, force: boolean): Promise<void> {
    await this.text('DELETE', rootPaths.service(id), { query: force ? { force: 'true' } : {} });
  }

  /** Every service, page after page. */
  services(): Promise<JobDocument[]> {
    return this.all(rootPaths.services, parsers.jobs);
  }

  async deployInstance(jobId: string, instance: number, clusterId: string): Promise<void> {
    await this.text('POST', rootPaths.instanceDeploy, {
      body: { _id: jobId, instance_number: instance, cluster_id: clusterId },
    });
  }

  async removeInstance(jobId: string, instance: number): Promise<void> {
    await this.text('DELETE', rootPaths.instance(jobId, instance));
  }

  /** Asks the root whether a token is valid now with one of `roles` (clusters ask for their callers). */
  verifyToken(token: string, roles: readonly Role[]): Promise<TokenInfo> {
    return this.json('POST', authPaths.verifyToken, parsers.tokenInfo, { body: { token, roles } });
  }

  createToken(role: Role, ttlSeconds?: number, description?: string): Promise<TokenCreated> {
    return this.json('POST', authPaths.tokens, parsers.tokenCreated, {
      body: {
        role,
        ...(ttlSeconds !== undefined ? { ttl_seconds: ttlSeconds } : {}),
        ...(description !== undefined ? { description } : {}),
      },
    });
  }

  tokens(): Promise<TokenInfo[]> {
    return this.json('GET', authPaths.tokens, parsers.tokenList);
  }

  revokeToken(id: string): Promise<TokenInfo> {
    return this.json('DELETE', authPaths.token(id), parsers.tokenInfo);
  }

  /** Revokes a cluster (operator): its certificates stop working; it must enroll again with a new token. */
  revokeCluster(id: string): Promise<ClusterRevoked> {
    return this.json('DELETE', authPaths.cluster(id), parsers.clusterRevoked);
  }

  authStatus(): Promise<AuthStatus> {
    return this.json('GET', authPaths.status, parsers.authStatus);
  }

  /** Every record of a paged list: the largest pages, following the Link header's cursor to the end. */
  private async all<T extends TSchema>(
    path: string,
    p: Parser<T>,
    withCluster = false,
  ): Promise<Array<Static<T>[number]>> {
    const out: Array<Static<T>[number]> = [];
    let after: string | undefined;
    for (;;) {
      const query: Record<string, string> = { limit: String(MAX_PAGE_LIMIT) };
      if (after !== undefined) query['after'] = after;
      const { text, headers } = await this.request('GET', path, { query, withCluster });
      out.push(...(this.parse(text, 'GET', path, p) as Array<Static<T>[number]>));
      const link = headers['link'];
      const next = nextCursorOf(Array.isArray(link) ? link.join(', ') : link);
      if (next === undefined) return out;
      if (next === after)
        throw new UnavailableError(`root GET ${path}: the next page's cursor did not advance`);
      after = next;
    }
  }

  private async json<T extends TSchema>(
    method: string,
    path: string,
    p: Parser<T>,
    opts: RequestOptions = {},
  ): Promise<Static<T>> {
    return this.parse((await this.request(method, path, opts)).text, method, path, p);
  }

  private parse<T extends TSchema>(body: string, method: string, path: string, p: Parser<T>): Static<T> {
    let value: unknown;
    try {
      value = JSON.parse(body);
    } catch (cause) {
      throw new UnavailableError(`root ${method} ${path} answered with non-JSON`, { cause });
    }
    return p.parse(value, `root reply to ${method} ${path}`);
  }

  private async text(method: string, path: string, opts: RequestOptions = {}): Promise<string> {
    return (await this.request(method, path, opts)).text;
  }

  private async request(
    method: string,
    path: string,
    opts: RequestOptions,
  ): Promise<{ text: string; headers: HttpResponse['headers'] }> {
    const query = new URLSearchParams(opts.query ?? {});
    if (opts.withCluster && this.options.clusterId !== undefined)
      query.set('cluster_id', this.options.clusterId);
    const q = query.size > 0 ? `?${query.toString()}` : '';
    const res = await this.transport.request(method, path + q, {
      ...(opts.body !== undefined ? { body: opts.body } : {}),
      timeoutMs: this.timeoutMs,
    });
    return { text: replyText(res, `root ${method} ${path}`), headers: res.headers };
  }
}

/** The body of a 2xx reply; otherwise the server's own error (code and message) as an OakNetError. */
export function replyText(res: HttpResponse, what: string): string {
  const text = res.text;
  if (res.status >= 200 && res.status < 300) return text;
  let code = 'E_UNAVAILABLE';
  let message = `${what} answered ${res.status}`;
  try {
    const err = JSON.parse(text) as { error?: unknown; message?: unknown };
    if (typeof err.error === 'string' && typeof err.message === 'string') {
      code = err.error;
      message = err.message;
    }
  } catch {
    if (text) message += `: ${text.slice(0, 200)}`;
  }
  if (res.status >= 500 && res.status !== 507) throw new UnavailableError(message);
  if (code === 'E_NOT_FOUND') throw new NotFoundError(message);
  if (res.status === 429) {
    const retry = Number(res.headers['retry-after']);
    throw new RateLimitedError(message, Number.isFinite(retry) && retry > 0 ? retry : 1);
  }
  throw new OakNetError(code, message);
}

interface RequestOptions {
  query?: Record<string, string>;
  body?: unknown;
  /** Adds ?cluster_id= of this client. */
  withCluster?: boolean;
}
