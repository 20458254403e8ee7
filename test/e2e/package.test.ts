// The packages of packaging/build.sh beyond the amd64 .deb (which systemd.test.ts installs, boots and
// upgrades): the .rpms hold the same files, the x86_64 .rpm installs into a scratch root and runs on its
// own runtime, the arm64 .deb's runtime and native addons really run (an arm64 Debian root under
// qemu-user-static, a netlink dump in a throwaway network namespace, a unix datagram), and lintian finds
// no errors.
//
// The cached roots stay clean: every root here is an overlay whose upper layer is a temporary folder,
// mounted inside a private mount namespace (`unshare -m`) that disappears with the command.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandError, run } from '../../sim/exec';
import { buildPackages, ensureRootfs, type Packages } from '../helpers/nspawn';

// Per process: two suites on one machine (two checkouts) must not share it.
const NS = `e2epkg-arm64-${process.pid}`;
let pkgs: Packages;
let scratch: string;
let amd64Root: string;
let arm64Root: string;
/**
 * lintian takes a minute or more per 50 MB package: started as soon as the packages exist, alongside the
 * other tests. Without its binaries/spelling check (a third of the time, on the runtime's strings), which
 * can only report spelling-error-in-binary, an info tag.
 */
let lintian: Promise<{ code: number; output: string }> | undefined;

/** Runs `script` (sh) chrooted in an overlay of `lower`: writes go to <scratch>/<layer>, kept between calls. */
async function inRoot(lower: string, layer: string, script: string, opts: { netns?: string; timeoutMs?: number } = {}): Promise<string> {
  const dir = path.join(scratch, layer);
  for (const d of ['upper', 'work', 'merged']) mkdirSync(path.join(dir, d), { recursive: true });
  const setup = [
    `mount -t overlay overlay -o lowerdir=${lower},upperdir=${dir}/upper,workdir=${dir}/work ${dir}/merged`,
    `mount --bind /proc ${dir}/merged/proc`,
    `mount --rbind /dev ${dir}/merged/dev`,
    `mount --bind ${scratch}/share ${dir}/merged/mnt`,
    `exec chroot ${dir}/merged /bin/sh -c "$0"`,
  ].join(' && ');
  const argv = ['unshare', '-m', '--propagation', 'private', 'sh', '-c', setup, script];
  const { stdout } = await run(opts.netns === undefined ? argv : ['ip', 'netns', 'exec', opts.netns, ...argv], { timeoutMs: opts.timeoutMs ?? 120_000 });
  return stdout;
}

/** Regular files (not directories) of a package, as absolute paths, sorted. */
async function debFiles(deb: string): Promise<string[]> {
  const { stdout } = await run(['dpkg-deb', '-c', deb]);
  return stdout.trim().split('\n').filter((l) => !l.startsWith('d')).map((l) => l.split(/\s+/)[5]?.replace(/^\./, '') ?? '').sort();
}
async function rpmFiles(rpm: string): Promise<string[]> {
  const { stdout } = await run(['rpm', '-qp', '--qf', '[%{FILEMODES:perms} %{FILENAMES}\n]', rpm]);
  return stdout.trim().split('\n').filter((l) => !l.startsWith('d')).map((l) => l.slice(l.indexOf(' ') + 1)).sort();
}

beforeAll(async () => {
  [pkgs, amd64Root, arm64Root] = await Promise.all([buildPackages(), ensureRootfs('amd64'), ensureRootfs('arm64')]);
  lintian = run(['lintian', '--fail-on', 'error', '-X', 'binaries/spelling', pkgs.debAmd64, pkgs.debArm64], { timeoutMs: 900_000 }).then(
    (r) => ({ code: 0, output: r.stdout }),
    (err: unknown) => {
      if (err instanceof CommandError && err.exitCode !== undefined) return { code: err.exitCode, output: err.stdout + err.stderr };
      throw err;
    });
  scratch = mkdtempSync(path.join(tmpdir(), 'ec2netd-e2e-package-'));
  mkdirSync(path.join(scratch, 'share'));
  await run(['cp', pkgs.debArm64, path.join(scratch, 'share')]);
}, 1_800_000);

afterAll(async () => {
  await lintian?.catch(() => undefined); // undefined when beforeAll failed before starting it
  await run(['ip', 'netns', 'delete', NS]).catch(() => undefined);
  if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
});

describe('the .rpms', () => {
  it('hold the same files as the .debs, the config marked noreplace', async () => {
    for (const [deb, rpm] of [[pkgs.debAmd64, pkgs.rpmX86_64], [pkgs.debArm64, pkgs.rpmAarch64]] as const) {
      const files = await debFiles(deb);
      expect(files).toContain('/usr/lib/ec2netd/node/bin/node');
      expect(await rpmFiles(rpm)).toEqual(files);
      expect((await run(['dpkg-deb', '-f', deb, 'Depends'])).stdout).not.toMatch(/nodejs/);
      expect((await run(['dpkg-deb', '-I', deb, 'conffiles'])).stdout.trim()).toBe('/etc/ec2netd/config.json');
      expect((await run(['rpm', '-qp', '--qf', '[%{FILEFLAGS:fflags} %{FILENAMES}\n]', rpm])).stdout).toMatch(/^cn \/etc\/ec2netd\/config\.json$/m);
      expect((await run(['rpm', '-qp', '--requires', rpm])).stdout).not.toMatch(/node/);
    }
  });

  it('the x86_64 one installs with rpm -i --root, runs on its own runtime, and erases cleanly', async () => {
    // rpm runs on the host against an overlay of the stock Debian root (no Node.js, no rpm database:
    // its libraries are dpkg's, hence --nodeps); the scriptlets run chrooted in it.
    const dir = path.join(scratch, 'rpm-root');
    for (const d of ['upper', 'work', 'merged']) mkdirSync(path.join(dir, d), { recursive: true });
    const root = `${dir}/merged`;
    const { stdout } = await run(['unshare', '-m', '--propagation', 'private', 'sh', '-ec', [
      `mount -t overlay overlay -o lowerdir=${amd64Root},upperdir=${dir}/upper,workdir=${dir}/work ${root}`,
      `! chroot ${root} sh -c 'command -v node'`,
      `rpm --root ${root} --initdb`,
      `rpm --root ${root} -i --nodeps ${pkgs.rpmX86_64}`,
      `rpm --root ${root} -qc ec2netd`,
      `chroot ${root} /usr/bin/ec2netd --version`,
      `readlink ${root}/etc/systemd/system/multi-user.target.wants/ec2netd.service`,
      `rpm --root ${root} -e ec2netd`,
      `ls -d ${root}/usr/lib/ec2netd ${root}/etc/ec2netd ${root}/usr/bin/ec2netd 2>/dev/null || echo erased`,
    ].join('\n')], { timeoutMs: 120_000 });
    expect(stdout.trim().split('\n')).toEqual([
      '/etc/ec2netd/config.json',
      expect.stringMatching(/^ec2netd \d+\.\d+\.\d+$/),
      expect.stringMatching(/^(\/usr)?\/lib\/systemd\/system\/ec2netd\.service$/), // enabled on install (merged /usr: either path)
      'erased',
    ]);
  });
});

describe('the arm64 .deb in an arm64 Debian root (qemu-user-static)', () => {
  it('installs; ec2netd --version and doctor --json run on its runtime; netlink dumps a namespace, unix-dgram delivers', async () => {
    await run(['ip', 'netns', 'add', NS]);
    await run(['ip', '-n', NS, 'link', 'add', 'eth7', 'type', 'veth', 'peer', 'name', 'eth8']);
    await run(['ip', '-n', NS, 'address', 'add', '10.9.8.7/24', 'dev', 'eth7']);
    await run(['ip', '-n', NS, 'link', 'set', 'eth7', 'up']);
    // The addons at work: netlink dumps links, addresses and routes of the namespace; unix-dgram sends
    // a datagram to itself. A rule dump cannot run under qemu-user (its netlink translation answers
    // RTM_GETRULE with EOPNOTSUPP, for Debian's own `ip rule` too): `ec2netd doctor --json` says so and
    // reports what it can without it.
    writeFileSync(path.join(scratch, 'share', 'dump.js'), `
      const { createRtNetlink } = require('/usr/lib/ec2netd/node_modules/netlink');
      const { createSocket } = require('/usr/lib/ec2netd/node_modules/unix-dgram');
      const s = createRtNetlink();
      const rx = createSocket('unix_dgram', async (msg) => {
        const links = (await s.getLinks()).map((l) => l.attrs.ifname);
        const v4 = (await s.getAddresses()).filter((a) => a.data.family === 2).map((a) => [...a.attrs.address].join('.'));
        const routes = (await s.getRoutes()).filter((r) => r.data.family === 2).length;
        console.log(JSON.stringify({ arch: process.arch, datagram: msg.toString(), links, v4, routes: routes > 0 }));
        rx.close();
        s.socket.close();
      });
      rx.bind('/tmp/dgram.sock');
      const tx = createSocket('unix_dgram');
      tx.send(Buffer.from('hello'), 0, 5, '/tmp/dgram.sock', (err) => { if (err) throw err; tx.close(); });`);
    // IMDS: nothing listens there, so the probe fails at once instead of waiting for 169.254.169.254.
    writeFileSync(path.join(scratch, 'share', 'doctor-config.json'), JSON.stringify({ imds: { endpoint: 'http://127.0.0.1:9', timeoutMs: 500 } }));
    const out = await inRoot(arm64Root, 'arm64-root', [
      'set -e',
      '! command -v node',
      `dpkg -i /mnt/${path.basename(pkgs.debArm64)} >/dev/null`,
      'ec2netd --version',
      '/usr/lib/ec2netd/node/bin/node /mnt/dump.js',
      'rc=0; ec2netd doctor --json --config /mnt/doctor-config.json > /mnt/doctor.json || rc=$?; echo "doctor exit $rc"',
    ].join('\n'), { netns: NS, timeoutMs: 600_000 });
    const lines = out.trim().split('\n');
    expect(lines[0]).toMatch(/^ec2netd \d+\.\d+\.\d+$/);
    const dump = JSON.parse(lines[1] ?? '') as { arch: string; datagram: string; links: string[]; v4: string[]; routes: boolean };
    expect(dump).toEqual({ arch: 'arm64', datagram: 'hello', links: ['lo', 'eth8', 'eth7'], v4: ['10.9.8.7'], routes: true });
    // doctor ran to the end on arm64: JSON, the refused rule dump as its first finding, the other checks after it.
    expect(lines[2]).toBe('doctor exit 2');
    const doctor = JSON.parse(readFileSync(path.join(scratch, 'share', 'doctor.json'), 'utf8')) as { worst: string; findings: Array<{ check: string; severity: string; message: string }> };
    expect(doctor.findings[0]).toMatchObject({ check: 'kernel', severity: 'error' });
    expect(doctor.findings[0]?.message).toMatch(/rules/);
    expect(doctor.findings.map((f) => f.check)).toEqual(expect.arrayContaining(['daemon', 'imds']));
  }, 600_000);
});

describe('lintian', () => {
  it('reports no errors on the .debs', async () => {
    const r = await lintian;
    if (r === undefined) throw new Error('lintian did not run: the packages were not built');
    expect(r.output).not.toMatch(/^E: /m);
    expect(r.code, r.output).toBe(0);
  }, 900_000);
});
