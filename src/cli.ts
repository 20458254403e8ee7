// Command line: `ec2netd run | sync | plan | status | flush`.
// First: hold SIGHUP/SIGTERM/SIGINT from now on, before any other module loads (src/signals.ts).
import { deliverSignals, releaseSignals } from './signals';
import type { Server } from 'node:net';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type Config } from './config';
import { ownedAddressKey } from './core/diff';
import { formatChange, formatRule } from './core/format';
import type { Plan } from './core/types';
import { installCrashHandlers } from './crash';
import { Daemon } from './daemon/daemon';
import { acquireInstanceLock, InstanceLockHeld } from './daemon/instance-lock';
import { AddressLedger } from './daemon/ledger';
import { ALL_KINDS, Reconciler } from './daemon/reconciler';
import { ImdsClient } from './imds/client';
import { IptablesAdapter } from './iptables/apply';
import { restoreSysctls } from './iptables/sysctl';
import { applyPlan } from './kernel/apply';
import { openNetlink } from './kernel/netlink';
import { readKernelState } from './kernel/observe';
import { createLogger, silentLogger, type Logger } from './log';
import { createNotifier } from './systemd/notify';
import { describeHeld } from './daemon/imds-state';
import { readStatus } from './daemon/status-file';


const VERSION: string = (require('../../package.json') as { version: string }).version;

const USAGE = `Usage: ec2netd <command> [options]

Policy routing for multi-ENI EC2 instances: per-ENI routing tables and rules from IMDSv2,
kept in sync with the kernel through rtnetlink events.

Commands:
  run       run the daemon in the foreground (what the systemd unit starts)
  sync      read IMDS and the kernel once, apply the changes, exit (0 converged, 1 errors)
  plan      print the changes a sync would make, as ip commands (exit 0 in sync, 2 pending changes)
  status    ENIs, tables, rules and drift (--json for machines)
  flush     remove every route, rule and address ec2netd owns, and nothing else; refused (exit 75)
            while the daemon runs: stop it first (systemctl stop ec2netd)
  doctor    check what breaks multi-ENI routing, read only (exit 0 ok, 1 warnings, 2 errors; docs/doctor.md)

Options:
  -c, --config FILE     config file (default /etc/ec2netd/config.json; see docs/configuration.md)
      --json            machine-readable output (status, plan, doctor)
      --force           flush even while a daemon runs in this network namespace (it puts everything back)
      --log-level LEVEL trace, debug, info, warn, error
  -h, --help            this help
  -V, --version         print the version
`;

interface Options {
  config: Config;
  json: boolean;
  /** flush: even while a daemon runs. */
  force: boolean;
  log: Logger;
}

function toolsFor(options: Options) {
  const { config } = options;
  const ledger = new AddressLedger(config.stateDir);
  const problem = ledger.load();
  if (problem !== undefined) options.log.warn(problem);
  const nl = openNetlink({ timeoutMs: config.sync.requestTimeoutMs });
  const iptables = new IptablesAdapter(config);
  const reconciler = new Reconciler({ config, log: options.log, nl, ledger, imds: new ImdsClient(config.imds), iptables });
  return { nl, ledger, reconciler, iptables };
}

async function cmdRun(options: Options): Promise<number> {
  const notifier = createNotifier({ onWarning: (message) => options.log.warn(message) });
  const daemon = new Daemon(options.config, options.log, notifier);
  await daemon.start();
  return new Promise<number>((resolve) => {
    let reloading = Promise.resolve();
    let stopping = false;
    // Signals held since the process started (src/signals.ts) are replayed here, then new ones follow.
    deliverSignals((signal) => {
      if (signal === 'SIGHUP') {
        if (!stopping) {
          reloading = reloading.then(() => daemon.reload())
            .catch((err: unknown) => options.log.error({ err: (err as Error).message }, `reload failed: ${(err as Error).message}`));
        }
        return;
      }
      if (stopping) {
        // A second SIGTERM/SIGINT while stopping: the operator insists.
        options.log.warn({ action: 'signal' }, `${signal} again: exiting without waiting`);
        process.exit(1);
      }
      stopping = true;
      options.log.info({ action: 'signal' }, `${signal}: stopping`);
      void daemon.stop().then(() => resolve(0));
    });
  });
}

async function cmdSync(options: Options): Promise<number> {
  const { nl, reconciler } = toolsFor(options);
  try {
    if (!(await reconciler.refreshImds())) {
      process.stderr.write(`ec2netd: IMDS is not answering, nothing changed: ${reconciler.lastImdsError}\n`);
      return 1;
    }
    const report = await reconciler.sync(ALL_KINDS);
    const summary = { enis: report.enis, applied: report.applied, errors: report.errors, conflicts: report.conflicts, waiting: report.waiting };
    process.stdout.write(options.json ? `${JSON.stringify(summary)}\n`
      : `${report.enis} ENIs, ${report.applied} changes applied, ${report.errors.length} errors, ${report.waiting.length} waiting\n`);
    return report.errors.length > 0 ? 1 : 0;
  } finally {
    nl.close();
  }
}

async function computePlan(options: Options) {
  const { nl, reconciler, iptables } = toolsFor(options);
  try {
    // With a daemon running, a fresh read is folded into the daemon's last good state, so an ENI the daemon holds
    // is judged as the daemon judges it (src/core/last-good.ts), not torn down by an inconsistent read.
    const daemon = readStatus(options.config.stateDir);
    if (daemon?.snapshot != null) reconciler.imds.snapshot = daemon.snapshot;
    const kernel = await reconciler.observe(ALL_KINDS);
    const imdsOk = await reconciler.refreshImds();
    const result = reconciler.planFor(kernel);
    const iptablesDrift: string[] = [];
    for (const [family, spec] of result === undefined ? [] : [[4, result.desired.mangle], [6, result.desired.mangle6]] as const) {
      // ip6tables is asked only when an IPv6 container network wants the chain: nothing changes for other hosts.
      if (family === 6 && spec.rules.length === 0) continue;
      const mangle = await iptables.check(spec, family);
      if (!mangle.drift.inSync) iptablesDrift.push(...mangle.drift.reasons.map((r) => `${family === 6 ? 'ip6tables' : 'iptables'} (${mangle.backend.name}): ${r}`));
    }
    return { imdsOk, imdsError: reconciler.lastImdsError, result, snapshot: reconciler.snapshot, kernel, iptablesDrift, daemon };
  } finally {
    nl.close();
  }
}

async function cmdPlan(options: Options): Promise<number> {
  const { imdsError, result, iptablesDrift } = await computePlan(options);
  if (result === undefined) {
    process.stderr.write(`ec2netd: IMDS is not answering, cannot plan: ${imdsError}\n`);
    return 1;
  }
  const pending = result.plan.length + iptablesDrift.length;
  if (options.json) {
    process.stdout.write(`${JSON.stringify({
      changes: result.plan.map((c) => ({ op: c.op, command: formatChange(c), reason: c.reason })),
      iptables: iptablesDrift, conflicts: result.conflicts, problems: result.desired.problems,
    })}\n`);
  } else {
    for (const c of result.plan) process.stdout.write(`${formatChange(c)}    # ${c.reason}\n`);
    for (const d of iptablesDrift) process.stdout.write(`# ${d}: the chain would be rebuilt\n`);
    for (const c of result.conflicts) process.stdout.write(`# conflict: ${c}\n`);
    for (const p of result.desired.problems) process.stdout.write(`# problem: ${p}\n`);
    if (pending === 0) process.stdout.write('# in sync: nothing to do\n');
  }
  return pending === 0 ? 0 : 2;
}

async function cmdStatus(options: Options): Promise<number> {
  const { imdsError, result, snapshot, kernel, iptablesDrift, daemon } = await computePlan(options);
  const owned = kernel.rules.filter((r) => r.protocol === options.config.protocol);
  const enis = (result?.desired.enis ?? []).map((d) => ({
    interfaceId: d.eni.interfaceId, mac: d.eni.mac, interface: d.link.name, primary: d.primary, table: d.table ?? null,
    deviceNumber: d.eni.deviceNumber, networkCard: d.eni.networkCard, ipv4s: d.eni.ipv4s, ipv4Prefixes: d.eni.ipv4Prefixes,
    ipv6s: d.eni.ipv6s, ipv6Prefixes: d.eni.ipv6Prefixes,
    rules: owned.filter((r) => r.table === d.table).map(formatRule),
  }));
  const doc = {
    daemon: daemon === undefined ? null : { pid: daemon.pid, lastChange: daemon.at, failing: daemon.failing, fights: daemon.fights, watching: daemon.watching },
    imds: imdsError === undefined ? 'ok' : `failing: ${imdsError}`,
    enis,
    held: (snapshot?.held ?? []).map((h) => ({ ...h, text: describeHeld(h) })),
    waiting: [...(snapshot?.pending ?? []), ...(result?.desired.skipped ?? [])],
    drift: result === undefined ? null : [...result.plan.map(formatChange), ...iptablesDrift],
    conflicts: result?.conflicts ?? [],
    problems: result?.desired.problems ?? [],
    containerMarks: result === undefined ? [] : result.desired.mangle.rules,
    containerMarks6: result === undefined ? [] : result.desired.mangle6.rules,
    ownedRules: owned.length,
    ownedRoutes: kernel.routes.filter((r) => r.protocol === options.config.protocol).length,
  };
  if (options.json) {
    process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
  } else {
    const out: string[] = [doc.daemon === null ? 'daemon: not running in this network namespace' : `daemon: running (pid ${doc.daemon.pid})`];
    out.push(`IMDS: ${doc.imds}`);
    for (const e of enis) {
      out.push(`${e.interfaceId} ${e.mac} ${e.interface}${e.primary ? ' (primary, main table)' : ` table ${e.table}`} card ${e.networkCard} device ${e.deviceNumber}`);
      if (e.ipv4s.length + e.ipv4Prefixes.length > 0 || e.ipv6s.length + e.ipv6Prefixes.length === 0) {
        out.push(`  ipv4: ${e.ipv4s.join(' ')}${e.ipv4Prefixes.length > 0 ? `  prefixes: ${e.ipv4Prefixes.join(' ')}` : ''}`);
      }
      if (e.ipv6s.length + e.ipv6Prefixes.length > 0) {
        out.push(`  ipv6: ${e.ipv6s.join(' ')}${e.ipv6Prefixes.length > 0 ? `  prefixes: ${e.ipv6Prefixes.join(' ')}` : ''}`);
      }
      for (const r of e.rules) out.push(`  rule ${r}`);
    }
    for (const h of doc.held) out.push(`held: ${h.text}`);
    for (const w of doc.waiting) out.push(`waiting: ${w.mac}: ${w.reason}`);
    for (const f of doc.daemon?.failing ?? []) out.push(`failing: ${f.change}: ${f.error}`);
    for (const f of doc.daemon?.fights ?? []) out.push(`fight: ${f}`);
    for (const w of doc.daemon?.watching ?? []) out.push(`watch: ${w}`);
    for (const c of doc.conflicts) out.push(`conflict: ${c}`);
    for (const p of doc.problems) out.push(`problem: ${p}`);
    out.push(doc.drift === null ? 'drift: unknown (no IMDS data)' : doc.drift.length === 0 ? 'drift: none' : `drift: ${doc.drift.length} pending changes`);
    for (const d of doc.drift ?? []) out.push(`  ${d}`);
    process.stdout.write(`${out.join('\n')}\n`);
  }
  return doc.drift === null ? 1 : doc.drift.length === 0 ? 0 : 2;
}

/** EX_TEMPFAIL: flush refused while a daemon runs (it would put everything back at once). */
export const EXIT_DAEMON_RUNNING = 75;

async function cmdFlush(options: Options): Promise<number> {
  // Holding the daemon's lock while flushing also keeps a daemon from starting half-way through.
  let lock: Server | undefined;
  if (!options.force) {
    try {
      lock = await acquireInstanceLock();
    } catch (err) {
      if (!(err instanceof InstanceLockHeld)) throw err;
      const pid = err.pid === undefined ? '' : ` (pid ${err.pid})`;
      process.stderr.write(`ec2netd: ec2netd is running in this network namespace${pid}: stop it first (systemctl stop ec2netd), or use --force\n`);
      return EXIT_DAEMON_RUNNING;
    }
  }
  const { nl, ledger, iptables } = toolsFor(options);
  try {
    if (await iptables.flush(options.config.iptables.chain)) process.stdout.write(`iptables: removed chain ${options.config.iptables.chain} and its jumps\n`);
    const kernel = await readKernelState(nl, new Set(ALL_KINDS));
    const p = options.config.protocol;
    const links = new Map(kernel.links.map((l) => [l.index, l]));
    const plan: Plan = [
      ...kernel.rules.filter((r) => r.protocol === p).map((rule) => ({ op: 'del-rule' as const, rule, reason: 'flush' })),
      ...kernel.routes.filter((r) => r.protocol === p).sort((a, b) => a.scope - b.scope)
        .map((route) => ({ op: 'del-route' as const, route, linkName: links.get(route.ifindex ?? -1)?.name, reason: 'flush' })),
      ...kernel.addresses.filter((a) => {
        const mac = links.get(a.ifindex)?.mac;
        return mac !== undefined && ledger.owned.has(ownedAddressKey(mac, a.address));
      }).map((address) => ({ op: 'del-address' as const, address, linkName: links.get(address.ifindex)?.name ?? '?', reason: 'flush' })),
    ];
    const outcome = await applyPlan(nl, plan);
    for (const c of plan) if (!outcome.failed.some((f) => f.change === c)) process.stdout.write(`${formatChange(c)}\n`);
    for (const s of await restoreSysctls(options.config.stateDir)) process.stdout.write(`sysctl -w ${s.key}=${s.value}\n`);
    for (const f of outcome.failed) process.stderr.write(`ec2netd: ${formatChange(f.change)}: ${f.error.message}\n`);
    if (outcome.failed.length === 0) {
      ledger.clear();
      ledger.save();
    }
    return outcome.failed.length === 0 ? 0 : 1;
  } finally {
    nl.close();
    lock?.close();
  }
}

async function cmdDoctor(options: Options): Promise<number> {
  // Loaded only for this command: the daemon's start does not pay for compiling the checks.
  const { renderReport, runDoctor } = await import('./doctor/index.js');
  const report = await runDoctor(options.config);
  process.stdout.write(`${renderReport(report, options.json)}\n`);
  return report.exitCode;
}

const COMMANDS: Record<string, (o: Options) => Promise<number>> = {
  run: cmdRun, sync: cmdSync, plan: cmdPlan, status: cmdStatus, flush: cmdFlush, doctor: cmdDoctor,
};

export async function cli(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true, options: {
        config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, force: { type: 'boolean' }, 'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'V' },
      },
    });
  } catch (err) {
    process.stderr.write(`ec2netd: ${(err as Error).message}\n\n${USAGE}`);
    return 64;
  }
  const { values, positionals } = parsed;
  if (values.version === true) { process.stdout.write(`ec2netd ${VERSION}\n`); return 0; }
  const command = positionals[0];
  if (values.help === true || command === undefined || command === 'help') { process.stdout.write(USAGE); return command === undefined && values.help !== true ? 64 : 0; }
  // Only the daemon replays held signals; every other command keeps Node's defaults.
  if (command !== 'run') releaseSignals();
  const run = COMMANDS[command];
  if (run === undefined || positionals.length > 1) {
    process.stderr.write(`ec2netd: unknown command "${positionals.join(' ')}"\n\n${USAGE}`);
    return 64;
  }
  let config: Config;
  try {
    config = loadConfig(values.config);
    const level = values['log-level'];
    if (level !== undefined) {
      if (!['trace', 'debug', 'info', 'warn', 'error'].includes(level)) throw new ConfigError(`--log-level must be trace, debug, info, warn or error, got "${level}"`);
      config.log.level = level as Config['log']['level'];
    }
  } catch (err) {
    process.stderr.write(`ec2netd: ${(err as Error).message}\n`);
    return 78;
  }
  // Only the daemon and sync log their work; plan/status/flush print their own results.
  const log = command === 'run' || command === 'sync' ? createLogger(config.log.level) : silentLogger();
  installCrashHandlers(log);
  try {
    return await run({ config, json: values.json === true, force: values.force === true, log });
  } catch (err) {
    log.fatal({ err: (err as Error).message }, (err as Error).message);
    process.stderr.write(`ec2netd: ${(err as Error).message}\n`);
    return 1;
  }
}

export function main(argv: string[]): void {
  void cli(argv).then((code) => {
    process.exitCode = code;
    // The daemon's sockets are unref'd; one-shot commands end when their work is done.
    if (argv[0] !== 'run') setImmediate(() => process.exit(code));
    else process.exit(code);
  });
}
