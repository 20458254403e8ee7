// Watching a running ec2netd from a test: its JSON log lines after a mark, waiting for one, and "converged"
// as ec2netd itself judges it (`ec2netd plan` exits 0). Bounded waits only.
import type { ManagedProcess } from '../../sim/exec';
import type { SimulatedEc2 } from '../../sim/ec2';
import { kernelSnapshot, snapshotDiff, type KernelSnapshot } from '../../bench/inspect';

export interface LogLine {
  level: number;
  msg: string;
  err?: string;
  action?: string;
}

/** A position in the daemon's stdout: lines after it are "new". */
export function logMark(daemon: ManagedProcess): number {
  return daemon.output().stdout.length;
}

/** The daemon's JSON log lines written after `mark`. */
export function logSince(daemon: ManagedProcess, mark: number): LogLine[] {
  return daemon.output().stdout.slice(mark).split('\n').flatMap((line) => {
    if (!line.startsWith('{')) return [];
    try {
      return [JSON.parse(line) as LogLine];
    } catch {
      return [];
    }
  });
}

/** Waits for a log line after `mark` that matches; throws with the lines seen when none comes in time. */
export async function waitForLog(daemon: ManagedProcess, mark: number, match: (l: LogLine) => boolean, what: string, timeoutMs = 10_000): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = logSince(daemon, mark).find(match);
    if (hit !== undefined) return hit;
    if (daemon.hasExited()) throw new Error(`daemon exited while waiting for: ${what}\n${daemon.output().stderr}`);
    if (Date.now() > deadline) {
      const seen = logSince(daemon, mark).map((l) => l.msg).join('\n  ');
      throw new Error(`no log line within ${timeoutMs} ms: ${what}; seen:\n  ${seen}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits until `ec2netd plan` exits 0 (nothing to do); throws with the last plan output otherwise. */
export async function waitConverged(sim: SimulatedEc2, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const plan = await sim.ec2netd(['plan']);
    if (plan.code === 0) return;
    if (Date.now() > deadline) throw new Error(`not converged within ${timeoutMs} ms; plan exit ${plan.code}:\n${plan.stdout.slice(0, 2000)}${plan.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until the host namespace's kernel state equals `want` exactly; throws with the difference. */
export async function waitSnapshot(sim: SimulatedEc2, want: KernelSnapshot, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = await kernelSnapshot(sim.net.ns.host);
    const diff = snapshotDiff(want, now);
    if (diff.length === 0) return;
    if (Date.now() > deadline) throw new Error(`${what}: kernel state differs after ${timeoutMs} ms:\n${diff.slice(0, 40).join('\n')}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

