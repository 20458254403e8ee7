// Ownership and process hygiene on the simulated instance (issue 9, bullets 5 and 6): flush refuses while a
// daemon runs, flush gives back the sysctls ec2netd changed, signals during start-up, SIGTERM during a sync.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { startMonitor } from '../../bench/inspect';
import { logMark, logSince, waitConverged, waitForLog } from '../helpers/daemon-watch';
import { runInNs } from '../helpers/netns';
import { eventually, ownedRules, routes, useSimulatedEc2 } from '../helpers/sim';
import { ipJson } from '../../sim/exec';

const OWNED = ['10100 from 10.0.1.20 lookup 10001'];
const SIGHUP_BIT = 1n << 0n;
const SIGTERM_BIT = 1n << 14n;

/**
 * Busy-waits (the window is short) until the process catches `bits` (SigCgt in /proc/<pid>/status, set once
 * node has a handler), and says whether it held the instance lock at that moment (its /proc/<pid>/net/unix
 * shows its own network namespace).
 */
function waitCaught(pid: number, bits: bigint): { lockHeld: boolean } {
  const deadline = Date.now() + 10_000;
  for (;;) {
    let status = '';
    try {
      status = readFileSync(`/proc/${pid}/status`, 'utf8');
    } catch {
      throw new Error(`process ${pid} is gone`);
    }
    const caught = BigInt(`0x${/^SigCgt:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0'}`);
    if ((caught & bits) === bits) return { lockHeld: readFileSync(`/proc/${pid}/net/unix`, 'utf8').includes('@ec2netd.instance') };
    if (Date.now() > deadline) throw new Error(`process ${pid} never caught signals ${bits.toString(16)}`);
  }
}

describe('ownership and process hygiene', () => {
  const sim = useSimulatedEc2('hygiene', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20'], deviceNumber: 1 },
    ],
    config: { sync: { pendingRetryBaseMs: 50 } },
  });

  // The kernel is often converged already (an earlier test's daemon left its routing in place), so `ec2netd plan`
  // alone can pass before this daemon runs any JavaScript: a signal sent then meets node's default action (a CI run
  // lost the daemon to a SIGHUP that way). Its 'ready' line comes after its first sync, signal handlers installed.
  const converged = async (): Promise<ManagedProcess> => {
    const daemon = sim().startDaemon();
    await waitConverged(sim());
    await waitForLog(daemon, 0, (l) => l.action === 'ready', 'the daemon ready');
    return daemon;
  };

  it('flush refuses (exit 75) while a daemon runs, naming its pid; --force flushes anyway; after a stop it flushes', async () => {
    const daemon = await converged();
    try {
      const refused = await sim().ec2netd(['flush']);
      expect(refused.code).toBe(75);
      expect(refused.stderr).toContain(`ec2netd is running in this network namespace (pid ${daemon.pid}): stop it first (systemctl stop ec2netd), or use --force`);
      expect(refused.stdout).toBe('');
      expect(await ownedRules(sim())).toEqual(OWNED);

      const forced = await sim().ec2netd(['flush', '--force']);
      expect(forced.code, forced.stderr).toBe(0);
      expect(forced.stdout).toContain('ip rule del');
      // The running daemon puts it back: why flush refuses by default.
      await eventually('the daemon restored its rule', async () => JSON.stringify(await ownedRules(sim())) === JSON.stringify(OWNED));
    } finally {
      await daemon.stop(5000);
    }
    expect(await daemon.exited).toBe(0);
    const flush = await sim().ec2netd(['flush']);
    expect(flush.code, flush.stderr).toBe(0);
    expect(await ownedRules(sim())).toEqual([]);
  });

  it('flush gives back the src_valid_mark ec2netd changed (recorded in stateDir), and deletes the record', async () => {
    const svm = async (): Promise<string> => (await sim().net.exec('host', ['cat', '/proc/sys/net/ipv4/conf/all/src_valid_mark'])).stdout.trim();
    const record = path.join(sim().workDir, 'state', 'sysctls.json');
    // A container bridge: ec2netd installs its mangle chain and sets src_valid_mark=1.
    await sim().net.exec('host', ['ip', 'link', 'add', 'docker0', 'type', 'bridge']);
    try {
      await sim().net.exec('host', ['ip', 'address', 'add', '172.17.0.1/16', 'dev', 'docker0']);
      await sim().net.exec('host', ['ip', 'link', 'set', 'docker0', 'up']);
      expect(await svm()).toBe('0');
      const daemon = await converged();
      await eventually('src_valid_mark set', async () => (await svm()) === '1');
      await daemon.stop(5000);
      // Only the first change is recorded (a restart finding 1 keeps the admin's 0): test/unit/iptables-sysctl.test.ts.
      expect(JSON.parse(readFileSync(record, 'utf8'))).toEqual({ 'net.ipv4.conf.all.src_valid_mark': '0' });

      const flush = await sim().ec2netd(['flush']);
      expect(flush.code, flush.stderr).toBe(0);
      expect(flush.stdout).toContain('sysctl -w net.ipv4.conf.all.src_valid_mark=0');
      expect(await svm()).toBe('0');
      expect(existsSync(record)).toBe(false);
    } finally {
      await sim().net.exec('host', ['ip', 'link', 'del', 'docker0']);
    }
  });

  describe('signals during a slow start (IMDS answers each request after 400 ms)', () => {
    it('SIGHUP before the daemon has even taken its lock: held, replayed as a reload; the daemon lives and converges', async () => {
      await sim().imds.setFault({ mode: 'slow', delayMs: 400 });
      const daemon = sim().startDaemon();
      try {
        // Handlers are in place before the first await: before the instance lock is taken.
        expect(waitCaught(daemon.pid, SIGHUP_BIT | SIGTERM_BIT)).toEqual({ lockHeld: false });
        process.kill(daemon.pid, 'SIGHUP');
        await eventually('the reload replayed after start', async () => daemon.output().stdout.includes('"action":"reload"') || daemon.hasExited());
        expect(daemon.hasExited(), daemon.output().stderr).toBe(false);
        const log = daemon.output().stdout;
        expect(log.indexOf('"action":"start"')).toBeLessThan(log.indexOf('"action":"reload"'));
        await sim().imds.setFault({ mode: 'ok' });
        await waitConverged(sim());
        expect(await ownedRules(sim())).toEqual(OWNED);
        expect(daemon.hasExited()).toBe(false);
      } finally {
        await sim().imds.setFault({ mode: 'ok' });
        await daemon.stop(5000);
      }
      expect(await daemon.exited).toBe(0);
    });

    it('SIGTERM during start-up: a clean stop (exit 0) once there is something to stop; the routing stays', async () => {
      await sim().imds.setFault({ mode: 'slow', delayMs: 400 });
      const daemon = sim().startDaemon();
      try {
        expect(waitCaught(daemon.pid, SIGHUP_BIT | SIGTERM_BIT)).toEqual({ lockHeld: false });
        process.kill(daemon.pid, 'SIGTERM');
        expect(await daemon.exited).toBe(0);
        expect(daemon.output().stdout).toContain('SIGTERM: stopping');
        expect(daemon.output().stdout).toContain('routing left in place');
        expect(await ownedRules(sim())).toEqual(OWNED);
      } finally {
        await sim().imds.setFault({ mode: 'ok' });
        await daemon.stop(5000);
      }
    });
  });

  it('a link dump still interrupted after its retries (and missing eth1) fails the sync: nothing of eth1\'s is deleted', async () => {
    // The daemon of the test before is stopped; the kernel holds eth1's rule and table; the sync below is the only writer.
    const before = await ownedRules(sim());
    expect(before).toContain('10100 from 10.0.1.20 lookup 10001');
    const [eth1] = await ipJson<Array<{ ifindex: number }>>(sim().net.ns.host, ['link', 'show', 'eth1']);
    const out = await runInNs(sim().net.ns.host, 'test/helpers/interrupted-dump-tool.ts', [sim().configPath, String(eth1?.ifindex)]);
    expect(JSON.parse(out.stdout)).toMatchObject({ error: 'EINTR' });
    expect(await ownedRules(sim())).toEqual(before);
    expect(await routes(sim(), 10001)).toHaveLength(2);
  });

  it('SIGTERM during a sync of 200 new addresses: the sync finishes before the process exits (nothing half done)', async () => {
    const ips = Array.from({ length: 200 }, (_, i) => `10.0.1.${30 + i}`);
    const daemon = await converged();
    const mon = await startMonitor(sim().net.ns.host, ['address', 'rule']);
    try {
      const mark = logMark(daemon);
      await sim().patchImdsEni('eth1', { ipv4s: ['10.0.1.20', ...ips] });
      daemon.child.kill('SIGHUP');
      // SIGTERM at the sync's first write.
      await eventually('the first write', async () => mon.lines().some((l) => /inet 10\.0\.1\.(3\d|[4-9]\d|1\d\d|2[0-2]\d)\//.test(l.text)));
      process.kill(daemon.pid, 'SIGTERM');
      expect(await daemon.exited).toBe(0);
      const said = logSince(daemon, mark).map((l) => l.msg);
      expect(said).toContain('stopping: waiting up to 5 s for the sync in flight');
      expect(said.indexOf('ec2netd stopped; routing left in place')).toBeGreaterThan(said.indexOf('stopping: waiting up to 5 s for the sync in flight'));
    } finally {
      await mon.stop();
      await daemon.stop(5000);
    }
    // Everything the sync set out to do is there, with no daemon running: the plan is empty.
    const plan = await sim().ec2netd(['plan']);
    expect(plan.code, plan.stdout).toBe(0);
    expect(await ownedRules(sim())).toHaveLength(1 + ips.length);
  });
});
