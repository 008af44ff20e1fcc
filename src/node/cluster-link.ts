/**
 * @module node/cluster-link
 * The NetManager's side of the MQTT contract with its cluster (reference section 2.2), as upstream speaks
 * it: client ID = worker ID, QoS 1, upstream's topics and payloads. Unlike upstream, every wait is bounded
 * and cleaned up (a lost answer leaves nothing behind), the subnetwork request is retried instead of exiting,
 * and answers are validated before use.
 */
import type { MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { IpAddress } from '../addressing/ip.ts';
import { errorMessage, UnavailableError } from '../errors.ts';
import { connectMqtt, mqttTlsOptions } from '../protocol/mqtt-client.ts';
import type { NodeCredentials, NodeIdentity } from './credentials.ts';
import type { ClusterChannel, DeploymentReport } from './cluster-channel.ts';
import {
  MQTT_QOS,
  parseJobUpdatesTopic,
  parsers,
  topics,
  type ClusterInfoMessage,
  type TableQueryResult,
} from '../protocol/mqtt.ts';

export interface ClusterLinkOptions {
  log: Logger;
  /** A secure cluster: MQTT over TLS with this node's certificate (mqtts:// instead of mqtt://). */
  credentials?: NodeCredentials;
  /** Per-attempt wait for an answer (ms, default 3000). */
  answerTimeoutMs?: number;
}

interface PendingQuery {
  keys: string[];
  resolve: (r: TableQueryResult) => void;
}

export class ClusterLink implements ClusterChannel {
  private mqtt: { client: MqttClient; url: string; workerId: string } | undefined;
  private readonly pendingQueries = new Set<PendingQuery>();
  private subnetWaiter: ((r: { address: string; addressv6: string }) => void) | undefined;
  private readonly jobHandlers = new Set<(job: string) => void>();
  private readonly infoHandlers = new Set<(info: ClusterInfoMessage) => void>();
  private readonly subscribedJobs = new Set<string>();
  private readonly answerTimeoutMs: number;
  /** Answers that could not be parsed (counted, ignored). */
  invalidMessages = 0;
  private connectedOnce = false;
  private readonly reconnectHandlers = new Set<() => void>();
  /** What the cluster announced about itself (oaknet clusters only). */
  clusterInfo: ClusterInfoMessage | undefined;

  constructor(private readonly o: ClusterLinkOptions) {
    this.answerTimeoutMs = o.answerTimeoutMs ?? 3000;
    // a renewed certificate is used from the next (re)connection on: one listener for the link's life, not
    // one per connect (they would pile up, each holding a closed client)
    o.credentials?.onRenewed((n) => {
      if (this.mqtt) Object.assign(this.mqtt.client.options, tlsOf(n));
    });
  }

  /** The node's identity for workerId (enrolled with `token`, else the command line's, if it has none). */
  async prepare(workerId: string, token?: string): Promise<void> {
    const creds = this.o.credentials;
    if (!creds) return;
    await creds.forWorker(workerId, token);
    creds.startRenewal();
  }

  /** Connects (and keeps reconnecting) to the broker at `url` as worker `workerId`; again only after close(). */
  connect(workerId: string, url: string): void {
    if (this.mqtt) throw new Error(`already connected as ${this.mqtt.workerId}`);
    const id = this.o.credentials?.current;
    if (this.o.credentials && !id) throw new Error('prepare() first: the node has no identity yet');
    const client = connectMqtt(id ? url.replace(/^mqtt:/, 'mqtts:') : url, {
      clientId: workerId,
      clean: true,
      reconnectPeriod: 1000,
      connectTimeout: 5000,
      ...(id ? tlsOf(id) : {}),
    });
    this.mqtt = { client, url, workerId };
    const log = this.o.log;
    client.on('error', (err) => log.warn({ err: err.message }, 'mqtt error'));
    client.on('message', (topic, payload) => {
      try {
        this.onMessage(topic, payload.toString('utf8'));
      } catch (err) {
        // a message must never take the NetManager down
        this.invalidMessages++;
        log.warn({ topic, err: errorMessage(err) }, 'could not handle an MQTT message');
      }
    });
    client.on('connect', () => {
      if (this.connectedOnce) for (const h of this.reconnectHandlers) h();
      this.connectedOnce = true;
    });
  }

  /** Resolves once connected and subscribed to this node's result topics. */
  async ready(timeoutMs = 15_000): Promise<void> {
    const { client, url, workerId } = this.session();
    if (!client.connected) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new UnavailableError(`MQTT broker ${url} not reachable`)),
          timeoutMs,
        );
        client.once('connect', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    await client.subscribeAsync(
      [topics.tableQueryResult(workerId), topics.subnetResult(workerId), topics.clusterInfo],
      { qos: MQTT_QOS },
    );
  }

  get connected(): boolean {
    return this.mqtt?.client.connected ?? false;
  }

  /** The worker's subnetworks (network addresses); asks until the cluster answers with one. */
  async requestSubnet(signal?: AbortSignal): Promise<{ v4: string; v6: string }> {
    let backoff = 500;
    for (;;) {
      signal?.throwIfAborted();
      const answer = await new Promise<{ address: string; addressv6: string } | undefined>((resolve) => {
        const timer = setTimeout(() => {
          this.subnetWaiter = undefined;
          resolve(undefined);
        }, this.answerTimeoutMs);
        this.subnetWaiter = (r) => {
          clearTimeout(timer);
          this.subnetWaiter = undefined;
          resolve(r);
        };
        this.publish(topics.subnetRequest(this.session().workerId), { METHOD: 'GET' });
      });
      const v4 = answer?.address ? IpAddress.tryParse(answer.address) : undefined;
      const v6 = answer?.addressv6 ? IpAddress.tryParse(answer.addressv6) : undefined;
      if (v4?.family === 4 && v6?.family === 6) return { v4: v4.toString(), v6: v6.toString() };
      this.o.log.warn({ answer, retryInMs: backoff }, 'no subnetwork from the cluster yet; asking again');
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 10_000);
    }
  }

  /** Tells the cluster this worker leaves: its subnetwork is released. */
  releaseSubnet(): void {
    this.publish(topics.subnetRequest(this.session().workerId), { METHOD: 'DELETE' });
  }

  /**
   * A table query by job name or by address; resolves with the answer (an empty instance list when nothing
   * matches) or undefined when no answer came in time.
   */
  query(by: { sname: string } | { sip: string }): Promise<TableQueryResult | undefined> {
    const sname = 'sname' in by ? by.sname : '';
    const sip = 'sip' in by ? by.sip : '';
    // offline: no answer can come, and queued questions would only go out stale at the reconnect
    if (!this.connected) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const q: PendingQuery = { keys: [sname || sip], resolve: (r) => done(r) };
      const timer = setTimeout(() => done(undefined), this.answerTimeoutMs);
      const done = (r: TableQueryResult | undefined) => {
        clearTimeout(timer);
        this.pendingQueries.delete(q);
        resolve(r);
      };
      this.pendingQueries.add(q);
      this.publish(topics.tableQueryRequest(this.session().workerId), { sname, sip });
    });
  }

  /** Reports a deployed instance (upstream's Go struct: host_port is a string). */
  reportDeployed(d: DeploymentReport): void {
    this.publish(topics.serviceDeployed(this.session().workerId), {
      appname: d.job,
      status: 'DEPLOYED',
      instance_number: d.instance,
      nsip: d.nsip,
      nsipv6: d.nsipv6,
      host_port: String(d.hostPort),
      host_ip: d.hostIp,
      ...(d.publicKey !== undefined ? { wg_public_key: d.publicKey } : {}),
    });
  }

  /** Reports an instance that left this node (oaknet; upstream clusters ignore it). */
  reportUndeployed(job: string, instance: number): void {
    this.publish(topics.serviceUndeployed(this.session().workerId), {
      appname: job,
      instance_number: instance,
    });
  }

  /** Reports a new public address of this node. */
  reportAddressChanged(hostIp: string, hostPort: number, publicKey?: string): void {
    this.publish(topics.addressChanged(this.session().workerId), {
      appname: '',
      status: '',
      instance_number: 0,
      nsip: '',
      nsipv6: '',
      host_port: String(hostPort),
      host_ip: hostIp,
      ...(publicKey !== undefined ? { wg_public_key: publicKey } : {}),
    });
  }

  /** Subscribes to a job's updates_available. */
  async watchJob(job: string): Promise<void> {
    if (this.subscribedJobs.has(job)) return;
    this.subscribedJobs.add(job);
    await this.session().client.subscribeAsync(topics.jobUpdates(job), { qos: MQTT_QOS });
  }

  /** Unsubscribes and tells the cluster the interest is gone. */
  async unwatchJob(job: string): Promise<void> {
    if (!this.subscribedJobs.delete(job)) return;
    this.publish(topics.interestRemove(this.session().workerId), { appname: job });
    await this.session()
      .client.unsubscribeAsync(topics.jobUpdates(job))
      .catch(() => undefined);
  }

  /**
   * Calls handler after every reconnect (not the first connect): updates published while the node was away
   * are lost (clean session), so what it knows must be refreshed.
   */
  onClusterInfo(handler: (info: ClusterInfoMessage) => void): void {
    this.infoHandlers.add(handler);
  }

  onReconnect(handler: () => void): void {
    this.reconnectHandlers.add(handler);
  }

  /** Calls handler(job) for every updates_available message. */
  onJobUpdate(handler: (job: string) => void): void {
    this.jobHandlers.add(handler);
  }

  /** Ends the connection; pending questions get empty answers. connect() may start a new one afterwards. */
  async close(): Promise<void> {
    const session = this.mqtt;
    this.mqtt = undefined;
    this.subscribedJobs.clear();
    this.connectedOnce = false;
    this.subnetWaiter = undefined;
    for (const q of [...this.pendingQueries]) q.resolve({ app_name: '', instance_list: [], query_key: '' });
    await session?.client.endAsync(true).catch(() => undefined);
  }

  /** The connection made by connect(); a caller bug before it. */
  private session(): { client: MqttClient; url: string; workerId: string } {
    if (!this.mqtt) throw new Error('the cluster link is not connected yet');
    return this.mqtt;
  }

  private publish(topic: string, payload: unknown): void {
    this.session().client.publish(topic, JSON.stringify(payload), { qos: MQTT_QOS, retain: false }, (err) => {
      if (err) this.o.log.warn({ topic, err: errorMessage(err) }, 'mqtt publish failed');
    });
  }

  private onMessage(topic: string, text: string): void {
    const job = parseJobUpdatesTopic(topic);
    if (job !== undefined) {
      for (const h of this.jobHandlers) h(job);
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      this.invalidMessages++;
      return;
    }
    if (topic === topics.clusterInfo) {
      if (parsers.clusterInfo.check(value)) {
        this.clusterInfo = value;
        for (const h of this.infoHandlers) h(value);
      } else this.invalidMessages++;
      return;
    }
    if (topic === topics.subnetResult(this.session().workerId)) {
      if (parsers.subnetResult.check(value)) this.subnetWaiter?.(value);
      else this.invalidMessages++;
      return;
    }
    if (topic === topics.tableQueryResult(this.session().workerId)) {
      const envelope = value as Partial<TableQueryResult> | null;
      if (!envelope || typeof envelope !== 'object' || !Array.isArray(envelope.instance_list)) {
        this.invalidMessages++;
        return;
      }
      const result: TableQueryResult = {
        app_name: typeof envelope.app_name === 'string' ? envelope.app_name : '',
        instance_list: envelope.instance_list,
        query_key: typeof envelope.query_key === 'string' ? envelope.query_key : '',
      };
      // correlate by query key, job name, or any address in the answer (upstream's rule); every level is
      // checked, since anybody can publish here (the broker has no authentication, as upstream's)
      const keys = new Set<string>([result.query_key, result.app_name ?? '']);
      for (const i of result.instance_list as unknown[]) {
        const ips = isObject(i) ? i['service_ip'] : undefined;
        if (!Array.isArray(ips)) continue;
        for (const s of ips as unknown[]) {
          if (!isObject(s)) continue;
          if (typeof s['Address'] === 'string') keys.add(s['Address']);
          if (typeof s['Address_v6'] === 'string') keys.add(s['Address_v6']);
        }
      }
      for (const q of [...this.pendingQueries]) if (q.keys.some((k) => keys.has(k))) q.resolve(result);
    }
  }
}

/** mqtt.js TLS options for a node's identity: its chain, and the broker must be its cluster. */
function tlsOf(n: NodeIdentity) {
  return mqttTlsOptions({
    ca: n.ca,
    key: n.key,
    cert: n.chain,
    expect: { kind: 'cluster', clusterId: n.clusterId },
  });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
