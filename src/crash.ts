// The last line of defence: an exception nobody caught, or a rejection nobody handled, is a bug. The process state
// is unknown after one, so the daemon does not limp on: it logs the error at `error` (journal priority 3, err)
// with its stack, and exits 70 (EX_SOFTWARE); systemd's Restart=on-failure starts a fresh daemon, which adopts
// the routing already in place.
import type { Logger } from './log';

export const EXIT_SOFTWARE = 70;

export function installCrashHandlers(log: Logger, exit: (code: number) => void = (code) => process.exit(code)): void {
  let crashed = false;
  const crash = (what: string, reason: unknown): void => {
    if (crashed) return;
    crashed = true;
    const err = reason instanceof Error ? reason : new Error(String(reason));
    const message = `${what}: ${err.message}; exiting (${EXIT_SOFTWARE}) to be restarted`;
    try {
      log.error({ err, action: 'crash' }, message);
      // One-shot commands log nowhere (silentLogger): stderr always gets it.
      process.stderr.write(`ec2netd: ${message}\n${err.stack ?? ''}\n`);
    } finally {
      exit(EXIT_SOFTWARE);
    }
  };
  process.on('uncaughtException', (err) => crash('uncaught exception', err));
  process.on('unhandledRejection', (reason) => crash('unhandled rejection', reason));
}
