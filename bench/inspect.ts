// Instruments shared by the benchmarks (bench/run.ts) and the fault tests (test/e2e/faults*.test.ts):
// - kernelSnapshot: everything ec2netd could touch in a namespace (rules, routes of every table, addresses), as
//   sorted text lines, so "exactly the desired state, no duplicates, no leftovers" is one equality;
// - startMonitor: an `ip monitor` of our own with timestamps, to time and count kernel writes from the kernel's
//   side (no polling, so it does not slow down what it measures);
// - procStat: CPU, memory and context switches of a process (all its threads) and of its child processes.
// Nothing here writes to the kernel.
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { run, startProcess, type ManagedProcess } from '../sim/exec';

export interface KernelSnapshot {
  rules: string[];
  routes: string[];
  addresses: string[];
}

/**
 * IPv4 `ip rule`, `ip route show table all` and `ip -o address` of `ns`, each sorted (lifetimes dropped). IPv4
 * only: the simulator has no IPv6 yet, and IPv6 link-local state (DAD, `tentative`) lags a link flap by seconds.
 */
export async function kernelSnapshot(ns: string): Promise<KernelSnapshot> {
  const lines = async (args: string[]): Promise<string[]> =>
    (await run(['ip', '-n', ns, ...args], { timeoutMs: 10_000 })).stdout.split('\n').map((l) => l.trimEnd()).filter((l) => l !== '');
  const [rules, routes, addresses] = await Promise.all([
    lines(['-4', 'rule', 'show']),
    lines(['-4', 'route', 'show', 'table', 'all']),
    lines(['-4', '-o', 'address', 'show']),
  ]);
  return {
    rules: rules.sort(),
    routes: routes.sort(),
    addresses: addresses.map((l) => l.replace(/\\\s+valid_lft.*$/, '').replace(/\s+/g, ' ')).sort(),
  };
}

/** Lines present in one snapshot and not the other (for readable failure messages). */
export function snapshotDiff(a: KernelSnapshot, b: KernelSnapshot): string[] {
  const out: string[] = [];
  for (const key of ['rules', 'routes', 'addresses'] as const) {
    const left = countLines(a[key]);
    const right = countLines(b[key]);
    for (const [line, n] of left) if ((right.get(line) ?? 0) < n) out.push(`- ${key}: ${line}`);
    for (const [line, n] of right) if ((left.get(line) ?? 0) < n) out.push(`+ ${key}: ${line}`);
  }
  return out;
}

function countLines(lines: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const l of lines) m.set(l, (m.get(l) ?? 0) + 1);
  return m;
}

export interface MonitorLine {
  /** Wall clock (ms since the epoch, µs resolution) at which `ip monitor` received the message. */
  t: number;
  /** `[RULE]...`, `[ROUTE]Deleted ...`, `[ADDR]...`, `[LINK]...` */
  text: string;
}

export interface Monitor {
  readonly pid: number;
  /** Parsed lines so far. */
  lines(): MonitorLine[];
  /** Lines from index `from` on. */
  since(from: number): MonitorLine[];
  stop(): Promise<void>;
}

const TS_LINE = /^\[(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{6})\](.*)$/;

/**
 * `ip -n NS -tshort -o monitor label link address route rule`; resolves once its socket is subscribed
 * (read from /proc, as src/kernel/events.ts does), so no event after the call is missed.
 */
export async function startMonitor(ns: string, kinds: readonly string[] = ['link', 'address', 'route', 'rule']): Promise<Monitor> {
  const proc: ManagedProcess = startProcess(['ip', '-n', ns, '-tshort', '-o', 'monitor', 'label', ...kinds]);
  const parsed: MonitorLine[] = [];
  let carry = '';
  let consumed = 0;
  const parse = (): void => {
    const out = proc.output().stdout;
    const text = carry + out.slice(consumed);
    consumed = out.length;
    const parts = text.split('\n');
    carry = parts.pop() ?? '';
    for (const line of parts) {
      const m = TS_LINE.exec(line);
      if (m === null) continue;
      const [, y, mo, d, h, mi, s, us, rest] = m;
      const ms = new Date(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)).getTime() + Number(us) / 1000;
      parsed.push({ t: ms, text: (rest ?? '').trim() });
    }
  };
  const deadline = Date.now() + 5000;
  while (!isSubscribed(proc.pid)) {
    if (proc.hasExited() || Date.now() > deadline) {
      await proc.stop(200);
      throw new Error(`ip monitor in ${ns} did not subscribe: ${proc.output().stderr}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return {
    pid: proc.pid,
    lines: () => { parse(); return parsed; },
    since: (from) => { parse(); return parsed.slice(from); },
    stop: async () => { await proc.stop(500); parse(); },
  };
}

function isSubscribed(pid: number): boolean {
  try {
    const inodes = new Set<string>();
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      let target = '';
      try { target = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m?.[1] !== undefined) inodes.add(m[1]);
    }
    const table = readFileSync(`/proc/${pid}/net/netlink`, 'utf8');
    return table.split('\n').slice(1).some((line) => {
      const f = line.trim().split(/\s+/);
      return f.length >= 10 && f[1] === '0' && /[1-9a-f]/.test(f[3] ?? '') && inodes.has(f[9] ?? '');
    });
  } catch {
    return false;
  }
}

/** Sleeps until `ms` passed without a new monitor line (or `maxMs` in all); returns the lines seen. */
export async function waitQuiet(mon: Monitor, quietMs: number, maxMs: number): Promise<number> {
  const end = Date.now() + maxMs;
  let count = mon.lines().length;
  let lastChange = Date.now();
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, Math.min(50, quietMs)));
    const now = mon.lines().length;
    if (now !== count) {
      count = now;
      lastChange = Date.now();
    } else if (Date.now() - lastChange >= quietMs) {
      break;
    }
  }
  return count;
}

// ---- /proc ----------------------------------------------------------------------------------------------------

const CLK_TCK = 100; // USER_HZ: 100 on every Linux architecture Node runs on

export interface ProcStat {
  pid: number;
  comm: string;
  /** CPU seconds of the process itself (all threads). */
  cpuS: number;
  /** CPU seconds of its children that exited and were waited for (iptables-save, ...). */
  childCpuS: number;
  rssKb: number;
  hwmKb: number;
  /** VmRSS split: anonymous (heap, malloc) and file-backed (the node binary, addons). */
  rssAnonKb: number;
  rssFileKb: number;
  /** Context switches summed over all threads. */
  voluntaryCtx: number;
  involuntaryCtx: number;
  threads: number;
}

/** Reads /proc/PID/stat, status and every task's status. Throws when the process is gone. */
export function procStat(pid: number): ProcStat {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // comm may contain spaces and parentheses: the fields start after the last ')'.
  const close = stat.lastIndexOf(')');
  const comm = stat.slice(stat.indexOf('(') + 1, close);
  const f = stat.slice(close + 2).split(' ');
  // f[0] is field 3 (state): utime is field 14 → f[11], stime f[12], cutime f[13], cstime f[14].
  const num = (i: number): number => Number(f[i] ?? 0);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  let voluntaryCtx = 0;
  let involuntaryCtx = 0;
  let threads = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      const s = readFileSync(`/proc/${pid}/task/${task}/status`, 'utf8');
      voluntaryCtx += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(s)?.[1] ?? 0);
      involuntaryCtx += Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(s)?.[1] ?? 0);
      threads++;
    } catch {
      // The thread ended meanwhile.
    }
  }
  return {
    pid, comm, cpuS: (num(11) + num(12)) / CLK_TCK, childCpuS: (num(13) + num(14)) / CLK_TCK,
    rssKb: kb('VmRSS'), hwmKb: kb('VmHWM'), rssAnonKb: kb('RssAnon'), rssFileKb: kb('RssFile'), voluntaryCtx, involuntaryCtx, threads,
  };
}

/** Direct children of `pid` (from /proc/PID/task/ * /children). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      try {
        const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8');
        for (const p of text.split(/\s+/)) if (/^\d+$/.test(p)) out.push(Number(p));
      } catch {
        // The thread ended meanwhile.
      }
    }
  } catch {
    // The process is gone.
  }
  return out;
}

/**
 * The daemon's children alive now, by command name. The daemon keeps none (its event watchers are netlink sockets
 * of its own; `ip monitor` and `nft monitor` children did until 2026-12): the figures count any that shows up.
 */
export function liveChildren(daemonPid: number): Array<{ pid: number; comm: string }> {
  return childPids(daemonPid).flatMap((pid) => {
    try {
      return [{ pid, comm: readFileSync(`/proc/${pid}/comm`, 'utf8').trim() }];
    } catch {
      return [];
    }
  });
}

// ---- small statistics ----------------------------------------------------------------------------------------

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] ?? NaN;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}
