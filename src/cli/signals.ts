/**
 * @module cli/signals
 * Long-running commands stop cleanly on SIGTERM and SIGINT: the close function removes what the process
 * created, then the process exits (a second signal exits at once).
 */
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';

export function closeOnSignals(log: Logger, close: () => Promise<void>): void {
  let closing = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (closing) process.exit(130);
    closing = true;
    log.info({ signal }, 'shutting down');
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err: errorMessage(err) }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
