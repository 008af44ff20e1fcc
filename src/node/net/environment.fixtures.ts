/**
 * @module node/net/environment.fixtures
 * What the fake-runner tests of NodeEnvironment share: a configuration, a NodeEnvironment over a FakeRunner
 * and a MemorySysctl with a capturing logger, an `ip -j link show` answer with leftovers, an attach request.
 */
import { type Logger, pino } from 'pino';
import { Cidr } from '../../addressing/cidr.ts';
import { IpAddress } from '../../addressing/ip.ts';
import { type NodeEnvironmentConfig, NodeEnvironment } from './environment.ts';
import { FakeRunner, type FakeResponse, type RecordedCall } from './runner.ts';
import { MemorySysctl } from './sysctl.ts';

export const config: NodeEnvironmentConfig = {
  bridge: 'okbr0',
  tun: 'oktun0',
  mtu: 1450,
  subnetV4: Cidr.parse('10.18.0.0/26'),
  subnetV6: Cidr.parse('fc00::/120'),
  tunRoutes: [Cidr.parse('10.16.0.0/12'), Cidr.parse('fc00::/7')],
  nftTable: 'oaknet',
};

export function capturingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger: Logger = pino(
    { level: 'debug' },
    { write: (msg: string) => void lines.push(JSON.parse(msg) as Record<string, unknown>) },
  );
  return { logger, lines };
}

export function sysctlWithDefaults(): MemorySysctl {
  return new MemorySysctl({
    'net/ipv6/conf/all/disable_ipv6': '0',
    'net/ipv6/conf/all/forwarding': '0',
    'net/ipv4/ip_forward': '0',
    'net/ipv4/conf/all/rp_filter': '0',
    // an uplink configured by SLAAC
    'net/ipv6/conf/uplink0/accept_ra': '1',
  });
}

export function setup(respond?: (call: RecordedCall) => FakeResponse | undefined): {
  env: NodeEnvironment;
  fake: FakeRunner;
  sysctl: MemorySysctl;
  lines: Record<string, unknown>[];
} {
  const fake = new FakeRunner(respond);
  const sysctl = sysctlWithDefaults();
  const { logger, lines } = capturingLogger();
  return { env: new NodeEnvironment(config, { runner: fake, logger, sysctl }), fake, sysctl, lines };
}

export const linksJson = JSON.stringify([
  { ifname: 'lo' },
  { ifname: 'eth0' },
  { ifname: 'okbr0' },
  { ifname: 'oakva1', master: 'okbr0' },
  { ifname: 'oakvb2', master: 'okbr0' },
  { ifname: 'vethother', master: 'docker0' },
  { ifname: 'oktun0' },
]);

export const request = {
  pid: 4242,
  id: 'x1',
  nsip: IpAddress.parse('10.18.0.2'),
  nsipv6: IpAddress.parse('fc00::2'),
  portMappings: '8080:80;53/udp',
};
