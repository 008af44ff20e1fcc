/**
 * @module cli/run-command
 * `oaknet run`: starts a command in a fresh network namespace and does what an orchestrator does for it:
 * makes sure the service exists at the root, schedules the instance there (instance IPs), tells the cluster,
 * deploys it on the node through the NetManager's socket, gives it a resolv.conf naming the node's DNS server,
 * streams the command's output, and undoes all of it when the command exits or the user interrupts it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ConflictError, errorMessage, NotFoundError, SystemError } from '../errors.ts';
import { ClusterClient } from '../protocol/cluster-client.ts';
import { NodeClient } from '../protocol/node-client.ts';
import type { JobDocument } from '../protocol/root-api.ts';
import { RootClient } from '../protocol/root-client.ts';
import { resolvConf } from '../node/dns/resolv-conf.ts';
import { credentialsFor } from './credentials.ts';

const exec = promisify(execFile);

export interface RunOptions {
  service: string;
  instance: number;
  nodeSocket: string;
  root?: string;
  clusterUrl?: string;
  portMappings?: string;
  /** Name of the network namespace to create (default oakrun-<random>); `ip netns exec NAME` enters it. */
  netns?: string;
  /** On a signal: time between withdrawing the instance and stopping the command (ms, default 1000). */
  drainMs?: number;
  /** An orchestrator token (needed when root and cluster are https). */
  token?: string;
  /** Where progress lines go (stderr by default), so the command's own stdout stays clean. */
  say: (line: string) => void;
}

/** Runs cmd as instance `instance` of `service`; resolves with the exit code to use. */
export async function runWorkload(o: RunOptions, cmd: readonly string[]): Promise<number> {
  const undo: Array<() => Promise<unknown>> = [];
  const cleanup = async () => {
    // the root first: nodes stop choosing the instance before its network goes away
    await withdraw().catch((err: unknown) => o.say(`cleanup: ${errorMessage(err)}`));
    for (const step of undo.reverse())
      await step().catch((err: unknown) => o.say(`cleanup: ${errorMessage(err)}`));
    undo.length = 0;
  };
  let child: ChildProcess | undefined;
  let stopping = false;
  /** Takes the instance out of the service at the root (once): no new flows are sent to it afterwards. */
  let withdraw: () => Promise<void> = () => Promise.resolve();
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      child?.kill('SIGKILL');
      return;
    }
    stopping = true;
    if (child && child.exitCode === null) {
      // graceful: withdraw first, let the update reach the nodes, then stop the command
      const running = child;
      void withdraw()
        .catch((err: unknown) => o.say(`oaknet run: withdrawing at the root failed: ${errorMessage(err)}`))
        .then(() => new Promise((r) => setTimeout(r, o.drainMs ?? 1000)))
        .then(() => running.kill(signal));
    } else void cleanup().then(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const node = new NodeClient(o.nodeSocket);
    const status = await node.status();
    if (!status.registered || !status.cluster || !status.worker_id) {
      throw new ConflictError(`the NetManager at ${o.nodeSocket} is not registered with a cluster yet`);
    }
    const clusterHost = new URL(status.cluster).hostname;
    // the URL `new URL()` gives for an IPv6 broker host keeps its brackets, as a URL needs
    const clusterUrl = o.clusterUrl ?? status.cluster_api ?? `http://${clusterHost}:10110`;
    const toCluster = await credentialsFor(clusterUrl, o.token, 'orchestrator');
    if (toCluster.identity && toCluster.identity.kind !== 'cluster')
      throw new ConflictError(`${clusterUrl} is not a cluster service manager`);
    const cluster = new ClusterClient(clusterUrl, 10_000, toCluster.credentials);
    const clusterStatus = await cluster.status();
    const rootUrl = o.root ?? status.root_api ?? clusterStatus.root;
    const root = new RootClient(rootUrl, {
      credentials: (await credentialsFor(rootUrl, o.token, 'orchestrator', { kind: 'root' })).credentials,
    });

    const job = await ensureService(root, o.service, o.say);
    const running = job.instance_list.find(
      (i) => i.instance_number === o.instance && i.namespace_ip !== undefined,
    );
    if (running) {
      throw new ConflictError(
        `instance ${o.instance} of ${o.service} is already running (worker ${running.worker_id ?? '?'}); choose another --instance`,
      );
    }
    await root.deployInstance(job._id, o.instance, clusterStatus.cluster_id);
    let withdrawn: Promise<void> | undefined;
    withdraw = () => (withdrawn ??= root.removeInstance(job._id, o.instance));
    undo.push(() => withdraw());
    await cluster.announceDeployment(o.service);

    const ns = o.netns ?? `oakrun-${randomBytes(4).toString('hex')}`;
    await exec('ip', ['netns', 'add', ns]);
    undo.push(() => exec('ip', ['netns', 'del', ns]));
    await exec('ip', ['netns', 'exec', ns, 'true']).catch((cause: unknown) => {
      throw new SystemError(
        `the new namespace ${ns} cannot be entered: is oaknet run itself inside \`ip netns exec\`? Its private mount ` +
          `namespace hides named namespaces; enter a node with nsenter --net=/run/netns/NODE instead`,
        { cause },
      );
    });
    const holder = spawn('ip', ['netns', 'exec', ns, 'sleep', 'infinity'], { stdio: 'ignore' });
    undo.push(async () => {
      holder.kill('SIGKILL');
      if (holder.exitCode === null && holder.signalCode === null)
        await new Promise((r) => holder.once('exit', r));
    });
    await waitInNamespace(holder, ns);

    const deployed = await node.deploy({
      pid: holder.pid!,
      serviceName: o.service,
      instanceNumber: o.instance,
      portMappings: o.portMappings ?? '',
    });
    undo.push(() => node.undeploy(o.service, o.instance));
    const doc = await root.jobByName(o.service);
    const inst = doc.instance_list.find((i) => i.instance_number === o.instance);
    const ip = (type: string) => doc.service_ip_list.find((s) => s.IpType === type);
    o.say(
      `oaknet run: ${o.service} instance ${o.instance} on worker ${status.worker_id} (netns ${ns}): namespace address ${deployed.nsAddress} ${deployed.nsAddressv6}, ` +
        `instance IP ${inst?.instance_ip ?? '?'} ${inst?.instance_ip_v6 ?? ''}; RR_IP ${ip('RR')?.Address ?? '?'} ${ip('RR')?.Address_v6 ?? ''}, ` +
        `Closest_IP ${ip('Closest')?.Address ?? '?'} ${ip('Closest')?.Address_v6 ?? ''}`,
    );

    if (status.dns) {
      // `ip netns exec` mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf: the command (and
      // `oaknet exec` into it) resolves through the node's DNS server, names of its own application first
      const dir = `/etc/netns/${ns}`;
      mkdirSync(dir, { recursive: true });
      undo.push(() => rm(dir, { recursive: true, force: true }));
      writeFileSync(join(dir, 'resolv.conf'), resolvConf(status.dns.servers, o.service, 'oaknet run'));
    }

    if (stopping) return 130;
    child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: 'inherit' });
    const code = await new Promise<number>((resolve) => {
      child!.once('error', (err) => {
        o.say(`oaknet run: cannot start ${cmd[0] ?? ''}: ${err.message}`);
        resolve(127);
      });
      child!.once('exit', (c, signal) => resolve(c ?? (signal ? 128 + signalNumber(signal) : 1)));
    });
    return code;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

/** The job named `name`, created (with fresh ServiceIPs) when it does not exist yet. */
async function ensureService(root: RootClient, name: string, say: (l: string) => void): Promise<JobDocument> {
  try {
    return await root.jobByName(name);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
  }
  await root.createService(name);
  say(`oaknet run: created service ${name}`);
  return root.jobByName(name);
}

/** Waits until the holder process has entered the namespace (ip netns exec sets it, then execs). */
async function waitInNamespace(holder: ChildProcess, ns: string): Promise<void> {
  const want = statSync(`/run/netns/${ns}`).ino;
  const deadline = Date.now() + 5000;
  for (;;) {
    if (holder.exitCode !== null || holder.pid === undefined)
      throw new SystemError(`could not start a process in namespace ${ns}`);
    try {
      if (statSync(`/proc/${holder.pid}/ns/net`).ino === want) return;
    } catch {
      // the process is being set up
    }
    if (Date.now() > deadline) throw new SystemError(`process ${holder.pid} did not enter namespace ${ns}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function signalNumber(signal: NodeJS.Signals): number {
  return ({ SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[signal] ?? 1;
}
