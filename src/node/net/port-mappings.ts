/**
 * @module node/net/port-mappings
 * The `portMappings` string of a deploy request (upstream reference 2.1, from the SLA `port` field):
 * entries `hostPort[:containerPort][/tcp|/udp]` joined by `;`. The protocol defaults to tcp and the container
 * port to the host port; the empty string means no mappings.
 *
 * Decisions where upstream was loose or wrong:
 * - Ports are integers 1-65535 written as 1 to 5 decimal digits. Upstream accepted 0, which is not a port a
 *   client can connect to, so 0 is rejected.
 * - Whitespace around an entry is tolerated (`"80; 90/udp"`), as is whitespace around the whole string, but an
 *   entry that is empty after trimming is an error, like upstream: `" "`, `"80;"` and `"80;;90"` are invalid.
 *   Only the exact empty string means "none". Whitespace inside an entry (`"80 :90"`) is invalid.
 * - The protocol is matched case-insensitively (`/TCP`) and normalised to lower case.
 * - The same protocol and host port twice is an error: one host port can only lead to one place.
 * Every error is an InvalidInputError that quotes the bad entry.
 */
import { InvalidInputError } from '../../errors.ts';

/** Transport protocol of a mapping. */
export type PortProtocol = 'tcp' | 'udp';

/** One host port forwarded to a port of an instance. */
export interface PortMapping {
  /** tcp or udp. */
  protocol: PortProtocol;
  /** Port on the node's addresses, 1-65535. */
  hostPort: number;
  /** Port inside the instance's namespace, 1-65535. */
  containerPort: number;
}

const ENTRY = /^([0-9]{1,5})(?::([0-9]{1,5}))?(?:\/([A-Za-z]+))?$/;

function port(text: string, entry: string): number {
  const n = Number(text);
  if (n < 1 || n > 65535) {
    throw new InvalidInputError(`invalid port mapping ${JSON.stringify(entry)}: port ${n} is not in 1-65535`);
  }
  return n;
}

/** Parses one entry `hostPort[:containerPort][/tcp|/udp]` (already trimmed); InvalidInputError when bad. */
export function parsePortMapping(entry: string): PortMapping {
  const m = ENTRY.exec(entry);
  if (!m) {
    throw new InvalidInputError(
      `invalid port mapping ${JSON.stringify(entry)}: expected hostPort[:containerPort][/tcp|/udp]`,
    );
  }
  const protocol = (m[3] ?? 'tcp').toLowerCase();
  if (protocol !== 'tcp' && protocol !== 'udp') {
    throw new InvalidInputError(`invalid port mapping ${JSON.stringify(entry)}: protocol must be tcp or udp`);
  }
  const hostPort = port(m[1]!, entry);
  const containerPort = m[2] === undefined ? hostPort : port(m[2], entry);
  return { protocol, hostPort, containerPort };
}

/** Parses a whole `portMappings` string ("" = none); InvalidInputError naming the first bad entry. */
export function parsePortMappings(text: string): PortMapping[] {
  if (text === '') return [];
  const result: PortMapping[] = [];
  const seen = new Set<string>();
  for (const raw of text.split(';')) {
    const entry = raw.trim();
    if (entry === '') {
      throw new InvalidInputError(`invalid port mappings ${JSON.stringify(text)}: empty entry`);
    }
    const mapping = parsePortMapping(entry);
    const key = `${mapping.protocol}/${mapping.hostPort}`;
    if (seen.has(key)) {
      throw new InvalidInputError(
        `invalid port mappings ${JSON.stringify(text)}: host port ${key} appears more than once`,
      );
    }
    seen.add(key);
    result.push(mapping);
  }
  return result;
}

/** The canonical string of `mappings` (`8080:80/tcp;53:53/udp`), which parsePortMappings reads back. */
export function formatPortMappings(mappings: readonly PortMapping[]): string {
  return mappings.map((m) => `${m.hostPort}:${m.containerPort}/${m.protocol}`).join(';');
}

/** Checks a PortMapping that came from elsewhere (e.g. a JSON state file); InvalidInputError when bad. */
export function validatePortMapping(value: unknown): PortMapping {
  const v = value as Partial<Record<keyof PortMapping, unknown>> | null;
  const ok =
    typeof v === 'object' &&
    v !== null &&
    (v.protocol === 'tcp' || v.protocol === 'udp') &&
    isPort(v.hostPort) &&
    isPort(v.containerPort);
  if (!ok) throw new InvalidInputError(`not a port mapping: ${JSON.stringify(value)}`);
  return {
    protocol: v.protocol as PortProtocol,
    hostPort: v.hostPort as number,
    containerPort: v.containerPort as number,
  };
}

function isPort(n: unknown): boolean {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;
}
