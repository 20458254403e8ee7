// Coexistence on a simulated instance: another manager's rules for eth1 (amazon-ec2-net-utils style) are
// never fought over; adopt takes over only once that tool is stopped, and only with evidence that it is installed;
// renames are followed by MAC.
// Everything lives in this file's namespaces and temporary root, removed even on failure.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { eventually, ownedRules, routes, rules, useSimulatedEc2, type IpRoute, type IpRule } from '../helpers/sim';

const root = mkdtempSync(path.join(tmpdir(), 'ec2netd-coexist-root-'));
const WRITES = new Set(['link-up', 'add-address', 'del-address', 'add-route', 'replace-route', 'del-route', 'add-rule', 'del-rule']);

/** Kernel writes the daemon logged (one JSON line per applied change, `action` = the change's op). */
function writes(daemon: ManagedProcess): { action: string; msg: string }[] {
  return daemon.output().stdout.split('\n').flatMap((line) => {
    try {
      const o = JSON.parse(line) as { action?: string; msg?: string };
      return o.action !== undefined && WRITES.has(o.action) ? [{ action: o.action, msg: o.msg ?? '' }] : [];
    } catch {
      return [];
    }
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('coexistence with another manager of eth1 (amazon-ec2-net-utils style)', () => {
  const sim = useSimulatedEc2('e2ecox', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20', '10.0.1.21'], deviceNumber: 1 },
    ],
    config: { sync: { pendingRetryBaseMs: 50 }, coexistence: { root } },
  });
  let daemon: ManagedProcess | undefined;
  const host = (argv: string[]) => sim().net.exec('host', argv);
  const foreignRules = async (): Promise<IpRule[]> => (await rules(sim())).filter((r) => r.protocol === 'static');
  const foreignRoutes = async (): Promise<IpRoute[]> => (await routes(sim(), 10001)).filter((r) => r.protocol === 'static');
  const setPolicy = (policy: string) => {
    const file = sim().configPath;
    const doc = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...doc, coexistence: { root, policy } }, null, 2));
  };
  const runtimeFile = path.join(root, 'run', 'systemd', 'network', '70-eth1.network');
  /** The evidence that the tool is installed: its unit file. */
  const unitFile = path.join(root, 'usr', 'lib', 'systemd', 'system', 'policy-routes@.service');

  afterAll(async () => {
    await daemon?.stop(3000);
    rmSync(root, { recursive: true, force: true });
  });

  it('plants the other tool\'s rule and table for eth1', async () => {
    await host(['ip', 'rule', 'add', 'from', '10.0.1.20', 'lookup', '10001', 'pref', '10001', 'proto', 'static']);
    await host(['ip', 'rule', 'add', 'from', '10.0.1.21', 'lookup', '10001', 'pref', '10001', 'proto', 'static']);
    await host(['ip', 'route', 'add', '10.0.1.0/24', 'dev', 'eth1', 'table', '10001', 'proto', 'static', 'scope', 'link']);
    await host(['ip', 'route', 'add', 'default', 'via', '10.0.1.1', 'dev', 'eth1', 'table', '10001', 'proto', 'static', 'onlink']);
    expect(await foreignRules()).toHaveLength(2);
    expect(await foreignRoutes()).toHaveLength(2);
  });

  it('refuse (default): the ENI is left alone, the other tool\'s objects untouched, no write, said loudly', async () => {
    const rulesBefore = await foreignRules();
    const routesBefore = await foreignRoutes();
    daemon = sim().startDaemon();
    await eventually('ready', async () => daemon?.output().stdout.includes('"action":"ready"') === true);
    // Several syncs: reloads and unrelated kernel events.
    for (let i = 0; i < 3; i++) {
      daemon.child.kill('SIGHUP');
      await host(['ip', 'rule', 'add', 'from', '192.0.2.1', 'lookup', '300', 'pref', '700']);
      await host(['ip', 'rule', 'del', 'pref', '700']);
      await sleep(700);
    }
    expect(await foreignRules()).toEqual(rulesBefore);
    expect(await foreignRoutes()).toEqual(routesBefore);
    expect(await ownedRules(sim())).toEqual([]);
    expect(writes(daemon)).toEqual([]);
    expect(daemon.output().stdout).toMatch(/eth1 \(eni-[0-9a-f]+, table 10001\): not configured: its sources or table are managed by amazon-ec2-net-utils/);
    const status = await sim().ec2netd(['status']);
    expect(status.stdout).toContain('conflict: eth1');
    expect((await sim().ec2netd(['plan'])).code).toBe(0);
  });

  it('adopt while the other tool is active: still hands off', async () => {
    mkdirSync(path.dirname(runtimeFile), { recursive: true });
    writeFileSync(runtimeFile, '[Match]\nName=eth1\n');
    mkdirSync(path.dirname(unitFile), { recursive: true });
    writeFileSync(unitFile, '[Service]\nExecStart=/usr/bin/setup-policy-routes %i start\n');
    await daemon?.stop(3000);
    setPolicy('adopt');
    daemon = sim().startDaemon();
    await eventually('ready', async () => daemon?.output().stdout.includes('"action":"ready"') === true);
    daemon.child.kill('SIGHUP');
    await sleep(1000);
    expect(await foreignRules()).toHaveLength(2);
    expect(await ownedRules(sim())).toEqual([]);
    expect(writes(daemon)).toEqual([]);
    expect(daemon.output().stdout).toContain('amazon-ec2-net-utils is still active (/run/systemd/network/70-eth1.network, /usr/lib/systemd/system/policy-routes@.service)');
  });

  it('adopt with no evidence that the tool is installed (only its table numbers): warns, deletes nothing', async () => {
    rmSync(runtimeFile);
    rmSync(unitFile);
    const rulesBefore = await foreignRules();
    const routesBefore = await foreignRoutes();
    // The daemon re-reads the other tools' files at most every 5 s; reloads until it says so.
    await eventually('no-evidence warning', async () => {
      daemon?.child.kill('SIGHUP');
      await sleep(500);
      return daemon?.output().stdout.includes('follow amazon-ec2-net-utils\'s conventions, but no file or unit of that tool is installed') === true;
    }, 20_000);
    expect(await foreignRules()).toEqual(rulesBefore);
    expect(await foreignRoutes()).toEqual(routesBefore);
    expect(await ownedRules(sim())).toEqual([]);
    expect(writes(daemon as ManagedProcess)).toEqual([]);
  });

  it('adopt once the tool is stopped (installed, not active): ec2netd\'s objects first, then the leftovers go; then nothing more', async () => {
    writeFileSync(unitFile, '[Service]\nExecStart=/usr/bin/setup-policy-routes %i start\n');
    // The daemon re-reads the other tools' files at most every 5 s; reloads until it sees the change.
    await eventually('adopted', async () => {
      daemon?.child.kill('SIGHUP');
      await sleep(500);
      return (await foreignRules()).length === 0 && (await ownedRules(sim())).length === 2;
    }, 20_000);
    expect(await ownedRules(sim())).toEqual(['10100 from 10.0.1.20 lookup 10001', '10100 from 10.0.1.21 lookup 10001']);
    expect(await routes(sim(), 10001)).toEqual([
      expect.objectContaining({ dst: 'default', gateway: '10.0.1.1', dev: 'eth1', protocol: '236' }),
      expect.objectContaining({ dst: '10.0.1.0/24', dev: 'eth1', protocol: '236' }),
    ]);
    const log = writes(daemon as ManagedProcess).map((w) => w.action);
    // Make-before-break: every deletion after every addition.
    expect(log.lastIndexOf('add-rule')).toBeLessThan(log.indexOf('del-rule'));
    expect(log.filter((a) => a === 'replace-route')).toHaveLength(2);
    const count = log.length;
    daemon?.child.kill('SIGHUP');
    await sleep(1000);
    expect(writes(daemon as ManagedProcess)).toHaveLength(count);
  });

  it('rename eth1 → ens6 while running: rules stay, routes come back on ens6, the mangle chain follows', async () => {
    await host(['ip', 'link', 'add', 'docker0', 'type', 'bridge']);
    try {
      await host(['ip', 'address', 'add', '172.17.0.1/16', 'dev', 'docker0']);
      await host(['ip', 'link', 'set', 'docker0', 'up']);
      const mangle = async () => (await host(['iptables-save', '-t', 'mangle'])).stdout;
      await eventually('chain for eth1', async () => (await mangle()).includes('-i eth1'));
      const before = await ownedRules(sim());
      await host(['ip', 'link', 'set', 'eth1', 'down']);
      await host(['ip', 'link', 'set', 'eth1', 'name', 'ens6']);
      await host(['ip', 'link', 'set', 'ens6', 'up']);
      await eventually('routes on ens6', async () => {
        const t = await routes(sim(), 10001);
        return t.some((r) => r.dst === 'default' && r.dev === 'ens6') && t.some((r) => r.dst === '10.0.1.0/24' && r.dev === 'ens6');
      });
      expect(await ownedRules(sim())).toEqual(before);
      await eventually('chain for ens6', async () => { const m = await mangle(); return m.includes('-i ens6') && !m.includes('-i eth1'); });
    } finally {
      await host(['ip', 'link', 'del', 'docker0']).catch(() => undefined);
    }
  });
});
