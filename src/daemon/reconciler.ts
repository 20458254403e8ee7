// One reconciliation: read what changed in the kernel, build the desired state from the last good IMDS state,
// diff, apply, record. The pieces it holds each do one thing: ImdsState (reads folded into the last good state per
// ENI), KernelCache (the kernel as last read), the address ledger, ContainerSync (mangle chain and sysctls),
// FailedWrites (per-object failure status). No timers here: src/daemon/daemon.ts decides when things run.
import type { Config } from '../config';
import { resolveCoexistence, withAdoption } from '../core/coexistence';
import { buildDesired, linkForMac } from '../core/desired';
import { diff, warmKeys } from '../core/diff';
import { formatChange } from '../core/format';
import type { Change, DesiredState, HeldEni, ImdsSnapshot, KernelLink, KernelState, PendingEni, Plan } from '../core/types';
import type { ImdsReader } from '../imds/client';
import type { IptablesAdapter } from '../iptables/apply';
import { applyPlan } from '../kernel/apply';
import { KernelCache } from '../kernel/cache';
import { cachedManagers } from '../kernel/foreign';
import type { KernelError, Netlink } from '../kernel/netlink';
import { type ObjectKind } from '../kernel/observe';
import type { Logger } from '../log';
import { logChanges } from './change-log';
import { ContainerSync } from './containers-sync';
import { FailedWrites } from './failures';
import { FightParties } from './fight-parties';
import { describeObject, FightDamper, type Fight } from './fights';
import { ImdsState } from './imds-state';
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
  /** The IMDS state the previous daemon configured (a restart): the base the first reads are merged into. */
  previousSnapshot?: ImdsSnapshot;
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
  /** ENIs (or parts) configured from their last good IMDS read. */
  held: HeldEni[];
  unknownMacs: string[];
}

export interface PlanResult {
  plan: Plan;
  conflicts: string[];
  desired: DesiredState;
  kernel: KernelState;
}

export class Reconciler {
  lastReport: SyncReport | undefined;
  readonly imds: ImdsState;
  readonly kernel: KernelCache;
  readonly failures: FailedWrites;
  /** Repeated repairs of an object someone else keeps undoing: damped, warned about once per fight. */
  readonly fights: FightDamper;
  private readonly parties: FightParties;
  private readonly containers: ContainerSync;
  private lastNotes = new Set<string>();
  /** Sees each kernel observation of a sync before it is planned from (the daemon's AddressWatcher). */
  onObserved: ((kernel: KernelState) => void) | undefined;
  /**
   * Awaited between a sync's observe and its plan (the daemon's: a new link's IMDS read in flight, bounded), so that
   * the kernel dump runs while IMDS answers instead of after it. Undefined: nothing to wait for.
   */
  beforePlan: () => Promise<void> | undefined = () => undefined;
  /** Sees the changes of each write that the kernel took (done, or there already): the daemon's AddressWatcher. */
  onWritten: ((inPlace: readonly Change[]) => void) | undefined;
  /** Addresses IMDS lists that are not to be re-added for now: deleted by someone else, IMDS being re-read. */
  holdBack: (mac: string, address: string) => boolean = () => false;

  constructor(private readonly deps: ReconcilerDeps) {
    this.imds = new ImdsState(deps.imds, deps.log, deps.previousSnapshot);
    this.kernel = new KernelCache(deps.nl);
    this.failures = new FailedWrites(deps.log);
    this.fights = new FightDamper({ baseMs: 100, capMs: deps.config.sync.fightCapMs }, () => performance.now());
    this.parties = new FightParties(deps.config.coexistence.root);
    this.containers = new ContainerSync(deps.config, deps.iptables, deps.log);
  }

  get snapshot(): ImdsSnapshot | undefined { return this.imds.snapshot; }
  get lastImdsError(): string | undefined { return this.imds.lastError; }

  /** Reads the whole of IMDS; every ENI keeps its last good state when its read (or the whole read) fails. */
  refreshImds(): Promise<boolean> {
    return this.imds.refresh(this.kernel.links);
  }

  /** Re-reads only these MACs (a new link, an ENI waiting for IMDS). */
  refreshMacs(macs: string[], opts: { expectListed?: boolean } = {}): Promise<boolean> {
    return this.imds.refreshMacs(macs, this.kernel.links, opts);
  }

  /** Reads the kinds of kernel objects that changed (all of them the first time); `newLinksOnly`: KernelCache.observe. */
  async observe(kinds: ReadonlySet<Kind>, opts: { newLinksOnly?: boolean } = {}): Promise<KernelState> {
    const kernel = await this.kernel.observe(kinds, opts);
    this.deps.ledger.prune(kernel);
    return kernel;
  }

  /**
   * Reads again the kinds the last writes touched (KernelCache.written), so that the next event's sync need not: the
   * daemon calls it once a sync is done and nothing else is asked for (SyncTrigger's settle). Only the cache and the
   * ledger see it; a failure leaves the kinds to be read by the next sync. The dump is indexed for the diff here too
   * (warmKeys), off the path of the event whose sync plans from it.
   */
  async settle(): Promise<void> {
    if (this.kernel.stale.size === 0) return;
    try {
      warmKeys(await this.observe(new Set()), this.deps.config.protocol);
    } catch {
      // The kinds stay stale: the next sync reads them, and fails (and is retried) if the kernel still cannot be read.
    }
  }

  /** The plan for the current kernel state; without an IMDS snapshot there is nothing to plan. */
  planFor(kernel: KernelState): PlanResult | undefined {
    const snapshot = this.imds.snapshot;
    if (snapshot === undefined) return undefined;
    const { config } = this.deps;
    // Other managers of the same sources/tables: coexistence.policy decides (docs/coexistence.md). Their files are
    // looked up only when a foreign object claims an ENI (a hot attach on a clean host reads none).
    const coexist = resolveCoexistence({
      snapshot, kernel, config, managers: () => cachedManagers(config.coexistence.root), build: (s) => buildDesired(s, kernel, config),
    });
    const macOf = new Map(kernel.links.map((l) => [l.index, l.mac]));
    const desired = { ...coexist.desired, addresses: coexist.desired.addresses.filter((a) => !this.holdBack(macOf.get(a.ifindex) ?? '', a.address)) };
    const { plan, conflicts } = diff({
      desired, observed: coexist.observed, protocol: config.protocol, ownedAddresses: this.deps.ledger.owned,
    });
    return { plan: withAdoption(plan, coexist), conflicts: [...coexist.notes, ...conflicts], desired, kernel };
  }

  /** Links that look like ENIs (a kind of eniLinkKinds, not enslaved) but that IMDS does not describe yet. */
  unknownMacs(kernel: Pick<KernelState, 'links'>): string[] {
    const snapshot = this.imds.snapshot;
    const known = new Set([...(snapshot?.enis ?? []).map((e) => e.mac), ...(snapshot?.pending ?? []).map((p) => p.mac)]);
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
  async sync(kinds: ReadonlySet<Kind>, checkIptables = true, opts: { newLinksOnly?: boolean } = {}): Promise<SyncReport> {
    const started = performance.now();
    const phases: Record<string, number> = {};
    let mark = started;
    const phase = (name: string): void => { const now = performance.now(); phases[name] = Math.round((now - mark) * 10) / 10; mark = now; };
    const kernel = await this.observe(kinds, opts);
    this.onObserved?.(kernel);
    phase('observeMs');
    const wait = this.beforePlan();
    if (wait !== undefined) {
      await wait;
      phase('imdsWaitMs');
    }
    const result = this.planFor(kernel);
    // Repairs of an object in a fight wait for their turn; everything else in the plan goes on. Routes missing after a
    // link or address change were dropped by the kernel (a link flap), not by another tool.
    if (kinds.has('link') || kinds.has('address')) this.fights.forgive('route');
    if (result !== undefined) result.plan = this.fights.filter(result.plan).allowed;
    phase('planMs');
    const snapshot = this.imds.snapshot;
    const report: SyncReport = {
      at: new Date(), durationMs: 0, haveSnapshot: result !== undefined, enis: result?.desired.enis.length ?? 0,
      planned: result?.plan.length ?? 0, applied: 0, errors: [], problems: result?.desired.problems ?? [], conflicts: result?.conflicts ?? [],
      waiting: snapshot === undefined ? [] : [...snapshot.pending, ...(result?.desired.skipped ?? [])],
      held: snapshot?.held ?? [],
      unknownMacs: this.unknownMacs(kernel),
    };
    if (result !== undefined && result.plan.length > 0) {
      await this.write(result, kernel, report);
      phase('applyMs');
    }
    if (result !== undefined) {
      this.failures.retain(new Set(result.plan.map(formatChange)));
      const containers = await this.containers.sync(result.desired.mangle, checkIptables, result.desired.mangle6);
      if (containers.changed) report.applied += 1;
      if (containers.error !== undefined) {
        report.errors.push(containers.error);
        if (!this.lastNotes.has(`error:${containers.error}`)) this.deps.log.error({ action: 'iptables' }, containers.error);
      }
      phase('containersMs');
    }
    for (const f of this.fights.expire()) {
      this.deps.log.info({ action: 'fight' }, `fight over: ${f.object} stayed in place after ${f.repairs} repairs`);
    }
    this.noteOnce(report);
    report.durationMs = performance.now() - started;
    if (this.deps.log.isLevelEnabled('debug')) this.logSync(kinds, report, phases);
    this.lastReport = report;
    return report;
  }

  private logSync(kinds: ReadonlySet<Kind>, report: SyncReport, phases: Record<string, number>): void {
    const heap = process.memoryUsage();
    const mb = (bytes: number): number => Math.round(bytes / 104857.6) / 10;
    this.deps.log.debug({
      action: 'sync', kinds: [...kinds].join(','), planned: report.planned, applied: report.applied, ...phases,
      rssMb: mb(heap.rss), heapUsedMb: mb(heap.heapUsed), heapTotalMb: mb(heap.heapTotal),
    },
      `sync: ${report.planned} changes planned, ${report.applied} applied in ${report.durationMs.toFixed(1)} ms`);
  }

  /** Applies a plan: ledger written ahead, each outcome recorded, failures reported once each. */
  private async write(result: PlanResult, kernel: KernelState, report: SyncReport): Promise<void> {
    // Write-ahead: addresses about to be added are in the ledger on disk first, so a crash (kill -9) between the
    // add and the save can never leave an address ec2netd added but does not know it owns. An entry whose add
    // never happened is pruned at the next observe (the address is not there).
    const adds = result.plan.filter((c) => c.op === 'add-address');
    for (const change of adds) this.record(change, kernel, true);
    if (adds.length > 0) this.saveLedger();
    const outcome = await applyPlan(this.deps.nl, result.plan);
    const failed = new Map<Change, KernelError>(outcome.failed.map((f) => [f.change, f.error]));
    // An add answered EEXIST found the object there: someone else (DHCP, an administrator) made it between the
    // dump and the add. It is not ec2netd's, and must never be deleted as if it were.
    const existed = new Set<Change>(outcome.existed);
    const done = result.plan.filter((c) => !failed.has(c) && !existed.has(c));
    for (const f of this.fights.applied(done)) this.warnFight(f, done, result.desired);
    const doneSet = new Set(done);
    for (const change of result.plan) this.record(change, kernel, doneSet.has(change));
    this.onWritten?.(result.plan.filter((c) => !failed.has(c)));
    // A repair in a fight is in the fight's warning: not one journal line per round. A large sync: counts per ENI.
    logChanges(this.deps.log, done, (c) => changeFields(c, result.desired), (c) => this.fights.inFight(c));
    const byText = new Map(result.plan.map((c) => [formatChange(c), c]));
    this.failures.record([...byText.keys()], new Map(outcome.failed.map((f) => [formatChange(f.change), f.error.message])),
      (what) => { const c = byText.get(what); return c === undefined ? {} : changeFields(c, result.desired); });
    report.errors.push(...outcome.failed.map((f) => `${formatChange(f.change)}: ${f.error.message}`));
    report.applied = outcome.applied - existed.size;
    this.saveLedger();
    // What was written changes the kernel: the next sync, whatever asks for it, reads those kinds fresh rather than
    // trusting the plan (KernelCache.written). Forgetting everything put a whole dump on the path of the next event's
    // sync (a hot attach after a detach), which the echo sync used to pay off that path (docs/performance.md).
    this.kernel.written(result.plan.map(kindOf));
  }

  private warnFight(f: Fight, done: readonly Change[], desired: DesiredState): void {
    const change = done.find((c) => this.fights.inFight(c) && describeObject(c) === f.object);
    const kind = f.object.split(' ')[0] ?? '';
    const capS = this.deps.config.sync.fightCapMs / 1000;
    this.deps.log.warn({ ...(change === undefined ? {} : changeFields(change, desired)), action: 'fight' },
      `fight: ${f.object} keeps being removed by another process (${this.parties.describe(kind)}); put back ${f.repairs} times, now repaired with backoff up to ${capS} s`);
  }

  /** The fights going on, for `ec2netd status`. */
  fightNotes(): string[] {
    const now = performance.now();
    return this.fights.fights.map((f) => {
      const next = f.nextRepairAt === undefined ? '' : `, next repair in ${Math.max(0, (f.nextRepairAt - now) / 1000).toFixed(1)} s`;
      return `${f.object}: removed by another process, put back ${f.repairs} times (fight since ${Math.round((now - f.since) / 1000)} s${next}; ${this.parties.describe(f.object.split(' ')[0] ?? '')})`;
    });
  }

  /** Conflicts and problems persist until their cause goes: logged when they appear, not on every sync. */
  private noteOnce(report: SyncReport): void {
    const notes = [...report.conflicts.map((c) => ['conflict', c]), ...report.problems.map((p) => ['problem', p])];
    for (const [action, text] of notes) if (!this.lastNotes.has(`${action}:${text}`)) this.deps.log.warn({ action }, text ?? '');
    this.lastNotes = new Set([...notes.map(([action, text]) => `${action}:${text}`),
      ...report.errors.filter((e) => e.startsWith('container marks')).map((e) => `error:${e}`)]);
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
    this.kernel.forget();
  }

  linkOf(mac: string): KernelLink | undefined {
    const state = this.kernel.current;
    return state === undefined ? undefined : linkForMac(state.links, mac);
  }
}

/** The kind of kernel object a change writes. */
export function kindOf(change: Change): Kind {
  switch (change.op) {
    case 'link-up': return 'link';
    case 'add-address':
    case 'del-address': return 'address';
    case 'add-route':
    case 'replace-route':
    case 'del-route': return 'route';
    case 'add-rule':
    case 'del-rule': return 'rule';
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
