// Real Docker inside a test namespace (docs: /work/shared/docs/testbed.md §2).
//
// dockerd runs as `nsenter --net=/run/netns/NS dockerd` (not `ip netns exec`, which remounts /sys and breaks
// the devices cgroup) with a private data-root, exec-root, unix socket and pidfile in a temp folder, so it
// never touches the machine's Docker, namespace or iptables. No registry is reachable: containers run
// `local/busybox:1`, imported from the static busybox (built once per process, imported per daemon).
//
// Cleanup is by pid and by path: every process whose command line names the daemon's temp folder
// (dockerd, its managed containerd, the shims) and every mount under it; also on process exit and signals.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, copyFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run, startProcess } from '../../sim/exec';
import type { ManagedProcess, RunOptions, RunResult } from '../../sim/exec';

export const BUSYBOX_IMAGE = 'local/busybox:1';
const BUSYBOX_BIN = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p)) ?? '/bin/busybox';
const APPLETS = ['sh', 'httpd', 'echo', 'cat', 'sleep', 'nc', 'wget', 'ip', 'ls', 'ps', 'kill', 'true', 'false', 'env', 'hostname'];
/** The docker CLI that matches Debian's dockerd (any recent CLI negotiates the API version down anyway). */
const DOCKER_CLI = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

export interface DockerOptions {
  /** Extra dockerd flags (e.g. ['--iptables=false']). */
  extraArgs?: string[];
  /** How long to wait for the API to answer. Default 30 s. */
  readyTimeoutMs?: number;
}

export interface ContainerOptions {
  name: string;
  image?: string;
  /** `-p` values, e.g. ['8080:80']. */
  publish?: string[];
  /** `--network`; default the default bridge (docker0). */
  network?: string;
  /** `--restart` policy, e.g. 'always' (containers come back after restartDocker). */
  restart?: string;
  /** Command; default busybox httpd serving /www (index.html = `hello from <name>`) on port 80. */
  cmd?: string[];
}

export interface Container {
  id: string;
  name: string;
  /** IPv4 address on its (first) network. */
  ip: string;
}

export interface DockerNetwork {
  id: string;
  name: string;
  /** The Linux bridge: `br-<first 12 hex of the id>`. */
  bridge: string;
  subnet: string;
}

export interface DockerDaemon {
  readonly ns: string;
  readonly dir: string;
  readonly socket: string;
  /** ms from spawn to the API answering, for each start (first, then every restart). */
  readonly startTimesMs: number[];
  pid(): number;
  /** `docker -H unix://<socket> args...` */
  docker(args: string[], opts?: RunOptions): Promise<RunResult>;
  runContainer(opts: ContainerOptions): Promise<Container>;
  networkCreate(name: string, subnet?: string): Promise<DockerNetwork>;
  networkRemove(name: string): Promise<void>;
  /** Stops dockerd (SIGTERM, containers stop) and starts it again on the same folders; returns the start time in ms. */
  restart(): Promise<number>;
  /** Removes containers, stops dockerd, kills leftovers, unmounts, deletes the folder. Idempotent. */
  stop(): Promise<void>;
}

// ---- the busybox image ---------------------------------------------------------------------------------

let imageTar: string | undefined;

/** Builds the rootfs tarball once per process (bin/busybox + applet links + /www/index.html). */
function busyboxTar(): string {
  if (imageTar !== undefined && existsSync(imageTar)) return imageTar;
  const dir = mkdtempSync(path.join(tmpdir(), 'ec2d-img-'));
  const root = path.join(dir, 'rootfs');
  for (const sub of ['bin', 'www', 'tmp', 'etc']) mkdirSync(path.join(root, sub), { recursive: true });
  copyFileSync(BUSYBOX_BIN, path.join(root, 'bin', 'busybox'));
  execFileSync('chmod', ['0755', path.join(root, 'bin', 'busybox')]);
  for (const applet of APPLETS) symlinkSync('busybox', path.join(root, 'bin', applet));
  writeFileSync(path.join(root, 'www', 'index.html'), 'hello from busybox\n');
  writeFileSync(path.join(root, 'etc', 'passwd'), 'root:x:0:0:root:/:/bin/sh\n');
  const tar = path.join(dir, 'busybox.tar');
  execFileSync('tar', ['-C', root, '-c', '-f', tar, '.']);
  rmSync(root, { recursive: true, force: true });
  imageTar = tar;
  tempDirs.add(dir);
  return tar;
}

// ---- cleanup safety net --------------------------------------------------------------------------------

const liveDirs = new Set<string>();
const tempDirs = new Set<string>();
let handlersInstalled = false;

/** Pids of processes whose command line mentions `dir` (dockerd, containerd, shims of this daemon only). */
function pidsMentioning(dir: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(`${dir}/`)) out.push(pid);
    } catch {
      // Exited meanwhile.
    }
  }
  return out;
}

/** Mount points under `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  const points = text
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined && (p === dir || p.startsWith(`${dir}/`)))
    .map((p) => p.replace(/\\040/g, ' '));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

function killPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Gone.
  }
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Synchronous last resort: SIGKILL everything of the daemon, unmount, delete. */
function destroyDirSync(dir: string): void {
  for (const pid of pidsMentioning(dir)) killPid(pid, 'SIGKILL');
  for (const mount of mountsUnder(dir)) {
    try {
      execFileSync('umount', ['-l', mount], { stdio: 'ignore' });
    } catch {
      // Not mounted any more.
    }
  }
  rmSync(dir, { recursive: true, force: true });
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const cleanup = (): void => {
    for (const dir of liveDirs) destroyDirSync(dir);
    liveDirs.clear();
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
    tempDirs.clear();
  };
  process.once('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      cleanup();
      process.kill(process.pid, sig);
    });
  }
}

// ---- the daemon ----------------------------------------------------------------------------------------

function ping(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath: socket, path: '/_ping', method: 'GET', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Starts dockerd in network namespace `ns` (a name under /run/netns) and imports the busybox image. */
export async function startDocker(ns: string, opts: DockerOptions = {}): Promise<DockerDaemon> {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(ns) || !existsSync(`/run/netns/${ns}`)) {
    throw new Error(`startDocker: no network namespace ${JSON.stringify(ns)} under /run/netns (refusing the caller's namespace)`);
  }
  installHandlers();
  // Short path: containerd's socket lives under exec-root and unix socket paths are limited to 107 bytes.
  const dir = mkdtempSync(path.join(tmpdir(), 'ec2d-'));
  liveDirs.add(dir);
  const socket = path.join(dir, 'docker.sock');
  const pidfile = path.join(dir, 'docker.pid');
  const env = { ...process.env, DOCKER_CONFIG: path.join(dir, 'client') };
  const startTimesMs: number[] = [];
  let proc: ManagedProcess | undefined;
  let stopped = false;

  const argv = [
    'nsenter', `--net=/run/netns/${ns}`, 'dockerd',
    '--data-root', path.join(dir, 'data'),
    '--exec-root', path.join(dir, 'exec'),
    '-H', `unix://${socket}`,
    '--pidfile', pidfile,
    '--log-level', 'warn',
    '--shutdown-timeout', '2',
    ...(opts.extraArgs ?? []),
  ];

  const launch = async (): Promise<number> => {
    const started = Date.now();
    proc = startProcess(argv);
    const deadline = started + (opts.readyTimeoutMs ?? 30_000);
    while (!(await ping(socket))) {
      if (proc.hasExited()) throw new Error(`dockerd in ${ns} exited before it was ready:\n${proc.output().stderr.slice(-3000)}`);
      if (Date.now() > deadline) throw new Error(`dockerd in ${ns} not ready after ${opts.readyTimeoutMs ?? 30_000} ms:\n${proc.output().stderr.slice(-3000)}`);
      await sleep(25);
    }
    const ms = Date.now() - started;
    startTimesMs.push(ms);
    return ms;
  };

  const docker = (args: string[], o: RunOptions = {}): Promise<RunResult> =>
    run([DOCKER_CLI, '-H', `unix://${socket}`, ...args], { timeoutMs: 60_000, env, ...o });

  /** SIGTERM dockerd (it stops containers and its containerd), then make sure nothing of it is left. */
  const shutdown = async (graceMs: number): Promise<void> => {
    const pid = readPid(pidfile) ?? proc?.pid;
    if (pid !== undefined && pid > 0) killPid(pid, 'SIGTERM');
    if (proc !== undefined) {
      const timer = sleep(graceMs).then(() => 'timeout' as const);
      if ((await Promise.race([proc.exited, timer])) === 'timeout') await proc.stop(100);
    }
    // The managed containerd exits after dockerd; shims after their containers. Give them a moment.
    const deadline = Date.now() + 3000;
    while (pidsMentioning(dir).length > 0 && Date.now() < deadline) await sleep(25);
    for (const left of pidsMentioning(dir)) killPid(left, 'SIGKILL');
  };

  const daemon: DockerDaemon = {
    ns,
    dir,
    socket,
    startTimesMs,
    pid: () => readPid(pidfile) ?? proc?.pid ?? -1,
    docker,
    async runContainer(o) {
      // --init: tini as PID 1 forwards SIGTERM, so stops and dockerd restarts do not wait for the stop timeout.
      const args = ['run', '-d', '--init', '--name', o.name, '--stop-timeout', '1'];
      for (const p of o.publish ?? []) args.push('-p', p);
      if (o.network !== undefined) args.push('--network', o.network);
      if (o.restart !== undefined) args.push('--restart', o.restart);
      args.push(o.image ?? BUSYBOX_IMAGE);
      args.push(...(o.cmd ?? ['/bin/sh', '-c', `echo hello from ${o.name} > /www/index.html && exec /bin/httpd -f -p 80 -h /www`]));
      const id = (await docker(args)).stdout.trim();
      const ip = await containerIp(o.name);
      return { id, name: o.name, ip };
    },
    async networkCreate(name, subnet) {
      const args = ['network', 'create', '--driver', 'bridge'];
      if (subnet !== undefined) args.push('--subnet', subnet);
      const id = (await docker([...args, name])).stdout.trim();
      const { stdout } = await docker(['network', 'inspect', '-f', '{{range .IPAM.Config}}{{.Subnet}} {{end}}', name]);
      return { id, name, bridge: `br-${id.slice(0, 12)}`, subnet: stdout.trim().split(' ')[0] ?? '' };
    },
    async networkRemove(name) {
      await docker(['network', 'rm', name]);
    },
    async restart() {
      await shutdown(10_000);
      return launch();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        if (proc !== undefined && !proc.hasExited() && (await ping(socket))) {
          const ids = (await docker(['ps', '-aq'])).stdout.split('\n').filter((s) => s !== '');
          if (ids.length > 0) await docker(['rm', '-f', '-v', ...ids]).catch(() => undefined);
        }
      } finally {
        await shutdown(5000);
        destroyDirSync(dir);
        liveDirs.delete(dir);
      }
    },
  };

  async function containerIp(name: string): Promise<string> {
    const { stdout } = await docker(['inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}', name]);
    return stdout.trim().split(' ')[0] ?? '';
  }

  try {
    await launch();
    await docker(['import', busyboxTar(), BUSYBOX_IMAGE]);
  } catch (err) {
    await daemon.stop();
    throw err;
  }
  return daemon;
}
