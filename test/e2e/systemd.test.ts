// ec2netd as a real systemd service: the amd64 .deb installed with `apt install ./ec2netd_*.deb` in a stock
// bookworm container with no Node.js at all, whose PID 1 is systemd (systemd-nspawn, test/helpers/nspawn.ts),
// joined to the network namespace of a simulated EC2 instance (sim/ec2.ts) with the IMDS simulator
// answering on 169.254.169.254.
//
// Part 1 needs only the package: a probe unit whose main process (the package's own runtime) uses
// src/systemd (sd_notify and journald logging) proves READY / STATUS / RELOADING / WATCHDOG from the main
// PID and the structured journal fields. Part 2 drives the daemon itself through systemctl: it configures
// eth1 so a client is answered. Part 3 upgrades the package (an older version of this checkout's to the
// current one): the edited config stays, the daemon restarts, the routing never goes away.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../sim/exec';
import { startSimulatedEc2, type SimulatedEc2 } from '../../sim/ec2';
import { startTcpServer, waitForTcp, type TcpServer } from '../../sim/probe';
import { bootContainer, buildPackages, buildPreviousDeb, ensureRootfs, type Container } from '../helpers/nspawn';
import { flowPort } from '../helpers/sim';

const REPO = path.resolve(__dirname, '..', '..');
const SHARE = '/opt/ec2netd-test';
const PORT = 8080;
const VERSION = (JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const PREVIOUS = `${VERSION}~prev`;

const PROBE = `'use strict';
// Test probe: a notify service whose main process is node, using ec2netd's systemd modules (from the installed
// bundle, the code the daemon runs: src/bundle.ts).
const { createNotifier, createLogger } = require('/usr/lib/ec2netd/dist/ec2netd.js');
const log = createLogger('debug');
const n = createNotifier({ onWarning: (m) => log.warn(m) });
log.info({ eni: 'eni-0probe', iface: 'eth9', table: 10009, action: 'probe' }, 'probe started');
log.warn({ eni: 'eni-0probe' }, 'probe warning\\nsecond line');
log.debug('probe debug');
const every = n.watchdogIntervalMs();
if (every !== undefined) setInterval(() => n.watchdog(), every);
setTimeout(() => n.ready('probe ready'), 300);
process.on('SIGHUP', () => { n.reloading('probe reloading'); setTimeout(() => n.ready('probe reloaded'), 200); });
process.on('SIGTERM', () => { n.stopping('probe stopping'); process.exit(0); });
`;

const PROBE_UNIT = `[Unit]
Description=ec2netd notify probe
[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/lib/ec2netd/node/bin/node ${SHARE}/probe.js
ExecReload=/bin/kill -HUP $MAINPID
WatchdogSec=2s
Restart=on-failure
RestartSec=200ms
`;

// Short watchdog for the test; everything else as packaged.
const DAEMON_DROPIN = `[Service]
WatchdogSec=3s
RestartSec=500ms
`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let sim: SimulatedEc2 | undefined;
let box: Container | undefined;
let share: string | undefined;
let server: TcpServer | undefined;
const timings: Record<string, number> = {};

function c(): Container {
  if (box === undefined) throw new Error('no container');
  return box;
}

async function show(unit: string): Promise<Record<string, string>> {
  const out = await c().check(['systemctl', 'show', unit, '-p', 'ActiveState,SubState,StatusText,MainPID,NRestarts,Result']);
  return Object.fromEntries(out.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

async function journal(args: string[]): Promise<Array<Record<string, string>>> {
  const out = await c().check(['journalctl', '--no-pager', '-o', 'json', ...args]);
  return out.trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, string>);
}

/** `ip rule` of the instance (the container shares its network namespace). */
async function rules(): Promise<string> {
  return (await run(['ip', '-n', sim?.net.ns.host ?? '', 'rule', 'show'])).stdout;
}

beforeAll(async () => {
  let t = Date.now();
  const rootfs = await ensureRootfs();
  timings.rootfsMs = Date.now() - t;
  if (!existsSync(path.join(REPO, 'dist', 'sim', 'imds-server.js'))) await run(['npx', 'tsc', '-p', 'tsconfig.json'], { cwd: REPO, timeoutMs: 120_000 });
  share = mkdtempSync(path.join(tmpdir(), 'ec2netd-e2e-systemd-'));
  t = Date.now();
  copyFileSync((await buildPackages()).debAmd64, path.join(share, 'ec2netd_current.deb'));
  copyFileSync(await buildPreviousDeb(PREVIOUS, path.join(share, 'previous')), path.join(share, 'ec2netd_previous.deb'));
  timings.packagesMs = Date.now() - t;
  writeFileSync(path.join(share, 'probe.js'), PROBE);
  sim = await startSimulatedEc2({
    prefix: 'e2esd',
    // The client's server listens on eth1's address before ec2netd (dhcp on EC2) puts it there.
    hostSysctls: { 'net.ipv4.ip_nonlocal_bind': '1' },
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20', '10.0.1.21'], deviceNumber: 1 },
    ],
  });
  t = Date.now();
  box = await bootContainer({ name: 'ec2netd-e2e', rootfs, netns: sim.net.ns.host, binds: [[share, SHARE]] });
  timings.bootMs = Date.now() - t;
  server = await startTcpServer(sim.net.ns.host, '10.0.1.20', PORT);
}, 1_200_000); // a fresh machine builds the Debian root first (137 s here, idle)

afterAll(async () => {
  // Each step on its own: a failure in one must not leave the others behind.
  await box?.stop().catch(() => undefined);
  await server?.stop().catch(() => undefined);
  await sim?.destroy().catch(() => undefined);
  if (share !== undefined) rmSync(share, { recursive: true, force: true });
  console.log(`systemd e2e timings: ${JSON.stringify(timings)}`);
}, 60_000);

describe('src/systemd in a notify unit under real systemd', () => {
  it('installs the package with apt in a root without Node.js, and it runs on its own runtime', async () => {
    expect((await c().exec(['sh', '-c', 'command -v node || dpkg-query -W nodejs'])).code).not.toBe(0);
    // The package's postinst enables and starts ec2netd: keep it from starting until part 2.
    await c().check(['sh', '-c', 'mkdir -p /etc/systemd/system/ec2netd.service.d && cat >/etc/systemd/system/ec2netd.service.d/test.conf'], { input: DAEMON_DROPIN });
    await c().check(['sh', '-c', 'printf "#!/bin/sh\\nexit 101\\n" >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d']);
    await c().check(['apt-get', 'install', '-y', `${SHARE}/ec2netd_previous.deb`], { timeoutMs: 120_000 });
    await c().check(['rm', '/usr/sbin/policy-rc.d']);
    expect((await c().exec(['systemctl', 'is-enabled', 'ec2netd'])).stdout.trim()).toBe('enabled');
    expect(await c().check(['ec2netd', '--version'])).toBe(`ec2netd ${VERSION}\n`);
    expect((await c().exec(['sh', '-c', 'command -v node'])).code).not.toBe(0);
  });

  it('the unit is sandboxed: systemd-analyze security exposure stays low', async () => {
    const out = await c().check(['systemd-analyze', 'security', '--no-pager', 'ec2netd.service']);
    const score = Number(/Overall exposure level for ec2netd\.service: ([0-9.]+)/.exec(out)?.[1]);
    timings.exposure = score;
    expect(score).toBeLessThanOrEqual(2.5); // docs/operations.md records the current value
  });

  it('start returns after READY=1 and STATUS shows', async () => {
    await c().check(['sh', '-c', 'cat >/etc/systemd/system/probe.service && systemctl daemon-reload'], { input: PROBE_UNIT });
    const t = Date.now();
    await c().check(['systemctl', 'start', 'probe'], { timeoutMs: 20_000 });
    expect(Date.now() - t).toBeGreaterThanOrEqual(300);
    expect(await show('probe')).toMatchObject({ ActiveState: 'active', SubState: 'running', StatusText: 'probe ready' });
    expect((await c().check(['systemctl', 'status', 'probe', '--no-pager'])).split('\n')).toContain('     Status: "probe ready"');
  });

  it('reload goes through RELOADING=1 back to READY=1', async () => {
    await c().check(['systemctl', 'reload', 'probe'], { timeoutMs: 20_000 });
    await until('probe reloaded', async () => ((await show('probe')).StatusText === 'probe reloaded' ? true : undefined), 5000);
    expect((await show('probe')).ActiveState).toBe('active');
  });

  it('watchdog pings keep it alive; a stopped process is killed and restarted', async () => {
    const before = await show('probe');
    await sleep(3000); // > WatchdogSec=2s
    expect(await show('probe')).toMatchObject({ ActiveState: 'active', MainPID: before.MainPID });
    expect(before.MainPID).toMatch(/^[1-9]\d*$/); // `kill -STOP 0` would stop the test runner's process group
    await c().check(['kill', '-STOP', before.MainPID ?? '']);
    const after = await until('a restarted probe', async () => {
      const s = await show('probe');
      return s.MainPID !== before.MainPID && s.MainPID !== '0' && s.SubState === 'running' ? s : undefined;
    }, 15_000);
    expect(Number(after.NRestarts)).toBeGreaterThanOrEqual(1);
    const messages = (await journal(['-u', 'probe'])).map((e) => e.MESSAGE);
    expect(messages.some((m) => /Watchdog timeout/.test(m ?? ''))).toBe(true);
  });

  it('journald gets structured fields with priorities', async () => {
    const entries = await journal(['-u', 'probe', 'SYSLOG_IDENTIFIER=ec2netd']);
    const started = entries.find((e) => e.MESSAGE?.startsWith('probe started'));
    expect(started).toMatchObject({ PRIORITY: '6', ENI_ID: 'eni-0probe', INTERFACE: 'eth9', TABLE: '10009', ACTION: 'probe' });
    expect(entries.find((e) => e.MESSAGE?.startsWith('probe warning'))).toMatchObject({ PRIORITY: '4', MESSAGE: 'probe warning\nsecond line eni=eni-0probe' });
    expect(entries.find((e) => e.MESSAGE === 'probe debug')).toMatchObject({ PRIORITY: '7' });
    const warnings = await journal(['-u', 'probe', '-p', 'warning', 'SYSLOG_IDENTIFIER=ec2netd']);
    expect(warnings.length).toBeGreaterThan(0);
    for (const e of warnings) expect(Number(e.PRIORITY)).toBeLessThanOrEqual(4);
    await c().check(['systemctl', 'stop', 'probe']);
  });
});

describe('ec2netd.service', () => {
  it('systemctl start returns after the routing is in place', async () => {
    const t = Date.now();
    await c().check(['systemctl', 'start', 'ec2netd'], { timeoutMs: 60_000 });
    timings.startMs = Date.now() - t;
    const s = await show('ec2netd');
    expect(s).toMatchObject({ ActiveState: 'active', SubState: 'running' });
    expect(s.StatusText).toMatch(/2 ENIs configured/);
    const r = await rules();
    expect(r).toMatch(/from 10\.0\.1\.20 lookup 10001/);
    expect(r).toMatch(/from 10\.0\.1\.21 lookup 10001/);
    expect(await c().check(['systemctl', 'status', 'ec2netd', '--no-pager'])).toMatch(/Status: ".*ENIs configured/);
  });

  it('a client is answered on eth1', async () => {
    expect((await waitForTcp(sim?.net.ns.client ?? '', '10.0.1.20', PORT, { srcPort: flowPort(), deadlineMs: 8000 })).ok).toBe(true);
  });

  it('reload re-reads IMDS: a newly assigned secondary IP gets its rule', async () => {
    await sim?.assignIp('eth1', '10.0.1.22');
    await c().check(['systemctl', 'reload', 'ec2netd'], { timeoutMs: 30_000 });
    await until('the rule of 10.0.1.22', async () => (/from 10\.0\.1\.22 lookup 10001/.test(await rules()) ? true : undefined), 10_000);
    expect((await show('ec2netd')).ActiveState).toBe('active');
  });

  it('the watchdog restarts a stalled daemon, which converges again', async () => {
    const before = await show('ec2netd');
    await sleep(4000); // > WatchdogSec=3s: the loop's pings keep it alive
    expect((await show('ec2netd')).MainPID).toBe(before.MainPID);
    expect(before.MainPID).toMatch(/^[1-9]\d*$/); // `kill -STOP 0` would stop the test runner's process group
    await c().check(['kill', '-STOP', before.MainPID ?? '']);
    const after = await until('a restarted ec2netd', async () => {
      const s = await show('ec2netd');
      return s.MainPID !== before.MainPID && s.MainPID !== '0' && s.SubState === 'running' ? s : undefined;
    }, 30_000);
    expect(after.StatusText).toMatch(/ENIs configured/);
    const messages = (await journal(['-u', 'ec2netd'])).map((e) => e.MESSAGE ?? '');
    expect(messages.some((m) => m.includes('Watchdog timeout'))).toBe(true);
  });

  it('the journal has structured fields, and -p warning holds only problems', async () => {
    const entries = await journal(['-u', 'ec2netd', 'SYSLOG_IDENTIFIER=ec2netd']);
    expect(entries.length).toBeGreaterThan(0);
    for (const e of entries) expect(e.PRIORITY).toMatch(/^[2-7]$/);
    expect(entries.some((e) => /^eni-[0-9a-f]+$/.test(e.ENI_ID ?? ''))).toBe(true);
    const problems = await journal(['-u', 'ec2netd', '-p', 'warning']);
    for (const e of problems) expect(Number(e.PRIORITY)).toBeLessThanOrEqual(4);
    // For the reader of the test output: a sandbox setting that breaks something shows up here.
    console.log(`ec2netd warnings in the journal:\n${problems.map((e) => `  <${e.PRIORITY}> ${e.MESSAGE}`).join('\n')}`);
  });

  it('systemctl stop leaves the routing in place', async () => {
    await c().check(['systemctl', 'stop', 'ec2netd'], { timeoutMs: 30_000 });
    expect((await show('ec2netd')).ActiveState).toBe('inactive');
    const r = await rules();
    expect(r).toMatch(/from 10\.0\.1\.20 lookup 10001/);
    expect(r).toMatch(/from 10\.0\.1\.22 lookup 10001/);
  });
});

describe('upgrade to the current package', () => {
  it('keeps the edited config, restarts the daemon, and the routing stays in place throughout', async () => {
    await c().check(['systemctl', 'start', 'ec2netd'], { timeoutMs: 60_000 });
    await c().check(['sed', '-i', 's/"level": "info"/"level": "debug"/', '/etc/ec2netd/config.json']);
    const edited = await c().check(['cat', '/etc/ec2netd/config.json']);
    expect(edited).toContain('"level": "debug"');
    const before = await show('ec2netd');

    // Samples the instance's rules while apt replaces the package and the daemon restarts.
    let upgrading = true;
    const samples: string[] = [];
    const sampler = (async () => {
      while (upgrading) {
        samples.push(await rules());
        await sleep(50);
      }
    })();
    const t = Date.now();
    const apt = await c().exec(['apt-get', 'install', '-y', `${SHARE}/ec2netd_current.deb`], { timeoutMs: 120_000 });
    upgrading = false;
    await sampler;
    timings.upgradeMs = Date.now() - t;
    expect(apt.code, apt.stdout + apt.stderr).toBe(0);

    expect((await c().check(['dpkg-query', '-W', '-f', '${Version}', 'ec2netd'])).trim()).toBe(VERSION);
    expect(await c().check(['cat', '/etc/ec2netd/config.json'])).toBe(edited);
    const after = await until('the restarted daemon ready', async () => {
      const s = await show('ec2netd');
      return s.MainPID !== before.MainPID && s.SubState === 'running' && /ENIs configured/.test(s.StatusText ?? '') ? s : undefined;
    }, 30_000);
    expect(after.ActiveState).toBe('active');
    expect(samples.length).toBeGreaterThan(0);
    for (const r of samples) expect(r).toMatch(/from 10\.0\.1\.20 lookup 10001/);
    expect((await waitForTcp(sim?.net.ns.client ?? '', '10.0.1.20', PORT, { srcPort: flowPort(), deadlineMs: 8000 })).ok).toBe(true);
  });
});
