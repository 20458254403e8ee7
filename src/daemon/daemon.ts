// The resident loop: rtnetlink events and timers decide when the reconciler runs; signals and systemd
// around it. Everything that decides *what* to write lives in src/core.
import type { Server } from 'node:net';
import type { Config } from '../config';
import type { ImdsSnapshot, KernelLink, KernelState } from '../core/types';
import { ImdsClient } from '../imds/client';
import { IptablesAdapter } from '../iptables/apply';
import { NetfilterEvents } from '../iptables/monitor';
import { KernelEvents } from '../kernel/events';
import { mallocTrim } from '../kernel/netlink-package';
import { openNetlink } from '../kernel/netlink';
import { isoTime, type Logger } from '../log';
import { noopNotifier, type Notifier } from '../systemd/notify';
import { AddressWatcher } from './address-watch';
import { acquireInstanceLock } from './instance-lock';
import { ImdsRetries, WHOLE } from './imds-retries';
import { MemoryReclaimer } from './memory';
import { AddressLedger } from './ledger';
import { readPreviousSnapshot, writeStatus, type DaemonStatus } from './status-file';
import { ALL_KINDS, Reconciler, type Kind, type SyncReport } from './reconciler';
import { SyncTrigger, type RunOutcome } from './trigger';

/** How long SIGTERM waits for a sync in flight before the process exits anyway (well within the unit's TimeoutStopSec=15s). */
const STOP_WAIT_MS = 5000;
/**
 * While a new link's IMDS read is in flight, a sync (the one its own link event asks for) dumps the kernel and then
 * waits for the read before it plans (at most this long): planned and written in the middle of the read on the same
 * thread it delayed the read by its whole length (20–45 ms at 15 × 50), and the read's sync followed at once anyway;
 * held, the two are one, and the dump overlaps the read. Bounded, so that an IMDS that hangs delays kernel repairs by
 * no more than this.
 */
const NEW_LINK_HOLD_MS = 100;
/** A new link's keys are read with the listing (no round trip more) at most this often; readNewMacs says why. */
const SPECULATIVE_READ_SPACING_MS = 1000;
/** The most a burst of events that does not go quiet defers its sync (SyncTrigger's debounceMaxMs). */
const DEBOUNCE_MAX_MS = 50;

/**
 * Trigger keys: kernel object kinds, 'imds' ("the snapshot changed, re-plan"), 'iptables' (check the chain),
 * 'fight' (a damped repair may go now, or a fight may be over: re-plan), 'new-link' (links appeared, and no link
 * message was about a link the kernel cache knows: the links are read, not the routes; 'link' with it reads both).
 */
type Work = Kind | 'imds' | 'iptables' | 'fight' | 'new-link';

export function describeReport(r: SyncReport | undefined, imdsError: string | undefined): string {
  if (r === undefined) return 'starting';
  const parts = [r.haveSnapshot ? `${r.enis} ENIs configured` : 'waiting for the first IMDS answer'];
  if (r.waiting.length + r.unknownMacs.length > 0) parts.push(`${r.waiting.length + r.unknownMacs.length} waiting for IMDS`);
  const held = r.held.filter((h) => h.waiting !== true).length;
  if (held > 0) parts.push(`${held} held on their last good IMDS read`);
  if (r.errors.length > 0) parts.push(`${r.errors.length} errors`);
  if (r.problems.length > 0) parts.push(`${r.problems.length} problems (ec2netd status)`);
  if (r.conflicts.length > 0) parts.push(`${r.conflicts.length} conflicts`);
  if (imdsError !== undefined) parts.push('IMDS failing, last good state kept');
  parts.push(`last sync ${isoTime(r.at.getTime())}`);
  return parts.join('; ');
}

export class Daemon {
  readonly reconciler: Reconciler;
  private readonly trigger: SyncTrigger<Work>;
  private readonly events: KernelEvents;
  private readonly netfilter: NetfilterEvents | undefined;
  private netfilterWatched = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private lock: Server | undefined;
  private imdsBusy: Promise<void> | undefined;
  private imdsBusyWhole = false;
  /** A link message since the last 'change' was about a link the kernel cache knows (it changed, or went). */
  private knownLinkChanged = false;
  /** The IMDS read of a link the kernel just announced, while in flight. */
  private newLinkRead: Promise<void> | undefined;
  private readonly retries: ImdsRetries;
  private pendingTimer: NodeJS.Timeout | undefined;
  /** What is awaited is logged once per reason, not on every retry. */
  private readonly loggedWaits = new Set<string>();
  private ready = false;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private fightTimer: NodeJS.Timeout | undefined;
  private retryDelayMs: number;
  private published = '';
  /** When each start step was done, in ms since the process started, and the CPU used by then; logged (debug) with the first planned sync. */
  private startup: Record<string, number> | undefined = {};
  /** Address events IMDS does not explain yet: targeted re-reads (failover, docs/failover.md). */
  private readonly addressWatch: AddressWatcher;
  /** When a new link's keys were last read together with the listing (performance.now()). */
  private lastSpeculativeRead = -Infinity;
  /** Such a read started since the last 'change': its sync skips the debounce (readNewMacs says why). */
  private syncNow = false;
  private readonly memory = new MemoryReclaimer((ms, before, after, trimmed) =>
    this.log.info({ action: 'reclaim', ms, rssBeforeMb: before, rssAfterMb: after, mallocTrimmed: trimmed }, `memory given back after a burst: ${before} → ${after} MB resident (${ms} ms)`),
  {
    trim: mallocTrim,
    skipped: (rssMb, heapUsedMb) => this.log.debug({ action: 'reclaim-skipped', rssMb, heapUsedMb }, 'memory: no reclaim due, nothing grew since the last'),
  });

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly supervisor: Notifier = noopNotifier(),
  ) {
    const ledger = new AddressLedger(config.stateDir);
    const problem = ledger.load();
    if (problem !== undefined) log.warn(problem);
    const previous = readPreviousSnapshot(config.stateDir);
    if (previous.problem !== undefined) log.warn(previous.problem);
    if (previous.snapshot !== undefined) log.info(`restarting over the previous run's IMDS state (${previous.snapshot.enis.length} ENIs): an ENI read incompletely now keeps it`);
    const nl = openNetlink({ timeoutMs: config.sync.requestTimeoutMs });
    this.reconciler = new Reconciler({
      config, log, ledger, previousSnapshot: previous.snapshot, nl, imds: new ImdsClient(config.imds),
      iptables: new IptablesAdapter(config),
    });
    const { sync } = config;
    // The maximum-interval run asks for every kind: a full kernel re-read (see KernelCache.observe).
    this.trigger = new SyncTrigger<Work>((work) => this.runSync(work), {
      // A burst (700 rules deleted at once, a container storm) is one run once it goes quiet, within 50 ms.
      debounceMs: sync.debounceMs, debounceMaxMs: Math.max(sync.debounceMs, DEBOUNCE_MAX_MS),
      minIntervalMs: sync.minIntervalMs, burst: 5, maxIntervalMs: sync.maxIntervalMs,
      fullKinds: ALL_KINDS, retryBaseMs: sync.pendingRetryBaseMs, retryMaxMs: sync.pendingRetryMaxMs,
      // What a sync wrote is read again once nothing else waits, not by the next event's sync (a hot attach after a
      // detach read the detach's 750 rules on its path: docs/performance.md).
      settle: () => this.reconciler.settle(),
    });
    this.events = new KernelEvents();
    // The kernel drops the notifications of the request socket's own writes before they reach the event socket
    // (src/kernel/event-filter.ts); the filter follows the request socket when it is replaced (a new port), and the
    // event socket when it reopens (NetlinkEvents re-attaches it). Set synchronously as a request socket opens,
    // before anything is written through it.
    nl.onPort = (port) => this.events.ignoreOwnWrites(port);
    this.netfilter = config.containers.enabled ? new NetfilterEvents() : undefined;
    this.retries = new ImdsRetries(config.sync.pendingRetryBaseMs, config.sync.pendingRetryMaxMs);
    this.retryDelayMs = config.sync.pendingRetryBaseMs;
    this.addressWatch = new AddressWatcher({
      log, snapshot: () => this.reconciler.snapshot, read: (mac) => this.readMac(mac), replan: () => this.trigger.request(['imds'], true),
    });
    this.reconciler.onObserved = (kernel) => {
      this.addressWatch.observed(kernel);
      this.readNewLinksEarly(kernel);
    };
    this.reconciler.onWritten = (inPlace) => this.addressWatch.wrote(inPlace);
    this.reconciler.holdBack = (mac, address) => this.addressWatch.heldBack(mac, address);
    this.reconciler.beforePlan = () => this.newLinkHold();
    this.mark('modulesLoadedMs');
  }

  private mark(step: string): void {
    if (this.startup === undefined) return;
    this.startup[step] = Math.round(performance.now());
    // And the process's CPU time (ms, all threads) at that step: on a loaded machine it moves far less than the wall time.
    const cpu = process.cpuUsage();
    this.startup[step.replace(/Ms$/, 'CpuMs')] = Math.round((cpu.user + cpu.system) / 1000);
  }

  async start(): Promise<void> {
    this.lock = await acquireInstanceLock();
    this.mark('lockMs');
    this.events.on('link', (link: KernelLink) => {
      // Nothing cached yet: the next observe reads everything anyway.
      if (this.reconciler.kernel.knowsLink(link.index)) this.knownLinkChanged = true;
      this.readNewLink(link);
    });
    this.events.on('unlink', () => { this.knownLinkChanged = true; });
    this.events.on('change', (kinds: Set<Kind>) => {
      const work = new Set<Work>(kinds);
      if (kinds.has('link') && !this.knownLinkChanged) {
        work.delete('link');
        work.add('new-link');
      }
      this.knownLinkChanged = false;
      this.trigger.request(work, false, this.syncNow);
      this.syncNow = false;
    });
    this.events.once('unfiltered', (why: string) => {
      // An optimisation lost, nothing more: the echoes are read and cost a sync each, as before the filter.
      this.log.warn({ err: why }, `${why}: the notifications of ec2netd's own writes are read (and cost a sync each)`);
    });
    this.events.on('lost', (why: string) => {
      this.log.warn({ err: why }, `rtnetlink events were lost (${why}): full resync`);
      this.reconciler.forget();
      this.trigger.request(ALL_KINDS);
    });
    // IMDS is read while the two event sockets subscribe (the read does not touch the kernel; ~165 requests at
    // 15 ENIs); the sync it asks for waits until they are subscribed.
    let subscribed = (): void => undefined;
    this.refreshImds('startup', undefined, new Promise<void>((resolve) => { subscribed = resolve; }));
    await Promise.all([
      this.events.start().then(() => this.mark('rtnetlinkEventsMs')),
      this.watchNetfilter().then(() => this.mark('nftablesEventsMs')),
    ]);
    subscribed();
    // Events first, then the first read: a change made between the two is seen either way.
    this.trigger.request(ALL_KINDS);
    this.scheduleRefresh();
    this.startWatchdog();
    if (this.config.sync.readyTimeoutMs > 0) {
      this.timer(this.config.sync.readyTimeoutMs, () => {
        if (!this.ready) this.markReady(`not converged after ${this.config.sync.readyTimeoutMs} ms: ${describeReport(this.reconciler.lastReport, this.reconciler.lastImdsError)}`);
      });
    }
    this.log.info({ action: 'start' }, `ec2netd started (pid ${process.pid})`);
  }

  /** SIGHUP: a fresh IMDS read and a full resync. */
  async reload(): Promise<void> {
    this.log.info({ action: 'reload' }, 'reload: full resync with a fresh IMDS read');
    // A SIGHUP held during start-up (src/signals.ts): systemd is still waiting for the first READY=1, which
    // markReady sends; a RELOADING=1/READY=1 pair now would end the start-up early.
    const announce = this.ready;
    if (announce) this.supervisor.reloading();
    this.reconciler.forget();
    await this.refreshImds('reload');
    this.trigger.request(ALL_KINDS);
    await this.trigger.idle();
    if (announce) this.supervisor.ready(describeReport(this.reconciler.lastReport, this.reconciler.lastImdsError));
  }

  /** Stops listening; the routing stays in place. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.supervisor.stopping();
    for (const t of this.timers) clearTimeout(t);
    if (this.pendingTimer !== undefined) clearTimeout(this.pendingTimer);
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    if (this.fightTimer !== undefined) clearTimeout(this.fightTimer);
    this.addressWatch.stop();
    this.memory.stop();
    this.trigger.stop();
    await this.finishSync();
    await this.events.stop();
    await this.netfilter?.stop();
    this.lock?.close();
    this.log.info({ action: 'stop' }, 'ec2netd stopped; routing left in place');
  }

  /**
   * SIGTERM during a sync: let it finish (its writes, the ledger, the status file), up to STOP_WAIT_MS; a sync
   * cut in the middle would leave half a change (an address without its rule) until the next start.
   */
  private async finishSync(): Promise<void> {
    if (!this.trigger.busy) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), STOP_WAIT_MS); });
    const idle = this.trigger.idle().then(() => 'idle' as const);
    this.log.info({ action: 'stop' }, `stopping: waiting up to ${STOP_WAIT_MS / 1000} s for the sync in flight`);
    if ((await Promise.race([idle, timeout])) === 'timeout') {
      this.log.warn({ action: 'stop' }, `stopping: the sync in flight is still running after ${STOP_WAIT_MS / 1000} s; exiting anyway (the next start completes it)`);
    }
    clearTimeout(timer);
  }

  /** One sync; 'failed' when the kernel could not be read: the trigger retries it with backoff. */
  private async runSync(work: Set<Work>): Promise<RunOutcome> {
    const kinds = new Set([...work].filter((w): w is Kind => ALL_KINDS.has(w as Kind)));
    const newLinksOnly = work.has('new-link') && !kinds.has('link');
    if (work.has('new-link')) kinds.add('link');
    try {
      // With nftables events subscribed, changes to the mangle table arrive as 'iptables' work, and a change of the
      // wanted chain (a bridge came or went) is caught by the reconciler's spec comparison: link and address
      // storms (containers starting) then cost no iptables-save each.
      const checkIptables = work.has('imds') || work.has('iptables')
        || (!this.netfilterWatched && (kinds.has('link') || kinds.has('address')));
      const report = await this.reconciler.sync(kinds, checkIptables, { newLinksOnly });
      this.memory.noteSync(report.planned);
      if (report.haveSnapshot && this.startup !== undefined) {
        this.mark('firstPlannedSyncDoneMs');
        this.log.debug({ action: 'startup', ...this.startup }, 'start steps done (ms since the process started)');
        this.startup = undefined;
      }
      const status = describeReport(report, this.reconciler.lastImdsError);
      if (!this.ready && report.haveSnapshot && report.errors.length === 0) this.markReady(status);
      else this.supervisor.status(status);
      this.followWaiting(report);
      this.retryFailures(report);
      this.wakeForFights();
      this.publish(report);
      return 'ok';
    } catch (err) {
      // A kernel read failed (timeout, socket trouble): nothing was planned from it. Retried with a full read.
      this.log.error({ err: (err as Error).message }, `sync failed: ${(err as Error).message}`);
      this.reconciler.forget();
      return 'failed';
    }
  }

  /**
   * A write the kernel refused is retried with exponential backoff (pendingRetryBaseMs doubling up to
   * pendingRetryMaxMs), not only on the next event; a clean sync resets the schedule.
   */
  private retryFailures(report: SyncReport): void {
    if (report.errors.length === 0) {
      this.retryDelayMs = this.config.sync.pendingRetryBaseMs;
      return;
    }
    if (this.retryTimer !== undefined) return;
    const delay = this.retryDelayMs;
    this.retryDelayMs = Math.min(delay * 2, this.config.sync.pendingRetryMaxMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.reconciler.forget();
      this.trigger.request([...ALL_KINDS, 'iptables']);
    }, delay);
  }

  /** A repair withheld in a fight is made when its backoff ends; a fight is over after its quiet period. */
  private wakeForFights(): void {
    if (this.fightTimer !== undefined) clearTimeout(this.fightTimer);
    this.fightTimer = undefined;
    const at = this.reconciler.fights.nextWakeAt();
    if (at === undefined || this.stopped) return;
    this.fightTimer = setTimeout(() => {
      this.fightTimer = undefined;
      this.trigger.request(['fight']);
    }, Math.max(0, Math.ceil(at - performance.now())));
  }

  /** The daemon's view for `ec2netd status` (another process): held ENIs, failing writes, the snapshot. */
  private publish(report: SyncReport): void {
    const status: DaemonStatus = {
      pid: process.pid, at: isoTime(report.at.getTime()), imdsError: this.reconciler.lastImdsError ?? null,
      snapshot: this.reconciler.snapshot ?? null, held: report.held, waiting: report.waiting,
      failing: this.reconciler.failures.current, fights: this.reconciler.fightNotes(), notes: [...report.conflicts, ...report.problems],
      watching: this.addressWatch.notes(),
    };
    const { at: _at, ...content } = status;
    const text = JSON.stringify(content);
    if (text === this.published) return;
    try {
      writeStatus(this.config.stateDir, status);
      this.published = text;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, `cannot write the status file: ${(err as Error).message}`);
    }
  }

  /**
   * Someone else editing the mangle table (a firewall reload, `iptables -t mangle -F`) is seen at once when
   * the nftables events are subscribed; without them (no nf_tables, legacy backend) the periodic refresh finds the drift.
   */
  private async watchNetfilter(): Promise<void> {
    const watcher = this.netfilter;
    if (watcher === undefined) return;
    watcher.on('change', () => this.trigger.request(['iptables']));
    watcher.on('lost', () => this.trigger.request(['iptables']));
    try {
      await watcher.start();
      this.netfilterWatched = true;
    } catch (err) {
      this.log.info({ err: (err as Error).message }, `no nftables events (${(err as Error).message}): iptables drift is checked on link changes and every IMDS refresh`);
    }
  }

  private markReady(status: string): void {
    this.ready = true;
    this.supervisor.ready(status);
    this.log.info({ action: 'ready' }, `ready: ${status}`);
  }

  /**
   * New links IMDS does not know yet, and ENIs it lists incompletely, are retried, each on its own backoff
   * (ImdsRetries): an ENI IMDS keeps answering badly for never delays a link that has just appeared.
   */
  private followWaiting(report: SyncReport): void {
    // Held ENIs (read inconsistently, configured from their last good read) are re-read the same way, so they
    // take IMDS's settled answer within a second or so rather than at the next refresh. Held ENIs without a link
    // (detached while IMDS still lists them) route nothing: the periodic refresh is enough for them.
    const waiting = [
      ...report.waiting.filter((w) => !w.reason.startsWith('no link')),
      ...report.held.filter((h) => h.unlisted !== true && this.reconciler.linkOf(h.mac) !== undefined).map((h) => ({ mac: h.mac, reason: h.reason })),
    ];
    // Before the first IMDS answer (boot, IMDS not reachable yet) keep asking with backoff, not only every refresh.
    this.retries.update({ unknown: report.unknownMacs, incomplete: waiting.map((w) => w.mac), whole: !report.haveSnapshot }, performance.now());
    if (!this.retries.waiting) {
      // A retry scheduled for links that are gone since (deleted, or read meanwhile) has nothing left to read.
      this.armRetry(undefined);
      this.loggedWaits.clear();
      return;
    }
    // Held ENIs are in the journal already (ImdsState says so once per cause).
    for (const w of report.waiting.filter((p) => !p.reason.startsWith('no link'))) {
      const line = `waiting for IMDS: ${w.mac}: ${w.reason}`;
      if (this.loggedWaits.has(line)) continue;
      this.loggedWaits.add(line);
      this.log.info({ action: 'wait' }, line);
    }
    // A read in flight ends with a sync, which comes back here.
    if (this.imdsBusy === undefined) this.armRetry(this.retries.nextAt());
  }

  /** The retry timer set for `at` (performance.now() time), or cleared. */
  private armRetry(at: number | undefined): void {
    if (this.pendingTimer !== undefined) clearTimeout(this.pendingTimer);
    this.pendingTimer = undefined;
    if (at === undefined || this.stopped) return;
    this.pendingTimer = setTimeout(() => {
      this.pendingTimer = undefined;
      if (this.imdsBusy !== undefined) return;
      const now = performance.now();
      const due = this.retries.due(now);
      if (due.length === 0) return this.armRetry(this.retries.nextAt());
      this.retries.started(due, now);
      void this.refreshImds('waiting', due.includes(WHOLE) ? undefined : due);
    }, Math.max(0, at - performance.now()));
  }

  /**
   * A link IMDS does not describe, seen for the first time (a hot-attached ENI): its IMDS read starts as soon as the
   * sync has observed it, while that sync plans and reports, instead of after it (followWaiting's first try, done
   * earlier: the same read, counted the same way; retries stay with followWaiting).
   */
  private readNewLinksEarly(kernel: KernelState): void {
    void this.readNewMacs(this.reconciler.unknownMacs(kernel));
  }

  /** A link the kernel just announced: an ENI IMDS does not know yet is read at once, before any sync. */
  private readNewLink(link: KernelLink): void {
    const spaced = this.lastSpeculativeRead;
    const read = this.readNewMacs(this.reconciler.unknownMacs({ links: [link] }));
    if (read === undefined) return;
    // Read ahead (alone): the sync its event asks for starts without the debounce, dumps the kernel while IMDS answers
    // and waits for the read (newLinkHold); after the debounce the read was mostly done and the dump came after it
    // (~4 ms of a hot attach). At most once a second, like the read ahead, so a storm of links is still coalesced.
    if (this.lastSpeculativeRead !== spaced) this.syncNow = true;
    // The read reports its own failures (the status, the retry); the hold only waits for it to settle.
    const held: Promise<void> = read.catch(() => undefined).finally(() => { if (this.newLinkRead === held) this.newLinkRead = undefined; });
    this.newLinkRead = held;
  }

  /** What a sync waits for before it plans: a new link's IMDS read in flight, NEW_LINK_HOLD_MS at most. */
  private newLinkHold(): Promise<void> | undefined {
    const read = this.newLinkRead;
    if (read === undefined) return undefined;
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => { timer = setTimeout(resolve, NEW_LINK_HOLD_MS); });
    return Promise.race([read, bound]).then(() => clearTimeout(timer));
  }

  /** Starts one targeted read of the MACs not tried yet; its promise (settles once the read's sync is requested). */
  private readNewMacs(unknown: string[]): Promise<void> | undefined {
    // Not held back by the retries of other ENIs (followWaiting): those run in their turn.
    if (this.reconciler.snapshot === undefined || this.imdsBusy !== undefined || this.stopped) return undefined;
    const fresh = unknown.filter((m) => !this.retries.tried(m));
    if (fresh.length === 0) return undefined;
    this.retries.started(fresh, performance.now());
    // In one round trip, the listing beside the keys: IMDS lists an ENI before the kernel shows its link, as a rule
    // (when it does not yet, the keys asked for with it answer 404 once, and the retries ask the listing first).
    // Only for a link that comes alone: in a storm of new links (containers' veths where eniLinkKinds has veth, a
    // driver reloading) each would cost 7 requests to IMDS instead of 1, and the daemon twice the CPU (the 300
    // veth pairs of the bench: 2.8 vs 1.4 CPU-s); there the listing is asked first.
    const now = performance.now();
    const alone = fresh.length === 1 && now - this.lastSpeculativeRead >= SPECULATIVE_READ_SPACING_MS;
    if (alone) this.lastSpeculativeRead = now;
    return this.refreshImds('new link', fresh, undefined, alone);
  }

  /** `gate`: the sync that follows the read waits for it too (at start: the event sockets being subscribed). */
  private refreshImds(why: string, macs?: string[], gate?: Promise<void>, expectListed = false): Promise<void> {
    // A whole read asked for during a targeted one (the address watch's) runs after it, never folded into it.
    if (this.imdsBusy !== undefined && macs === undefined && !this.imdsBusyWhole) return this.imdsBusy.then(() => this.refreshImds(why));
    if (this.imdsBusy !== undefined) return this.imdsBusy;
    this.imdsBusyWhole = macs === undefined;
    this.log.debug({ action: 'imds' }, `reading IMDS (${why})`);
    const read = (macs === undefined ? this.reconciler.refreshImds() : this.reconciler.refreshMacs(macs, { expectListed })).then(() => {
      if (this.startup?.imdsReadMs === undefined) this.mark('imdsReadMs');
    });
    this.imdsBusy = Promise.all([read, gate]).then(() => {
      this.imdsBusy = undefined;
      // Re-plan even on failure: the failure is reported in the status, and waiting ENIs get their retry.
      this.trigger.request(['imds'], true);
    });
    return this.imdsBusy;
  }

  /** One ENI's keys for the address watch, after any read in flight (two reads merging at once could lose one). */
  private async readMac(mac: string): Promise<ImdsSnapshot | undefined> {
    while (this.imdsBusy !== undefined) await this.imdsBusy;
    let ok = false;
    this.imdsBusyWhole = false;
    const read = this.reconciler.refreshMacs([mac], { expectListed: true }).then((r) => { ok = r; });
    this.imdsBusy = read.then(() => { this.imdsBusy = undefined; });
    await this.imdsBusy;
    return ok ? this.reconciler.snapshot : undefined;
  }

  /** Secondary-IP changes send no kernel event: IMDS is re-read on a jittered interval. */
  private scheduleRefresh(): void {
    const { refreshIntervalMs, refreshJitter } = this.config.imds;
    const delay = refreshIntervalMs * (1 + refreshJitter * (2 * Math.random() - 1));
    this.timer(delay, () => {
      void this.refreshImds('periodic');
      this.scheduleRefresh();
    });
  }

  /** WATCHDOG=1 comes from the loop itself: a blocked loop stops the pings and systemd restarts us. */
  private startWatchdog(): void {
    const interval = this.supervisor.watchdogIntervalMs();
    if (interval === undefined) return;
    const ping = (): void => {
      this.supervisor.watchdog();
      this.timer(interval, ping);
    };
    ping();
  }

  private timer(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }
}
