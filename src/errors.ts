/**
 * @module errors
 * The one error hierarchy of oaknet. Every failure a caller can act on has its own subclass with a stable
 * string `code`; the HTTP layer maps codes to status codes in one place (`protocol/http-errors.ts`).
 * Bare `Error` is only for assertions (programmer errors).
 */

export class OakNetError extends Error {
  /** Stable, machine-readable code (E_*); never changes once published. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** The command needs privileges this process lacks (root, to create namespaces and devices). */
export class PermissionError extends OakNetError {
  constructor(message: string) {
    super('E_PERMISSION', message);
  }
}

/** An address pool has no free address or block left. The caller cannot retry; an operator must free space. */
export class AddressSpaceExhaustedError extends OakNetError {
  constructor(
    readonly pool: string,
    capacity: number,
  ) {
    super(
      'E_ADDRESS_SPACE_EXHAUSTED',
      `address space exhausted: all ${capacity} entries of pool "${pool}" are allocated; release some first`,
    );
  }
}

/** The credential (certificate or token) is missing, malformed, unknown, expired or revoked: HTTP 401. */
export class UnauthenticatedError extends OakNetError {
  constructor(message: string) {
    super('E_UNAUTHENTICATED', message);
  }
}

/** The caller is authenticated, but its role or identity does not allow the call: HTTP 403. */
export class ForbiddenError extends OakNetError {
  constructor(message: string) {
    super('E_FORBIDDEN', message);
  }
}

/** A specific address was asked for but another owner holds it. */
export class AddressInUseError extends OakNetError {
  constructor(address: string, owner: string) {
    super('E_ADDRESS_IN_USE', `address ${address} is already used by ${owner}`);
  }
}

/** A specific address was asked for outside the range that may hold it. */
export class AddressOutOfRangeError extends OakNetError {
  constructor(address: string, range: string, reserved = false) {
    super(
      'E_ADDRESS_OUT_OF_RANGE',
      reserved ? `address ${address} is reserved inside ${range}` : `address ${address} is outside ${range}`,
    );
  }
}

/** Input from outside (HTTP body, MQTT payload, flag, config file) failed validation. */
export class InvalidInputError extends OakNetError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_INVALID_INPUT', message, options);
  }
}

/** The thing named does not exist (job, instance, cluster, worker). */
export class NotFoundError extends OakNetError {
  constructor(message: string) {
    super('E_NOT_FOUND', message);
  }
}

/** The request contradicts the current state (e.g. deleting a service that still has instances). */
export class ConflictError extends OakNetError {
  constructor(message: string) {
    super('E_CONFLICT', message);
  }
}

/** A peer this process depends on (root, cluster, broker) did not answer or answered with an error. */
export class UnavailableError extends OakNetError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_UNAVAILABLE', message, options);
  }
}

/**
 * A caller reached a limit the operator set (services, instances of a service, worker subnetworks of a
 * cluster). Retrying does not help; removing some, or a higher limit, does.
 */
export class QuotaExceededError extends OakNetError {
  constructor(
    /** Which quota, e.g. "max-services". */
    readonly quota: string,
    message: string,
  ) {
    super('E_QUOTA', message);
  }
}

/** A caller sent more requests than its rate limit allows; it may retry after retryAfterSeconds. */
export class RateLimitedError extends OakNetError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super('E_RATE_LIMITED', message);
  }
}

/** The NetManager API was called before `/register`. */
export class NotRegisteredError extends OakNetError {
  constructor() {
    super('E_NOT_REGISTERED', 'the NetManager is not registered yet: call POST /register first');
  }
}

/** The request is valid upstream but oaknet does not implement it (e.g. unikernel instances). */
export class UnsupportedError extends OakNetError {
  constructor(message: string) {
    super('E_UNSUPPORTED', message);
  }
}

/** A system operation (ip, nft, tun, sysctl) failed. */
export class SystemError extends OakNetError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_SYSTEM', message, options);
  }
}

/** The message of any thrown value, for logs. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
