/**
 * @module root/api.fixtures
 * Support for the root API tests: a root on a memory store and a free port, a fetch client, the reply and
 * error-shape assertions, upstream's request bodies and the shapes of its replies.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BlockList } from 'node:net';
import pino from 'pino';
import { MemoryStore } from '../store/memory.ts';
import { startRoot, type RootOptions, type RunningRoot } from './root.ts';

export interface Reply {
  status: number;
  type: string;
  text: string;
  headers: Headers;
  /** The body parsed as JSON (throws when it is not JSON). */
  json: <T = Record<string, unknown>>() => T;
}

export interface CallOptions {
  /** Raw body text, sent as is. */
  raw?: string;
  /** Content type of the body (default application/json). */
  type?: string;
}

export function client(root: RunningRoot) {
  return async (method: string, path: string, body?: unknown, opts: CallOptions = {}): Promise<Reply> => {
    const text = opts.raw ?? (body === undefined ? undefined : JSON.stringify(body));
    const res = await fetch(root.url + path, {
      method,
      ...(text !== undefined
        ? { body: text, headers: { 'content-type': opts.type ?? 'application/json' } }
        : {}),
    });
    const replyText = await res.text();
    return {
      status: res.status,
      type: res.headers.get('content-type') ?? '',
      text: replyText,
      headers: res.headers,
      json: <T>() => JSON.parse(replyText) as T,
    };
  };
}

export async function start(extra: Partial<RootOptions> = {}): Promise<RunningRoot> {
  return startRoot({
    store: new MemoryStore(),
    log: pino({ level: 'silent' }),
    port: 0,
    host: '127.0.0.1',
    // clusters registered here listen nowhere: keep the failed deliveries from retrying during the test
    notifier: { minBackoffMs: 600_000, maxBackoffMs: 600_000, timeoutMs: 1000 },
    ...extra,
  });
}

/** A TCP port nothing listens on (a server's port after it closed). */
export async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  return port;
}

export function assertText(r: Reply, text: string): void {
  assert.equal(r.status, 200, r.text);
  assert.match(r.type, /^text\/plain/);
  assert.equal(r.text, text);
}

/** A 4xx reply in the one error shape: {error: 'E_...', message}. */
export function assertError(r: Reply, status: number, code?: string, mentions?: string | RegExp): void {
  assert.equal(r.status, status, r.text);
  const body = r.json<{ error: unknown; message: unknown }>();
  assert.equal(typeof body.error, 'string', r.text);
  assert.match(body.error as string, /^E_[A-Z_]+$/, r.text);
  assert.equal(typeof body.message, 'string', r.text);
  assert.ok((body.message as string).length > 0);
  if (code !== undefined) assert.equal(body.error, code, r.text);
  if (mentions !== undefined) {
    if (typeof mentions === 'string') assert.ok((body.message as string).includes(mentions), r.text);
    else assert.match(body.message as string, mentions);
  }
}

export function inPrefix(prefix: string, address: string): boolean {
  const [net, len] = prefix.split('/') as [string, string];
  const type = net.includes(':') ? 'ipv6' : 'ipv4';
  const list = new BlockList();
  list.addSubnet(net, Number(len), type);
  return (address.includes(':') ? 'ipv6' : 'ipv4') === type && list.check(address, type);
}

/** Upstream's path form of a job name or IPv4 address. */
export function path(nameOrIp: string): string {
  return nameOrIp.replaceAll('.', '_');
}

export interface ServiceIp {
  IpType: string;
  Address: string | null;
  Address_v6: string | null;
}
export interface Instance {
  instance_number: number;
  instance_ip: string;
  instance_ip_v6: string;
  cluster_id: string;
  namespace_ip?: string;
  namespace_ip_v6?: string;
  host_ip?: string;
  host_port?: number;
}
export interface JobDoc {
  _id: string;
  job_name: string;
  service_ip_list: ServiceIp[];
  instance_list: Instance[];
  [key: string]: unknown;
}
export interface ClusterRow {
  cluster_id: string;
  cluster_address: string;
  cluster_port: number;
  status: string;
  pending_notifications: number;
  last_error?: string;
}

/** An upstream system manager's deploy body (descriptor fields beyond the ones the network needs included). */
export function deployBody(id: string, service: string, extra: Record<string, unknown> = {}) {
  return {
    _id: id,
    deployment_descriptor: {
      app_name: 'shop',
      app_ns: 'prod',
      service_name: service,
      service_ns: 'web',
      microservice_name: service,
      microservice_namespace: 'web',
      image: 'docker.io/library/nginx:latest',
      memory: 100,
      vcpus: 1,
      port: '80',
      addresses: { rr_ip: '' },
      ...extra,
    },
  };
}

export const jobName = (service: string) => `shop.prod.${service}.web`;
