/**
 * @module security/renewal
 * When a certificate renews: after two thirds of its life, retrying every 30 s while renewal fails (the
 * issuer may be away). One timer, unref'd; shared by clusters (renewing at the root) and nodes (at their
 * cluster).
 */
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import { firstCertificate } from './pki.ts';

const RETRY_MS = 30_000;

export class RenewalTimer {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly o: {
      /** The current certificate (PEM, leaf first); undefined: nothing to renew yet. */
      certificate: () => string | undefined;
      renew: () => Promise<void>;
      log: Logger;
    },
  ) {}

  /** (Re)starts the timer for the current certificate. */
  start(): void {
    const pem = this.o.certificate();
    if (pem === undefined) return;
    const cert = firstCertificate(pem);
    const from = Date.parse(cert.validFrom);
    const to = Date.parse(cert.validTo);
    this.schedule(Math.max(0, from + ((to - from) * 2) / 3 - Date.now()), new Date(to));
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  private schedule(ms: number, expires: Date): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(
      () => {
        this.o.renew().then(
          () => this.start(),
          (err: unknown) => {
            this.o.log.warn(
              { err: errorMessage(err), expires: expires.toISOString(), retryInMs: RETRY_MS },
              'certificate renewal failed; retrying',
            );
            this.schedule(RETRY_MS, expires);
          },
        );
      },
      Math.min(ms, 2 ** 31 - 1),
    );
    this.timer.unref();
  }
}
