// Signals that arrive before the daemon can act on them. Node's default for SIGHUP, SIGTERM and SIGINT is to die
// at once; the daemon's own handlers exist only after it has started (config, lock, event watchers: several
// awaits). So this module is the CLI entry's first import: from then on such signals are held, and replayed
// (once each, in arrival order) when the daemon takes over. A SIGHUP during a slow start then becomes a
// reload, not a death; a SIGTERM becomes a clean stop as soon as there is something to stop.
export type HeldSignal = 'SIGHUP' | 'SIGTERM' | 'SIGINT';

const SIGNALS: readonly HeldSignal[] = ['SIGHUP', 'SIGTERM', 'SIGINT'];
const held: HeldSignal[] = [];
let deliver: ((signal: HeldSignal) => void) | undefined;

function onSignal(signal: NodeJS.Signals): void {
  const s = signal as HeldSignal;
  if (deliver !== undefined) deliver(s);
  else if (!held.includes(s)) held.push(s);
}

for (const s of SIGNALS) process.on(s, onSignal);

/** The daemon is ready for signals: the held ones are replayed now, later ones go straight to `handler`. */
export function deliverSignals(handler: (signal: HeldSignal) => void): void {
  deliver = handler;
  for (const s of held.splice(0)) handler(s);
}

/** Signals held so far (for tests and logs). */
export function heldSignals(): readonly HeldSignal[] {
  return [...held];
}

/**
 * One-shot commands (plan, status, flush...) keep Node's defaults: the handlers go, and a signal that arrived
 * meanwhile takes effect now, as it would have without this module.
 */
export function releaseSignals(): void {
  deliver = undefined;
  for (const s of SIGNALS) process.off(s, onSignal);
  const first = held.splice(0)[0];
  if (first !== undefined) process.kill(process.pid, first);
}
