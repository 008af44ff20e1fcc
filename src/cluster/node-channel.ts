/**
 * @module cluster/node-channel
 * The cluster side of the MQTT contract with NetManagers (reference section 2.2): one handler per topic
 * kind. Every message is validated at the edge; a malformed payload, an unknown worker or a failing root is
 * logged and answered (or ignored), never a crash and never a half-updated cache.
 */
import type { Logger } from 'pino';
import { canonicalIp } from '../addressing/ip.ts';
import { errorMessage } from '../errors.ts';
import { parseNodeTopic, parsers, topics, type NodeTopicKind } from '../protocol/mqtt.ts';
import { isId, isJobName, requireJobName } from '../protocol/names.ts';
import type { JobDocument } from '../protocol/root-api.ts';
import type { RootClient } from '../protocol/root-client.ts';
import { parseJson } from '../protocol/validate.ts';
import { isUsablePublicKey } from '../dataplane/wireguard/keys.ts';
import type { ClusterCache } from './cache.ts';
import { toTableResult, type Resolver } from './resolver.ts';

/** Publishes one message of the contract (QoS 1, not retained). */
export type Publish = (topic: string, payload: string) => Promise<void>;

export interface NodeChannelDeps {
  cache: ClusterCache;
  resolver: Resolver;
  root: RootClient;
  publish: Publish;
  log: Logger;
  /** Wakes the status outbox after a deployment report was queued. */
  onStatusQueued: () => void;
  /**
   * Whether messages of this worker are handled (secure mode: only workers this cluster enrolled; a broker
   * such as mosquitto also admits a node certificate of another cluster). Default: every worker.
   */
  admits?: (worker: string) => boolean;
  now?: () => Date;
}

export class NodeChannel {
  private readonly now: () => Date;
  /**
   * Messages handled and dropped, by reason (for status and tests): `retained`, published retained (no node
   * publishes anything retained: a stale or forged request); `unenrolled`, from a worker this cluster did
   * not enroll.
   */
  readonly counters = { handled: 0, invalid: 0, failed: 0, retained: 0, unenrolled: 0, conflicting: 0 };

  constructor(private readonly deps: NodeChannelDeps) {
    this.now = deps.now ?? (() => new Date());
  }

  /**
   * Handles one message from nodes/+/net/#; never rejects. `retained`: the message was published retained
   * (MQTT 5 retain-as-published), or comes from the broker's store of retained messages.
   */
  async handle(topic: string, payload: Buffer, retained = false): Promise<void> {
    const parsed = parseNodeTopic(topic);
    if (!parsed) return; // our own results, or topics outside the contract
    const { worker, kind } = parsed;
    const log = this.deps.log.child({ worker, kind });
    if (!isId(worker)) {
      this.counters.invalid++;
      log.warn('ignoring message from a worker ID that is not a safe ID');
      return;
    }
    if (retained) {
      this.counters.retained++;
      log.warn('ignoring a retained message: nodes publish nothing retained');
      return;
    }
    if (this.deps.admits && !this.deps.admits(worker)) {
      this.counters.unenrolled++;
      log.warn('ignoring a message from a worker this cluster did not enroll');
      return;
    }
    try {
      await this.dispatch(worker, kind, payload.toString('utf8'), log);
      this.counters.handled++;
    } catch (err) {
      const invalid = (err as { code?: string }).code === 'E_INVALID_INPUT';
      if (invalid) this.counters.invalid++;
      else this.counters.failed++;
      log.warn(
        { err: errorMessage(err) },
        invalid ? 'ignoring malformed message' : 'message handling failed',
      );
    }
  }

  /** Tells every NetManager subscribed to the job that its table changed. */
  async publishUpdates(job: string, type: 'DEPLOYMENT' | 'UNDEPLOYMENT'): Promise<void> {
    await this.deps.publish(topics.jobUpdates(job), JSON.stringify({ type }));
  }

  private async dispatch(worker: string, kind: NodeTopicKind, text: string, log: Logger): Promise<void> {
    this.deps.cache.touchNode(worker, this.now());
    switch (kind) {
      case 'subnet':
        return this.onSubnet(worker, text, log);
      case 'tablequery/request':
        return this.onTableQuery(worker, text);
      case 'service/deployed':
        return this.onDeployed(worker, text, log);
      case 'service/address-changed':
        return this.onAddressChanged(worker, text, log);
      case 'interest/remove':
        return this.onInterestRemove(worker, text, log);
      case 'service/undeployed':
        log.debug('instance undeployed on node (the orchestrator removes it at the root)');
        return;
    }
  }

  /** subnet {METHOD: GET|DELETE}: the worker's subnetworks from the root (or the cluster's record of them). */
  private async onSubnet(worker: string, text: string, log: Logger): Promise<void> {
    const req = parseJson(parsers.subnetRequest, text, 'subnet request');
    if (req.METHOD === 'DELETE') {
      await this.deps.root.releaseSubnet(worker).catch((err: unknown) => {
        if ((err as { code?: string }).code !== 'E_NOT_FOUND') throw err;
      });
      this.deps.cache.removeNode(worker);
      log.info('worker left: subnetwork released');
      return;
    }
    let reply = { address: '', addressv6: '' };
    try {
      const s = await this.deps.root.subnet(worker);
      reply = { address: s.subnet_addr, addressv6: s.subnet_addr_v6 };
      this.deps.cache.putNode({
        workerId: worker,
        subnet: s.subnet_addr,
        subnetV6: s.subnet_addr_v6,
      });
    } catch (err) {
      const known = this.deps.cache.node(worker);
      if (known) {
        reply = { address: known.subnet, addressv6: known.subnetV6 };
        log.warn({ err: errorMessage(err) }, 'root unavailable: answering with the subnetwork on record');
      } else {
        log.error(
          { err: errorMessage(err) },
          'no subnetwork for worker: the root failed and none is on record',
        );
      }
    }
    await this.deps.publish(topics.subnetResult(worker), JSON.stringify(reply));
  }

  /**
   * tablequery/request {sname, sip}: answered with the table, or an empty one when nothing matches; not
   * answered when the root could not be asked (the node keeps what it has and asks again).
   */
  private async onTableQuery(worker: string, text: string): Promise<void> {
    const req = parseJson(parsers.tableQueryRequest, text, 'table query');
    const sip = req.sip ?? '';
    const sname = req.sname ?? '';
    const key = sip !== '' ? sip : sname;
    let doc: JobDocument | undefined;
    let failure: unknown;
    try {
      if (sip !== '') doc = await this.deps.resolver.byIp(sip);
      else if (isJobName(sname)) doc = await this.deps.resolver.byName(sname);
    } catch (err) {
      failure = err;
    }
    if (failure !== undefined) {
      // no answer: an empty table would wipe the job from the node; without one the node asks again later
      // and keeps what it knows meanwhile
      throw failure instanceof Error ? failure : new Error(errorMessage(failure));
    }
    if (doc) this.deps.cache.addInterest(doc.job_name, worker);
    await this.deps.publish(topics.tableQueryResult(worker), JSON.stringify(toTableResult(doc, key)));
  }

  /** service/deployed: record where the instance runs, tell this cluster's nodes, and report to the root. */
  private async onDeployed(worker: string, text: string, log: Logger): Promise<void> {
    const msg = parseJson(parsers.serviceDeployed, text, 'deployment report');
    // a job name before it becomes an interest, a root path or a topic (address changes reuse the schema and
    // carry no job name, so the schema cannot ask for one)
    requireJobName(msg.appname);
    const report = {
      instance_number: msg.instance_number,
      namespace_ip: canonicalIp(msg.nsip),
      ...(msg.nsipv6 && msg.nsipv6 !== '<nil>' ? { namespace_ip_v6: canonicalIp(msg.nsipv6) } : {}),
      host_ip: canonicalIp(msg.host_ip),
      host_port: Number(msg.host_port),
      ...(msg.wg_public_key !== undefined ? { wg_public_key: msg.wg_public_key } : {}),
      worker_id: worker,
    };
    const conflict =
      unusableKey(msg.wg_public_key) ??
      this.claimedByAnother(worker, report.host_ip, report.host_port, msg.wg_public_key);
    if (conflict) {
      // a node may announce only its own endpoint and key: another's would take that node's traffic
      this.counters.conflicting++;
      log.warn({ job: msg.appname, instance: msg.instance_number, conflict }, 'deployment report refused');
      return;
    }
    this.deps.cache.addInterest(msg.appname, worker);
    let doc: JobDocument | undefined;
    try {
      doc = await this.deps.resolver.byName(msg.appname);
      if (!doc?.instance_list.some((i) => i.instance_number === msg.instance_number)) {
        doc = await this.deps.resolver.refresh(msg.appname);
      }
    } catch (err) {
      if ((err as { code?: string }).code !== 'E_UNAVAILABLE') throw err;
      // the root is out of reach: the report waits in the outbox (the job is looked up when it goes out)
      this.deps.cache.queueStatus({ job_name: msg.appname, instances: [report] });
      this.deps.onStatusQueued();
      log.warn(
        { job: msg.appname, instance: msg.instance_number },
        'root unreachable; deployment report queued',
      );
      return;
    }
    const inst = doc?.instance_list.find((i) => i.instance_number === msg.instance_number);
    if (!doc || !inst) {
      log.warn(
        { job: msg.appname, instance: msg.instance_number },
        'deployment report for an instance the root never scheduled',
      );
      return;
    }
    this.deps.cache.updateJob(doc.job_name, (d) => {
      const i = d.instance_list.find((x) => x.instance_number === msg.instance_number);
      if (i) Object.assign(i, report);
    });
    this.deps.cache.queueStatus({ job_name: doc.job_name, job_id: doc._id, instances: [report] });
    this.deps.onStatusQueued();
    await this.publishUpdates(doc.job_name, 'DEPLOYMENT');
    log.info(
      { job: doc.job_name, instance: msg.instance_number, nsip: report.namespace_ip },
      'instance deployed',
    );
  }

  /**
   * Whether another worker of this cluster has instances at this tunnel endpoint or with this key (a
   * description of the conflict), or undefined. Endpoints and keys are a node's own; a report that claims
   * another node's is refused.
   */
  private claimedByAnother(
    worker: string,
    hostIp: string,
    hostPort: number,
    key: string | undefined,
  ): string | undefined {
    for (const doc of this.deps.cache.jobs())
      for (const i of doc.instance_list) {
        if (i.worker_id === undefined || i.worker_id === worker) continue;
        if (i.host_ip === hostIp && i.host_port === hostPort)
          return `endpoint ${hostIp}:${hostPort} is worker ${i.worker_id}'s`;
        if (key !== undefined && i.wg_public_key === key) return `key ${key} is worker ${i.worker_id}'s`;
      }
    return undefined;
  }

  /** service/address-changed: the node's public address moved; update every instance that runs there. */
  private async onAddressChanged(worker: string, text: string, log: Logger): Promise<void> {
    const msg = parseJson(parsers.serviceDeployed, text, 'address change');
    const hostIp = canonicalIp(msg.host_ip);
    const hostPort = Number(msg.host_port);
    const key = msg.wg_public_key;
    const conflict = unusableKey(key) ?? this.claimedByAnother(worker, hostIp, hostPort, key);
    if (conflict) {
      // the same rule as for deployment reports: only the node's own endpoint and key
      this.counters.conflicting++;
      log.warn({ hostIp, hostPort, conflict }, 'address change refused');
      return;
    }
    const changed: JobDocument[] = [];
    for (const doc of this.deps.cache.jobs()) {
      const mine = doc.instance_list.filter((i) => i.worker_id === worker);
      if (mine.length === 0) continue;
      for (const i of mine) {
        Object.assign(i, { host_ip: hostIp, host_port: hostPort });
        if (key !== undefined) i.wg_public_key = key;
        else delete i.wg_public_key;
      }
      this.deps.cache.putJob(doc);
      changed.push(doc);
      this.deps.cache.queueStatus({
        job_name: doc.job_name,
        job_id: doc._id,
        instances: mine.map((i) => ({
          instance_number: i.instance_number,
          namespace_ip: i.namespace_ip ?? '',
          ...(i.namespace_ip_v6 !== undefined ? { namespace_ip_v6: i.namespace_ip_v6 } : {}),
          host_ip: hostIp,
          host_port: hostPort,
          ...(key !== undefined ? { wg_public_key: key } : {}),
          worker_id: worker,
        })),
      });
    }
    if (changed.length) this.deps.onStatusQueued();
    for (const doc of changed) await this.publishUpdates(doc.job_name, 'DEPLOYMENT');
    log.info({ hostIp, hostPort, key, jobs: changed.map((d) => d.job_name) }, 'node address changed');
  }

  /** interest/remove {appname}: the node forgot a job; the last node to forget it ends the root interest. */
  private async onInterestRemove(worker: string, text: string, log: Logger): Promise<void> {
    const msg = parseJson(parsers.interestRemove, text, 'interest removal');
    if (!isJobName(msg.appname)) return; // upstream also sends IP-keyed removals: nothing to do
    const left = this.deps.cache.removeInterest(msg.appname, worker);
    if (left.length > 0) return;
    this.deps.cache.removeJob(msg.appname);
    await this.deps.root.removeInterest(msg.appname).catch((err: unknown) => {
      log.debug(
        { err: errorMessage(err) },
        'root interest removal failed (harmless: the root keeps notifying)',
      );
    });
    // a node may have asked for the job while the removal was on its way: then the root must keep notifying
    if (this.deps.cache.interestedNodes(msg.appname).length > 0)
      await this.deps.resolver.refresh(msg.appname);
  }
}

/** Why an announced WireGuard key cannot be used (a low-order X25519 point), or undefined. */
function unusableKey(key: string | undefined): string | undefined {
  if (key === undefined || isUsablePublicKey(Buffer.from(key, 'base64'))) return undefined;
  return `key ${key} is a low-order point`;
}
