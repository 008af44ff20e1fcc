/**
 * @module node/instances
 * The instances on a registered node: wiring an instance's network namespace (upstream's /container/deploy),
 * removing it (/container/undeploy), and bringing them back after a NetManager restart. Each instance gets a
 * host slot of the node's subnetworks (slots.ts) and is recorded in the state file before it is announced,
 * so a crash never loses an address. A deploy returns once the instance's own table entry arrived (bounded),
 * so the instance can talk through the overlay as soon as the call returned.
 */
import type { Logger } from 'pino';
import type { Cidr } from '../addressing/cidr.ts';
import { IpAddress } from '../addressing/ip.ts';
import { ConflictError, errorMessage, InvalidInputError } from '../errors.ts';
import { requireJobName } from '../protocol/names.ts';
import type { ClusterChannel } from './cluster-channel.ts';
import type { ResolvConfOutcome } from './dns/resolv-conf.ts';
import type { Attachment, HostNetwork } from './host-network.ts';
import { parsePortMappings } from './net/port-mappings.ts';
import type { ProcessInspector } from './process-inspector.ts';
import type { NodeResolver } from './resolver.ts';
import type { ServiceTable } from './service-table.ts';
import type { SlotAllocator } from './slots.ts';
import type { InstanceState, NodeState, StateFile } from './state.ts';

export interface DeployRequest {
  pid: number;
  serviceName: string;
  instanceNumber: number;
  portMappings?: string;
}

export interface DeployReply {
  serviceName: string;
  nsAddress: string;
  nsAddressv6: string;
}

/** What the instances of a registered node work with. */
export interface InstanceContext {
  state: NodeState;
  stateFile: StateFile;
  slots: SlotAllocator;
  net: HostNetwork;
  subnetV4: Cidr;
  subnetV6: Cidr;
  /** The address and port other nodes reach this node's tunnel at. */
  hostIp: string;
  tunnelPort: number;
  /** This node's WireGuard public key (base64), announced with every instance; absent: a plaintext node. */
  publicKey?: string;
  cluster: ClusterChannel;
  resolver: NodeResolver;
  table: ServiceTable;
  processes: ProcessInspector;
  log: Logger;
  /** How long a deploy waits for the instance's own table entry (ms). */
  ownEntryTimeoutMs: number;
  /** Aborts waits when the NetManager stops. */
  signal: AbortSignal;
  /** Gives a container with a root of its own a resolv.conf naming the node's DNS server (with DNS on). */
  resolvConf?: (pid: number, job: string) => ResolvConfOutcome;
}

export class Instances {
  constructor(private readonly c: InstanceContext) {}

  /** The jobs with an instance on this node. */
  jobs(): string[] {
    return this.c.state.instances.map((i) => i.job);
  }

  /** Wires an instance into its network namespace, records it, announces it and waits for its own entry. */
  async deploy(req: DeployRequest): Promise<DeployReply> {
    const c = this.c;
    const job = requireJobName(req.serviceName);
    if (!Number.isInteger(req.pid) || req.pid <= 0)
      throw new InvalidInputError(`pid must be a process ID, got ${req.pid}`);
    const identity = c.processes.identity(req.pid);
    if (!identity) throw new InvalidInputError(`no process ${req.pid}`);
    if (identity.netns === c.processes.identity(process.pid)?.netns) {
      // wiring it would replace the node's own default route
      throw new InvalidInputError(
        `process ${req.pid} runs in the NetManager's own network namespace, not a container's`,
      );
    }
    const mappings = parsePortMappings(req.portMappings ?? '');
    const taken = mappings.find((m) => m.protocol === 'udp' && m.hostPort === c.tunnelPort);
    if (taken)
      throw new InvalidInputError(`port mapping ${taken.hostPort}/udp would take the node's tunnel port`);
    const state = c.state;
    const existing = state.instances.find((i) => i.job === job && i.instance === req.instanceNumber);
    if (existing) {
      if (existing.pidStart === identity.start && existing.netns === identity.netns)
        return { serviceName: job, nsAddress: existing.nsip, nsAddressv6: existing.nsipv6 };
      if (this.isRunning(existing)) {
        throw new ConflictError(
          `instance ${req.instanceNumber} of ${job} is already deployed on this node (pid ${existing.pid})`,
        );
      }
      // its process died (a crashed container being started again): the new one takes its place
      await c.net.detach(existing.attachment).catch(() => undefined);
      state.instances.splice(state.instances.indexOf(existing), 1);
      c.slots.release(existing.slot);
    }
    const slot = c.slots.take();
    const nsip = c.subnetV4.at(slot);
    const nsipv6 = c.subnetV6.at(slot);
    let attachment: Attachment;
    try {
      attachment = await c.net.attach({
        pid: req.pid,
        id: `${slot}`,
        nsip,
        nsipv6,
        portMappings: req.portMappings ?? '',
      });
    } catch (err) {
      c.slots.release(slot);
      throw err;
    }
    const record: InstanceState = {
      job,
      instance: req.instanceNumber,
      pid: req.pid,
      pidStart: identity.start,
      netns: identity.netns,
      slot,
      nsip: nsip.toString(),
      nsipv6: nsipv6.toString(),
      portMappings: req.portMappings ?? '',
      attachment,
      deployedAt: new Date().toISOString(),
    };
    state.instances.push(record);
    await c.stateFile.save(state);
    // subscribe before announcing (MQTT keeps their order): the cluster's update after it took the report
    // must not be missed
    void c.resolver.watch(job);
    this.announce(record);
    if (!(await this.ownEntry(job, nsip)))
      c.log.warn(
        { job, instance: record.instance },
        'own table entry not there yet; its first packets will wait for it',
      );
    const names = this.giveResolvConf(req.pid, job);
    c.log.info(
      {
        job,
        instance: req.instanceNumber,
        nsip: record.nsip,
        pid: req.pid,
        ...(names ? { resolvConf: names } : {}),
      },
      'instance deployed',
    );
    return {
      serviceName: job,
      nsAddress: record.nsip,
      nsAddressv6: record.nsipv6,
      ...(names ? { resolvConf: names } : {}),
    };
  }

  /**
   * The container's resolv.conf (upstream's node engine deploys before it starts the task, so nothing in it
   * reads the file yet). Names are a convenience: a failure is logged, never fails the deploy.
   */
  private giveResolvConf(pid: number, job: string): ResolvConfOutcome | 'failed' | undefined {
    const c = this.c;
    if (!c.resolvConf) return undefined;
    try {
      return c.resolvConf(pid, job);
    } catch (err) {
      c.log.warn({ job, pid, err: errorMessage(err) }, 'resolv.conf not given to the container');
      return 'failed';
    }
  }

  /**
   * Waits (bounded) for the table to list the instance at `nsip` as local: the cluster's update after the
   * report brings it, or the query asked now and, once more, half-way through the wait (the answer to the
   * first may have been made before the cluster took the report).
   */
  private async ownEntry(job: string, nsip: IpAddress): Promise<boolean> {
    const c = this.c;
    const half = Math.max(1, Math.floor(c.ownEntryTimeoutMs / 2));
    void c.resolver.refresh(job);
    if (await c.table.whenLocal(nsip, half, c.signal)) return true;
    if (c.signal.aborted) return false;
    void c.resolver.refresh(job);
    return c.table.whenLocal(nsip, c.ownEntryTimeoutMs - half, c.signal);
  }

  /** Removes an instance's wiring; an unknown instance is fine. */
  async undeploy(job: string, instance: number): Promise<void> {
    const c = this.c;
    const i = c.state.instances.findIndex((x) => x.job === job && x.instance === instance);
    if (i < 0) return;
    const rec = c.state.instances[i]!;
    await c.net.detach(rec.attachment);
    c.state.instances.splice(i, 1);
    c.slots.release(rec.slot);
    await c.stateFile.save(c.state);
    c.cluster.reportUndeployed(rec.job, rec.instance);
    c.log.info({ job: rec.job, instance: rec.instance }, 'instance undeployed');
  }

  /** After a restart: re-wires the instances whose processes still run, forgets the others. */
  async restore(): Promise<void> {
    const c = this.c;
    const keep: InstanceState[] = [];
    for (const rec of c.state.instances) {
      // the same process in the same namespace, not a PID reused after a reboot (which could be a host process)
      if (!this.isRunning(rec)) {
        c.slots.release(rec.slot);
        c.log.info(
          { job: rec.job, instance: rec.instance },
          'instance process gone since the last run; forgotten',
        );
        continue;
      }
      try {
        await c.net.detach(rec.attachment).catch(() => undefined);
        rec.attachment = await c.net.attach({
          pid: rec.pid,
          id: `${rec.slot}`,
          nsip: IpAddress.parse(rec.nsip),
          nsipv6: IpAddress.parse(rec.nsipv6),
          portMappings: rec.portMappings,
        });
        keep.push(rec);
        this.announce(rec);
        void c.resolver.refresh(rec.job);
      } catch (err) {
        c.slots.release(rec.slot);
        c.log.warn({ job: rec.job, err: errorMessage(err) }, 'could not re-wire an instance after restart');
      }
    }
    c.state.instances = keep;
    await c.stateFile.save(c.state);
  }

  /** Announces every instance again (the cluster may have lost what it knew: a reconnect, a restart). */
  announceAll(): void {
    for (const rec of this.c.state.instances) this.announce(rec);
  }

  /**
   * Every local instance must be in the table as this node's, with its namespace address; one that is not
   * (a report the cluster lost in a restart, a table wiped by an outage) is announced again and its job asked
   * for again. This is what heals the overlay after a flaky link.
   */
  checkOwnEntries(): void {
    const c = this.c;
    if (!c.cluster.connected) return;
    for (const rec of c.state.instances) {
      if (c.table.hasLocal(IpAddress.parse(rec.nsip))) continue;
      c.log.info(
        { job: rec.job, instance: rec.instance },
        'own table entry missing; announcing the instance again',
      );
      this.announce(rec);
      void c.resolver.refresh(rec.job);
    }
  }

  /** Removes every instance's wiring (the NetManager stops; the records stay for the next start). */
  async detachAll(): Promise<void> {
    for (const inst of this.c.state.instances) {
      await this.c.net
        .detach(inst.attachment)
        .catch((err: unknown) => this.c.log.warn({ err: errorMessage(err), job: inst.job }, 'detach failed'));
    }
  }

  private announce(rec: InstanceState): void {
    this.c.cluster.reportDeployed({
      job: rec.job,
      instance: rec.instance,
      nsip: rec.nsip,
      nsipv6: rec.nsipv6,
      hostIp: this.c.hostIp,
      hostPort: this.c.tunnelPort,
      ...(this.c.publicKey !== undefined ? { publicKey: this.c.publicKey } : {}),
    });
  }

  /** True while the instance's recorded process runs (same start time and namespace, in this boot). */
  private isRunning(rec: InstanceState): boolean {
    const id = this.c.processes.identity(rec.pid);
    if (!id) return false;
    if (rec.pidStart === undefined) return rec.netns === undefined;
    return rec.pidStart === id.start && rec.netns === id.netns;
  }
}
