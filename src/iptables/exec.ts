// Running iptables-save / iptables-restore: execFile with an argv (never a shell), stdin for the
// transaction, a timeout, and errors that say what ran and what it printed.
import { execFile } from 'node:child_process';

export class IptablesError extends Error {
  override name = 'IptablesError';
  constructor(
    message: string,
    readonly argv: readonly string[],
    /** Exit code; undefined when the command did not start, was killed or timed out. */
    readonly exitCode: number | undefined,
    readonly stderr: string,
    readonly timedOut: boolean,
    /** True when the program is not installed (ENOENT). */
    readonly notFound: boolean,
  ) {
    super(message);
  }
}

export interface ExecOptions {
  /** Written to stdin, which is then closed (an empty stdin otherwise). */
  input?: string;
  timeoutMs: number;
}

/** Runs argv; resolves with stdout. Rejects with IptablesError on start failure, non-zero exit or timeout. */
export function execArgv(argv: readonly string[], opts: ExecOptions): Promise<string> {
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new Error('execArgv: empty argv'));
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { timeout: opts.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 32 * 1024 * 1024, encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve(stdout);
          return;
        }
        const errno = (error as NodeJS.ErrnoException).code;
        const notFound = errno === 'ENOENT';
        const exitCode = typeof error.code === 'number' ? error.code : undefined;
        const timedOut = error.killed === true && exitCode === undefined;
        const detail = notFound
          ? 'not found'
          : timedOut
            ? `timed out after ${opts.timeoutMs} ms`
            : exitCode !== undefined
              ? `exit ${exitCode}`
              : error.message;
        const text = stderr.trim();
        reject(new IptablesError(`${argv.join(' ')}: ${detail}${text === '' ? '' : `: ${text}`}`, argv, exitCode, stderr, timedOut, notFound));
      },
    );
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? '');
  });
}
