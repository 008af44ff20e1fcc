/**
 * @module node/net/attachment
 * The records of instance wiring: what attach is asked for (checked before anything is touched), and the
 * Attachment it returns, plain JSON the NetManager keeps in its state file so that it can detach after a
 * restart.
 */
import { IpAddress } from '../../addressing/ip.ts';
import { InvalidInputError } from '../../errors.ts';
import { IFNAME, type NodeEnvironmentConfig } from './environment-config.ts';
import { type PortMapping, parsePortMappings, validatePortMapping } from './port-mappings.ts';
import { isRecord } from './runner.ts';

/** One instance to connect. */
export interface AttachRequest {
  /** A process in the instance's network namespace (e.g. the container's task). */
  pid: number;
  /** Short unique token naming the veths `oakv<id>`/`oakc<id>`: 1-11 of [A-Za-z0-9_-]. */
  id: string;
  /** The instance's IPv4 address inside the node's subnetV4. */
  nsip: IpAddress;
  /** The instance's IPv6 address inside subnetV6; without it the instance gets no IPv6. */
  nsipv6?: IpAddress;
  /** Upstream's `portMappings` string (see port-mappings.ts) or already parsed mappings. */
  portMappings: string | readonly PortMapping[];
}

/** A connected instance, as plain JSON so a restarted NetManager can detach it. */
export interface Attachment {
  /** The token given to attach. */
  id: string;
  /** The pid given to attach. */
  pid: number;
  /** Host end of the veth, on the bridge. */
  hostVeth: string;
  /** Name of the other end inside the instance's namespace: "eth0", or `oakc<id>` when eth0 was taken. */
  containerVeth: string;
  /** IPv4 address of the instance. */
  nsip: string;
  /** IPv6 address of the instance, when it has one. */
  nsipv6?: string;
  /** The port mappings that were installed. */
  portMappings: PortMapping[];
}

/** An AttachRequest after its checks: the mappings parsed, unique per protocol and host port. */
export interface AttachPlan {
  id: string;
  pid: number;
  nsip: IpAddress;
  nsipv6: IpAddress | undefined;
  mappings: PortMapping[];
}

const ID = /^[A-Za-z0-9_-]{1,11}$/;

/** The host end's name for an attachment id. */
export function hostVethName(id: string): string {
  return `oakv${id}`;
}

/** The fallback name of the instance end (when eth0 exists in the namespace) for an attachment id. */
export function containerVethName(id: string): string {
  return `oakc${id}`;
}

/** Checks an Attachment read back from JSON; InvalidInputError when it is not one. */
export function attachmentFromJson(value: unknown): Attachment {
  const bad = (why: string): never => {
    throw new InvalidInputError(`not an attachment record (${why}): ${JSON.stringify(value)}`);
  };
  if (!isRecord(value)) return bad('not an object');
  const { id, pid, hostVeth, containerVeth, nsip, nsipv6, portMappings } = value;
  if (typeof id !== 'string' || !ID.test(id)) return bad('id');
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return bad('pid');
  if (hostVeth !== hostVethName(id)) return bad('hostVeth');
  if (typeof containerVeth !== 'string' || !IFNAME.test(containerVeth)) return bad('containerVeth');
  if (typeof nsip !== 'string' || IpAddress.tryParse(nsip)?.family !== 4) return bad('nsip');
  if (nsipv6 !== undefined && (typeof nsipv6 !== 'string' || IpAddress.tryParse(nsipv6)?.family !== 6))
    return bad('nsipv6');
  if (!Array.isArray(portMappings)) return bad('portMappings');
  const att: Attachment = {
    id,
    pid,
    hostVeth,
    containerVeth,
    nsip,
    portMappings: portMappings.map((m) => validatePortMapping(m)),
  };
  if (typeof nsipv6 === 'string') att.nsipv6 = nsipv6;
  return att;
}

/** Checks `req` against the node's subnets; InvalidInputError for bad input. */
export function planAttach(
  config: Pick<NodeEnvironmentConfig, 'subnetV4' | 'subnetV6'>,
  req: AttachRequest,
): AttachPlan {
  const { subnetV4, subnetV6 } = config;
  if (typeof req.id !== 'string' || !ID.test(req.id))
    throw new InvalidInputError(`attachment id ${JSON.stringify(req.id)} must be 1-11 of [A-Za-z0-9_-]`);
  if (!Number.isSafeInteger(req.pid) || req.pid <= 0)
    throw new InvalidInputError(`pid ${String(req.pid)} is not a process id`);
  const v4Offset = subnetV4.offsetOf(req.nsip);
  if (v4Offset === undefined || v4Offset < 2n || v4Offset > subnetV4.size - 2n) {
    throw new InvalidInputError(
      `nsip ${req.nsip.toString()} is not a usable instance address of ${subnetV4.toString()} (network, gateway and broadcast are reserved)`,
    );
  }
  if (req.nsipv6 !== undefined) {
    const v6Offset = subnetV6.offsetOf(req.nsipv6);
    if (v6Offset === undefined || v6Offset < 2n) {
      throw new InvalidInputError(
        `nsipv6 ${req.nsipv6.toString()} is not a usable instance address of ${subnetV6.toString()} (network and gateway are reserved)`,
      );
    }
  }
  const mappings =
    typeof req.portMappings === 'string'
      ? parsePortMappings(req.portMappings)
      : req.portMappings.map((m) => validatePortMapping(m));
  const seen = new Set<string>();
  for (const m of mappings) {
    const key = `${m.protocol}/${m.hostPort}`;
    if (seen.has(key)) throw new InvalidInputError(`host port ${key} is mapped twice`);
    seen.add(key);
  }
  return { id: req.id, pid: req.pid, nsip: req.nsip, nsipv6: req.nsipv6, mappings };
}
