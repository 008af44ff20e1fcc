/**
 * @module cli/token-command
 * `oaknet token create|list|revoke`: join tokens (cluster, node) and API tokens (read-only, operator,
 * orchestrator), kept by the root; `oaknet token revoke-cluster`: what a cluster token enrolled. These
 * calls need an operator token (the root writes one at its first start: <pki dir>/admin.token).
 */
import type { Command } from 'commander';
import { InvalidArgumentError, Option } from 'commander';
import { RootClient } from '../protocol/root-client.ts';
import { ROLES, type Role } from '../security/tokens.ts';
import { commandToken, credentialsFor, type TokenOptions } from './credentials.ts';
import { parseUrl, rootUrlFrom } from './options.ts';
import { renderTable } from './table.ts';

/** Default TTL of join tokens (kubeadm's too); API tokens never expire unless given one. */
const JOIN_TTL_SECONDS = 24 * 3600;

/** `90s`, `30m`, `24h`, `7d`, or `0` (never expires). */
export function parseTtl(text: string): number {
  const m = /^(\d{1,9})([smhd]?)$/.exec(text);
  if (!m) throw new InvalidArgumentError('expected a duration such as 30m, 24h, 7d, or 0 for never');
  const n = Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86400 } as Record<string, number>)[m[2]!]!;
  if (n > 10 * 366 * 86400) throw new InvalidArgumentError('at most 10 years');
  return n;
}

type Common = TokenOptions & { root?: string; json?: boolean };

async function operatorRoot(opts: Common): Promise<RootClient> {
  const url = rootUrlFrom(opts.root);
  const { credentials } = await credentialsFor(url, commandToken(opts, 'operator'), 'operator', {
    kind: 'root',
  });
  return new RootClient(url, { credentials });
}

/** The options every command against a secure API takes. */
export function addTokenOptions(cmd: Command, role: Role): Command {
  return cmd
    .option(
      '--token <token>',
      `a token with the role ${role} (default $OAKNET_TOKEN, else the local platform's)`,
    )
    .option('--token-file <file>', 'read the token from this file');
}

export function registerTokenCommands(program: Command, out: (text: string) => void): void {
  const token = program
    .command('token')
    .description('create, list and revoke tokens: join tokens for clusters and nodes, API tokens by role');
  const rootOption = [
    '--root <url>',
    'root service manager URL (default as for `oaknet service`)',
    parseUrl,
  ] as const;

  addTokenOptions(
    token
      .command('create')
      .description('create a token and print it (it is shown only once)')
      .addOption(new Option('--role <role>', 'what the token may do').choices(ROLES).makeOptionMandatory())
      .option(
        '--ttl <duration>',
        'expires after (30m, 24h, 7d; 0: never). Default: 24h for cluster and node, never otherwise',
        parseTtl,
      )
      .option('--description <text>', 'a note shown by `oaknet token list`')
      .option(...rootOption)
      .option('--json', 'print JSON'),
    'operator',
  ).action(async (opts: Common & { role: Role; ttl?: number; description?: string }) => {
    const ttl = opts.ttl ?? (opts.role === 'cluster' || opts.role === 'node' ? JOIN_TTL_SECONDS : 0);
    const created = await (await operatorRoot(opts)).createToken(opts.role, ttl, opts.description);
    out(opts.json ? JSON.stringify(created, null, 2) : created.token);
  });

  addTokenOptions(
    token
      .command('list')
      .description('every token (not their secrets)')
      .option(...rootOption)
      .option('--json', 'print JSON'),
    'operator',
  ).action(async (opts: Common) => {
    const list = await (await operatorRoot(opts)).tokens();
    if (opts.json) return out(JSON.stringify(list, null, 2));
    if (list.length === 0) return out('no tokens');
    out(
      renderTable(
        ['ID', 'ROLE', 'EXPIRES', 'REVOKED', 'USES', 'DESCRIPTION'],
        list.map((t) => [
          t.id,
          t.role,
          t.expires ?? 'never',
          t.revoked ?? '-',
          String(t.uses),
          t.description || '-',
        ]),
      ),
    );
  });

  addTokenOptions(
    token
      .command('revoke')
      .description('revoke a token at once (a cluster that checks tokens learns it within 30 s)')
      .argument('<id>', 'the token ID (oaknet token list)')
      .option(...rootOption),
    'operator',
  ).action(async (id: string, opts: Common) => {
    const info = await (await operatorRoot(opts)).revokeToken(id);
    out(`revoked token ${info.id} (${info.role}) at ${info.revoked ?? ''}`);
  });

  addTokenOptions(
    token
      .command('revoke-cluster')
      .description(
        'revoke an enrolled cluster: its certificates stop working at the root at once and never renew; it must enroll again with a new cluster token',
      )
      .argument('<cluster-id>', 'the cluster ID')
      .option(...rootOption),
    'operator',
  ).action(async (id: string, opts: Common) => {
    const r = await (await operatorRoot(opts)).revokeCluster(id);
    out(`revoked cluster ${r.cluster_id} at ${r.revoked}`);
  });
}
