/**
 * @module protocol/http-errors
 * The one place that maps errors to HTTP: typed OakNetErrors to their status, schema failures to 400, and
 * anything else to 500 without leaking internals. Every error body is {error, message}.
 */
import type { FastifyError, FastifyInstance } from 'fastify';
import { OakNetError } from '../errors.ts';
import type { ErrorReply } from './root-api.ts';

const STATUS_BY_CODE: Readonly<Record<string, number>> = {
  E_INVALID_INPUT: 400,
  E_ADDRESS_OUT_OF_RANGE: 400,
  E_NOT_REGISTERED: 400,
  E_NOT_FOUND: 404,
  E_CONFLICT: 409,
  E_ADDRESS_IN_USE: 409,
  E_ADDRESS_SPACE_EXHAUSTED: 507,
  E_UNAVAILABLE: 503,
  E_UNSUPPORTED: 501,
  E_PERMISSION: 403,
  E_UNAUTHENTICATED: 401,
  E_FORBIDDEN: 403,
  E_QUOTA: 403,
  E_RATE_LIMITED: 429,
  E_SYSTEM: 500,
};

export function httpStatusOf(err: unknown): number {
  if (err instanceof OakNetError) return STATUS_BY_CODE[err.code] ?? 500;
  const fe = err as Partial<FastifyError>;
  if (fe.validation || (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500)) {
    return fe.statusCode ?? 400;
  }
  return 500;
}

export function errorReply(err: unknown): { status: number; body: ErrorReply } {
  const status = httpStatusOf(err);
  if (err instanceof OakNetError) return { status, body: { error: err.code, message: err.message } };
  if (status === 413)
    return {
      status,
      body: { error: 'E_BODY_TOO_LARGE', message: 'request body is larger than this route accepts' },
    };
  if (status < 500 && err instanceof Error)
    return { status, body: { error: 'E_INVALID_INPUT', message: err.message } };
  return { status, body: { error: 'E_INTERNAL', message: 'internal error (see the server log)' } };
}

/** Installs the mapping on a fastify app; 5xx errors are logged with their stack. */
export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err, req, reply) => {
    const { status, body } = errorReply(err);
    if (status >= 500) req.log.error({ err }, 'request failed');
    // a flood's rejections would drown the log at info (the status counts them)
    else if (status === 429) req.log.debug({ code: body.error }, 'request rate-limited');
    else req.log.info({ code: body.error, msg: body.message }, 'request rejected');
    void reply.status(status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: 'E_NOT_FOUND', message: `no route ${req.method} ${req.url}` });
  });
}
