// Running commands for the simulator: argv only (never a shell), errors that say what ran and what it printed.
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';

export interface RunOptions {
  /** Written to the command's stdin, which is then closed. */
  input?: string;
  /** Kill the command (SIGKILL) after this long; the promise rejects. Default 30 s. */
  timeoutMs?: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** A command that could not be started, exited non-zero, was killed or timed out. */
export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    /** Exit code; undefined when the command was killed or did not start. */
    readonly exitCode: number | undefined,
    readonly signal: string | undefined,
    readonly stdout: string,
    readonly stderr: string,
    readonly timedOut: boolean,
    detail: string,
  ) {
    super(`command failed (${detail}): ${formatArgv(argv)}${stderr.trim() === '' ? '' : `\n${stderr.trim()}`}`);
    this.name = 'CommandError';
  }
}

/** For messages only: quotes arguments that would be ambiguous when read. */
export function formatArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** Runs argv[0] with the other elements as its arguments (execFile: no shell). */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new Error('run: empty argv'));
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        cwd: opts.cwd,
        env: opts.env,
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
        encoding: 'utf8',
      },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ stdout, stderr });
          return;
        }
        const code = typeof error.code === 'number' ? error.code : undefined;
        const signal = error.signal ?? undefined;
        const timedOut = error.killed === true && signal === 'SIGKILL';
        const detail = timedOut
          ? `timed out after ${timeoutMs} ms`
          : code !== undefined
            ? `exit ${code}`
            : signal !== undefined
              ? `signal ${signal}`
              : error.message;
        reject(new CommandError(argv, code, signal, stdout, stderr, timedOut, detail));
      },
    );
    // Without input, stdin is closed at once so a command that reads it sees EOF.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? '');
  });
}

/** Prefix that runs a command inside a named network namespace. */
export function nsArgv(ns: string, argv: readonly string[]): string[] {
  return ['ip', 'netns', 'exec', ns, ...argv];
}

/** `ip netns exec ns argv...` */
export function nsRun(ns: string, argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
  return run(nsArgv(ns, argv), opts);
}

/**
 * `ip -n ns -json args...`, parsed. `ip` prints nothing at all for some empty dumps: that is `[]`.
 * The type parameter is the caller's claim about the shape; nothing checks it.
 */
export async function ipJson<T = unknown>(ns: string, args: readonly string[]): Promise<T> {
  const { stdout } = await run(['ip', '-n', ns, '-json', ...args]);
  const text = stdout.trim();
  return JSON.parse(text === '' ? '[]' : text) as T;
}

/** `ip -n ns -batch -` with one command per line; stops at the first failing line. */
export async function ipBatch(ns: string | undefined, lines: readonly string[]): Promise<void> {
  if (lines.length === 0) return;
  const argv = ns === undefined ? ['ip', '-batch', '-'] : ['ip', '-n', ns, '-batch', '-'];
  await run(argv, { input: lines.join('\n') + '\n' });
}

/** A long-running child (server, daemon) in its own process group. */
export interface ManagedProcess {
  readonly argv: readonly string[];
  readonly pid: number;
  readonly child: ChildProcess;
  /** Everything written so far (capped at 1 MiB each). */
  output(): { stdout: string; stderr: string };
  /** Resolves with the exit code (or the signal name) when the process has exited. */
  readonly exited: Promise<number | string>;
  hasExited(): boolean;
  /** SIGTERM to the process group, SIGKILL after `graceMs` (default 1000). Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

const OUTPUT_CAP = 1024 * 1024;

/** Starts argv detached (own process group), pipes stdout/stderr into memory. */
export function startProcess(argv: readonly string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): ManagedProcess {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error('startProcess: empty argv');
  const child = spawn(file, args, { cwd: opts.cwd, env: opts.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    if (stdout.length < OUTPUT_CAP) stdout += d;
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < OUTPUT_CAP) stderr += d;
  });
  let done = false;
  const exited = new Promise<number | string>((resolve) => {
    child.once('error', (err) => {
      done = true;
      stderr += `\n${err.message}`;
      resolve('spawn-error');
    });
    child.once('exit', (code, signal) => {
      done = true;
      resolve(code ?? signal ?? 'unknown');
    });
  });
  const pid = child.pid;
  if (pid === undefined) {
    // spawn failed synchronously-ish (ENOENT...): the 'error' event follows; give a dead handle.
    return {
      argv,
      pid: -1,
      child,
      output: () => ({ stdout, stderr }),
      exited,
      hasExited: () => true,
      stop: async () => {
        await exited;
      },
    };
  }
  let stopping: Promise<void> | undefined;
  const signalGroup = (sig: NodeJS.Signals): void => {
    try {
      process.kill(-pid, sig);
    } catch {
      // Group gone already.
    }
  };
  const stop = (graceMs = 1000): Promise<void> => {
    stopping ??= (async () => {
      if (done) {
        signalGroup('SIGKILL'); // forked children of a dead leader
        return;
      }
      signalGroup('SIGTERM');
      const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs).unref());
      if ((await Promise.race([exited, timer])) === 'timeout') signalGroup('SIGKILL');
      signalGroup('SIGKILL');
      await exited;
    })();
    return stopping;
  };
  return { argv, pid, child, output: () => ({ stdout, stderr }), exited, hasExited: () => done, stop };
}
