/**
 * @module protocol/names
 * Names on the wire: job names (app.appns.service.servicens), worker and cluster IDs, and upstream's
 * path encoding that writes `.` as `_`.
 */
import { InvalidInputError } from '../errors.ts';

/** One part of a job name (upstream's SLA rule). */
export const NAME_PART_PATTERN = '^[a-zA-Z0-9]{1,30}$';
const NAME_PART = new RegExp(NAME_PART_PATTERN);

/** A job name: four name parts joined by dots. */
export const JOB_NAME_PATTERN =
  '^[a-zA-Z0-9]{1,30}\\.[a-zA-Z0-9]{1,30}\\.[a-zA-Z0-9]{1,30}\\.[a-zA-Z0-9]{1,30}$';
const JOB_NAME = new RegExp(JOB_NAME_PATTERN);

/**
 * A worker, cluster or system-job ID: upstream's 24-hex ObjectIds and any other ID that is safe inside an
 * MQTT topic level, a store key and a URL path segment.
 */
export const ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$';
const ID = new RegExp(ID_PATTERN);

export function isJobName(text: string): boolean {
  return JOB_NAME.test(text);
}

export function isNamePart(text: string): boolean {
  return NAME_PART.test(text);
}

export function isId(text: string): boolean {
  return ID.test(text);
}

/** Throws InvalidInputError unless text is a job name. */
export function requireJobName(text: string): string {
  if (!isJobName(text)) {
    throw new InvalidInputError(
      `invalid job name ${JSON.stringify(text)}: expected app.appns.service.servicens, each part 1-30 letters or digits`,
    );
  }
  return text;
}

/** Throws InvalidInputError unless text is a safe ID. */
export function requireId(text: string, what: string): string {
  if (!isId(text)) {
    throw new InvalidInputError(
      `invalid ${what} ${JSON.stringify(text)}: use 1-128 letters, digits, '_', '.', '-'`,
    );
  }
  return text;
}

/**
 * One URL path segment, %-encoded. Text that is not well-formed Unicode (a lone surrogate such as "\ud800",
 * which JSON can carry) has no encoding: that is an InvalidInputError (400), never encodeURIComponent's
 * URIError (a 500).
 */
export function encodePathSegment(text: string): string {
  try {
    return encodeURIComponent(text);
  } catch (cause) {
    throw new InvalidInputError(
      `invalid path segment ${JSON.stringify(text)}: not well-formed Unicode (a lone surrogate)`,
      { cause },
    );
  }
}

/** Upstream's path form of a job name or IPv4 address (`.` written as `_`). */
export function toPathSegment(nameOrIp: string): string {
  return nameOrIp.replaceAll('.', '_');
}

/** The job name or address from its path form. */
export function fromPathSegment(segment: string): string {
  return segment.replaceAll('_', '.');
}

/**
 * A WireGuard public key as `wg` writes it: standard base64 of 32 bytes (43 characters and one '='; the last
 * character before '=' carries 2 bits, so only 16 letters fit there).
 */
export const WG_PUBLIC_KEY_PATTERN = '^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$';

const WG_PUBLIC_KEY_RE = new RegExp(WG_PUBLIC_KEY_PATTERN);

/** Whether text is a WireGuard public key in `wg`'s base64 form. */
export function isWgPublicKey(text: string): boolean {
  return WG_PUBLIC_KEY_RE.test(text);
}
