/**
 * @module cluster/broker-acl
 * Who may connect to a cluster's MQTT broker, and publish or subscribe where: the topic contract as an
 * access list. A client is the identity of its TLS certificate (the broker asked for one and checked it
 * against the platform CA): this cluster (`urn:oaknet:cluster:<id>`, client ID `oaknet-cluster-<id>`) may do
 * everything; a NetManager of this cluster (`urn:oaknet:node:<id>:<worker>`, client ID exactly its worker
 * ID, as upstream's NetManagers connect) may publish only to `nodes/<worker>/net/<kind>` of the contract,
 * never retained (a last will is checked the same way, at CONNECT), and subscribe only to its own result topics, `jobs/<job>/updates_available` and
 * `oaknet/cluster`. A client ID that is not the certificate's is refused, so no one can take over another
 * client's session. Every refusal is counted.
 */
import { NODE_TOPIC_KINDS, topics } from '../protocol/mqtt.ts';
import { identityUri, type Identity } from '../security/pki.ts';

export interface AclCounters {
  /** Connections refused (no certificate, another cluster's, or a client ID that is not theirs). */
  connectRefused: number;
  publishRefused: number;
  subscribeRefused: number;
}

export type AclDecision = { ok: true } | { ok: false; reason: string };

const OK: AclDecision = { ok: true };
const JOB_UPDATES = /^jobs\/([^/#+]+|\+)\/updates_available$/;

export class BrokerAcl {
  readonly counters: AclCounters = { connectRefused: 0, publishRefused: 0, subscribeRefused: 0 };

  constructor(readonly clusterId: string) {}

  /** The MQTT client ID this cluster's own client uses. */
  static clusterClientId(clusterId: string): string {
    return `oaknet-cluster-${clusterId}`;
  }

  /** `will`: the CONNECT's last will, which must be a publish the client may make. */
  connect(
    identity: Identity | undefined,
    clientId: string,
    will?: { topic: string; retain: boolean },
  ): AclDecision {
    let d = this.connectDecision(identity, clientId);
    if (d.ok && identity && will) {
      const p = this.publishDecision(identity, will.topic, will.retain);
      if (!p.ok) d = { ok: false, reason: `last will refused: ${p.reason}` };
    }
    if (!d.ok) this.counters.connectRefused++;
    return d;
  }

  publish(identity: Identity, topic: string, retain: boolean): AclDecision {
    const d = this.publishDecision(identity, topic, retain);
    if (!d.ok) this.counters.publishRefused++;
    return d;
  }

  subscribe(identity: Identity, filter: string): AclDecision {
    const d = this.subscribeDecision(identity, filter);
    if (!d.ok) this.counters.subscribeRefused++;
    return d;
  }

  private isCluster(id: Identity): boolean {
    return id.kind === 'cluster' && id.clusterId === this.clusterId;
  }

  private connectDecision(identity: Identity | undefined, clientId: string): AclDecision {
    if (!identity) return { ok: false, reason: 'no oaknet identity in the client certificate' };
    if (this.isCluster(identity))
      return clientId === BrokerAcl.clusterClientId(this.clusterId)
        ? OK
        : { ok: false, reason: `the cluster connects as ${BrokerAcl.clusterClientId(this.clusterId)}` };
    if (identity.kind !== 'node' || identity.clusterId !== this.clusterId)
      return { ok: false, reason: `${identityUri(identity)} is not a node of cluster ${this.clusterId}` };
    if (clientId !== identity.workerId)
      return {
        ok: false,
        reason: `client ID ${JSON.stringify(clientId)} is not the certificate's worker ${identity.workerId}`,
      };
    return OK;
  }

  private publishDecision(identity: Identity, topic: string, retain: boolean): AclDecision {
    if (this.isCluster(identity)) return OK;
    if (identity.kind !== 'node') return { ok: false, reason: 'not a node' };
    if (retain) return { ok: false, reason: 'nodes publish nothing retained' };
    const prefix = `nodes/${identity.workerId}/net/`;
    if (topic.startsWith(prefix) && NODE_TOPIC_KINDS.has(topic.slice(prefix.length))) return OK;
    return { ok: false, reason: `worker ${identity.workerId} may not publish to ${topic}` };
  }

  private subscribeDecision(identity: Identity, filter: string): AclDecision {
    if (this.isCluster(identity)) return OK;
    if (identity.kind !== 'node') return { ok: false, reason: 'not a node' };
    const w = identity.workerId;
    if (
      filter === topics.subnetResult(w) ||
      filter === topics.tableQueryResult(w) ||
      filter === topics.clusterInfo ||
      JOB_UPDATES.test(filter)
    )
      return OK;
    return { ok: false, reason: `worker ${w} may not subscribe to ${filter}` };
  }
}
