/**
 * @module cli/credentials
 * How the CLI's commands authenticate: a token from --token, --token-file or $OAKNET_TOKEN, else the local
 * platform's token for the role the command needs (`oaknet up` keeps them in <state dir>/tokens), else the
 * root's admin token on the root's own machine. The token's CA pin finds and checks the platform CA
 * (security/join.ts); plain http URLs (an --insecure platform) need neither.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidInputError } from '../errors.ts';
import type { Credentials } from '../protocol/http-client.ts';
import { discoverServer } from '../security/join.ts';
import type { Identity } from '../security/pki.ts';
import type { Role } from '../security/tokens.ts';
import { readState } from '../platform/state.ts';
import { defaultStateDir, tokenFrom } from './options.ts';

export interface TokenOptions {
  token?: string;
  tokenFile?: string;
}

/** The token for a command that needs `role`; undefined when none is configured anywhere. */
export function commandToken(opts: TokenOptions, role: Role): string | undefined {
  const given = tokenFrom(opts);
  if (given !== undefined) return given;
  for (const file of candidateFiles(role)) {
    try {
      if (existsSync(file)) return readFileSync(file, 'utf8').trim();
    } catch {
      // not readable by this user: try the next
    }
  }
  return undefined;
}

function candidateFiles(role: Role): string[] {
  const dirs = process.env['OAKNET_STATE_DIR']
    ? [process.env['OAKNET_STATE_DIR']]
    : [join(defaultStateDir(), 'platform'), '/var/lib/oaknet/platform'];
  const files: string[] = [];
  for (const dir of dirs) {
    try {
      if (readState(dir)) files.push(join(dir, 'tokens', `${role}.token`));
    } catch {
      // no platform here
    }
  }
  if (role === 'operator') files.push(join(defaultStateDir(), 'pki', 'admin.token'));
  return files;
}

/**
 * Credentials for `url`: for https the token (required) and the platform CA it pins, with the server's
 * identity checked (`expect`, or any of ours); for http only the token, if any.
 */
export async function credentialsFor(
  url: string,
  token: string | undefined,
  role: Role,
  expect?: Identity,
): Promise<{ credentials: Credentials; identity?: Identity }> {
  if (!url.startsWith('https:')) return { credentials: token !== undefined ? { token } : {} };
  if (token === undefined)
    throw new InvalidInputError(
      `${url} needs a token with the role ${role}: pass --token or --token-file, or set $OAKNET_TOKEN (oaknet token create --role ${role})`,
    );
  const { ca, identity } = await discoverServer(url, token, expect);
  return { credentials: { tls: { ca, expect: identity }, token }, identity };
}
