/**
 * @module protocol/http-server
 * The one way oaknet builds an HTTP API server (root, cluster, NetManager), so every API treats input the
 * same: bodies are validated exactly as their schema says (no silent type conversion: `null` is not 0),
 * path and query strings are converted to the numbers and booleans their schema asks for (a number only
 * from plain decimal digits: not '1e3', ' 12', '0x10' or ''), JSON nested
 * absurdly deep is refused before it reaches a handler, long IDs fit in path parameters, and every failure,
 * including ones the router finds before a route runs, gets the {error, message} body.
 */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyBaseLogger, type FastifyReply } from 'fastify';
import type { Server as TlsServer } from 'node:tls';
import type { Logger } from 'pino';
import type { TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { InvalidInputError } from '../errors.ts';
import { errorReply, installErrorHandler } from './http-errors.ts';

/** Deepest nesting a JSON body may have (JSON.stringify of something nested thousands deep overflows the stack). */
const MAX_JSON_DEPTH = 64;
/** Longest path parameter: IDs have up to 128 characters, job names up to 123 (fastify's default is 100). */
const MAX_PARAM_LENGTH = 256;
/** A number in a path or query: decimal digits, a sign for negatives (the schema's range does the rest). */
const DECIMAL = /^-?[0-9]+$/;

/** A TLS server: its key and chain, and the platform CA its clients' certificates must come from. */
export interface ServerTls {
  key: string;
  cert: string;
  ca: string;
}

export function createApiServer(log: Logger, bodyLimit: number, tls?: ServerTls) {
  const loggerInstance: FastifyBaseLogger = log;
  // https: TLS 1.3 only; a client certificate is asked for but not required (tokens and enrollment come
  // without one); the auth hook (http-auth.ts) decides what the call may do
  const https = tls
    ? { ...tls, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' as const }
    : undefined;
  const app = Fastify({
    ...(https ? ({ https } as object) : {}),
    loggerInstance,
    bodyLimit,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    frameworkErrors: (err, _req, reply) => {
      const { status, body } = errorReply(err);
      void (reply as unknown as FastifyReply).status(status).send(body);
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  installErrorHandler(app);
  app.setValidatorCompiler(({ schema, httpPart }) => {
    const validator = Compile(schema as TSchema);
    const part = httpPart ?? 'input';
    return (data: unknown) => {
      if (part !== 'body') {
        // TypeBox converts whatever Number() takes ('1e3', ' 12', '0x10', '' as 0): only digits here
        const lax = laxNumber(schema, data);
        if (lax)
          return {
            error: new InvalidInputError(
              `${part}/${lax.key} must be a decimal integer, not ${JSON.stringify(lax.text)}`,
            ),
          };
      }
      const value = part === 'body' ? data : validator.Convert(data);
      if (validator.Check(value)) return { value };
      const problems = validator
        .Errors(value)
        .slice(0, 3)
        .map((e) => `${part}${e.instancePath} ${e.message}`);
      return { error: new InvalidInputError(problems.join('; ') || `invalid ${part}`) };
    };
  });
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    void parseJson(req, body.toString(), (err, value) => {
      if (err) done(err);
      else if (nestedDeeperThan(value, MAX_JSON_DEPTH))
        done(new InvalidInputError(`body is nested deeper than ${MAX_JSON_DEPTH} levels`));
      else done(null, value);
    });
  });
  return app;
}

/** Swaps a running TLS server's key and chain (a renewed certificate); new connections use them. */
export function rotateServerTls(server: unknown, tls: ServerTls): void {
  const s = server as Partial<TlsServer>;
  s.setSecureContext?.({ key: tls.key, cert: tls.cert, ca: tls.ca, minVersion: 'TLSv1.3' });
}

/** The first property of a path or query object whose schema is a number and whose text is not decimal digits. */
function laxNumber(schema: TSchema, data: unknown): { key: string; text: string } | undefined {
  const properties = (schema as { properties?: Record<string, TSchema> }).properties;
  if (!properties || typeof data !== 'object' || data === null) return undefined;
  for (const [key, value] of Object.entries(data)) {
    const property = properties[key];
    if (property && isNumeric(property) && typeof value === 'string' && !DECIMAL.test(value))
      return { key, text: value };
  }
  return undefined;
}

/** True when every value the schema takes is a number (no string alternative that text could be). */
function isNumeric(schema: TSchema): boolean {
  const s = schema as { type?: unknown; anyOf?: TSchema[] };
  if (s.type === 'integer' || s.type === 'number') return true;
  return Array.isArray(s.anyOf) && s.anyOf.length > 0 && s.anyOf.every(isNumeric);
}

function nestedDeeperThan(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]];
  for (let item = stack.pop(); item; item = stack.pop()) {
    const [v, depth] = item;
    if (v === null || typeof v !== 'object') continue;
    if (depth > max) return true;
    for (const child of Object.values(v)) stack.push([child, depth + 1]);
  }
  return false;
}

/** An API server as createApiServer builds it (TypeBox-typed routes). */
export type ApiServer = ReturnType<typeof createApiServer>;
