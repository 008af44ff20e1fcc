/**
 * @module protocol/mqtt
 * The MQTT contract between a cluster service manager and its NetManagers, exactly as upstream Oakestra
 * speaks it (reference section 2.2): topics, QoS 1, JSON payloads with upstream's keys and types.
 * Topics are built and parsed here only.
 */
import { Type, type Static } from 'typebox';
import { WG_PUBLIC_KEY_PATTERN } from './names.ts';
import { parser } from './validate.ts';

/**
 * oaknet's extra field of deployment reports, address changes and table entries: the node's WireGuard public
 * key (upstream ignores unknown fields; an entry without one is an upstream NetManager, reached in plaintext
 * only where its cluster allows it).
 */
export const WgPublicKey = Type.String({ pattern: WG_PUBLIC_KEY_PATTERN });

/** Every message of the contract is QoS 1 and not retained. */
export const MQTT_QOS = 1;

/** What a NetManager publishes under nodes/<worker>/net/. */
export type NodeTopicKind =
  | 'subnet'
  | 'tablequery/request'
  | 'service/deployed'
  | 'service/undeployed'
  | 'service/address-changed'
  | 'interest/remove';

/** Every kind a NetManager may publish (what follows nodes/<worker>/net/). */
export const NODE_TOPIC_KINDS: ReadonlySet<string> = new Set<NodeTopicKind>([
  'subnet',
  'tablequery/request',
  'service/deployed',
  'service/undeployed',
  'service/address-changed',
  'interest/remove',
]);

export const topics = {
  /** Everything NetManagers publish; what a cluster subscribes to. */
  allNodes: 'nodes/+/net/#',
  /** NetManager -> cluster: a subnetwork request. */
  subnetRequest: (worker: string) => `nodes/${worker}/net/subnet`,
  /** Cluster -> NetManager: the subnetwork. */
  subnetResult: (worker: string) => `nodes/${worker}/net/subnetwork/result`,
  /** NetManager -> cluster: a service table query. */
  tableQueryRequest: (worker: string) => `nodes/${worker}/net/tablequery/request`,
  /** Cluster -> NetManager: a service table. */
  tableQueryResult: (worker: string) => `nodes/${worker}/net/tablequery/result`,
  /** NetManager -> cluster: an instance is up on this node. */
  serviceDeployed: (worker: string) => `nodes/${worker}/net/service/deployed`,
  /** NetManager -> cluster: an instance left this node (oaknet; upstream never publishes it). */
  serviceUndeployed: (worker: string) => `nodes/${worker}/net/service/undeployed`,
  /** NetManager -> cluster: the node's public address changed. */
  addressChanged: (worker: string) => `nodes/${worker}/net/service/address-changed`,
  /** NetManager -> cluster: the node no longer needs updates of a job. */
  interestRemove: (worker: string) => `nodes/${worker}/net/interest/remove`,
  /** Cluster -> every interested NetManager: the job's table changed. */
  jobUpdates: (job: string) => `jobs/${job}/updates_available`,
  /**
   * Cluster -> its NetManagers, retained (oaknet; upstream NetManagers never subscribe): the cluster's ID and
   * where its HTTP API and its root are, so tools on a node need nothing but the node's socket.
   */
  clusterInfo: 'oaknet/cluster',
} as const;

/** Splits nodes/<worker>/net/<kind>; undefined for any other topic (including cluster -> node results). */
export function parseNodeTopic(topic: string): { worker: string; kind: NodeTopicKind } | undefined {
  const parts = topic.split('/');
  if (parts.length < 4 || parts[0] !== 'nodes' || parts[2] !== 'net') return undefined;
  const kind = parts.slice(3).join('/');
  const worker = parts[1]!;
  if (!worker || !NODE_TOPIC_KINDS.has(kind)) return undefined;
  return { worker, kind: kind as NodeTopicKind };
}

/** The job of a jobs/<job>/updates_available topic, or undefined. */
export function parseJobUpdatesTopic(topic: string): string | undefined {
  const m = /^jobs\/([^/]+)\/updates_available$/.exec(topic);
  return m?.[1];
}

export const SubnetRequest = Type.Object({
  METHOD: Type.Union([Type.Literal('GET'), Type.Literal('DELETE')]),
});
export type SubnetRequest = Static<typeof SubnetRequest>;

/** Network addresses of the worker's /26 and /120 (empty strings when the cluster could not get one). */
export const SubnetResult = Type.Object({ address: Type.String(), addressv6: Type.String() });
export type SubnetResult = Static<typeof SubnetResult>;

/** A query by job name (sname) or by ServiceIP/instance IP (sip); the unused key is "". */
export const TableQueryRequest = Type.Object({
  sname: Type.Optional(Type.String({ maxLength: 200 })),
  sip: Type.Optional(Type.String({ maxLength: 64 })),
});
export type TableQueryRequest = Static<typeof TableQueryRequest>;

/** One address of a service or instance, as IpType plus both families. */
export const ServiceIpEntry = Type.Object({
  IpType: Type.String(),
  Address: Type.Union([Type.String(), Type.Null()]),
  Address_v6: Type.Union([Type.String(), Type.Null()]),
});
export type ServiceIpEntry = Static<typeof ServiceIpEntry>;

/** One instance of a table-query result (reference section 5.2). */
export const TableInstance = Type.Object({
  instance_number: Type.Integer({ minimum: 0 }),
  instance_ip: Type.Optional(Type.String()),
  instance_ip_v6: Type.Optional(Type.String()),
  namespace_ip: Type.String(),
  namespace_ip_v6: Type.Optional(Type.String()),
  host_ip: Type.String(),
  host_port: Type.Integer({ minimum: 0, maximum: 65535 }),
  wg_public_key: Type.Optional(WgPublicKey),
  worker_id: Type.Optional(Type.String()),
  cluster_id: Type.Optional(Type.String()),
  service_ip: Type.Array(ServiceIpEntry),
});
export type TableInstance = Static<typeof TableInstance>;

export const TableQueryResult = Type.Object({
  app_name: Type.Union([Type.String(), Type.Null()]),
  instance_list: Type.Array(TableInstance),
  query_key: Type.String(),
});
export type TableQueryResult = Static<typeof TableQueryResult>;

/** NetManager -> cluster after a deploy (host_port is a string, as upstream's Go struct sends it). */
export const ServiceDeployed = Type.Object({
  appname: Type.String(),
  status: Type.String(),
  instance_number: Type.Integer({ minimum: 0 }),
  nsip: Type.String(),
  nsipv6: Type.String(),
  host_port: Type.Union([
    Type.String({ pattern: '^[0-9]{1,5}$' }),
    Type.Integer({ minimum: 0, maximum: 65535 }),
  ]),
  host_ip: Type.String(),
  wg_public_key: Type.Optional(WgPublicKey),
});
export type ServiceDeployed = Static<typeof ServiceDeployed>;

export const InterestRemove = Type.Object({ appname: Type.String() });
export type InterestRemove = Static<typeof InterestRemove>;

export const JobUpdate = Type.Object({
  type: Type.Union([Type.Literal('DEPLOYMENT'), Type.Literal('UNDEPLOYMENT')]),
});
export type JobUpdate = Static<typeof JobUpdate>;

export const ClusterInfoMessage = Type.Object({
  cluster_id: Type.String(),
  api: Type.String({ description: "the cluster's HTTP API, e.g. http://10.0.0.2:10110" }),
  root: Type.String({ description: "the root's HTTP API as the cluster uses it" }),
  allow_plaintext_peers: Type.Optional(
    Type.Boolean({
      description:
        'whether its NetManagers may tunnel in plaintext to peers that have no WireGuard key (upstream NetManagers); absent: no',
    }),
  ),
});
export type ClusterInfoMessage = Static<typeof ClusterInfoMessage>;

/** Wire names of the balancing policies in service_ip[].IpType. */
export const IP_TYPE = { roundRobin: 'RR', closest: 'Closest', instance: 'instance_ip' } as const;

export const parsers = {
  subnetRequest: parser(SubnetRequest),
  subnetResult: parser(SubnetResult),
  tableQueryRequest: parser(TableQueryRequest),
  tableQueryResult: parser(TableQueryResult),
  tableInstance: parser(TableInstance),
  serviceDeployed: parser(ServiceDeployed),
  interestRemove: parser(InterestRemove),
  jobUpdate: parser(JobUpdate),
  clusterInfo: parser(ClusterInfoMessage),
};
