/**
 * @module protocol/node-api
 * The NetManager's HTTP API on its unix socket (upstream reference section 2.1): the bodies an Oakestra node
 * engine sends, and oaknet's status view.
 */
import { Type, type Static } from 'typebox';
import { DataPlaneStatus } from './dataplane-status.ts';

export const Register = Type.Object({
  client_id: Type.String({ minLength: 1, maxLength: 128 }),
  cluster_address: Type.Optional(Type.String({ maxLength: 255 })),
  /** oaknet's: a node token, for a node whose state holds no identity yet (instead of --token). */
  token: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
});
export type Register = Static<typeof Register>;

export const ContainerDeploy = Type.Object({
  pid: Type.Integer(),
  serviceName: Type.String({ maxLength: 200 }),
  instanceNumber: Type.Integer({ minimum: 0 }),
  portMappings: Type.Optional(Type.String({ maxLength: 4096 })),
});
export type ContainerDeploy = Static<typeof ContainerDeploy>;

export const ContainerDeployReply = Type.Object({
  serviceName: Type.String(),
  nsAddress: Type.String(),
  nsAddressv6: Type.String(),
  /**
   * oaknet's addition (upstream's node engine reads only the status): what became of the container's
   * /etc/resolv.conf with the node's DNS server on (node/dns/resolv-conf.ts); absent without it.
   */
  resolvConf: Type.Optional(
    Type.Union([
      Type.Literal('written'),
      Type.Literal('shared-root'),
      Type.Literal('runtime-mounted'),
      Type.Literal('read-only'),
      Type.Literal('failed'),
    ]),
  ),
});
export type ContainerDeployReply = Static<typeof ContainerDeployReply>;

export const ContainerUndeploy = Type.Object({
  serviceName: Type.String({ maxLength: 200 }),
  instanceNumber: Type.Integer({ minimum: 0 }),
  pid: Type.Optional(Type.Integer()),
});
export type ContainerUndeploy = Static<typeof ContainerUndeploy>;

/** The node's DNS server (issue 13). */
export const NodeDnsStatus = Type.Object({
  /** The addresses it answers on (the bridge's gateways): the nameservers of the instances' resolv.conf. */
  servers: Type.Array(Type.String()),
  port: Type.Integer(),
  /** The node's own resolvers, where names outside oakestra. are forwarded. */
  upstreams: Type.Array(Type.String()),
  /** Queries, answers by kind, forwarding and drops (GET /status reads them from the server). */
  counters: Type.Record(Type.String(), Type.Integer()),
});
export type NodeDnsStatus = Static<typeof NodeDnsStatus>;

export const NodeStatus = Type.Object({
  registered: Type.Boolean(),
  worker_id: Type.Union([Type.String(), Type.Null()]),
  cluster: Type.Union([Type.String(), Type.Null()]),
  cluster_id: Type.Union([Type.String(), Type.Null()]),
  cluster_api: Type.Union([Type.String(), Type.Null()], {
    description: "the cluster's HTTP API, as it announced it",
  }),
  root_api: Type.Union([Type.String(), Type.Null()]),
  mqtt_connected: Type.Boolean(),
  subnet: Type.Union([Type.String(), Type.Null()]),
  subnet_v6: Type.Union([Type.String(), Type.Null()]),
  public_address: Type.Union([Type.String(), Type.Null()]),
  tunnel_port: Type.Integer(),
  instances: Type.Array(
    Type.Object({
      service: Type.String(),
      instance: Type.Integer(),
      pid: Type.Integer(),
      ns_address: Type.String(),
      ns_address_v6: Type.String(),
    }),
  ),
  services: Type.Array(
    Type.Object({
      job: Type.String(),
      instances: Type.Array(
        Type.Object({
          instance: Type.Integer(),
          ns_address: Type.Union([Type.String(), Type.Null()]),
          local: Type.Boolean(),
        }),
      ),
    }),
  ),
  /** The data plane (ProxyTUN); null before registration. */
  proxy: Type.Union([DataPlaneStatus, Type.Null()]),
  /**
   * Packets the node's forward boundary dropped: forwarded towards the instances, but from neither the TUN,
   * a published port mapping nor as a reply (nft counter `bridge_in_dropped` in the node's table). Null before
   * registration or when the host network cannot say; absent from NetManager.status(), filled by GET /status.
   */
  forward_dropped: Type.Optional(Type.Union([Type.Integer(), Type.Null()])),
  /** The DNS server; null when it is off (--no-dns) or before registration. */
  dns: Type.Optional(Type.Union([NodeDnsStatus, Type.Null()])),
});
export type NodeStatus = Static<typeof NodeStatus>;

export const nodePaths = {
  register: '/register',
  deploy: '/container/deploy',
  undeploy: '/container/undeploy',
  dockerUndeploy: '/docker/undeploy',
  unikernelDeploy: '/unikernel/deploy',
  unikernelUndeploy: '/unikernel/undeploy',
  status: '/status',
} as const;

/** Upstream's default socket. */
export const DEFAULT_NODE_SOCKET = '/etc/netmanager/netmanager.sock';
