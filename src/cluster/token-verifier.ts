/**
 * @module cluster/token-verifier
 * A cluster checks bearer tokens (an orchestrator's, a node's join token) by asking the root, which keeps
 * them; a valid answer is kept for 30 s, so a revocation takes at most that long to reach a cluster, and a
 * burst of calls costs one question. While the root is away, a token not seen before cannot be checked: 503.
 */
import { createHash } from 'node:crypto';
import type { TokenVerifier } from '../protocol/http-auth.ts';
import type { RootClient } from '../protocol/root-client.ts';
import type { Role, TokenInfo } from '../security/tokens.ts';

const TTL_MS = 30_000;
const MAX_ENTRIES = 1000;

export class RemoteTokenVerifier implements TokenVerifier {
  private readonly cache = new Map<string, { info: TokenInfo; until: number }>();

  constructor(
    private readonly root: RootClient,
    private readonly now: () => number = Date.now,
  ) {}

  async verify(token: string, roles: readonly Role[]): Promise<TokenInfo> {
    const key = `${createHash('sha256').update(token).digest('hex')} ${roles.join(',')}`;
    const hit = this.cache.get(key);
    if (hit && hit.until > this.now()) return hit.info;
    const info = await this.root.verifyToken(token, roles);
    if (this.cache.size >= MAX_ENTRIES) this.cache.clear();
    this.cache.set(key, { info, until: this.now() + TTL_MS });
    return info;
  }
}
