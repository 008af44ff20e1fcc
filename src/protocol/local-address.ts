/**
 * @module protocol/local-address
 * Which of this host's addresses a peer sees: the source address of a TCP connection to it. A cluster tells
 * the root where to call it back, a NetManager tells its cluster where its tunnel is, with this address.
 */
import { connect } from 'node:net';

/** This host's source address on the route to the URL's host (what the root sees and can call back). */
export function localAddressTowards(url: string): Promise<string> {
  const u = new URL(url);
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, timeout: 3000 });
    socket.once('connect', () => {
      const addr = socket.localAddress;
      socket.destroy();
      if (addr) resolve(addr.replace(/^::ffff:/, ''));
      else reject(new Error('no local address'));
    });
    socket.once('timeout', () => {
      socket.destroy();
      reject(new Error(`timeout connecting to ${url}`));
    });
    socket.once('error', reject);
  });
}
