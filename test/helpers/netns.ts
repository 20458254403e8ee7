// Vitest fixtures for kernel-backed tests: simulated instances with unique per-file, per-process namespace
// names, cleaned up after the tests, on process exit and on SIGINT/SIGTERM/SIGHUP; leftovers of crashed runs
// are swept before creating. Also: running a TypeScript helper inside a namespace.
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { nsArgv, run, startProcess } from '../../sim/exec';
import type { ManagedProcess, RunOptions, RunResult } from '../../sim/exec';
import { createInstance, destroyNamespaces, listNamespaces, namespaceNames } from '../../sim/topology';
import type { CreateInstanceOptions, SimInstance } from '../../sim/topology';

/** The repository root, wherever the clone lives. */
export const repoRoot = path.resolve(__dirname, '..', '..');

export type InstanceOptions = Omit<CreateInstanceOptions, 'prefix'>;

// host<k>: the instances added to a subnet (sim/topology.ts addInstance).
const ROLES = ['vpc', 'host\\d*', 'cli'];
const BASE_RE = /^[a-z][a-z0-9]{0,11}$/;

// ---- process-exit safety net -------------------------------------------------------------------------

const liveNamespaces = new Set<string>();
const liveProcesses = new Set<ManagedProcess>();
let handlersInstalled = false;

function killSync(pid: number, group: boolean): void {
  try {
    process.kill(group ? -pid : pid, 'SIGKILL');
  } catch {
    // Gone already.
  }
}

/** Synchronous: usable from 'exit' and signal handlers. Kills by pid, deletes only the namespaces we made. */
function cleanupSync(): void {
  for (const p of liveProcesses) if (p.pid > 0) killSync(p.pid, true);
  liveProcesses.clear();
  for (const ns of liveNamespaces) {
    try {
      const out = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      for (const pid of out.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number)) {
        if (pid !== process.pid) killSync(pid, false);
      }
    } catch {
      // Namespace already gone.
    }
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // Already gone.
    }
  }
  liveNamespaces.clear();
}

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.once('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      cleanupSync();
      // Let the default action (or the runner's own handler) happen now that we are out of the way.
      process.kill(process.pid, sig);
    });
  }
}

function track(names: readonly string[]): void {
  installExitHandlers();
  for (const n of names) liveNamespaces.add(n);
}

function untrack(names: readonly string[]): void {
  for (const n of names) liveNamespaces.delete(n);
}

// ---- stale namespaces from crashed runs --------------------------------------------------------------

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0); // signal 0: existence check only
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Deletes leftover namespaces of `prefix` (and kills what runs in them):
 * - `${prefix}-vpc|host|cli` (an instance made with exactly this prefix), always;
 * - `${prefix}-<pid>-<n>-vpc|host|cli` (made by the fixtures below) when process <pid> is gone, so a
 *   parallel run of the same file (another worker, another clone) keeps its namespaces.
 * Returns the names deleted. Never touches names of any other shape.
 */
export async function sweepStale(prefix: string): Promise<string[]> {
  const exact = new RegExp(`^${escapeRe(prefix)}-(${ROLES.join('|')})$`);
  const owned = new RegExp(`^${escapeRe(prefix)}-(\\d+)-\\d+-(${ROLES.join('|')})$`);
  const stale = (await listNamespaces()).filter((name) => {
    if (exact.test(name)) return true;
    const m = owned.exec(name);
    if (m?.[1] === undefined) return false;
    const pid = Number(m[1]);
    return pid !== process.pid && !pidAlive(pid);
  });
  await destroyNamespaces(stale);
  return stale;
}

// ---- instances -------------------------------------------------------------------------------------

let counter = 0;

/** `${base}-${pid}-${n}`: unique per process and call. `base`: [a-z][a-z0-9]{0,11}, one per test file. */
export function uniquePrefix(base: string): string {
  if (!BASE_RE.test(base)) throw new Error(`prefix base ${JSON.stringify(base)}: use [a-z][a-z0-9]{0,11}, one per test file`);
  counter += 1;
  return `${base}-${process.pid}-${counter}`;
}

/** Sweeps stale namespaces of `base`, creates an instance, registers it for exit cleanup. */
export async function createTestInstance(base: string, opts: InstanceOptions): Promise<SimInstance> {
  await sweepStale(base);
  const prefix = uniquePrefix(base);
  const names = Object.values(namespaceNames(prefix));
  track(names); // before creating: a crash halfway through still cleans up
  try {
    return await createInstance({ ...opts, prefix });
  } catch (err) {
    untrack(names);
    throw err;
  }
}

/** Destroys an instance made by createTestInstance and forgets it. */
export async function destroyTestInstance(inst: SimInstance): Promise<void> {
  await inst.destroy();
  untrack(Object.values(inst.ns));
}

/**
 * Registers hooks that create an instance before the tests of the current describe/file (scope 'file',
 * the default) or before each test (scope 'test') and destroy it after. Returns a getter.
 */
export function useInstance(base: string, opts: InstanceOptions, scope: 'file' | 'test' = 'file'): () => SimInstance {
  let inst: SimInstance | undefined;
  const before = async (): Promise<void> => {
    inst = await createTestInstance(base, opts);
  };
  const after = async (): Promise<void> => {
    const i = inst;
    inst = undefined;
    if (i !== undefined) await destroyTestInstance(i);
  };
  if (scope === 'file') {
    beforeAll(before);
    afterAll(after);
  } else {
    beforeEach(before);
    afterEach(after);
  }
  return () => {
    if (inst === undefined) throw new Error('useInstance: no instance (outside a test, or setup failed)');
    return inst;
  };
}

// ---- TypeScript helpers inside a namespace -------------------------------------------------------------

function tsArgv(ns: string, tsFile: string, args: readonly string[]): string[] {
  const file = path.isAbsolute(tsFile) ? tsFile : path.join(repoRoot, tsFile);
  // process.execPath: the same node that runs the tests. cwd = repoRoot so `--import tsx` resolves.
  return nsArgv(ns, [process.execPath, '--import', 'tsx', file, ...args]);
}

/** `ip netns exec ns node --import tsx FILE args...` to completion (FILE absolute or relative to the repo root). */
export function runInNs(ns: string, tsFile: string, args: readonly string[] = [], opts: Omit<RunOptions, 'cwd'> = {}): Promise<RunResult> {
  return run(tsArgv(ns, tsFile, args), { ...opts, cwd: repoRoot });
}

/** The same, long-running (a daemon, a simulator): stop() it, or exit/signal cleanup kills it. */
export function startInNs(ns: string, tsFile: string, args: readonly string[] = [], env?: NodeJS.ProcessEnv): ManagedProcess {
  installExitHandlers();
  const p = startProcess(tsArgv(ns, tsFile, args), { cwd: repoRoot, env });
  liveProcesses.add(p);
  void p.exited.then(() => liveProcesses.delete(p));
  return p;
}
