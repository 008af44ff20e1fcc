/**
 * @module cli/node-command
 * `oaknet node` (the NetManager daemon) and `oaknet run` (a workload on it): flag parsing and wiring of the
 * real implementations (iproute2/nftables host network, the TUN and UDP tunnel of the native addon).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { AddressPlan } from '../addressing/plan.ts';
import { LinuxTun } from '../dataplane/tun/linux.ts';
import { UdpTunnel } from '../dataplane/tunnel/udp.ts';
import { InvalidInputError } from '../errors.ts';
import { IpAddress } from '../addressing/ip.ts';
import type { StartDns } from '../node/netmanager.ts';
import { DEFAULT_NODE_SOCKET } from '../protocol/node-api.ts';
import { createLogger, LOG_LEVELS } from './log.ts';
import {
  defaultStateDir,
  parseId,
  parseIp,
  parseJobName,
  parsePort,
  parseUrl,
  requireRoot,
  tokenFrom,
} from './options.ts';
import { hostForUrl } from '../protocol/url.ts';
import { commandToken } from './credentials.ts';
import { runWorkload } from './run-command.ts';
import { closeOnSignals } from './signals.ts';

/** The MTU of the TUN, the bridge and the veths without encryption (upstream's 1450: IPv4+UDP inside 1500). */
const PLAINTEXT_MTU = 1450;
/**
 * With WireGuard: room for IPv6+UDP (48), the transport header and tag (32) and the padding to 16 bytes inside
 * 1500 (1408 + 32 + 48 = 1488).
 */
const ENCRYPTED_MTU = 1408;
/** Session slots of the tunnel (three per peer at most: previous, current, next; and one handshake). */
const SESSION_SLOTS = 4096;

/**
 * Data-path offloads (TUN TSO/USO and coalesced writes through virtio headers, UDP GSO/GRO on the tunnel, each
 * where the kernel has it): on unless OAKNET_OFFLOAD=0 (1 asks for them explicitly). The wire format is the
 * same either way: one raw IP packet with full checksums per UDP datagram.
 */
export function offloadFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  const value = env['OAKNET_OFFLOAD'];
  if (value === undefined || value === '') return true;
  if (value === '1') return true;
  if (value === '0') return false;
  throw new InvalidInputError(`OAKNET_OFFLOAD must be 0 or 1, not ${JSON.stringify(value)}`);
}

export function parseHostPort(text: string, defaultPort: number): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:]+)(?::(\d+))?$/.exec(text);
  if (m) {
    const port = m[2] === undefined ? defaultPort : Number(m[2]);
    if (port >= 1 && port <= 65535) return { host: m[1]!, port };
  }
  if (text.includes(':') && !text.startsWith('[')) return { host: text, port: defaultPort }; // bare IPv6
  throw new InvalidInputError(`expected HOST[:PORT], got ${JSON.stringify(text)}`);
}

export function registerNodeCommands(program: Command): void {
  program
    .command('node')
    .description('run the NetManager of this worker node (as root): bridge, veths, TUN and ProxyTUN')
    .requiredOption('--cluster <host[:port]>', "the cluster's MQTT broker (default port 10003)")
    .option('--api-socket <path>', 'unix socket of the NetManager API', DEFAULT_NODE_SOCKET)
    .option('--api-port <port>', 'also serve the API on 127.0.0.1:<port>', parsePort)
    .option(
      '--public-address <ip>',
      'address other nodes send tunnel packets to (default: this host towards the cluster)',
      parseIp,
    )
    .option('--tunnel-port <port>', 'UDP port of the tunnel', parsePort, 50103)
    .option(
      '--state-dir <dir>',
      'where the node keeps its subnetwork and instances',
      join(defaultStateDir(), 'node'),
    )
    .option(
      '--node-id <id>',
      'register at start as this worker (standalone use); without it, wait for POST /register',
      parseId,
    )
    .option(
      '--token <token>',
      'a node token (oaknet token create --role node): needed at the first registration only',
    )
    .option('--token-file <file>', 'read the node token from this file')
    .option(
      '--cluster-api <url>',
      "the cluster's HTTP API, where the node enrolls (default https://<cluster host>:10110)",
      parseUrl,
    )
    .option(
      '--insecure',
      'anonymous MQTT without TLS (for an insecure cluster, or upstream brokers without TLS)',
    )
    .addOption(new Option('--bridge <name>', 'bridge device name').default('oaknet0'))
    .addOption(new Option('--tun <name>', 'TUN device name').default('oaknet-tun'))
    .option(
      '--rotate-key',
      "replace this node's WireGuard key (<state dir>/wireguard.key) with a new one; peers learn it from the node's next reports",
    )
    .option(
      '--plaintext-tunnel',
      'no WireGuard: tunnel in plaintext, as an upstream NetManager (only peers whose cluster runs --allow-plaintext-peers talk to it)',
    )
    .option(
      '--persistent-keepalive <seconds>',
      'send a WireGuard keepalive to every peer this often (default: off, as WireGuard; for NAT mappings)',
      (t: string) => {
        if (!/^\d{1,5}$/.test(t) || Number(t) > 65535)
          throw new InvalidInputError('expected seconds, 0-65535');
        return Number(t);
      },
    )
    .option(
      '--no-offload',
      'no TUN TSO/coalescing and no UDP GSO/GRO (they are on where the kernel has them; OAKNET_OFFLOAD=0 also turns them off)',
    )
    .option('--no-dns', "no DNS server for the instances (names: see the README's Names)")
    .option(
      '--dns-upstream <addresses>',
      "where the DNS server forwards names outside oakestra., comma-separated (default: this host's resolv.conf)",
    )
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
    .action(
      async (opts: {
        dns: boolean;
        dnsUpstream?: string;
        offload: boolean;
        cluster: string;
        apiSocket: string;
        apiPort?: number;
        publicAddress?: string;
        tunnelPort: number;
        stateDir: string;
        nodeId?: string;
        bridge: string;
        tun: string;
        logLevel: string;
        token?: string;
        tokenFile?: string;
        clusterApi?: string;
        insecure?: boolean;
        rotateKey?: boolean;
        plaintextTunnel?: boolean;
        persistentKeepalive?: number;
      }) => {
        requireRoot('oaknet node');
        const { createNetManager } = await import('../node/netmanager.ts');
        const { ClusterLink } = await import('../node/cluster-link.ts');
        const { procInspector } = await import('../node/process-inspector.ts');
        const { StateFile } = await import('../node/state.ts');
        const { startNodeApi } = await import('../node/api.ts');
        const { NodeEnvironment, attachmentFromJson } = await import('../node/net/environment.ts');
        const { ExecRunner } = await import('../node/net/runner.ts');
        const { Cidr } = await import('../addressing/cidr.ts');
        const log = createLogger('oaknet-node', opts.logLevel);
        const offload = opts.offload && offloadFromEnv();
        const cluster = parseHostPort(opts.cluster, 10003);
        let credentials = {};
        if (opts.insecure) {
          log.warn('INSECURE: anonymous MQTT without TLS to the cluster');
        } else {
          const { NodeCredentials } = await import('../node/credentials.ts');
          const token = tokenFrom(opts);
          credentials = {
            credentials: new NodeCredentials({
              stateDir: opts.stateDir,
              clusterApi: opts.clusterApi ?? `https://${hostForUrl(cluster.host)}:10110`,
              ...(token !== undefined ? { token } : {}),
              log: log.child({ component: 'credentials' }),
            }),
          };
        }
        const { loadTunnelKey } = await import('../node/tunnel-key.ts');
        const { NativeTransportSessions } = await import('../dataplane/wireguard/sessions-native.ts');
        if (opts.plaintextTunnel && opts.rotateKey)
          throw new InvalidInputError('--rotate-key needs the WireGuard tunnel (no --plaintext-tunnel)');
        const key = opts.plaintextTunnel ? undefined : loadTunnelKey(opts.stateDir, opts.rotateKey === true);
        const sessions = key ? new NativeTransportSessions(SESSION_SLOTS) : undefined;
        const OVERLAY_MTU = key ? ENCRYPTED_MTU : PLAINTEXT_MTU;
        if (key)
          log.info({ publicKey: key.publicText(), rotated: opts.rotateKey === true }, 'WireGuard tunnel');
        else
          log.warn(
            'PLAINTEXT TUNNEL: no WireGuard key; only plaintext peers, where their cluster allows them',
          );
        const plan = new AddressPlan();
        const runner = new ExecRunner();
        const { systemResolvers } = await import('../node/dns/forwarder.ts');
        const upstreams = opts.dnsUpstream
          ? opts.dnsUpstream.split(',').map((t) => {
              const u = parseHostPort(t.trim(), 53);
              const ip = IpAddress.tryParse(u.host);
              if (!ip)
                throw new InvalidInputError(`--dns-upstream takes addresses, not ${JSON.stringify(u.host)}`);
              return { host: ip.toString(), port: u.port };
            })
          : systemResolvers();
        const startDns: StartDns = async (o) => {
          const { DnsThread } = await import('../node/dns/thread.ts');
          const { buildZone } = await import('../node/dns/zone.ts');
          const { installResolvConf } = await import('../node/dns/resolv-conf.ts');
          const { loadNativeIo } = await import('../dataplane/tun/native.ts');
          const io = loadNativeIo();
          // a thread of its own, UDP through the addon (recvmmsg/sendmmsg, a batch of queries per system call)
          const server = await DnsThread.start({ ...o, upstreams, native: true });
          return {
            update: (services, generation) => server.setZone(buildZone(services, generation)),
            counters: async () => ({ ...(await server.counters()) }),
            installResolvConf: (pid, text) =>
              installResolvConf((root, path) => io.openInRoot(root, path), `/proc/${pid}/root`, text),
            close: () => server.close(),
          };
        };
        const names = { bridge: opts.bridge, tun: opts.tun, nftTable: 'oaknet' };
        // with offloads a read slot holds a 64 KiB super-packet: fewer of them per batch
        const tun = await LinuxTun.open({
          name: opts.tun,
          mtu: OVERLAY_MTU,
          batchSize: offload ? 64 : 128,
          offload,
        });
        const tunnel = UdpTunnel.open({
          port: opts.tunnelPort,
          batchSize: offload ? 64 : 128,
          offload,
          ...(sessions ? { sessions } : {}),
        });
        if (offload) {
          log.info({ tun: opts.tun, tunOffloads: tun.offloads }, 'TUN offloads (TUNSETOFFLOAD bits)');
          log.info({ port: opts.tunnelPort, ...tunnel.offloads }, 'tunnel offloads (UDP GSO/GRO)');
        }
        const nm = createNetManager(
          {
            devices: { tun, tunnel },
            cluster: new ClusterLink({ log: log.child({ component: 'mqtt' }), ...credentials }),
            hostNetwork: (subnets) => {
              const env = new NodeEnvironment(
                {
                  ...names,
                  mtu: OVERLAY_MTU,
                  subnetV4: subnets.v4,
                  subnetV6: subnets.v6,
                  tunRoutes: [Cidr.parse(plan.config.workerRangeV4), Cidr.parse(plan.config.workerRangeV6)],
                },
                { runner, logger: log.child({ component: 'host' }) },
              );
              return {
                setUp: () => env.setUp(),
                addTunRoutes: () => env.addTunRoutes(),
                attach: (spec) => env.attach(spec),
                detach: (a) => env.detach(attachmentFromJson(a)),
                forwardDrops: async () => (await env.forwardDrops()).packets,
                tearDown: () => env.tearDown(),
              };
            },
            stateFile: new StateFile(opts.stateDir, log),
            processes: procInspector,
            log,
            ...(opts.dns ? { startDns } : {}),
            dataPlane: {
              wireguard: {
                identity: key ?? null,
                sessions: sessions ?? null,
                ...(opts.persistentKeepalive ? { persistentKeepaliveSeconds: opts.persistentKeepalive } : {}),
              },
            },
          },
          {
            clusterHost: cluster.host,
            clusterMqttPort: cluster.port,
            ...(opts.publicAddress !== undefined ? { publicAddress: opts.publicAddress } : {}),
            tunnelPort: opts.tunnelPort,
            ...(key ? { publicKey: key.publicText() } : {}),
            ...(opts.dns
              ? { dns: { port: 53, upstreams: upstreams.map((u) => `${u.host}:${u.port}`) } }
              : {}),
            plan,
          },
        );
        const api = await startNodeApi(nm, log.child({ component: 'api' }), opts.apiSocket, opts.apiPort);
        log.info(
          { socket: opts.apiSocket, cluster: `${cluster.host}:${cluster.port}` },
          'NetManager API listening',
        );
        closeOnSignals(log, async () => {
          await api.close();
          await nm.close();
        });
        if (opts.nodeId !== undefined) await nm.register(opts.nodeId);
      },
    );

  program
    .command('run')
    .description(
      'run a command as an instance of a service on this node: fresh network namespace, ServiceIPs, overlay',
    )
    .requiredOption(
      '--service <name>',
      'job name app.appns.service.servicens (created when missing)',
      parseJobName,
    )
    .requiredOption('--instance <n>', 'instance number', (t: string) => {
      if (!/^\d{1,6}$/.test(t)) throw new InvalidInputError('expected an instance number');
      return Number(t);
    })
    .option('--node-socket <path>', "the NetManager's API socket", DEFAULT_NODE_SOCKET)
    .option('--node <name>', 'a node of the local platform (oaknet up): runs inside that node')
    .option('--state-dir <dir>', "the local platform's state directory (with --node)")
    .option('--root <url>', 'root service manager URL (default: the root the cluster announced)', parseUrl)
    .option(
      '--cluster-url <url>',
      'cluster service manager URL (default: what the cluster announced, else http://<cluster host>:10110)',
      parseUrl,
    )
    .option('--port-mappings <spec>', 'publish ports on the node: hostPort[:containerPort][/tcp|/udp];...')
    .option(
      '--token <token>',
      "an orchestrator token (default $OAKNET_TOKEN, else the local platform's; not needed when insecure)",
    )
    .option('--token-file <file>', 'read the orchestrator token from this file')
    .option(
      '--netns <name>',
      'name of the network namespace to create (default oakrun-<random>)',
      (t: string) => {
        if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(t))
          throw new InvalidInputError('expected a namespace name');
        return t;
      },
    )
    .argument('<command...>', 'the command and its arguments (after --)')
    .action(
      async (
        command: string[],
        opts: {
          service: string;
          instance: number;
          nodeSocket: string;
          root?: string;
          clusterUrl?: string;
          portMappings?: string;
          netns?: string;
          node?: string;
          stateDir?: string;
          token?: string;
          tokenFile?: string;
        },
      ) => {
        requireRoot('oaknet run');
        if (opts.node !== undefined) {
          process.exit(await runOnPlatformNode(opts.node, opts.stateDir, process.argv.slice(2), command));
        }
        const code = await runWorkload(
          {
            service: opts.service,
            instance: opts.instance,
            nodeSocket: opts.nodeSocket,
            ...(opts.root !== undefined ? { root: opts.root } : {}),
            ...(opts.clusterUrl !== undefined ? { clusterUrl: opts.clusterUrl } : {}),
            ...(opts.portMappings !== undefined ? { portMappings: opts.portMappings } : {}),
            ...(opts.netns !== undefined ? { netns: opts.netns } : {}),
            ...tokenOf(opts),
            say: (line) => process.stderr.write(line + '\n'),
          },
          command,
        );
        process.exit(code);
      },
    );
}

function tokenOf(opts: { token?: string; tokenFile?: string }): { token?: string } {
  const token = commandToken(opts, 'orchestrator');
  return token !== undefined ? { token } : {};
}

/**
 * `oaknet run --node NAME ...` on the local platform: the same command again, inside the node's network
 * namespace (its root and cluster are only reachable from the underlay), with the node's socket.
 */
async function runOnPlatformNode(
  node: string,
  stateDir: string | undefined,
  argv: string[],
  command: string[],
): Promise<number> {
  const { loadPlatform, PLATFORM_ENV } = await import('../platform/platform.ts');
  const { platformDir } = await import('./platform-command.ts');
  const platform = loadPlatform(platformDir(stateDir));
  const n = platform.node(node);
  const cut = argv.indexOf('--');
  const flags = (cut >= 0 ? argv.slice(0, cut) : argv.slice(0, argv.length - command.length)).slice(1);
  const own: string[] = [];
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i]!;
    if (f === '--node' || f === '--state-dir' || f === '--node-socket') i++;
    else if (!f.startsWith('--node=') && !f.startsWith('--state-dir=') && !f.startsWith('--node-socket='))
      own.push(f);
  }
  // the instance's namespace is named after the platform and the process carries its marker, so that
  // `oaknet down` removes both even while this runs or after it was killed
  if (!own.some((f) => f === '--netns' || f.startsWith('--netns=')))
    own.push('--netns', `${platform.id}-r${randomBytes(3).toString('hex')}`);
  // the platform's orchestrator token, unless one was given
  if (platform.secure && !own.some((f) => f.startsWith('--token')) && !process.env['OAKNET_TOKEN']) {
    const { tokenFile } = await import('../platform/credentials.ts');
    own.push('--token-file', tokenFile(platform.state, 'orchestrator'));
  }
  const { spawn } = await import('node:child_process');
  const child = spawn(
    'nsenter',
    [
      `--net=/run/netns/${n.netns}`,
      '--',
      process.execPath,
      process.argv[1]!,
      'run',
      ...own,
      '--node-socket',
      n.socket,
      '--',
      ...command,
    ],
    { stdio: 'inherit', env: { ...process.env, [PLATFORM_ENV]: platform.id } },
  );
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
}
