/**
 * @module protocol/node-client
 * A client of the NetManager API over its unix socket (what an orchestrator's node engine, `oaknet run` and
 * `oaknet status` use). Node's fetch cannot speak over a unix socket, so this uses node:http.
 */
import { request } from 'node:http';
import { OakNetError, UnavailableError } from '../errors.ts';
import { ContainerDeployReply, nodePaths, NodeStatus, type ContainerDeploy } from './node-api.ts';
import { parser } from './validate.ts';

const parsers = { status: parser(NodeStatus), deploy: parser(ContainerDeployReply) };

export class NodeClient {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = 30_000,
  ) {}

  async status(): Promise<NodeStatus> {
    return parsers.status.parse(JSON.parse(await this.call('GET', nodePaths.status)), 'NetManager status');
  }

  async register(workerId: string, clusterAddress?: string): Promise<void> {
    await this.call('POST', nodePaths.register, {
      client_id: workerId,
      ...(clusterAddress ? { cluster_address: clusterAddress } : {}),
    });
  }

  async deploy(req: ContainerDeploy): Promise<ContainerDeployReply> {
    return parsers.deploy.parse(JSON.parse(await this.call('POST', nodePaths.deploy, req)), 'deploy reply');
  }

  async undeploy(serviceName: string, instanceNumber: number): Promise<void> {
    await this.call('POST', nodePaths.undeploy, { serviceName, instanceNumber });
  }

  private call(method: string, path: string, body?: unknown): Promise<string> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          path,
          method,
          headers: payload
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
            : {},
          timeout: this.timeoutMs,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => {
            if ((res.statusCode ?? 500) < 300) return resolve(text);
            let err: OakNetError = new UnavailableError(
              `NetManager answered ${res.statusCode} to ${method} ${path}: ${text.slice(0, 300)}`,
            );
            try {
              const e = JSON.parse(text) as { error?: unknown; message?: unknown };
              if (typeof e.error === 'string' && typeof e.message === 'string')
                err = new OakNetError(e.error, e.message);
            } catch {
              // not JSON: keep the raw text
            }
            reject(err);
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`timeout after ${this.timeoutMs} ms`)));
      req.on('error', (cause) =>
        reject(
          new UnavailableError(`NetManager socket ${this.socketPath} unreachable (${method} ${path})`, {
            cause,
          }),
        ),
      );
      req.end(payload);
    });
  }
}
