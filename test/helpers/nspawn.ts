// A real systemd as PID 1 for the systemd end-to-end test: systemd-nspawn over the cached bookworm tree
// of scripts/build-rootfs.sh (shared docs/testbed.md §3). The host has no systemd or D-Bus, so the
// container is not registered (`--register=no --keep-unit`) and commands run inside through
// `nsenter -t <container PID 1> -a`. `--volatile=overlay` keeps the cached tree clean: everything the
// test writes lives in a tmpfs that disappears with the container.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { CommandError, run, type RunOptions } from '../../sim/exec';

const REPO = path.resolve(__dirname, '..', '..');

/**
 * Builds a stock Debian 12 root (no Node.js) once, cached outside the clone and keyed by the recipe;
 * returns its directory. arm64's second debootstrap stage runs under qemu: minutes, the first time.
 */
export async function ensureRootfs(arch: 'amd64' | 'arm64' = 'amd64', timeoutMs = arch === 'amd64' ? 900_000 : 1_800_000): Promise<string> {
  const { stdout } = await run([path.join(REPO, 'scripts', 'build-rootfs.sh'), arch], { timeoutMs });
  const dir = stdout.trim().split('\n').pop();
  if (dir === undefined || dir === '') throw new Error('build-rootfs.sh printed no directory');
  return dir;
}

/** An older version of the amd64 .deb, built from this checkout into `outDir`: the upgrade test's "before". */
export async function buildPreviousDeb(version: string, outDir: string, timeoutMs = 300_000): Promise<string> {
  const env = { ...process.env, EC2NETD_PKG_VERSION: version, EC2NETD_PKG_OUT: outDir, EC2NETD_PKG_ARCHS: 'amd64' };
  const { stdout } = await run([path.join(REPO, 'packaging', 'build.sh')], { timeoutMs, cwd: REPO, env });
  const deb = stdout.trim().split('\n').find((l) => l.endsWith('_amd64.deb'));
  if (deb === undefined) throw new Error(`build.sh printed no .deb: ${stdout}`);
  return deb;
}

export interface Packages {
  debAmd64: string;
  debArm64: string;
  rpmX86_64: string;
  rpmAarch64: string;
}

/** The four packages of this checkout (packaging/build.sh: built once while the inputs are unchanged, so test files share them). */
export async function buildPackages(timeoutMs = 300_000): Promise<Packages> {
  const { stdout } = await run([path.join(REPO, 'packaging', 'build.sh')], { timeoutMs, cwd: REPO });
  const files = stdout.trim().split('\n');
  const find = (suffix: string): string => {
    const f = files.find((l) => l.endsWith(suffix));
    if (f === undefined) throw new Error(`build.sh printed no *${suffix}: ${stdout}`);
    return f;
  };
  return { debAmd64: find('_amd64.deb'), debArm64: find('_arm64.deb'), rpmX86_64: find('.x86_64.rpm'), rpmAarch64: find('.aarch64.rpm') };
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface Container {
  readonly name: string;
  /** The container's PID 1, as the host sees it. */
  readonly leader: number;
  /** Runs argv inside (all the container's namespaces); never throws on a non-zero exit. */
  exec(argv: readonly string[], opts?: RunOptions): Promise<ExecResult>;
  /** Like exec, but throws with the output when the command fails. */
  check(argv: readonly string[], opts?: RunOptions): Promise<string>;
  /** What nspawn printed (the container's console). */
  console(): string;
  /** Clean poweroff (SIGTERM to nspawn), SIGKILL after `graceMs`. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

export interface BootOptions {
  name: string;
  rootfs: string;
  /** Network namespace (`ip netns` name) the container joins: the simulated instance's. */
  netns?: string;
  /** Read-only binds, host path → container path. */
  binds?: ReadonlyArray<readonly [string, string]>;
  bootTimeoutMs?: number;
}

/**
 * The container's PID 1: the child of nspawn once it runs systemd (nspawn forks an intermediate child
 * first, which exits after the setup).
 */
function containerInit(nspawnPid: number): number | undefined {
  try {
    const children = readFileSync(`/proc/${nspawnPid}/task/${nspawnPid}/children`, 'utf8').trim().split(/\s+/).filter((s) => s !== '');
    for (const child of children) {
      if (readFileSync(`/proc/${child}/comm`, 'utf8').trim() === 'systemd') return Number(child);
    }
  } catch {
    // not there yet, or gone
  }
  return undefined;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function bootContainer(opts: BootOptions): Promise<Container> {
  const argv = ['-q', '-D', opts.rootfs, '-b', '--register=no', '--keep-unit', '-M', opts.name, '--console=pipe',
    '--volatile=overlay', '--capability=CAP_NET_ADMIN',
    ...(opts.binds ?? []).map(([host, inside]) => `--bind-ro=${host}:${inside}`),
    ...(opts.netns === undefined ? [] : [`--network-namespace-path=/run/netns/${opts.netns}`])];
  const nspawn: ChildProcess = spawn('systemd-nspawn', argv, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (d: Buffer): void => {
    if (output.length < 1024 * 1024) output += d.toString();
  };
  nspawn.stdout?.on('data', collect);
  nspawn.stderr?.on('data', collect);
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    nspawn.once('exit', () => {
      exited = true;
      resolve();
    });
    nspawn.once('error', (err) => {
      output += `\n${err.message}`;
      exited = true;
      resolve();
    });
  });
  const pid = nspawn.pid ?? -1;

  let stopping: Promise<void> | undefined;
  const stop = (graceMs = 10_000): Promise<void> => {
    stopping ??= (async () => {
      if (exited) return;
      try {
        process.kill(pid, 'SIGTERM'); // nspawn turns this into a clean poweroff of the container
      } catch {
        return;
      }
      const timer = sleep(graceMs).then(() => 'timeout' as const);
      if ((await Promise.race([exit, timer])) === 'timeout') {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          // gone
        }
        await Promise.race([exit, sleep(5000)]);
      }
    })();
    return stopping;
  };

  try {
    const deadline = Date.now() + (opts.bootTimeoutMs ?? 30_000);
    let leader: number | undefined;
    while (leader === undefined) {
      if (exited) throw new Error(`systemd-nspawn exited during boot:\n${output}`);
      if (Date.now() > deadline) throw new Error(`container ${opts.name} did not start:\n${output}`);
      leader = containerInit(pid);
      if (leader === undefined) await sleep(20);
    }
    const inside = (args: readonly string[]): string[] => ['nsenter', '-t', String(leader), '-a', ...args];
    const exec = async (args: readonly string[], o: RunOptions = {}): Promise<ExecResult> => {
      try {
        const r = await run(inside(args), { timeoutMs: 30_000, ...o });
        return { ...r, code: 0 };
      } catch (err) {
        if (err instanceof CommandError && err.exitCode !== undefined) return { stdout: err.stdout, stderr: err.stderr, code: err.exitCode };
        throw err;
      }
    };
    const check = async (args: readonly string[], o: RunOptions = {}): Promise<string> => {
      const r = await exec(args, o);
      if (r.code !== 0) throw new Error(`in ${opts.name}: ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
      return r.stdout;
    };
    // Wait for the boot to finish ("running", or "degraded" when some unit failed: not our concern here).
    while (true) {
      const r = await exec(['systemctl', 'is-system-running', '--wait'], { timeoutMs: Math.max(1000, deadline - Date.now()) })
        .catch(() => ({ stdout: '', stderr: '', code: -1 }));
      const state = r.stdout.trim();
      if (state === 'running' || state === 'degraded') break;
      if (Date.now() > deadline || exited) throw new Error(`container ${opts.name} did not finish booting (${state}):\n${output}`);
      await sleep(50);
    }
    return { name: opts.name, leader, exec, check, console: () => output, stop };
  } catch (err) {
    await stop(2000);
    throw err;
  }
}
