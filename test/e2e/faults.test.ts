// Faults on a simulated instance: IMDS failing in every way it can, hostile IMDS values, other tools removing
// ec2netd's objects, two daemons at once. The invariant throughout: the last good state stays in force, nothing
// invalid reaches the kernel, and what others remove comes back exactly (compared as whole-namespace snapshots).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { simMac } from '../../sim/topology';
import { kernelSnapshot, snapshotDiff, startMonitor, waitQuiet, type KernelSnapshot } from '../../bench/inspect';
import { eventually, ownedRules, useSimulatedEc2 } from '../helpers/sim';
import { logMark, logSince, waitConverged, waitForLog, waitSnapshot, type LogLine } from '../helpers/daemon-watch';

const ETH1_MAC = simMac(0x101);
const ENI_PATH = `/latest/meta-data/network/interfaces/macs/${ETH1_MAC}/`;
const IMDS_TIMEOUT_MS = 2000;

const failed = (l: LogLine): boolean => l.msg.startsWith('IMDS read failed, keeping the last good state');
const recovered = (l: LogLine): boolean => l.msg === 'IMDS answers again';
/** A bad value in one ENI's keys holds that ENI (or that part of it) on its last good read; the read goes on. */
const held = (l: LogLine): boolean => l.msg.includes('held on its last good IMDS read');
const consistent = (l: LogLine): boolean => l.msg.includes('IMDS is consistent again');

describe('ec2netd under faults', () => {
  const sim = useSimulatedEc2('faults', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10', '10.0.1.11'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20', '10.0.1.21'], deviceNumber: 1, ipv4Prefixes: ['10.0.1.64/28'] },
    ],
    config: {
      // The simulator's config overlay replaces whole sections: the endpoint is repeated here.
      imds: { endpoint: 'http://169.254.169.254', refreshIntervalMs: 600_000, timeoutMs: IMDS_TIMEOUT_MS, attempts: 2, backoffBaseMs: 20, backoffMaxMs: 100 },
      sync: { pendingRetryBaseMs: 50 },
    },
  });
  let daemon: ManagedProcess;
  let good: KernelSnapshot;

  /** SIGHUP and wait for the IMDS read it causes to fail; returns the failure's log line. */
  // Each takes a mark from before the fault was set: the daemon may read IMDS before the SIGHUP (a retry of an ENI
  // it follows) and says each cause once.
  const reloadExpectingFailure = async (what: string, mark = logMark(daemon)): Promise<LogLine> => {
    daemon.child.kill('SIGHUP');
    return waitForLog(daemon, mark, failed, what, 4 * IMDS_TIMEOUT_MS + 2000);
  };
  /** SIGHUP and wait for the held ENI's log line. */
  const reloadExpectingHold = async (what: string, mark = logMark(daemon)): Promise<LogLine> => {
    daemon.child.kill('SIGHUP');
    return waitForLog(daemon, mark, held, what, 4 * IMDS_TIMEOUT_MS + 2000);
  };
  /** Clears faults and overrides, SIGHUP, waits for "IMDS answers again" (or "consistent again") and the good state. */
  const recover = async (after: 'read' | 'eni' = 'read'): Promise<void> => {
    const mark = logMark(daemon);
    await sim().imds.setFault({ mode: 'ok' });
    await sim().patchImdsEni('eth1', { override: {} });
    daemon.child.kill('SIGHUP');
    await waitForLog(daemon, mark, after === 'read' ? recovered : consistent, after === 'read' ? 'IMDS answers again' : 'IMDS consistent again',
      4 * IMDS_TIMEOUT_MS + 2000);
    await waitSnapshot(sim(), good, 'after IMDS recovered');
  };
  const expectGood = async (what: string): Promise<void> => {
    expect(snapshotDiff(good, await kernelSnapshot(sim().net.ns.host)), what).toEqual([]);
    expect(daemon.hasExited(), `${what}: daemon still running`).toBe(false);
  };

  beforeAll(async () => {
    daemon = sim().startDaemon();
    await waitConverged(sim());
    good = await kernelSnapshot(sim().net.ns.host);
  });
  afterAll(async () => {
    await daemon.stop(3000);
  });

  describe('IMDS failing', () => {
    it('hang: the event path keeps repairing while a read hangs; the read times out; nothing is removed', async () => {
      await sim().imds.resetStats();
      await sim().imds.setFault({ mode: 'hang' });
      const mark = logMark(daemon);
      daemon.child.kill('SIGHUP');
      await eventually('a read is hanging', async () => (await sim().imds.stats()).log.some((e) => e.status === 'hang'));
      await sim().net.exec('host', ['ip', 'rule', 'del', 'from', '10.0.1.21', 'lookup', '10001', 'pref', '10100']);
      await waitSnapshot(sim(), good, 'rule restored while IMDS hangs');
      // The repair did not wait for IMDS: the read that hangs has not even failed yet.
      expect(logSince(daemon, mark).filter(failed)).toEqual([]);
      const line = await waitForLog(daemon, mark, failed, 'timeout logged', 4 * IMDS_TIMEOUT_MS + 2000);
      expect(line.msg).toMatch(new RegExp(`no answer within ${IMDS_TIMEOUT_MS} ms after 2 attempts`));
      await expectGood('after the timeout');
      await recover();
    });

    it('hang while a new ENI-like link appears: its read hangs, and a rule deleted with it is still repaired at once', async () => {
      // The sync a new link's event asks for waits for that link's IMDS read, but only briefly (daemon.ts
      // NEW_LINK_HOLD_MS): a hanging IMDS must not hold kernel repairs until the read times out.
      await sim().imds.resetStats();
      await sim().imds.setFault({ mode: 'hang' });
      const mark = logMark(daemon);
      try {
        await sim().net.exec('host', ['ip', '-batch', '-'], {
          input: 'link add nx0 type veth peer name nx0p\nrule del from 10.0.1.21 lookup 10001 pref 10100\n',
        });
        await eventually('the new link read is hanging', async () => (await sim().imds.stats()).log.some((e) => e.status === 'hang'));
        await eventually('rule of 10.0.1.21 back', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.21 lookup 10001'), 1500);
        // Back while the read still hangs: it has not failed yet.
        expect(logSince(daemon, mark).filter(failed)).toEqual([]);
        await waitForLog(daemon, mark, failed, 'the hanging read timed out', 4 * IMDS_TIMEOUT_MS + 2000);
      } finally {
        await sim().net.exec('host', ['ip', 'link', 'del', 'nx0']);
      }
      await recover();
    });

    it('5xx for good: the failure is logged with the status, the last good state stays', async () => {
      await sim().imds.setFault({ mode: 'status', code: 503 });
      const line = await reloadExpectingFailure('503 logged');
      expect(line.msg).toContain('HTTP 503 after 2 attempts');
      await expectGood('IMDS answering 503');
      await recover();
    });

    it('one 5xx, then a retry that succeeds: a change in IMDS is applied, no failure is logged', async () => {
      await sim().assignIp('eth1', '10.0.1.22');
      await sim().imds.setFault({ mode: 'status', code: 500, count: 1 });
      const mark = logMark(daemon);
      daemon.child.kill('SIGHUP');
      await eventually('10.0.1.22 configured', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.22 lookup 10001'));
      expect(logSince(daemon, mark).filter(failed)).toEqual([]);
      expect((await sim().imds.stats()).faults).toBeGreaterThanOrEqual(1);
    });

    it('401 mid-run (tokens expired): a fresh token is fetched and the read succeeds', async () => {
      await sim().imds.resetStats();
      await sim().imds.expireTokens();
      await sim().unassignIp('eth1', '10.0.1.22');
      const mark = logMark(daemon);
      daemon.child.kill('SIGHUP');
      await eventually('10.0.1.22 removed', async () => !(await ownedRules(sim())).some((r) => r.includes('10.0.1.22')));
      const stats = await sim().imds.stats();
      expect(stats.unauthorized).toBeGreaterThanOrEqual(1);
      expect(stats.tokenPuts).toBeGreaterThanOrEqual(1);
      expect(logSince(daemon, mark).filter(failed)).toEqual([]);
      await waitSnapshot(sim(), good, 'back to the original IPs');
    });

    it('connection reset once: retried and applied; reset for good: logged as ECONNRESET, state kept', async () => {
      await sim().assignIp('eth1', '10.0.1.23');
      await sim().imds.setFault({ mode: 'reset', count: 1 });
      const mark = logMark(daemon);
      daemon.child.kill('SIGHUP');
      await eventually('10.0.1.23 configured', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.23 lookup 10001'));
      expect(logSince(daemon, mark).filter(failed)).toEqual([]);
      await sim().unassignIp('eth1', '10.0.1.23');
      await sim().imds.setFault({ mode: 'reset' });
      const line = await reloadExpectingFailure('reset logged');
      expect(line.msg).toContain('ECONNRESET');
      // IMDS stopped listing 10.0.1.23 but could not say so: the last good state (with it) stays.
      expect(await ownedRules(sim())).toContain('10100 from 10.0.1.23 lookup 10001');
      expect(daemon.hasExited()).toBe(false);
      await recover();
    });

    it('slow answers within the timeout: the read succeeds and its change is applied', async () => {
      await sim().assignIp('eth1', '10.0.1.24');
      await sim().imds.setFault({ mode: 'slow', delayMs: IMDS_TIMEOUT_MS / 10 });
      try {
        const mark = logMark(daemon);
        daemon.child.kill('SIGHUP');
        await eventually('10.0.1.24 configured', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.24 lookup 10001'), 20_000);
        expect(logSince(daemon, mark).filter(failed)).toEqual([]);
      } finally {
        await sim().imds.setFault({ mode: 'ok' });
      }
      await sim().unassignIp('eth1', '10.0.1.24');
      daemon.child.kill('SIGHUP');
      await waitSnapshot(sim(), good, 'back to the original IPs');
    });
  });

  // A bad value in one ENI's keys holds that ENI (or that part of it) on its last good read, named with its path;
  // a body the client refuses (too large, not UTF-8) fails the read as a whole. Either way: nothing written.
  describe('hostile IMDS values: no crash, no kernel write, last good state kept, the path named', () => {
    const many = Array.from({ length: 1000 }, (_, i) => `10.0.1.${(i % 200) + 20}`).join('\n');
    const manyMacs = Array.from({ length: 1000 }, (_, i) => `${simMac(0x1000 + i)}/`).join('\n');
    const cases: Array<{ name: string; key: string; override?: string; fault?: { pathRegex: string; body: string; encoding?: 'base64' }; says: RegExp }> = [
      { name: 'not an address', key: 'local-ipv4s', override: '10.0.1.20\n10.0.1.300', says: /not an IPv4 address/ },
      { name: 'an IPv6 address among IPv4s', key: 'local-ipv4s', override: '10.0.1.20\n::1', says: /not an IPv4 address/ },
      { name: 'an address outside the subnet', key: 'local-ipv4s', override: '10.0.1.20\n10.9.9.9', says: /outside the subnet/ },
      { name: 'a huge list', key: 'local-ipv4s', override: many, says: /list has 1000 entries, more than 256/ },
      { name: 'shell metacharacters', key: 'local-ipv4s', override: '10.0.1.20\n$(ip rule flush)', says: /not an IPv4 address/ },
      { name: 'backticks and a semicolon', key: 'local-ipv4s', override: '10.0.1.20;`reboot`', says: /not an IPv4 address/ },
      { name: 'iptables arguments in an address', key: 'local-ipv4s', override: '10.0.1.20 -j ACCEPT', says: /not an IPv4 address/ },
      { name: 'iptables arguments in a prefix', key: 'ipv4-prefix', override: '10.0.1.64/28 --set-xmark 0x1/0xffffffff', says: /not an IPv4 CIDR/ },
      { name: 'an iptables rule in the subnet', key: 'subnet-ipv4-cidr-block', override: '10.0.1.0/24\n-A PREROUTING -j DROP', says: /not an IPv4 CIDR/ },
      { name: 'a subnet too large', key: 'subnet-ipv4-cidr-block', override: '10.0.0.0/8', says: /prefix length must be/ },
      { name: 'a command in the interface id', key: 'interface-id', override: 'eni-0a1b; iptables -F', says: /not an ENI id/ },
      { name: 'a device number out of range', key: 'device-number', override: '99999', says: /not an integer from 0 to 255/ },
      { name: 'a device number with arguments', key: 'device-number', override: '1 table main', says: /not an integer/ },
      { name: 'a network card in hex', key: 'network-card', override: '0x1', says: /not an integer/ },
      { name: 'a megabyte body', key: 'local-ipv4s', fault: { pathRegex: `${ENI_PATH}local-ipv4s$`, body: '10.0.1.20\n'.repeat(104_858) }, says: /body larger than 65536 bytes/ },
      { name: 'bytes that are not UTF-8', key: 'local-ipv4s', fault: { pathRegex: `${ENI_PATH}local-ipv4s$`, body: Buffer.from([0x31, 0x30, 0xff, 0xfe, 0x0a]).toString('base64'), encoding: 'base64' }, says: /not UTF-8/ },
    ];

    for (const c of cases) {
      it(`${c.name} (${c.key})`, async () => {
        const mon = await startMonitor(sim().net.ns.host);
        try {
          const mark = logMark(daemon);
          if (c.override !== undefined) await sim().patchImdsEni('eth1', { override: { [c.key]: c.override } });
          if (c.fault !== undefined) await sim().imds.setFault({ mode: 'body', ...c.fault });
          const scope = c.override !== undefined ? 'eni' : 'read';
          const line = scope === 'eni' ? await reloadExpectingHold(c.name, mark) : await reloadExpectingFailure(c.name, mark);
          expect(line.msg).toContain(`${ENI_PATH}${c.key}`);
          expect(line.msg).toMatch(c.says);
          // Nothing written: the reload's full resync, planned from the last good snapshot, finds nothing to do.
          await waitQuiet(mon, 200, 3000);
          expect(mon.lines().map((l) => l.text)).toEqual([]);
          await expectGood(c.name);
        } finally {
          await mon.stop();
        }
        await recover(c.override !== undefined ? 'eni' : 'read');
      });
    }

    it('a MAC listing of 1000 entries', async () => {
      await sim().imds.setFault({ mode: 'body', pathRegex: '/macs/$', body: manyMacs });
      const line = await reloadExpectingFailure('listing refused');
      expect(line.msg).toContain('/latest/meta-data/network/interfaces/macs/');
      expect(line.msg).toMatch(/list has 1000 entries, more than 256/);
      await expectGood('huge listing');
      await recover();
    });

    it('a listing entry that climbs out of the tree', async () => {
      await sim().imds.setFault({ mode: 'body', pathRegex: '/macs/$', body: `${simMac(0x100)}/\n../../../etc/passwd/` });
      const line = await reloadExpectingFailure('entry refused');
      expect(line.msg).toContain('/latest/meta-data/network/interfaces/macs/');
      expect(line.msg).toMatch(/not a MAC address/);
      await expectGood('hostile listing');
      await recover();
    });
  });

  describe('other tools removing what ec2netd owns', () => {
    const ownedPrefs = async (): Promise<number[]> =>
      [...new Set((await kernelSnapshot(sim().net.ns.host)).rules
        .filter((l) => /\bproto 236\b/.test(l)).map((l) => Number(l.split(':')[0])))];
    const deleteAllRulesByPref = async (): Promise<string[]> => {
      const lines: string[] = [];
      for (const pref of await ownedPrefs()) {
        const n = good.rules.filter((l) => l.startsWith(`${pref}:`)).length;
        for (let i = 0; i < n; i++) lines.push(`rule del pref ${pref}`);
      }
      return lines;
    };
    const batch = (lines: string[]) => sim().net.exec('host', ['ip', '-batch', '-'], { input: `${lines.join('\n')}\n` });

    it('all of its rules deleted by pref: restored exactly', async () => {
      const lines = await deleteAllRulesByPref();
      expect(lines.length).toBeGreaterThanOrEqual(3);
      await batch(lines);
      await waitSnapshot(sim(), good, 'rules restored');
    });

    it('its routing table flushed: restored exactly', async () => {
      await sim().net.exec('host', ['ip', 'route', 'flush', 'table', '10001']);
      await waitSnapshot(sim(), good, 'table 10001 restored');
    });

    it('its addresses flushed (and the routes that used them): restored exactly', async () => {
      await sim().net.exec('host', ['ip', '-4', 'address', 'flush', 'dev', 'eth1']);
      await sim().net.exec('host', ['ip', 'address', 'del', '10.0.1.11/24', 'dev', 'eth0']);
      await waitSnapshot(sim(), good, 'addresses restored');
    });

    it('rules, routes and addresses removed in one burst, and the ENI link set down: restored exactly', async () => {
      await batch([...(await deleteAllRulesByPref()), 'route flush table 10001', 'address flush dev eth1', 'link set eth1 down']);
      await waitSnapshot(sim(), good, 'everything restored');
      expect((await sim().ec2netd(['plan'])).code).toBe(0);
    });
  });

  describe('a link IMDS does not know', () => {
    it('retried with backoff while it is there; deleted while a retry waits: the retry is dropped', async () => {
      const listings = async (): Promise<number> => (await sim().imds.stats()).log
        .filter((e) => e.method === 'GET' && e.path.endsWith('/network/interfaces/macs/')).length;
      await sim().imds.resetStats();
      await sim().net.exec('host', ['ip', 'link', 'add', 'gh0', 'address', '02:0e:c2:00:0d:01', 'type', 'veth', 'peer', 'name', 'gh0p']);
      try {
        // The first read and four retries (after 50, 100, 200 and 400 ms): the next one is 800 ms away.
        await eventually('five reads of the MAC listing for the unknown link', async () => (await listings()) >= 5);
      } finally {
        await sim().net.exec('host', ['ip', 'link', 'del', 'gh0']);
      }
      const reads = await listings();
      await new Promise((r) => setTimeout(r, 2500));
      // Nothing left to wait for: no read for a link that is gone.
      expect(await listings()).toBe(reads);
      expect(daemon.hasExited()).toBe(false);
    });

    it('a burst of 40 new links: one read asks for its keys with the listing, the others the listing first', async () => {
      // Asking an ENI's keys beside the listing saves a hot attach a round trip, and costs 7 requests where the
      // listing alone is 1: in a storm of links IMDS does not know, that was twice the daemon's CPU.
      const macs = Array.from({ length: 40 }, (_, i) => `02:0e:c2:00:0e:${(0x10 + i).toString(16)}`);
      await sim().imds.resetStats();
      await sim().net.exec('host', ['ip', '-batch', '-'], {
        input: Array.from({ length: 20 }, (_, i) => `link add gb${i} address ${macs[2 * i]} type veth peer name gb${i}p address ${macs[2 * i + 1]}\n`).join(''),
      });
      try {
        await eventually('every new link tried', async () => (await sim().imds.stats()).log
          .filter((e) => e.path.endsWith('/network/interfaces/macs/')).length >= 3);
        await new Promise((r) => setTimeout(r, 500));
        const keyReads = (await sim().imds.stats()).log.filter((e) => macs.some((m) => e.path.includes(`/macs/${m}/`)));
        expect(keyReads.length).toBeGreaterThan(0); // the first link's keys, read with the listing
        expect(new Set(keyReads.map((e) => e.path.split('/macs/')[1]?.split('/')[0])).size).toBe(1);
      } finally {
        await sim().net.exec('host', ['ip', '-batch', '-'], { input: Array.from({ length: 20 }, (_, i) => `link del gb${i}\n`).join('') });
      }
    });
  });

  it('two daemons started at once: exactly one survives, the other exits 1 saying why', async () => {
    await daemon.stop(3000);
    const a = sim().startDaemon();
    const b = sim().startDaemon();
    const loser = await Promise.race([a.exited.then(() => a), b.exited.then(() => b)]);
    const winner = loser === a ? b : a;
    expect(await loser.exited).toBe(1);
    expect(loser.output().stderr).toMatch(/another ec2netd is already running in this network namespace/);
    daemon = winner;
    await waitConverged(sim());
    expect(winner.hasExited()).toBe(false);
    // The survivor does its job.
    await sim().net.exec('host', ['ip', 'rule', 'del', 'from', '10.0.1.20', 'lookup', '10001', 'pref', '10100']);
    await waitSnapshot(sim(), good, 'the survivor repairs');
  });
});
