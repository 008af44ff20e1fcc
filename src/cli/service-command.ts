/**
 * @module cli/service-command
 * `oaknet service create|show|list|delete`: operator commands against the root's API.
 */
import type { Command } from 'commander';
import { ConflictError, NotFoundError } from '../errors.ts';
import type { JobDocument } from '../protocol/root-api.ts';
import { RootClient } from '../protocol/root-client.ts';
import type { Role } from '../security/tokens.ts';
import { commandToken, credentialsFor, type TokenOptions } from './credentials.ts';
import { parseId, parseIp, parseJobName, parseUrl, rootUrlFrom } from './options.ts';
import { renderTable } from './table.ts';

interface Common extends TokenOptions {
  root?: string;
  json?: boolean;
}

/** A root client for a command that needs `role` (credentials from the token; see cli/credentials.ts). */
async function rootFor(opts: Common, role: Role, clusterId?: string): Promise<RootClient> {
  const url = rootUrlFrom(opts.root);
  const { credentials } = await credentialsFor(url, commandToken(opts, role), role, { kind: 'root' });
  return new RootClient(url, { credentials, ...(clusterId !== undefined ? { clusterId } : {}) });
}

export function registerServiceCommands(program: Command, out: (text: string) => void): void {
  const service = program
    .command('service')
    .description('create, inspect and delete services (their ServiceIPs live at the root)');
  const rootOption = [
    '--root <url>',
    "root service manager URL (default $OAKNET_ROOT, else the local platform's root, else https://127.0.0.1:10010)",
    parseUrl,
  ] as const;

  service
    .command('create')
    .description('create a service and print its ServiceIPs')
    .argument('<name>', 'job name: app.appns.service.servicens', parseJobName)
    .option('--rr-ip <ip>', 'choose the IPv4 RR_IP (inside 10.30.0.0/16, not in use)', parseIp)
    .option('--rr-ip-v6 <ip>', 'choose the IPv6 RR_IP (inside fdff:2000::/21)', parseIp)
    .option('--closest-ip <ip>', 'choose the IPv4 Closest_IP', parseIp)
    .option('--closest-ip-v6 <ip>', 'choose the IPv6 Closest_IP (inside fdff:1000::/21)', parseIp)
    .option(...rootOption)
    .option('--token <token>', "a token (default $OAKNET_TOKEN, else the local platform's)")
    .option('--token-file <file>', 'read the token from this file')
    .option('--json', 'print JSON')
    .action(
      async (
        name: string,
        opts: Common & { rrIp?: string; rrIpV6?: string; closestIp?: string; closestIpV6?: string },
      ) => {
        const root = await rootFor(opts, 'orchestrator');
        await root.createService(name, {
          ...(opts.rrIp ? { RR_ip: opts.rrIp } : {}),
          ...(opts.rrIpV6 ? { RR_ip_v6: opts.rrIpV6 } : {}),
          ...(opts.closestIp ? { closest_ip: opts.closestIp } : {}),
          ...(opts.closestIpV6 ? { closest_ip_v6: opts.closestIpV6 } : {}),
        });
        const job = await root.jobByName(name);
        out(opts.json ? JSON.stringify(job, null, 2) : `created service ${name}\n${serviceIpTable(job)}`);
      },
    );

  service
    .command('show')
    .description("show a service's ServiceIPs and instances")
    .argument('<name>', 'job name', parseJobName)
    .option(...rootOption)
    .option('--token <token>', "a token (default $OAKNET_TOKEN, else the local platform's)")
    .option('--token-file <file>', 'read the token from this file')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: Common) => {
      const job = await (await rootFor(opts, 'read-only')).jobByName(name);
      out(opts.json ? JSON.stringify(job, null, 2) : describeJob(job));
    });

  service
    .command('list')
    .description('list every service with its ServiceIPs')
    .option(...rootOption)
    .option('--token <token>', "a token (default $OAKNET_TOKEN, else the local platform's)")
    .option('--token-file <file>', 'read the token from this file')
    .option('--json', 'print JSON')
    .action(async (opts: Common) => {
      const jobs = await (await rootFor(opts, 'read-only')).services();
      if (opts.json) return out(JSON.stringify(jobs, null, 2));
      if (jobs.length === 0) return out('no services');
      out(
        renderTable(
          ['SERVICE', 'RR_IP', 'CLOSEST_IP', 'RR_IP (v6)', 'CLOSEST_IP (v6)', 'INSTANCES'],
          jobs.map((j) => {
            const rr = ipOf(j, 'RR');
            const cl = ipOf(j, 'Closest');
            return [j.job_name, rr.v4, cl.v4, rr.v6, cl.v6, String(j.instance_list.length)];
          }),
        ),
      );
    });

  service
    .command('delete')
    .description('delete a service and release its ServiceIPs')
    .argument('<name>', 'job name', parseJobName)
    .option('--force', 'also undeploy its instances (their instance IPs are released too)')
    .option(...rootOption)
    .option('--token <token>', "a token (default $OAKNET_TOKEN, else the local platform's)")
    .option('--token-file <file>', 'read the token from this file')
    .action(async (name: string, opts: Common & { force?: boolean }) => {
      const root = await rootFor(opts, 'orchestrator');
      const job = await root.jobByName(name);
      try {
        await root.removeService(job._id, opts.force ?? false);
      } catch (err) {
        if (err instanceof NotFoundError) throw err;
        if ((err as { code?: string }).code === 'E_CONFLICT') {
          throw new ConflictError(`${(err as Error).message} (or pass --force)`);
        }
        throw err;
      }
      out(`deleted service ${name}`);
    });
}

function ipOf(job: JobDocument, type: string): { v4: string; v6: string } {
  const e = job.service_ip_list.find((s) => s.IpType.toLowerCase() === type.toLowerCase());
  return { v4: e?.Address ?? '-', v6: e?.Address_v6 ?? '-' };
}

function serviceIpTable(job: JobDocument): string {
  return renderTable(
    ['POLICY', 'IPv4', 'IPv6'],
    job.service_ip_list.map((s) => [s.IpType, s.Address ?? '-', s.Address_v6 ?? '-']),
  );
}

function describeJob(job: JobDocument): string {
  const instances = job.instance_list.length
    ? renderTable(
        ['INSTANCE', 'INSTANCE_IP', 'INSTANCE_IP (v6)', 'CLUSTER', 'NODE', 'NAMESPACE_IP', 'HOST'],
        job.instance_list.map((i) => [
          String(i.instance_number),
          i.instance_ip,
          i.instance_ip_v6,
          i.cluster_id,
          i.worker_id ?? '-',
          i.namespace_ip ?? '(not deployed)',
          i.host_ip !== undefined ? `${i.host_ip}:${i.host_port ?? ''}` : '-',
        ]),
      )
    : 'no instances';
  return `service ${job.job_name} (job ${job._id})\n\n${serviceIpTable(job)}\n\n${instances}`;
}

/** `oaknet worker list|remove`: worker subnetworks at the root (an operator removes a node that is gone). */
export function registerWorkerCommands(program: Command, out: (text: string) => void): void {
  const worker = program
    .command('worker')
    .description("list worker nodes' subnetworks, release a removed node's");
  const rootOption = [
    '--root <url>',
    "root service manager URL (default $OAKNET_ROOT, else the local platform's root, else https://127.0.0.1:10010)",
    parseUrl,
  ] as const;

  worker
    .command('list')
    .description('every worker with its subnetworks')
    .option('--cluster-id <id>', 'only the workers of this cluster', parseId)
    .option(...rootOption)
    .option('--token <token>', "a token (default $OAKNET_TOKEN, else the local platform's)")
    .option('--token-file <file>', 'read the token from this file')
    .option('--json', 'print JSON')
    .action(async (opts: Common & { clusterId?: string }) => {
      const root = await rootFor(opts, 'read-only', opts.clusterId);
      const workers = (await root.workers()).filter(
        (w) => opts.clusterId === undefined || w.cluster_id === opts.clusterId,
      );
      if (opts.json) return out(JSON.stringify(workers, null, 2));
      if (workers.length === 0) return out('no workers');
      out(
        renderTable(
          ['CLUSTER', 'WORKER', 'SUBNET', 'SUBNET (v6)'],
          workers.map((w) => [w.cluster_id, w.worker_id, w.subnet, w.subnet_v6]),
        ),
      );
    });

  worker
    .command('remove')
    .description(
      'release the subnetworks of a worker that left (they are reused once the fresh ones run out)',
    )
    .argument('<worker-id>', 'the worker', parseId)
    .requiredOption('--cluster-id <id>', 'its cluster', parseId)
    .option(...rootOption)
    .option('--token <token>', "a token (default $OAKNET_TOKEN, else the local platform's)")
    .option('--token-file <file>', 'read the token from this file')
    .action(async (workerId: string, opts: Common & { clusterId: string }) => {
      const root = await rootFor(opts, 'operator', opts.clusterId);
      const released = await root.releaseSubnet(workerId, true);
      out(`released ${released.subnet} and ${released.subnet_v6} of worker ${workerId}`);
    });
}
