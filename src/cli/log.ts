/**
 * @module cli/log
 * The logger factories: daemons log pino JSON lines on stdout (level from --log-level, default info);
 * one-shot commands a person runs (up, down, restart) show warnings and errors as short lines on stderr.
 */
import { pino, type Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export function createLogger(name: string, level: string): Logger {
  return pino({ name, level, base: { pid: process.pid } });
}

const LEVEL_NAMES: Record<number, string> = { 60: 'fatal', 50: 'error', 40: 'warning', 30: 'info' };
const QUIET_KEYS = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'name']);

/** One pino JSON line as a person reads it: "prefix: warning: message (key=value, ...)", each value one short line. */
export function humanLine(prefix: string, json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return `${prefix}: ${json.trimEnd()}`;
  }
  const level = LEVEL_NAMES[Number(o['level'])] ?? 'log';
  const fields = Object.entries(o)
    .filter(([k]) => !QUIET_KEYS.has(k))
    .map(([k, v]) => {
      const text = (typeof v === 'string' ? v : JSON.stringify(v)).split('\n')[0]!;
      return `${k}=${text.length > 160 ? `${text.slice(0, 160)}...` : text}`;
    });
  const msg = typeof o['msg'] === 'string' ? o['msg'] : '';
  return `${prefix}: ${level}: ${msg}${fields.length ? ` (${fields.join(', ')})` : ''}`;
}

/** A logger for a command a person runs: warnings and errors as humanLine()s on stderr. */
export function consoleLogger(prefix: string, level = 'warn'): Logger {
  return pino({ level }, { write: (line: string) => process.stderr.write(`${humanLine(prefix, line)}\n`) });
}
