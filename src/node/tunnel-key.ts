/**
 * @module node/tunnel-key
 * The NetManager's static WireGuard key pair: the private key in `<state dir>/wireguard.key` (0600 in a 0700
 * directory, base64 as `wg genkey` writes it, so `wg pubkey < wireguard.key` shows the public key), made at
 * the first start and replaced by `oaknet node --rotate-key`. Peers learn the public key through the control
 * plane (deployment reports, table entries), so a new key reaches them with the node's next reports.
 */
import { join } from 'node:path';
import { InvalidInputError, errorMessage } from '../errors.ts';
import { ensurePrivateDir, readIfExists, writePrivateFile } from '../security/files.ts';
import { formatKey, KeyPair } from '../dataplane/wireguard/keys.ts';

export const TUNNEL_KEY_FILE = 'wireguard.key';

/** The node's key pair from its state directory (made when missing, or a new one with `rotate`). */
export function loadTunnelKey(stateDir: string, rotate = false): KeyPair {
  ensurePrivateDir(stateDir);
  const path = join(stateDir, TUNNEL_KEY_FILE);
  const text = rotate ? undefined : readIfExists(path);
  if (text === undefined) {
    const pair = KeyPair.generate();
    writePrivateFile(path, `${formatKey(pair.privateKey)}\n`);
    return pair;
  }
  try {
    return KeyPair.fromText(text.trim());
  } catch (err) {
    throw new InvalidInputError(`${path}: not a WireGuard private key (${errorMessage(err)})`);
  }
}
