/**
 * @module cli/platform-command
 * `oaknet up | status | down | exec`: a whole edge platform on one machine (network namespaces standing in
 * for worker nodes, real root, cluster and NetManager processes), what it looks like, and a way in.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Option, type Command } from 'commander';
import { consoleLogger } from './log.ts';
import { errorMessage, InvalidInputError, NotFoundError } from '../errors.ts';
import type { JobDocument } from '../protocol/root-api.ts';
import { parseLatencyArg } from '../platform/latency.ts';
import { createPlatform, loadPlatform, type Platform } from '../platform/platform.ts';
import type { PlatformStatus } from '../platform/status.ts';
import { destroyPlatform } from '../platform/teardown.ts';
import { defaultStateDir, requireRoot } from './options.ts';
import { renderTable } from './table.ts';

const DEMO_WEB = 'demo.oaknet.web.v1';
const DEMO_CLIENT = 'demo.oaknet.client.v1';
/** The demo web service's names as its client calls them (see the README's Names). */
const DEMO_WEB_NAME = 'web';
const DEMO_WEB_CLOSEST_NAME = 'web.v1.demo.oaknet.closest.oakestra';
const DEMO_DIR = fileURLToPath(new URL('../platform/demo/', import.meta.url));

/** The platform's state directory: the flag, else $OAKNET_STATE_DIR, else <state dir>/platform. */
export function platformDir(flag: string | undefined): string {
  return flag ?? process.env['OAKNET_STATE_DIR'] ?? join(defaultStateDir(), 'platform');
}

const stateDirOption = () =>
  new Option(
    '--state-dir <dir>',
    'where the platform keeps its state and logs (default $OAKNET_STATE_DIR or <state dir>/platform)',
  );

export function registerPlatformCommands(program: Command, out: (text: string) => void): void {
  program
    .command('up')
    .description(
      'bring up a whole oaknet platform on this machine (as root): nodes as network namespaces, real processes',
    )
    .option('--nodes <n>', 'worker nodes', positive('nodes', 200), 3)
    .option('--clusters <n>', 'clusters (nodes are spread over them)', positive('clusters', 9), 1)
    .option(
      '--latency <spec>',
      'one-way link latency, e.g. "2ms,40ms" (two sites: the first half of the nodes and the rest; intra-site, inter-site) or "site-a=n1,n2;site-b=n3;intra=2ms;inter=40ms"',
    )
    .option('--empty', 'no demo services')
    .option(
      '--insecure',
      'plain http and no authentication anywhere (default: a platform CA, certificates and tokens)',
    )
    .addOption(stateDirOption())
    .action(
      async (opts: {
        nodes: number;
        clusters: number;
        latency?: string;
        empty?: boolean;
        insecure?: boolean;
        stateDir?: string;
      }) => {
        requireRoot('oaknet up');
        const stateDir = platformDir(opts.stateDir);
        const latency = opts.latency !== undefined ? parseLatencyArg(opts.latency) : undefined;
        const progress = new Progress();
        const started = Date.now();
        const platform = await createPlatform(
          {
            stateDir,
            nodes: opts.nodes,
            clusters: opts.clusters,
            ...(latency
              ? { latency: latency.latency, ...(latency.sites ? { sites: latency.sites } : {}) }
              : {}),
            onStep: (step, done) => progress.step(step, done),
            ...(opts.insecure ? { insecure: true } : {}),
          },
          consoleLogger('oaknet up'),
        );
        if (!opts.empty) await deployDemo(platform, progress);
        progress.end();
        out(await summary(platform, (Date.now() - started) / 1000, !opts.empty));
      },
    );

  program
    .command('status')
    .description(
      'show the platform: nodes (up/down, subnetworks, instances, flows, drops), services and instances',
    )
    .option('--json', 'print JSON')
    .option('--watch', 'refresh every 2 s (with --json: one JSON document per line)')
    .addOption(stateDirOption())
    .action(async (opts: { json?: boolean; watch?: boolean; stateDir?: string }) => {
      requireRoot('oaknet status');
      const platform = loadPlatform(platformDir(opts.stateDir));
      const render = async () => {
        const view = await statusView(platform);
        // --watch --json: one JSON document per line (JSON Lines), so a consumer can parse each refresh
        if (opts.json) return opts.watch ? JSON.stringify(view) : JSON.stringify(view, null, 2);
        return renderStatus(view);
      };
      if (!opts.watch) return out(await render());
      for (;;) {
        const text = await render();
        if (opts.json) out(text);
        else {
          if (process.stdout.isTTY) process.stdout.write('\x1b[2J\x1b[H');
          out(`${text}\n\n(refreshing every 2 s; Ctrl-C to stop)`);
        }
        await new Promise((r) => setTimeout(r, 2000));
      }
    });

  program
    .command('down')
    .description(
      'remove everything `up` created (namespaces, links, rules, processes); safe to run again, and after a crash',
    )
    .addOption(stateDirOption())
    .action(async (opts: { stateDir?: string }) => {
      requireRoot('oaknet down');
      const report = await destroyPlatform(platformDir(opts.stateDir), consoleLogger('oaknet down'));
      if (report.id === undefined) return out('no platform to take down');
      out(
        `platform ${report.id} is down: stopped ${report.stopped.length} processes` +
          (report.killed.length ? ` (${report.killed.length} needed SIGKILL)` : '') +
          `, removed ${report.namespaces.length} namespaces`,
      );
    });

  program
    .command('restart')
    .description(
      "restart services of the platform (after a crash, or to pick up a new build): 'root', clusters (c1, ...) keep their stores; NetManagers (n1, ...) their subnetwork and instances",
    )
    .argument('<names...>', 'root, c1, ..., n1, ...')
    .addOption(stateDirOption())
    .action(async (names: string[], opts: { stateDir?: string }) => {
      requireRoot('oaknet restart');
      const platform = loadPlatform(platformDir(opts.stateDir), consoleLogger('oaknet restart'));
      // every name is checked before anything restarts
      const clusters = platform.state.clusters.map((c) => c.name);
      for (const name of names) if (name !== 'root' && !clusters.includes(name)) platform.node(name);
      for (const name of names) {
        const started = Date.now();
        await platform.restart(name);
        out(`${name}: restarted and ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      }
    });

  program
    .command('exec')
    .description("run a command inside a node's (or a workload's) network namespace")
    .argument('<target>', 'a node (n1, n2, ...) or a workload (demo-client, ...)')
    .argument('<command...>', 'the command and its arguments (after --)')
    .addOption(stateDirOption())
    .action(async (target: string, command: string[], opts: { stateDir?: string }) => {
      requireRoot('oaknet exec');
      const platform = loadPlatform(platformDir(opts.stateDir));
      const code = await execIn(netnsOf(platform, target), command);
      process.exit(code);
    });
}

/** The namespace of a node or workload name, and whether it is a workload's. */
export function netnsOf(platform: Platform, target: string): { netns: string; workload: boolean } {
  const node = platform.state.nodes.find((n) => n.name === target);
  if (node) return { netns: node.netns, workload: false };
  const w = platform.workloads.find((x) => x.name === target);
  if (w) return { netns: w.netns, workload: true };
  const names = [...platform.state.nodes.map((n) => n.name), ...platform.workloads.map((x) => x.name)];
  throw new NotFoundError(`no node or workload ${JSON.stringify(target)} (there are: ${names.join(', ')})`);
}

/**
 * Runs a command in a namespace with the terminal attached; resolves with its exit code. A workload's command
 * runs as `oaknet run` started the workload (`ip netns exec`: with the workload's resolv.conf, from
 * /etc/netns/<netns>/); a node's through nsenter, which keeps the host's mount namespace (and with it the
 * named namespaces, for `oaknet run` inside the node).
 */
export function execIn(target: { netns: string; workload: boolean }, command: string[]): Promise<number> {
  const { netns, workload } = target;
  return new Promise((resolve) => {
    const child = workload
      ? spawn('ip', ['netns', 'exec', netns, ...command], { stdio: 'inherit' })
      : spawn('nsenter', [`--net=/run/netns/${netns}`, '--', ...command], { stdio: 'inherit' });
    child.once('error', (err) => {
      process.stderr.write(`oaknet exec: ${err.message}\n`);
      resolve(127);
    });
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

async function deployDemo(platform: Platform, progress: Progress): Promise<void> {
  const nodes = platform.state.nodes.map((n) => n.name);
  const servers = nodes.length > 1 ? nodes.slice(1) : nodes;
  const instances = Math.max(2, servers.length);
  progress.step(`demo: ${DEMO_WEB} with ${instances} instances, a client on ${nodes[0]}`, false);
  for (let i = 0; i < instances; i++) {
    const node = servers[i % servers.length]!;
    await platform.startWorkload({
      name: `demo-web-${i}`,
      node,
      service: DEMO_WEB,
      instance: i,
      command: ['python3', join(DEMO_DIR, 'web.py'), DEMO_WEB, String(i), node],
      readyLine: `demo web ${DEMO_WEB}.${i} ready`,
    });
  }
  await platform.startWorkload({
    name: 'demo-client',
    node: nodes[0]!,
    service: DEMO_CLIENT,
    instance: 0,
    // by name, through the node's DNS server (the search list makes `web` the sibling service's RR_IP)
    command: ['python3', join(DEMO_DIR, 'client.py'), DEMO_WEB_NAME, DEMO_WEB_CLOSEST_NAME, '5'],
    readyLine: 'demo client ready',
  });
  progress.step(`demo: ${DEMO_WEB} with ${instances} instances, a client on ${nodes[0]}`, true);
}

interface StatusView {
  platform: PlatformStatus;
  /** What protects the platform's links, in a sentence. */
  security: string;
  services: JobDocument[];
  servicesError?: string;
}

/** The platform's protection as `oaknet status` states it. */
export function securityLine(platform: Platform): string {
  return platform.secure
    ? 'TLS 1.3 with the platform CA on the root and cluster APIs; clusters authenticated by certificate, callers by role tokens (tokens in ' +
        join(platform.stateDir, 'tokens') +
        '); MQTT over TLS, each NetManager with its own certificate, topics by access list'
    : 'INSECURE: plain http, no authentication anywhere (made with oaknet up --insecure)';
}

async function statusView(platform: Platform): Promise<StatusView> {
  const status = await platform.status();
  const security = securityLine(platform);
  try {
    return {
      platform: status,
      security,
      services: await platform.rootClient('read-only', 3000).services(),
    };
  } catch (err) {
    return { platform: status, security, services: [], servicesError: errorMessage(err) };
  }
}

function renderStatus(v: StatusView): string {
  const p = v.platform;
  const nodes = renderTable(
    [
      'NODE',
      'STATE',
      'UNDERLAY',
      'SUBNET',
      'SUBNET (v6)',
      'CLUSTER',
      'SITE',
      'INSTANCES',
      'FLOWS',
      'PACKETS IN',
      'DROPS',
    ],
    p.nodes.map((n) => {
      const c = n.netmanager?.proxy;
      return [
        n.name,
        n.up && n.netmanager?.registered ? 'up' : n.up ? 'starting' : 'down',
        n.ip,
        n.netmanager?.subnet ?? '-',
        n.netmanager?.subnet_v6 ?? '-',
        n.cluster,
        n.site,
        n.netmanager ? String(n.netmanager.instances.length) : '-',
        c ? String(c.flows) : '-',
        c ? String(c.tun_in + c.tunnel_in) : '-',
        c ? String(c.dropped) : '-',
      ];
    }),
  );
  const nodeByIp = new Map(p.nodes.map((n) => [n.ip, n.name]));
  const rtts = p.nodes
    .map((n) => {
      const peers = n.netmanager?.proxy?.peers ?? [];
      const measured = peers.filter((x) => x.rtt_ms !== null);
      if (!measured.length) return undefined;
      const name = (endpoint: string) => nodeByIp.get(endpoint.replace(/:\d+$/, '')) ?? endpoint;
      const rtt = (x: (typeof measured)[number]) =>
        x.reachable ? `${(x.rtt_ms ?? 0).toFixed(1)} ms` : 'unreachable';
      return `  ${n.name} -> ${measured.map((x) => `${name(x.node)} ${rtt(x)}`).join(', ')}`;
    })
    .filter((x): x is string => x !== undefined);
  const links = p.nodes.flatMap((n) => {
    const wg = n.netmanager?.proxy?.wireguard;
    if (!wg) return [];
    const name = (endpoint: string) => nodeByIp.get(endpoint.replace(/:\d+$/, '')) ?? endpoint;
    const drops = (d: Record<string, number>) =>
      Object.entries(d)
        .map(([k, x]) => `${k} ${x}`)
        .join(', ') || '-';
    return [
      [
        n.name,
        '(this node)',
        wg.encryption === 'wireguard' ? 'wireguard' : 'PLAINTEXT',
        '-',
        '-',
        '-',
        '-',
        drops(wg.drops),
      ],
      ...wg.peers.map((x) => [
        n.name,
        name(x.node),
        x.encrypted ? 'encrypted' : 'PLAINTEXT',
        x.state,
        x.last_handshake
          ? `${Math.max(0, Math.round((Date.now() - Date.parse(x.last_handshake)) / 1000))} s ago`
          : '-',
        String(x.bytes_in),
        String(x.bytes_out),
        drops(x.drops),
      ]),
    ];
  });
  const dnsRows = p.nodes.flatMap((n) => {
    const d = n.netmanager?.dns;
    if (!d) return [];
    const c = (k: string) => String(d.counters[k] ?? 0);
    const failed =
      (d.counters['formerr'] ?? 0) + (d.counters['dropped'] ?? 0) + (d.counters['refused_source'] ?? 0);
    return [
      [
        n.name,
        d.servers.join(' '),
        c('queries'),
        c('answered'),
        c('nxdomain'),
        c('forwarded'),
        c('stale_answers'),
        c('servfail'),
        String(failed),
      ],
    ];
  });
  const plaintextAllowed = p.nodes.some(
    (n) => n.netmanager?.proxy?.wireguard?.allow_plaintext_peers === true,
  );
  const procs = p.processes.filter((x) => !x.running);
  const services = v.services.length
    ? renderTable(
        ['SERVICE', 'RR_IP', 'CLOSEST_IP', 'RR_IP (v6)', 'CLOSEST_IP (v6)'],
        v.services.map((j) => {
          const rr = j.service_ip_list.find((s) => s.IpType === 'RR');
          const cl = j.service_ip_list.find((s) => s.IpType === 'Closest');
          return [
            j.job_name,
            rr?.Address ?? '-',
            cl?.Address ?? '-',
            rr?.Address_v6 ?? '-',
            cl?.Address_v6 ?? '-',
          ];
        }),
      )
    : v.servicesError
      ? `root unreachable: ${v.servicesError}`
      : 'no services';
  const workerToNode = new Map(p.nodes.map((n) => [n.workerId, n.name]));
  const instances = v.services.flatMap((j) =>
    j.instance_list.map((i) => [
      j.job_name,
      String(i.instance_number),
      i.worker_id ? (workerToNode.get(i.worker_id) ?? i.worker_id) : '-',
      i.instance_ip,
      i.instance_ip_v6,
      i.namespace_ip ?? '(not deployed)',
      i.namespace_ip_v6 ?? '-',
    ]),
  );
  return [
    `platform ${p.id} (${p.phase}); root ${p.root.url} ${p.root.healthy ? 'healthy' : 'DOWN'}; ` +
      p.clusters.map((c) => `cluster ${c.clusterId} ${c.healthy ? 'healthy' : 'DOWN'}`).join(', '),
    `security: ${v.security}`,
    '',
    nodes,
    '',
    services,
    ...(instances.length
      ? [
          '',
          renderTable(
            ['SERVICE', '#', 'NODE', 'INSTANCE_IP', 'INSTANCE_IP (v6)', 'NAMESPACE_IP', 'NAMESPACE_IP (v6)'],
            instances,
          ),
        ]
      : []),
    ...(rtts.length ? ['', 'round-trip times measured by the NetManagers (for Closest_IP):', ...rtts] : []),
    ...(links.length
      ? [
          '',
          `tunnel links${plaintextAllowed ? ' (PLAINTEXT PEERS ALLOWED by the cluster)' : ''}:`,
          renderTable(
            ['NODE', 'PEER', 'LINK', 'STATE', 'HANDSHAKE', 'BYTES IN', 'BYTES OUT', 'DROPS'],
            links,
          ),
        ]
      : []),
    ...(dnsRows.length
      ? [
          '',
          'DNS on the nodes (names: <service>.<servicens>.<app>.<appns>[.rr|.closest].oakestra):',
          renderTable(
            [
              'NODE',
              'SERVER',
              'QUERIES',
              'ANSWERED',
              'NXDOMAIN',
              'FORWARDED',
              'STALE',
              'SERVFAIL',
              'BAD/REFUSED',
            ],
            dnsRows,
          ),
        ]
      : []),
    ...(procs.length
      ? [
          '',
          `not running: ${procs.map((x) => `${x.name} (log ${x.log})`).join(', ')}`,
          ...(procs.some(
            (x) => x.name === 'root' || p.nodes.some((n) => n.name === x.name || n.cluster === x.name),
          )
            ? ['they come back with: oaknet restart NAME...']
            : []),
        ]
      : []),
  ].join('\n');
}

async function summary(platform: Platform, seconds: number, demo: boolean): Promise<string> {
  const view = await statusView(platform);
  const st = platform.state;
  const clusters = renderTable(
    ['CLUSTER', 'CLUSTER ID', 'API (host)', 'MQTT (underlay)'],
    st.clusters.map((c) => [
      c.name,
      view.platform.clusters.find((x) => x.name === c.name)?.clusterId ?? '',
      platform.clusterUrl(c.name),
      `${st.ctlIp}:${c.mqttPort}`,
    ]),
  );
  const web = view.services.find((s) => s.job_name === DEMO_WEB);
  const rr = web?.service_ip_list.find((s) => s.IpType === 'RR')?.Address ?? '<RR_IP>';
  const closest = web?.service_ip_list.find((s) => s.IpType === 'Closest')?.Address ?? '<Closest_IP>';
  const dirFlag =
    process.env['OAKNET_STATE_DIR'] === undefined && st.stateDir !== platformDir(undefined)
      ? ` --state-dir ${st.stateDir}`
      : '';
  // the suggested commands as this user can run them: through sudo when up ran through sudo, and by the path
  // the wrapper was called with (./oaknet from a clone) unless oaknet is installed
  const self = `${process.env['SUDO_USER'] ? 'sudo ' : ''}${process.env['OAKNET_SELF'] ?? 'oaknet'}`;
  const tries = [
    [`${self} status${dirFlag}`, 'nodes, services, instances, flow and drop counters (--watch, --json)'],
    ...(demo
      ? [
          [
            `${self} exec${dirFlag} demo-client -- curl -s http://${DEMO_WEB_NAME}/`,
            `a request by name (the node's DNS answers ${rr}, the RR_IP: round robin over the instances)`,
          ],
          [
            `${self} exec${dirFlag} demo-client -- dig +short ${DEMO_WEB_CLOSEST_NAME} AAAA`,
            "the Closest_IP's IPv6 address, from the node's DNS server",
          ],
          [`${self} exec${dirFlag} demo-client -- curl -s http://${closest}/`, 'through the Closest_IP'],
          [`${self} exec${dirFlag} demo-client -- ping -c 3 ${rr}`, 'ping a ServiceIP'],
          [
            `tail -f ${join(st.stateDir, 'logs', 'w-demo-client.log')}`,
            'the demo client calling both every 5 s',
          ],
        ]
      : []),
    [
      `${self} run --node n1${dirFlag} --service my.app.web.v1 --instance 0 -- python3 -m http.server 80`,
      'your own instance',
    ],
    [`${self} service list --root ${platform.rootUrl}`, "the root's view of every service"],
    [`${self} down${dirFlag}`, 'remove everything'],
  ];
  return [
    `oaknet platform ${st.id} is up in ${seconds.toFixed(1)} s (state and logs in ${st.stateDir})`,
    '',
    clusters,
    '',
    renderStatus(view),
    '',
    'Try:',
    ...tries.map(([cmd, what]) => `  ${cmd}\n      ${what}`),
  ].join('\n');
}

function positive(what: string, max: number) {
  return (text: string): number => {
    const n = Number(text);
    if (!/^\d+$/.test(text) || n < 1 || n > max) throw new InvalidInputError(`--${what} must be 1..${max}`);
    return n;
  };
}

/** A step list on stderr: on a terminal each step's line is rewritten when it ends, else plain lines. */
class Progress {
  private readonly tty = process.stderr.isTTY === true;
  private readonly started = new Map<string, number>();

  step(name: string, done: boolean): void {
    if (!done) {
      this.started.set(name, Date.now());
      process.stderr.write(this.tty ? `  ... ${name}` : `oaknet up: ${name} ...\n`);
      return;
    }
    const s = ((Date.now() - (this.started.get(name) ?? Date.now())) / 1000).toFixed(1);
    process.stderr.write(
      this.tty ? `\r\x1b[2K  ok  ${name} (${s} s)\n` : `oaknet up: ${name}: done in ${s} s\n`,
    );
  }

  end(): void {
    if (this.tty) process.stderr.write('\n');
  }
}
