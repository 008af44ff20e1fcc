/**
 * @module cluster/cluster
 * Wiring of the cluster service manager: store -> cache -> resolver; MQTT broker (embedded aedes, or an
 * external one such as mosquitto) and client; the NetManager channel; the link to the root; HTTP API.
 */
import { randomUUID, type X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { errorMessage, InvalidInputError, UnavailableError } from '../errors.ts';
import type { ClusterStatus } from '../protocol/cluster-api.ts';
import { LimitCounters, type RateLimits } from '../protocol/http-limits.ts';
import { connectMqtt, mqttTlsOptions } from '../protocol/mqtt-client.ts';
import { MQTT_QOS, topics } from '../protocol/mqtt.ts';
import { rotateServerTls, type ServerTls } from '../protocol/http-server.ts';
import { RootClient } from '../protocol/root-client.ts';
import { hostForUrl } from '../protocol/url.ts';
import type { Store } from '../store/store.ts';
import { VERSION } from '../version.ts';
import { buildClusterApi } from './api.ts';
import { BrokerAcl } from './broker-acl.ts';
import { startEmbeddedBroker, type EmbeddedBroker } from './broker.ts';
import { ClusterCache } from './cache.ts';
import { storedClusterId } from './cluster-id.ts';
import type { ClusterCredentials, ClusterIdentity } from './credentials.ts';
import { firstCertificate } from '../security/pki.ts';
import { NodeChannel } from './node-channel.ts';
import { NodeEnrollment } from './node-enrollment.ts';
import { Resolver } from './resolver.ts';
import { RootLink } from './root-link.ts';
import { RemoteTokenVerifier } from './token-verifier.ts';

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
  /**
   * The cluster's identity (secure mode): https for its API, mutual TLS to the root, tokens checked by the
   * root. Without it: plain http, no authentication (insecure).
   */
  credentials?: ClusterCredentials;
  /** Per-caller rate limits of the HTTP API (protocol/http-limits.ts has the defaults). */
  rateLimits?: Partial<RateLimits>;
  /**
   * Whether this cluster's NetManagers may tunnel in plaintext to peers without a WireGuard key (upstream
   * NetManagers); told to them in the retained cluster info. Default false: such peers are unreachable.
   */
  allowPlaintextPeers?: boolean;
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
  const creds = o.credentials;
  if (creds && creds.current.clusterId !== clusterId)
    throw new InvalidInputError(
      `the credentials are of cluster ${creds.current.clusterId}, not ${clusterId}`,
    );
  const rootCredentials = () =>
    creds
      ? {
          tls: {
            ca: creds.current.ca,
            key: creds.current.key,
            cert: creds.current.cert,
            expect: { kind: 'root' as const },
          },
        }
      : {};
  const root = new RootClient(o.rootUrl, { clusterId, credentials: rootCredentials() });
  const serverTls = (): ServerTls | undefined =>
    creds
      ? { key: creds.current.key, cert: creds.current.cert + creds.current.ca, ca: creds.current.ca }
      : undefined;
  const resolver = new Resolver(cache, root, log.child({ component: 'resolver' }));

  const verifier = creds ? new RemoteTokenVerifier(root) : undefined;
  // who signs this cluster's clients: the platform CA (the root, other clusters) and its own node CA
  let issuerList: { of: ClusterIdentity; cas: X509Certificate[] } | undefined;
  const issuers = (): X509Certificate[] => {
    const current = creds!.current;
    if (issuerList?.of !== current)
      issuerList = { of: current, cas: [firstCertificate(current.ca), current.nodeCa.cert] };
    return issuerList.cas;
  };
  let broker: EmbeddedBroker | undefined;
  let mqttUrl = o.mqttUrl;
  const acl = creds ? new BrokerAcl(clusterId) : undefined;
  if (!mqttUrl) {
    const tls = serverTls();
    broker = await startEmbeddedBroker(
      o.mqttPort ?? 10003,
      o.host ?? '::',
      log.child({ component: 'broker' }),
      tls && acl ? { tls, acl, issuers } : undefined,
    );
    mqttUrl = `${creds ? 'mqtts' : 'mqtt'}://127.0.0.1:${broker.port}`;
  }
  // MQTT 5 to an external broker: retain-as-published shows which node messages were published retained,
  // which mosquitto cannot refuse (the embedded broker refuses them, and speaks MQTT 3.1.1 only)
  const external = broker === undefined;
  const mqtt: MqttClient = connectMqtt(mqttUrl, {
    ...(external ? { protocolVersion: 5 as const } : {}),
    clientId: BrokerAcl.clusterClientId(clusterId),
    clean: true,
    reconnectPeriod: 1000,
    connectTimeout: 5000,
    ...(creds
      ? mqttTlsOptions({
          ca: creds.current.ca,
          key: creds.current.key,
          cert: creds.current.cert,
          expect: { kind: 'cluster', clusterId },
        })
      : {}),
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
  const enrollment =
    creds && verifier ? new NodeEnrollment(o.store, () => creds.current, verifier) : undefined;
  const channel = new NodeChannel({
    cache,
    resolver,
    root,
    publish,
    log: log.child({ component: 'nodes' }),
    onStatusQueued: () => link?.kickStatus(),
    ...(enrollment ? { admits: (worker: string) => enrollment.isEnrolled(worker) } : {}),
  });
  mqtt.on('message', (topic, payload, packet) => void channel.handle(topic, payload, packet.retain));

  const limitCounters = new LimitCounters();
  const status = (): ClusterStatus => ({
    cluster_id: clusterId,
    root: o.rootUrl,
    root_reachable: link?.reachable ?? false,
    mqtt: mqttUrl,
    allow_plaintext_peers: o.allowPlaintextPeers === true,
    nodes: cache.nodes().map((n) => ({
      worker_id: n.workerId,
      subnet: n.subnet,
      subnet_v6: n.subnetV6,
      last_seen: cache.lastSeenOf(n.workerId)?.toISOString() ?? '',
    })),
    pending_status_reports: cache.pendingStatusCount(),
    rate_limited: limitCounters.rateLimited,
    security: {
      mode: creds ? 'tls' : 'insecure',
      certificate_expires: creds ? creds.expires.toISOString() : null,
      refused: { ...counters },
      ...(acl ? { mqtt_refused: { ...acl.counters } } : {}),
      mqtt_ignored: {
        retained: channel.counters.retained,
        unenrolled: channel.counters.unenrolled,
        conflicting: channel.counters.conflicting,
      },
    },
    cached_jobs: cache.jobs().map((j) => ({
      job_name: j.job_name,
      instances: j.instance_list.length,
      interested_nodes: cache.interestedNodes(j.job_name),
    })),
  });
  const tls = serverTls();
  const { app, counters } = await buildClusterApi({
    cache,
    resolver,
    channel,
    log,
    status,
    bootId: randomUUID(),
    version: VERSION,
    ...(tls ? { tls } : {}),
    auth:
      verifier && creds
        ? {
            mode: 'tls',
            tokens: verifier,
            issuers,
          }
        : { mode: 'insecure' },
    ...(enrollment ? { nodeEnrollment: enrollment } : {}),
    counters: limitCounters,
    ...(o.rateLimits ? { rateLimits: o.rateLimits } : {}),
  });
  await app.listen({ port: o.port, host: o.host ?? '::' });
  const port = (app.server.address() as AddressInfo).port;
  if (creds) {
    creds.onRenewed(() => {
      root.setCredentials(rootCredentials());
      rotateServerTls(app.server, serverTls()!);
      broker?.rotate(serverTls()!);
      // reconnections present the renewed certificate
      Object.assign(mqtt.options, { key: creds.current.key, cert: creds.current.cert });
    });
    creds.startRenewal();
  } else {
    log.warn(
      'INSECURE: plain http and no authentication: anyone who reaches this cluster can change its service tables',
    );
  }
  const scheme = creds ? 'https' : 'http';

  await waitConnected(mqtt, 10_000, log, mqttUrl);
  await mqtt.subscribeAsync(topics.allNodes, { qos: MQTT_QOS, ...(external ? { rap: true } : {}) });
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
      const info = {
        cluster_id: clusterId,
        api: `${scheme}://${hostForUrl(address)}:${port}`,
        root: o.rootUrl,
        allow_plaintext_peers: o.allowPlaintextPeers === true,
      };
      mqtt.publish(topics.clusterInfo, JSON.stringify(info), { qos: MQTT_QOS, retain: true }, (err) => {
        if (err) log.warn({ err: err.message }, 'could not publish the cluster info');
      });
    },
  });
  await link.start(5000);
  log.info({ clusterId, port, mqtt: mqttUrl }, 'cluster service manager ready');

  return {
    clusterId,
    url: `${scheme}://127.0.0.1:${port}`,
    port,
    mqttUrl,
    channel,
    cache,
    status,
    async close() {
      creds?.close();
      await link?.close();
      await app.close();
      await mqtt.endAsync(true);
      await broker?.close();
      root.close();
      o.store.close();
    },
  };
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
