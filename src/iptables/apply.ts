// The iptables adapter the reconciler calls: read ec2netd's mangle chain, and (re)build it in one
// `iptables-restore -w --noflush` transaction when it drifted. Other tools' rules are never touched.
import type { Config } from '../config';
import type { MangleSpec } from '../core/containers';
import type { Family } from '../core/types';
import { backendFor, detectBackend } from './backend';
import type { Backend } from './backend';
import { IptablesError } from './exec';
import { flushMangle } from './flush';
import { readMangle, restore } from './io';
import type { IptablesOptions } from './io';
import { detectDrift, parseMangle } from './read';
import type { Drift, MangleState } from './read';
import { renderSync } from './render';

export type { IptablesOptions } from './io';
export { flushMangle } from './flush';

export interface SyncResult {
  /** True when a transaction was applied. */
  changed: boolean;
  /** Why (empty when nothing drifted). */
  reasons: string[];
  backend: Backend;
  /** The transaction text applied (for `ec2netd plan` and debug logs). */
  transaction?: string;
}

/** Compares the chain with the spec (iptables, or ip6tables for family 6); applies one transaction when it drifted. */
export async function syncMangle(backend: Backend, spec: MangleSpec, opts: IptablesOptions = {}, family: Family = 4): Promise<SyncResult> {
  // Nothing wanted: do not instantiate a mangle table just to find it empty.
  const state = await readMangle(backend, spec.chain, opts, spec.rules.length === 0, family);
  const drift: Drift = detectDrift(spec, state);
  if (drift.inSync) return { changed: false, reasons: [], backend };
  const transaction = renderSync(spec, state);
  if (transaction !== '') await restore(backend, transaction, opts, family);
  return { changed: transaction !== '', reasons: drift.reasons, backend, transaction };
}

/**
 * The object the reconciler holds. With iptables.backend = auto the backend is detected on every sync
 * until Docker's chains have been seen (Docker may start after ec2netd); when the choice changes, the
 * chain is removed from the backend it was in before.
 */
const REDETECT_MS = 10_000;

export class IptablesAdapter {
  private backend: Backend | undefined;
  private detectedAt = 0;
  /** The backend ec2netd's chain was last written to, per family. */
  private readonly written = new Map<Family, Backend>();
  /**
   * ip6tables is known to hold no chain of ec2netd's while none is wanted: a host without an IPv6 container network
   * then costs one ip6tables-save at start, and nothing after.
   */
  private clean6 = false;

  constructor(
    private readonly config: Pick<Config, 'iptables'>,
    private readonly opts: IptablesOptions = {},
  ) {}

  async currentBackend(): Promise<Backend> {
    if (this.backend?.dockerSeen === true || (this.backend !== undefined && this.config.iptables.backend !== 'auto')) {
      return this.backend;
    }
    // Until Docker's chains are seen, detection (two iptables-save runs) is repeated at most every
    // REDETECT_MS: a host without Docker would otherwise pay it on every check.
    const now = Date.now();
    if (this.backend !== undefined && now - this.detectedAt < REDETECT_MS) return this.backend;
    this.backend = await detectBackend(this.config.iptables.backend, this.opts);
    this.detectedAt = now;
    return this.backend;
  }

  /** Brings the chain of one family (4: iptables, 6: ip6tables) to `spec`. */
  async sync(spec: MangleSpec, family: Family = 4): Promise<SyncResult> {
    const backend = await this.currentBackend();
    if (family === 6 && spec.rules.length === 0 && this.clean6 && this.written.get(6) === undefined) {
      return { changed: false, reasons: [], backend };
    }
    const before = this.written.get(family);
    if (before !== undefined && before.name !== backend.name) {
      await flushMangle(before, spec.chain, this.opts, family);
    }
    let result: SyncResult;
    try {
      result = await syncMangle(backend, spec, this.opts, family);
    } catch (err) {
      // No iptables on this host and nothing wanted (no container network): nothing to do, nothing to report.
      if (spec.rules.length === 0 && err instanceof IptablesError && err.notFound) {
        if (family === 6) this.clean6 = true;
        return { changed: false, reasons: [], backend };
      }
      throw err;
    }
    if (family === 6) this.clean6 = spec.rules.length === 0;
    if (spec.rules.length === 0) this.written.delete(family);
    else this.written.set(family, backend);
    return result;
  }

  /** Current state and drift, without writing (for `ec2netd status` / `plan`). */
  async check(spec: MangleSpec, family: Family = 4): Promise<{ state: MangleState; drift: Drift; backend: Backend }> {
    const backend = await this.currentBackend();
    let state: MangleState;
    try {
      state = await readMangle(backend, spec.chain, this.opts, false, family);
    } catch (err) {
      // No iptables on this host: an empty mangle table (in sync when nothing is wanted).
      if (!(err instanceof IptablesError && err.notFound)) throw err;
      state = parseMangle('', spec.chain);
    }
    return { state, drift: detectDrift(spec, state), backend };
  }

  /** Removes ec2netd's chain and jumps (iptables and ip6tables, every backend variant: nothing is left behind). */
  async flush(chain: string): Promise<boolean> {
    let changed = false;
    for (const family of [4, 6] as const) {
      for (const name of ['nft', 'legacy'] as const) {
        try {
          changed = (await flushMangle(backendFor(name, 'flush'), chain, this.opts, family)) || changed;
        } catch (err) {
          if (!(err instanceof IptablesError && err.notFound)) throw err; // that variant is not installed
        }
      }
    }
    this.written.clear();
    return changed;
  }
}
