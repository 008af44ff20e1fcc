/**
 * @module protocol/cluster-client
 * A small client of the cluster service manager's HTTP API (what an orchestrator's cluster manager and
 * `oaknet run` call).
 */
import { OakNetError, UnavailableError } from '../errors.ts';
import { clusterPaths, ClusterStatus } from './cluster-api.ts';
import { parser } from './validate.ts';

const statusParser = parser(ClusterStatus);

export class ClusterClient {
  readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly timeoutMs = 10_000,
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
  }

  async status(): Promise<ClusterStatus> {
    return statusParser.parse(JSON.parse(await this.call('GET', clusterPaths.status)), 'cluster status');
  }

  /** Announces a job scheduled on one of this cluster's nodes (the cluster caches its table). */
  async announceDeployment(jobName: string): Promise<void> {
    await this.call('POST', clusterPaths.deployment, { job_name: jobName });
  }

  private async call(method: string, path: string, body?: unknown): Promise<string> {
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, {
        method,
        ...(body !== undefined
          ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }
          : {}),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (cause) {
      throw new UnavailableError(`cluster ${this.baseUrl} unreachable (${method} ${path})`, { cause });
    }
    const text = await res.text();
    if (res.ok) return text;
    try {
      const e = JSON.parse(text) as { error?: unknown; message?: unknown };
      if (typeof e.error === 'string' && typeof e.message === 'string')
        throw new OakNetError(e.error, e.message);
    } catch (err) {
      if (err instanceof OakNetError) throw err;
    }
    throw new UnavailableError(`cluster answered ${res.status} to ${method} ${path}: ${text.slice(0, 300)}`);
  }
}
