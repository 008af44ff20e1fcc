/** Test fixtures of the DNS tests: a remote instance as the zone sees it in a table. */
import { IpAddress } from '../../addressing/ip.ts';
import type { Instance } from '../../dataplane/snapshot.ts';
import { endpoint } from '../../dataplane/tunnel/tunnel.ts';

/** An address's bytes. */
export const bytes = (text: string): Uint8Array => IpAddress.parse(text).toBytes();

/** Instance `n` of `job` on a remote node (192.0.2.1) of cluster c1, with its instance and namespace addresses. */
export function remoteInstance(
  job: string,
  n: number,
  ip4: string,
  ip6: string,
  ns4: string,
  ns6: string,
): Instance {
  return {
    job,
    number: n,
    nsip4: bytes(ns4),
    nsip6: bytes(ns6),
    instanceIp4: bytes(ip4),
    instanceIp6: bytes(ip6),
    endpoint: endpoint('192.0.2.1', 50103),
    key: null,
    local: false,
    cluster: 'c1',
  };
}
