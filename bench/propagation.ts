/**
 * Time for an instance change at the root to reach N NetManagers' service tables. The NetManagers are
 * simulated in this process with the REAL node-side code: each one a ClusterLink (its own MQTT client ID =
 * worker ID), a ServiceTable and a NodeResolver, exactly as `createNetManager` wires them (minus TUN, tunnel
 * and proxy). All of them first learn the job by a table query and watch it; then the root adds or removes an
 * instance, the cluster publishes updates_available, every resolver queries the table again and applies it.
 * A node counts as reached when its table holds the new instance count; the time runs from the root call.
 */
import { pino } from 'pino';
import { ClusterLink } from '../src/node/cluster-link.ts';
import { NodeResolver } from '../src/node/resolver.ts';
import { ServiceTable } from '../src/node/service-table.ts';
import type { NodeCredentials } from '../src/node/credentials.ts';
import type { Credentials } from '../src/protocol/http-client.ts';
import { RootClient } from '../src/protocol/root-client.ts';

export interface PropagationOptions {
  rootUrl: string;
  mqttUrl: string;
  clusterId: string;
  /** Number of simulated NetManagers (default 100). */
  nodes?: number;
  /** Number of instance changes, alternately adding and removing one (default 10). */
  changes?: number;
  /**
   * A secure platform: the orchestrator's and the cluster's credentials towards the root, the worker the
   * reports name (one of the cluster's), and each simulated node's credentials (its identity on disk).
   */
  secure?: {
    orchestrator: Credentials;
    cluster: Credentials;
    workerId: string;
    node: (workerId: string) => Promise<NodeCredentials>;
  };
}

export interface PropagationResult {
  nodes: number;
  /** Per change: what it was and the arrival time at every node (ms after the root call). */
  changes: Array<{ change: string; arrivalsMs: number[]; rootCallMs: number }>;
  /** Time to connect the simulated nodes and have them all query and watch the job (ms). */
  setupMs: number;
}

const silent = pino({ level: 'silent' });

export async function measurePropagation(o: PropagationOptions): Promise<PropagationResult> {
  const n = o.nodes ?? 100;
  const changes = o.changes ?? 10;
  const root = new RootClient(o.rootUrl, {
    timeoutMs: 10_000,
    ...(o.secure ? { credentials: o.secure.orchestrator } : {}),
  });
  // reports come from the cluster (its certificate, in a secure platform)
  const reporter = o.secure
    ? new RootClient(o.rootUrl, { timeoutMs: 10_000, credentials: o.secure.cluster })
    : root;
  const jobId = `prop${Date.now().toString(36)}`;
  const job = `bench.prop.${jobId}.v1`;
  const instance = (k: number) => ({
    instance_number: k,
    namespace_ip: `10.16.0.${2 + k}`,
    namespace_ip_v6: `fc00::${2 + k}`,
    host_ip: '127.0.0.1',
    host_port: 50103,
    ...(o.secure ? { worker_id: o.secure.workerId } : {}),
  });
  await root.deployService(jobId, {
    app_name: 'bench',
    app_ns: 'prop',
    service_name: jobId,
    service_ns: 'v1',
  });
  await root.deployInstance(jobId, 0, o.clusterId);
  await reporter.deployStatus({ job_id: jobId, instances: [instance(0)] });

  interface SimNode {
    link: ClusterLink;
    table: ServiceTable;
    resolver: NodeResolver;
    /** Called after every apply of the job. */
    onApply?: () => void;
  }
  const sims: SimNode[] = [];
  const t0 = performance.now();
  try {
    for (let i = 0; i < n; i += 25) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(25, n - i) }, async (_, k) => {
          const workerId = `${jobId}-w${i + k}`;
          const link = new ClusterLink({
            log: silent,
            answerTimeoutMs: 10_000,
            ...(o.secure ? { credentials: await o.secure.node(workerId) } : {}),
          });
          await link.prepare(workerId);
          link.connect(workerId, o.mqttUrl);
          sims.push({ link } as SimNode);
          await link.ready();
          const table = new ServiceTable();
          table.setIdentity({ workerId, hostIp: `127.0.1.${(i + k) % 250}`, hostPort: 50103, subnets: [] });
          // no interest expiry runs here (a NetManager drives it): the interest lasts the measurement
          const resolver = new NodeResolver({ table, cluster: link, log: silent });
          const sim = sims.find((s) => s.link === link)!;
          Object.assign(sim, { table, resolver });
          // observe (not change) the real apply: the moment the table holds the answer
          const apply = table.apply.bind(table);
          table.apply = (j, raw) => {
            apply(j, raw);
            sim.onApply?.();
          };
          return sim;
        }),
      );
      // every node learns the job as a NetManager does on a deploy or a first packet: query, apply, watch
      await Promise.all(batch.map((s) => s.resolver.refresh(job)));
    }
    const missing = sims.filter((s) => s.table.instancesOf(job).length !== 1).length;
    if (missing > 0) throw new Error(`${missing} of ${n} simulated nodes did not learn ${job}`);
    const setupMs = performance.now() - t0;

    const result: PropagationResult = { nodes: n, changes: [], setupMs };
    for (let c = 0; c < changes; c++) {
      const adding = c % 2 === 0;
      const want = adding ? 2 : 1;
      const arrivals: number[] = [];
      let start = 0;
      const done = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`change ${c}: only ${arrivals.length} of ${n} nodes within 30 s`)),
          30_000,
        );
        for (const s of sims) {
          let seen = false;
          s.onApply = () => {
            if (seen || s.table.instancesOf(job).length !== want) return;
            seen = true;
            arrivals.push(performance.now() - start);
            if (arrivals.length === n) {
              clearTimeout(timer);
              resolve();
            }
          };
        }
      });
      if (adding) {
        // scheduling first (the instance has no address yet, so no table changes); the clock starts when
        // the instance becomes reachable: its deployment status at the root
        await root.deployInstance(jobId, 1, o.clusterId);
        await new Promise((r) => setTimeout(r, 300));
      }
      start = performance.now();
      if (adding) {
        await reporter.deployStatus({ job_id: jobId, instances: [instance(1)] });
      } else {
        await root.removeInstance(jobId, 1);
      }
      const rootCallMs = performance.now() - start;
      await done;
      result.changes.push({
        change: adding ? 'add instance 1' : 'remove instance 1',
        arrivalsMs: arrivals,
        rootCallMs,
      });
      for (const s of sims) delete s.onApply;
      await new Promise((r) => setTimeout(r, 200)); // let stray refreshes settle before the next change
    }
    return result;
  } finally {
    await Promise.allSettled(
      sims.map(async (s) => {
        await s.link.close();
      }),
    );
    await root.removeService(jobId, true).catch(() => undefined);
    root.close();
    reporter.close();
  }
}
