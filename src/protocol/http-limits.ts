/**
 * @module protocol/http-limits
 * Limits every API server (root, cluster) puts on its callers, so one caller cannot exhaust it:
 * - per-caller rate limits (@fastify/rate-limit, a fixed window per caller, counted before the body is
 *   read): a general one over every route, and a tighter one for each route that allocates (worker
 *   subnetworks, services, instances), counted per route; health checks are exempt. Beyond a limit the
 *   caller gets 429 `{error: 'E_RATE_LIMITED', message}` with Retry-After (seconds), and the refusal is
 *   counted for the status;
 * - body sizes: 64 KiB unless a route carries more (a deployment report of many instances: 1 MiB); beyond,
 *   413 `{error: 'E_BODY_TOO_LARGE', message}`;
 * - heavy requests (pages of lists: milliseconds of synchronous work each) take turns of the event loop, one
 *   per turn (`inTurn`), so however many arrive at once, a cheap request (a health check) waits for one of
 *   them, not for all.
 * A caller is `callerKey(req)`: a certificate's identity, else a source address.
 */
import rateLimit, { type RateLimitOptions } from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { InvalidInputError, RateLimitedError, UnavailableError } from '../errors.ts';
import { certificateIdentityOf } from './http-auth.ts';

/**
 * Who a request counts against: the identity of its valid TLS client certificate (a cluster, a node), else
 * its source address (bearer-token callers, insecure mode). Known before the credentials are checked, so a
 * flood of bad credentials is limited too.
 */
export function callerKey(req: FastifyRequest): string {
  return certificateIdentityOf(req) ?? `ip:${req.ip}`;
}

/** At most `max` requests per caller in each window of `windowMs`; max 0: no such limit. */
export interface RateLimit {
  max: number;
  windowMs: number;
}

export interface RateLimits {
  /** Every route without a limit of its own, all of them together. */
  general: RateLimit;
  /** Each allocating route, on its own (instead of the general limit). */
  allocation: RateLimit;
}

/**
 * Generous for what oaknet itself does (the test suite, `oaknet up`, the benchmarks but the HTTP allocation
 * flood, which raises them, a cluster of a thousand nodes starting at once), far below a flood: the root answers some 2,000 requests/s on two cores,
 * so one caller at the general limit (5,000 per 10 s: 500/s sustained, or a burst of 5,000) cannot starve
 * the others; allocating routes allow 1,000 per 10 s per caller each (a cluster's quota of worker
 * subnetworks in one window): 100/s, a tenth or less of the attack runs' 1,000-1,500/s.
 */
export const DEFAULT_RATE_LIMITS: RateLimits = {
  general: { max: 5000, windowMs: 10_000 },
  allocation: { max: 1000, windowMs: 10_000 },
};

/** Body size of every route unless it says otherwise. */
export const BODY_LIMIT = 64 << 10;
/**
 * Body size of routes that carry lists: a deployment report of some 7,000 instances fits (a service has at
 * most 1,000 by default).
 */
export const LARGE_BODY_LIMIT = 1 << 20;

/** Heavy requests of one caller waiting for their turn at most; beyond, 503 (the server is busy). */
const MAX_WAITING_TURNS = 1000;
/** Heavy requests of all callers waiting at most. */
const MAX_WAITING_TURNS_ALL = 10_000;
/**
 * Each caller's queued works, in two rings (a Map keeps insertion order): callers that had nothing waiting
 * when their work came (served first, as fq_codel serves new flows), and callers with more waiting after a
 * turn of theirs.
 */
const fresh = new Map<string, Array<() => void>>();
const waiting = new Map<string, Array<() => void>>();
let waitingTurns = 0;
let turnScheduled = false;

/**
 * Runs work (and whatever its caller does with the result in microtasks, such as serialising the reply) in
 * an event-loop turn of its own, after the I/O that is waiting: queued works run one per turn, each caller's
 * in order, the callers taking turns round-robin (`caller`: callerKey(req)), and a caller that had nothing
 * waiting before the others.
 * Without turns, 40 page requests read in one poll phase ran back to back (a second of work with pages of
 * 1,000 services) while a health check waited behind them; the attack run's health check timed out. Without
 * the round-robin, a page request of another caller waited behind all of them in the queue (0.9 s at p99
 * while 40 clients walked a list of 30,000 services in pages of 1,000): now it waits for one.
 */
export function inTurn<T>(work: () => T, caller = ''): Promise<T> {
  const queue = fresh.get(caller) ?? waiting.get(caller) ?? [];
  if (queue.length >= MAX_WAITING_TURNS || waitingTurns >= MAX_WAITING_TURNS_ALL) {
    return Promise.reject(new UnavailableError('the server is busy with list requests; retry shortly'));
  }
  return new Promise<T>((resolve, reject) => {
    queue.push(() => {
      try {
        resolve(work());
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
    if (queue.length === 1) fresh.set(caller, queue);
    waitingTurns++;
    scheduleTurn();
  });
}

function scheduleTurn(): void {
  if (turnScheduled || waitingTurns === 0) return;
  turnScheduled = true;
  // an immediate queued by an immediate runs in the next turn, after the poll phase read what arrived
  setImmediate(() => {
    turnScheduled = false;
    const ring = fresh.size > 0 ? fresh : waiting;
    const next = ring.entries().next();
    if (!next.done) {
      const [caller, queue] = next.value;
      const work = queue.shift()!;
      // the caller goes to the end of the ring of waiting callers (or leaves when it has nothing more)
      ring.delete(caller);
      if (queue.length > 0) waiting.set(caller, queue);
      waitingTurns--;
      work();
    }
    scheduleTurn();
  });
}

/** What the limits refused, since the process started. */
export class LimitCounters {
  rateLimited = 0;
}

/** Route `config` values for the routes that do not follow the general limit. */
export interface RouteLimits {
  /** Not rate-limited: health checks, which must answer however busy the server is. */
  exempt: { rateLimit: false };
  /** The allocation limit, counted per route and caller. */
  allocation: { rateLimit?: RateLimitOptions };
}

/** The defaults with what the operator set, checked. */
export function resolveRateLimits(given: Partial<RateLimits> = {}): RateLimits {
  const limits = { ...DEFAULT_RATE_LIMITS, ...given };
  for (const [name, l] of Object.entries(limits)) {
    if (!Number.isSafeInteger(l.max) || l.max < 0)
      throw new InvalidInputError(`rate limit ${name}: max must be an integer >= 0, not ${l.max}`);
    if (!Number.isSafeInteger(l.windowMs) || l.windowMs < 1)
      throw new InvalidInputError(
        `rate limit ${name}: window must be a positive integer (ms), not ${l.windowMs}`,
      );
  }
  return limits;
}

/**
 * Installs the rate limits on app (before its routes are added) and returns the route configs of the routes
 * with limits of their own.
 */
export async function installRateLimits(
  app: FastifyInstance,
  given: Partial<RateLimits> | undefined,
  counters: LimitCounters,
): Promise<RouteLimits> {
  const limits = resolveRateLimits(given);
  const refusal =
    (l: RateLimit, scope: string) => (_req: FastifyRequest, ctx: { ttl: number; after: string }) =>
      new RateLimitedError(
        `rate limit: more than ${l.max} requests in ${l.windowMs / 1000} s from this caller${scope}; retry in ${ctx.after}`,
        Math.max(1, Math.ceil(ctx.ttl / 1000)),
      );
  await app.register(rateLimit, {
    global: limits.general.max > 0,
    max: limits.general.max,
    timeWindow: limits.general.windowMs,
    keyGenerator: callerKey,
    errorResponseBuilder: refusal(limits.general, ''),
    onExceeded: () => {
      counters.rateLimited++;
    },
  });
  const a = limits.allocation;
  return {
    exempt: { rateLimit: false },
    allocation:
      a.max > 0
        ? {
            rateLimit: {
              max: a.max,
              timeWindow: a.windowMs,
              errorResponseBuilder: refusal(a, ' to this route'),
            },
          }
        : {},
  };
}
