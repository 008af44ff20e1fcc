/**
 * @module protocol/url
 * URL building shared by the roles: an address as the host of a URL authority (the root calling a cluster
 * back, a cluster advertising its API), and the check that an address given to be one is one.
 */
import { isIP } from 'node:net';
import { InvalidInputError } from '../errors.ts';

/** One label of a host name (letters, digits, '-', and '_' as container names have; no '-' at the ends). */
const LABEL = /^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$/;

/** A host for a URL authority: IPv6 literals go in brackets. */
export function hostForUrl(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/**
 * True when text is an IPv4 or IPv6 address (no brackets, no zone) or a host name (dot-separated labels,
 * at most 253 characters, not all digits): never a URL, a path, a port or anything with spaces.
 */
export function isHostOrIp(text: string): boolean {
  if (isIP(text) !== 0) return !text.includes('%');
  if (text.length > 253 || /^[0-9.]+$/.test(text)) return false;
  return text.split('.').every((label) => LABEL.test(label));
}

/** Throws InvalidInputError (naming `what`) unless text is an IP address or a host name. */
export function requireHostOrIp(text: string, what: string): string {
  if (!isHostOrIp(text))
    throw new InvalidInputError(
      `${what} must be an IP address or a host name (no scheme, port, path or spaces), not ${JSON.stringify(text)}`,
    );
  return text;
}
