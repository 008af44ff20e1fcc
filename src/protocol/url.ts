/**
 * @module protocol/url
 * URL building shared by the roles: an address as the host of a URL authority (the root calling a cluster
 * back, a cluster advertising its API).
 */

/** A host for a URL authority: IPv6 literals go in brackets. */
export function hostForUrl(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}
