/**
 * @module protocol/validate
 * Turns a TypeBox schema into a parser for input from outside: the value comes back typed, or an
 * InvalidInputError says what is wrong with it.
 */
import type { Static, TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { InvalidInputError } from '../errors.ts';

export interface Parser<T extends TSchema> {
  /** Returns value typed by the schema, or throws InvalidInputError naming `what` and the first problems. */
  parse(value: unknown, what: string): Static<T>;
  /** True when value matches the schema. */
  check(value: unknown): value is Static<T>;
}

export function parser<T extends TSchema>(schema: T): Parser<T> {
  const compiled = Compile(schema);
  return {
    check: (value: unknown): value is Static<T> => compiled.Check(value),
    parse(value: unknown, what: string): Static<T> {
      if (compiled.Check(value)) return value;
      const problems = compiled
        .Errors(value)
        .slice(0, 3)
        .map((e) => `${e.instancePath || '/'} ${e.message}`);
      throw new InvalidInputError(`invalid ${what}: ${problems.join('; ')}`);
    },
  };
}

/** Parses JSON text (an MQTT payload) and then the value; both failures are InvalidInputError. */
export function parseJson<T extends TSchema>(p: Parser<T>, text: string, what: string): Static<T> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new InvalidInputError(`invalid ${what}: not JSON`, { cause });
  }
  return p.parse(value, what);
}
