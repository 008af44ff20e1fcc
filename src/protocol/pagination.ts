/**
 * @module protocol/pagination
 * How list endpoints page: the body stays a JSON array (upstream's shape), `?limit=` bounds it (default
 * 100, at most 1000), `?after=<cursor>` continues after the last record of the previous page, and while
 * more records follow the reply carries `Link: <path?...&after=<cursor>>; rel="next"` (RFC 8288), the
 * request's own query with the cursor set. No Link: that was the last page. A cursor is the natural key of
 * the last record (a job or cluster ID, `cluster/worker` for workers), so a walk stays correct while records
 * come and go: each record present throughout is listed once.
 */
import type { FastifyReply } from 'fastify';
import { Type, type TSchema } from 'typebox';

/** Records per page when the caller does not say. */
export const DEFAULT_PAGE_LIMIT = 100;
/** Records per page at most. */
export const MAX_PAGE_LIMIT = 1000;

/** The `limit` query parameter. */
export const PageLimit = Type.Optional(
  Type.Integer({
    minimum: 1,
    maximum: MAX_PAGE_LIMIT,
    description: `records per page: 1-${MAX_PAGE_LIMIT}, default ${DEFAULT_PAGE_LIMIT}`,
  }),
);

/** The `after` query parameter: a cursor of the given pattern. */
export function pageCursor(pattern: string, what: string) {
  return Type.Optional(
    Type.String({
      pattern,
      description: `continue after this ${what} (the cursor in the previous page's Link header)`,
    }),
  );
}

/** The OpenAPI description of a paged list. */
export function pagedDescription(what: string): string {
  return (
    `${what}, one page: ?limit= records (default ${DEFAULT_PAGE_LIMIT}, at most ${MAX_PAGE_LIMIT}) after ` +
    `?after=<cursor>. While more follow, the reply has a header Link: <this path with after=<cursor>>; ` +
    `rel="next"; without it, the page is the last.`
  );
}

/** A paged list's 200 response: an array of item, with the Link header documented. */
export function pagedArray<T extends TSchema>(item: T) {
  return Type.Array(item, {
    headers: {
      link: Type.String({ description: '<path?...&after=<cursor>>; rel="next", while more records follow' }),
    },
  });
}

/** The Link header value of the next page: path with the request's query and after=next. */
export function nextPageLink(path: string, query: Readonly<Record<string, unknown>>, next: string): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (k === 'after') continue;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') params.set(k, String(v));
  }
  params.set('after', next);
  return `<${path}?${params.toString()}>; rel="next"`;
}

/** Sets the Link header when a next page exists; returns the page's items. */
export function sendPage<T>(
  reply: FastifyReply,
  path: string,
  query: Readonly<Record<string, unknown>>,
  page: { items: T[]; next?: string | undefined },
): T[] {
  if (page.next !== undefined) void reply.header('link', nextPageLink(path, query, page.next));
  return page.items;
}

/** The `after` cursor of a Link header's rel="next" target, or undefined when there is none. */
export function nextCursorOf(link: string | null | undefined): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(',')) {
    const m = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
    if (!m || !/(?:^|;)\s*rel\s*=\s*"?next"?\s*(?:;|$)/i.test(m[2]!)) continue;
    try {
      return new URL(m[1]!, 'http://x').searchParams.get('after') ?? undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** The page request of a query: its cursor and its limit, the default when absent. */
export function pageRequest(query: { limit?: number | undefined; after?: string | undefined }): {
  limit: number;
  after: string | undefined;
} {
  return { limit: query.limit ?? DEFAULT_PAGE_LIMIT, after: query.after };
}
