// One reconciliation: read what changed in the kernel, build the desired state from the last good IMDS
// snapshot, diff, apply. Also owns the IMDS snapshot and its refreshes. No timers here: src/daemon/daemon.ts
// decides when things run.
import type { Config } from '../config';
import { resolveCoexistence, withAdoption } from '../core/coexistence';
import { buildDesired, linkForMac, retainAttached } from '../core/desired';
import { diff } from '../core/diff';
import { formatChange } from '../core/format';
import type { Change, DesiredState, ImdsSnapshot, KernelLink, KernelState, PendingEni, Plan } from '../core/types';
import type { ImdsReader } from '../imds/client';
import { MACS_PATH, readEni, readSnapshot } from '../imds/snapshot';
import { splitList } from '../imds/client';
import type { IptablesAdapter } from '../iptables/apply';
import { ensureContainerSysctls } from '../iptables/sysctl';
import { applyPlan } from '../kernel/apply';
import { cachedManagers } from '../kernel/foreign';
import type { Netlink } from '../kernel/netlink';
import { readKernelState, type ObjectKind } from '../kernel/observe';
import type { Logger } from '../log';
import type { AddressLedger } from './ledger';

export type Kind = ObjectKind;
export const ALL_KINDS: ReadonlySet<Kind> = new Set<Kind>(['link', 'address', 'route', 'rule']);

export interface ReconcilerDeps {
  config: Config;
  log: Logger;
  nl: Netlink;
  imds: ImdsReader;
  ledger: AddressLedger;
  iptables: IptablesAdapter;
}

export interface SyncReport {
  at: Date;
  durationMs: number;
  /** False until IMDS answered once: without a snapshot nothing is planned, so nothing can be removed. */
  haveSnapshot: boolean;
  enis: number;
  planned: number;
  applied: number;
  /** Kernel or iptables writes that failed: the sync did not converge. */
  errors: string[];
  /** What could not be planned (a too-small mark mask, no IPv6 router yet): reported, never blocking. */
  problems: string[];
  conflicts: string[];
  /** ENIs IMDS lists but that cannot be configured yet, and links that may be ENIs IMDS does not know yet. */
  waiting: PendingEni[];
  unknownMacs: string[];
}

export interface PlanResult {
  plan: Plan;
  conflicts: string[];
  desired: DesiredState;
  kernel: KernelState;
}

export class Reconciler {
  snapshot: ImdsSnapshot | undefined;
  lastImdsError: string | undefined;
  lastImdsSuccess: Date | undefined;
  lastReport: SyncReport | undefined;
  private kernel: KernelState | undefined;
  /** ENIs kept although IMDS stopped listing them (warned once, not on every refresh). */
  private retained = new Set<string>();
  /** The links of the last observation; kept when the cached state is dropped after writes (forget()). */
  private links: KernelLink[] = [];

  constructor(private readonly deps: ReconcilerDeps) {}

  /** Reads the whole of IMDS. On failure the last good snapshot stays in force. */
  async refreshImds(): Promise<boolean> {
    try {
      const next = await readSnapshot(this.deps.imds);
      this.acceptSnapshot(next);
      return true;
    } catch (err) {
      this.imdsFailed(err);
      return false;
    }
  }

  /**
   * Reads only the listing and the given MACs: what a newly attached ENI needs, at a fraction of a full read.
   * Falls back to a full read when there is no snapshot yet.
   */
  async refreshMacs(macs: string[]): Promise<boolean> {
    const current = this.snapshot;
    if (current === undefined) return this.refreshImds();
    try {
      const listed = new Set(splitList((await this.deps.imds.get(MACS_PATH)) ?? '').map((m) => m.replace(/\/$/, '').toLowerCase()));
      const wanted = macs.filter((m) => listed.has(m));
      const results = await Promise.all(wanted.map((mac) => readEni(this.deps.imds, mac, current.primaryMac)));
      const done = new Set(wanted);
      const next: ImdsSnapshot = {
        primaryMac: current.primaryMac,
        enis: [...current.enis.filter((e) => !done.has(e.mac)), ...results.flatMap((r) => (r.status === 'ready' ? [r.eni] : []))],
        pending: [...current.pending.filter((p) => !done.has(p.mac)), ...results.flatMap((r) => (r.status === 'pending' ? [r.pending] : []))],
      };
      this.acceptSnapshot(next);
      return true;
    } catch (err) {
      this.imdsFailed(err);
      return false;
    }
  }

  private acceptSnapshot(next: ImdsSnapshot): void {
    const merged = retainAttached(this.snapshot, next, this.links);
    const retained = new Set(merged.enis.filter((e) => !next.enis.includes(e)).map((e) => e.interfaceId));
    for (const id of retained) {
      if (!this.retained.has(id)) {
        this.deps.log.warn({ eni: id }, `IMDS no longer lists ${id} but its link is still here: keeping its routing until the link goes`);
      }
    }
    this.retained = retained;
    if (this.lastImdsError !== undefined) this.deps.log.info('IMDS answers again');
    this.snapshot = merged;
    this.lastImdsError = undefined;
    this.lastImdsSuccess = new Date();
  }

  private imdsFailed(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    if (message !== this.lastImdsError) {
      this.deps.log.warn({ err: message }, `IMDS read failed, keeping the last good state: ${message}`);
    }
    this.lastImdsError = message;
  }

  /** Reads the kinds of kernel objects that changed (all of them the first time). */
  async observe(kinds: ReadonlySet<Kind>): Promise<KernelState> {
    const ask = this.kernel === undefined ? ALL_KINDS : kinds;
    this.kernel = await readKernelState(this.deps.nl, new Set(ask), this.kernel);
    this.links = this.kernel.links;
    this.deps.ledger.prune(this.kernel);
    return this.kernel;
  }

  /** The plan for the current kernel state; without an IMDS snapshot there is nothing to plan. */
  planFor(kernel: KernelState): PlanResult | undefined {
    if (this.snapshot === undefined) return undefined;
    const { config } = this.deps;
    // Other managers of the same sources/tables: coexistence.policy decides (docs/coexistence.md).
    const coexist = resolveCoexistence({
      snapshot: this.snapshot, kernel, config, managers: cachedManagers(config.coexistence.root), build: (s) => buildDesired(s, kernel, config),
    });
    const { desired } = coexist;
    const { plan, conflicts } = diff({
      desired, observed: coexist.observed, protocol: config.protocol, ownedAddresses: this.deps.ledger.owned,
    });
    return { plan: withAdoption(plan, coexist), conflicts: [...coexist.notes, ...conflicts], desired, kernel };
  }

  /** Links that look like ENIs (a kind of eniLinkKinds, not enslaved) but that IMDS does not describe yet. */
  unknownMacs(kernel: KernelState): string[] {
    const known = new Set([...(this.snapshot?.enis ?? []).map((e) => e.mac), ...(this.snapshot?.pending ?? []).map((p) => p.mac)]);
    const kinds = new Set(this.deps.config.eniLinkKinds);
    return kernel.links
      .filter((l) => kinds.has(l.kind ?? 'physical') && l.master === undefined && l.mac !== '' && l.mac !== '00:00:00:00:00:00')
      .filter((l) => !known.has(l.mac))
      .map((l) => l.mac);
  }

  /**
   * `checkIptables`: also compare ec2netd's mangle chain with iptables-save (the daemon asks for it on
   * nftables events, IMDS refreshes and full resyncs; see Daemon.runSync). Whenever the wanted chain
   * changed (a bridge or an ENI came or went) it is compared anyway.
   */
  async sync(kinds: ReadonlySet<Kind>, checkIptables = true): Promise<SyncReport> {
    const started = performance.now();
    const phases: Record<string, number> = {};
    let mark = started;
    const phase = (name: string): void => { const now = performance.now(); phases[name] = Math.round((now - mark) * 10) / 10; mark = now; };
    const kernel = await this.observe(kinds);
    phase('observeMs');
    const result = this.planFor(kernel);
    phase('planMs');
    const report: SyncReport = {
      at: new Date(), durationMs: 0, haveSnapshot: result !== undefined, enis: result?.desired.enis.length ?? 0,
      planned: result?.plan.length ?? 0, applied: 0, errors: [], problems: result?.desired.problems ?? [], conflicts: result?.conflicts ?? [],
      waiting: this.snapshot === undefined ? [] : [...this.snapshot.pending, ...(result?.desired.skipped ?? [])],
      unknownMacs: this.unknownMacs(kernel),
    };
    if (result !== undefined && result.plan.length > 0) {
      // Write-ahead: addresses about to be added are in the ledger on disk first, so a crash (kill -9)
      // between the add and the save can never leave an address ec2netd added but does not know it owns.
      // An entry whose add never happened is pruned at the next observe (the address is not there).
      const adds = result.plan.filter((c) => c.op === 'add-address');
      for (const change of adds) this.record(change, kernel, true);
      if (adds.length > 0) this.saveLedger();
      phase('ledgerMs');
      const outcome = await applyPlan(this.deps.nl, result.plan);
      phase('applyMs');
      const failed = new Set<Change>(outcome.failed.map((f) => f.change));
      for (const change of result.plan) {
        this.record(change, kernel, !failed.has(change));
        if (!failed.has(change)) this.deps.log.info(changeFields(change, result.desired), formatChange(change));
      }
      for (const f of outcome.failed) {
        report.errors.push(`${formatChange(f.change)}: ${f.error.message}`);
        this.deps.log.error({ ...changeFields(f.change, result.desired), err: f.error.message }, `failed: ${formatChange(f.change)}: ${f.error.message}`);
      }
      report.applied = outcome.applied;
      this.saveLedger();
      // What was written changes the kernel: read it fresh next time rather than trusting the plan.
      this.kernel = undefined;
    }
    if (result !== undefined) {
      await this.syncContainers(result.desired, checkIptables, report);
      phase('containersMs');
    }
    // Conflicts and problems persist until their cause goes: logged when they appear, not on every sync.
    const notes = [...report.conflicts.map((c) => ['conflict', c]), ...report.problems.map((p) => ['problem', p])];
    for (const [action, text] of notes) if (!this.lastNotes.has(`${action}:${text}`)) this.deps.log.warn({ action }, text ?? '');
    this.lastNotes = new Set(notes.map(([action, text]) => `${action}:${text}`));
    report.durationMs = performance.now() - started;
    this.deps.log.debug({ action: 'sync', kinds: [...kinds].join(','), planned: report.planned, applied: report.applied, ...phases },
      `sync: ${report.planned} changes planned, ${report.applied} applied in ${report.durationMs.toFixed(1)} ms`);
    this.lastReport = report;
    return report;
  }

  private lastMangle = '';
  private lastNotes = new Set<string>();

  private async syncContainers(desired: DesiredState, check: boolean, report: SyncReport): Promise<void> {
    const spec = JSON.stringify(desired.mangle);
    if (!check && spec === this.lastMangle) return;
    try {
      if (desired.mangle.rules.length > 0) {
        const sysctl = await ensureContainerSysctls(this.deps.config.containers);
        if (sysctl.changed) this.deps.log.info({ action: 'sysctl' }, `net.ipv4.conf.all.src_valid_mark set to 1 (was ${sysctl.previous})`);
      }
      const result = await this.deps.iptables.sync(desired.mangle);
      if (result.changed) {
        report.applied += 1;
        this.deps.log.info({ action: 'iptables', backend: result.backend.name }, `iptables mangle chain ${desired.mangle.chain} rebuilt (${result.backend.name}): ${result.reasons.join('; ')}`);
      }
      this.lastMangle = spec;
    } catch (err) {
      const message = `container marks (iptables): ${(err as Error).message}`;
      report.errors.push(message);
      this.deps.log.error({ action: 'iptables', err: (err as Error).message }, message);
    }
  }

  /** Keeps the ledger in step with an address change: an added address is owned, a removed one is not. */
  private record(change: Change, kernel: KernelState, done: boolean): void {
    if (change.op !== 'add-address' && change.op !== 'del-address') return;
    const mac = kernel.links.find((l) => l.index === change.address.ifindex)?.mac;
    if (mac === undefined) return;
    const owned = change.op === 'add-address' ? done : !done;
    if (owned) this.deps.ledger.add(mac, change.address.address);
    else this.deps.ledger.delete(mac, change.address.address);
  }

  private saveLedger(): void {
    try {
      this.deps.ledger.save();
    } catch (err) {
      this.deps.log.error({ err: (err as Error).message }, `cannot save the address ledger: ${(err as Error).message}`);
    }
  }

  /** Drops the cached kernel state: the next sync reads everything (after lost events, on SIGHUP). */
  forget(): void {
    this.kernel = undefined;
  }

  linkOf(mac: string): KernelLink | undefined {
    return this.kernel === undefined ? undefined : linkForMac(this.kernel.links, mac);
  }
}

/** Structured log fields an operator filters on (journald: ENI_ID, INTERFACE, TABLE, ACTION). */
export function changeFields(change: Change, desired: DesiredState): Record<string, string | number> {
  const fields: Record<string, string | number> = { action: change.op };
  const ifindex = 'address' in change ? change.address.ifindex
    : 'route' in change ? change.route.ifindex
      : change.op === 'link-up' ? change.link.index : undefined;
  const table = 'route' in change ? change.route.table : 'rule' in change ? change.rule.table : undefined;
  const eni = desired.enis.find((e) => (ifindex !== undefined && e.link.index === ifindex) || (table !== undefined && e.table === table));
  if (eni !== undefined) {
    fields.eni = eni.eni.interfaceId;
    fields.iface = eni.link.name;
    if (eni.table !== undefined) fields.table = eni.table;
  } else if (table !== undefined) {
    fields.table = table;
  }
  return fields;
}
