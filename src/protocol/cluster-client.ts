/**
 * @module protocol/cluster-client
 * A small client of the cluster service manager's HTTP API (what an orchestrator's cluster manager and
 * `oaknet run` call).
 */
import { clusterPaths, ClusterStatus } from './cluster-api.ts';
import { HttpTransport, type Credentials } from './http-client.ts';
import { replyText } from './root-client.ts';
import { parser } from './validate.ts';

const statusParser = parser(ClusterStatus);

export class ClusterClient {
  readonly baseUrl: string;
  private readonly transport: HttpTransport;

  constructor(
    baseUrl: string,
    private readonly timeoutMs = 10_000,
    credentials: Credentials = {},
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.transport = new HttpTransport(this.baseUrl, credentials, 'cluster');
  }

  async status(): Promise<ClusterStatus> {
    return statusParser.parse(JSON.parse(await this.call('GET', clusterPaths.status)), 'cluster status');
  }

  /** Announces a job scheduled on one of this cluster's nodes (the cluster caches its table). */
  async announceDeployment(jobName: string): Promise<void> {
    await this.call('POST', clusterPaths.deployment, { job_name: jobName });
  }

  close(): void {
    this.transport.close();
  }

  private async call(method: string, path: string, body?: unknown): Promise<string> {
    const res = await this.transport.request(method, path, {
      ...(body !== undefined ? { body } : {}),
      timeoutMs: this.timeoutMs,
    });
    return replyText(res, `cluster ${method} ${path}`);
  }
}
