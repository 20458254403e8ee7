// Per-object write status: a change the kernel refuses is in the journal once (not on every retry), in `status`
// while it fails, and said again when it finally goes through.
import type { Logger } from '../log';

export class FailedWrites {
  /** Object (formatted change) -> the error of its last attempt. */
  private failing = new Map<string, string>();

  constructor(private readonly log: Logger) {}

  /** Records the outcome of one sync's writes: `failed` maps the formatted change to its error. */
  record(attempted: readonly string[], failed: ReadonlyMap<string, string>, fields: (what: string) => Record<string, string | number>): void {
    for (const [what, error] of failed) {
      if (this.failing.get(what) !== error) this.log.error({ ...fields(what), err: error }, `failed: ${what}: ${error} (retried with backoff)`);
      this.failing.set(what, error);
    }
    for (const what of attempted) {
      if (failed.has(what) || !this.failing.has(what)) continue;
      this.failing.delete(what);
      this.log.info(fields(what), `now applied after failing: ${what}`);
    }
  }

  /** Objects no longer wanted stop counting as failures. */
  retain(wanted: ReadonlySet<string>): void {
    for (const what of this.failing.keys()) if (!wanted.has(what)) this.failing.delete(what);
  }

  get current(): Array<{ change: string; error: string }> {
    return [...this.failing].map(([change, error]) => ({ change, error }));
  }
}
