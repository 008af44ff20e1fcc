/**
 * @module cluster/cluster
 * Wiring of the cluster service manager: store -> cache -> resolver; MQTT broker (embedded aedes, or an
 * external one such as mosquitto) and client; the NetManager channel; the link to the root; HTTP API.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { errorMessage, UnavailableError } from '../errors.ts';
import type { ClusterStatus } from '../protocol/cluster-api.ts';
import { LimitCounters, type RateLimits } from '../protocol/http-limits.ts';
import { connectMqtt } from '../protocol/mqtt-client.ts';
import { MQTT_QOS, topics } from '../protocol/mqtt.ts';
import { RootClient } from '../protocol/root-client.ts';
import { hostForUrl } from '../protocol/url.ts';
import type { Store } from '../store/store.ts';
import { VERSION } from '../version.ts';
import { buildClusterApi } from './api.ts';
import { startEmbeddedBroker, type EmbeddedBroker } from './broker.ts';
import { ClusterCache } from './cache.ts';
import { NodeChannel } from './node-channel.ts';
import { Resolver } from './resolver.ts';
import { RootLink } from './root-link.ts';

export interface ClusterOptions {
  rootUrl: string;
  store: Store;
  log: Logger;
  /** HTTP port (0: any). */
  port: number;
  /** HTTP and embedded-broker listen address (default all interfaces). */
  host?: string;
  /** Port of the embedded broker (ignored with mqttUrl; 0: any). */
  mqttPort?: number;
  /** An external broker, e.g. mqtt://127.0.0.1:1883; no embedded broker is started. */
  mqttUrl?: string;
  /** Default: the one in the store, else a new random one (kept in the store). */
  clusterId?: string;
  /** Address the root calls back (default: this host's address towards the root). */
  advertiseAddress?: string;
  /** Root health-check period (default 2 s). */
  rootCheckMs?: number;
  /** Per-caller rate limits of the HTTP API (protocol/http-limits.ts has the defaults). */
  rateLimits?: Partial<RateLimits>;
}

export interface RunningCluster {
  clusterId: string;
  url: string;
  port: number;
  mqttUrl: string;
  channel: NodeChannel;
  cache: ClusterCache;
  status(): ClusterStatus;
  close(): Promise<void>;
}

export async function startCluster(o: ClusterOptions): Promise<RunningCluster> {
  const log = o.log;
  const clusterId = o.clusterId ?? storedClusterId(o.store);
  o.store.transact((tx) => tx.put('meta/cluster_id', clusterId));
  const cache = new ClusterCache(o.store);
  cache.dropJobs();
  const root = new RootClient(o.rootUrl, { clusterId });
  const resolver = new Resolver(cache, root, log.child({ component: 'resolver' }));

  let broker: EmbeddedBroker | undefined;
  let mqttUrl = o.mqttUrl;
  if (!mqttUrl) {
    broker = await startEmbeddedBroker(
      o.mqttPort ?? 10003,
      o.host ?? '::',
      log.child({ component: 'broker' }),
    );
    mqttUrl = `mqtt://127.0.0.1:${broker.port}`;
  }
  const mqtt: MqttClient = connectMqtt(mqttUrl, {
    clientId: `oaknet-cluster-${clusterId}`,
    clean: true,
    reconnectPeriod: 1000,
    connectTimeout: 5000,
  });
  mqtt.on('error', (err) => log.warn({ err: err.message, mqtt: mqttUrl }, 'mqtt error'));
  mqtt.on('reconnect', () => log.debug({ mqtt: mqttUrl }, 'mqtt reconnecting'));
  const publish = async (topic: string, payload: string): Promise<void> => {
    // bounded: while the broker is away the message waits in the client's queue, the caller does not
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      mqtt.publishAsync(topic, payload, { qos: MQTT_QOS, retain: false }),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new UnavailableError(`MQTT publish to ${topic} not acknowledged in 5 s`)),
          5000,
        );
      }),
    ]).finally(() => clearTimeout(timer));
  };

  let link: RootLink | undefined;
  const channel = new NodeChannel({
    cache,
    resolver,
    root,
    publish,
    log: log.child({ component: 'nodes' }),
    onStatusQueued: () => link?.kickStatus(),
  });
  mqtt.on('message', (topic, payload) => void channel.handle(topic, payload));

  const counters = new LimitCounters();
  const status = (): ClusterStatus => ({
    cluster_id: clusterId,
    root: o.rootUrl,
    root_reachable: link?.reachable ?? false,
    mqtt: mqttUrl,
    nodes: cache.nodes().map((n) => ({
      worker_id: n.workerId,
      subnet: n.subnet,
      subnet_v6: n.subnetV6,
      last_seen: cache.lastSeenOf(n.workerId)?.toISOString() ?? '',
    })),
    pending_status_reports: cache.pendingStatusCount(),
    rate_limited: counters.rateLimited,
    cached_jobs: cache.jobs().map((j) => ({
      job_name: j.job_name,
      instances: j.instance_list.length,
      interested_nodes: cache.interestedNodes(j.job_name),
    })),
  });
  const app = await buildClusterApi({
    cache,
    resolver,
    channel,
    log,
    status,
    bootId: randomUUID(),
    version: VERSION,
    counters,
    ...(o.rateLimits ? { rateLimits: o.rateLimits } : {}),
  });
  await app.listen({ port: o.port, host: o.host ?? '::' });
  const port = (app.server.address() as AddressInfo).port;

  await waitConnected(mqtt, 10_000, log, mqttUrl);
  await mqtt.subscribeAsync(topics.allNodes, { qos: MQTT_QOS });
  // what changed while this cluster was down never reached its nodes: make every node that is interested in a
  // job ask for it again (its table comes from the root, fresh)
  for (const job of cache.jobsWithInterest()) {
    void channel
      .publishUpdates(job, 'DEPLOYMENT')
      .catch((err: unknown) => log.debug({ job, err: errorMessage(err) }, 'restart update not sent'));
  }

  link = new RootLink({
    root,
    rootUrl: o.rootUrl,
    cache,
    log: log.child({ component: 'root-link' }),
    clusterId,
    clusterPort: port,
    ...(o.advertiseAddress !== undefined ? { advertiseAddress: o.advertiseAddress } : {}),
    intervalMs: o.rootCheckMs ?? 2000,
    onRegistered: (address) => {
      const info = { cluster_id: clusterId, api: `http://${hostForUrl(address)}:${port}`, root: o.rootUrl };
      mqtt.publish(topics.clusterInfo, JSON.stringify(info), { qos: MQTT_QOS, retain: true }, (err) => {
        if (err) log.warn({ err: err.message }, 'could not publish the cluster info');
      });
    },
  });
  await link.start(5000);
  log.info({ clusterId, port, mqtt: mqttUrl }, 'cluster service manager ready');

  return {
    clusterId,
    url: `http://127.0.0.1:${port}`,
    port,
    mqttUrl,
    channel,
    cache,
    status,
    async close() {
      await link?.close();
      await app.close();
      await mqtt.endAsync(true);
      await broker?.close();
      o.store.close();
    },
  };
}

function storedClusterId(store: Store): string {
  return (
    store.transact((tx) => tx.get<string>('meta/cluster_id')) ?? `cluster-${randomBytes(4).toString('hex')}`
  );
}

function waitConnected(client: MqttClient, ms: number, log: Logger, url: string): Promise<void> {
  if (client.connected) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      log.warn({ mqtt: url }, 'MQTT broker not reachable yet; going on, the client keeps retrying');
      resolve();
    }, ms);
    client.once('connect', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
