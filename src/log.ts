// Logging: pino, one JSON object a line. Operators filter on these field names
// (src/systemd maps them to journald fields): eni, iface, table, action.
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(level: string = 'info', destination: pino.DestinationStream = pino.destination(1)): Logger {
  return pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}

/** A logger that drops everything: for library calls from tests and one-shot CLI commands. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
