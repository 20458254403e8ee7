// End to end with real Docker: `ec2netd run` on a simulated instance (strict rp_filter, source/destination
// check) makes a port published by a container answer through the secondary ENI it was reached on, keeps
// doing so when networks come and go and dockerd restarts, and keeps another tool's 0x4000 mark bits.
// The by-hand proof of the same path, piece by piece, is test/integration/docker-path.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { CommandError, nsArgv, run } from '../../sim/exec';
import { startDocker } from '../helpers/docker';
import type { DockerDaemon } from '../helpers/docker';
import { eventually, ownedRules, routes, useSimulatedEc2 } from '../helpers/sim';

let nextPort = 45000;
async function httpGet(clientNs: string, ip: string, port: number, timeoutMs = 1500): Promise<string | undefined> {
  const s = (timeoutMs / 1000).toFixed(3);
  try {
    const { stdout } = await run(
      nsArgv(clientNs, ['socat', '-T', s, 'STDIO', `TCP4:${ip}:${port},connect-timeout=${s},sourceport=${nextPort++},reuseaddr`]),
      { input: 'GET / HTTP/1.0\r\n\r\n', timeoutMs: timeoutMs + 2000 },
    );
    return stdout.split('\r\n\r\n')[1]?.trim();
  } catch (err) {
    if (err instanceof CommandError) return undefined;
    throw err;
  }
}

// Strict reverse-path filtering (CIS hardening) is the hard case; loose (Ubuntu's default) must work the same.
for (const rpFilter of ['1', '2'] as const) describe(`ec2netd with real Docker, rp_filter=${rpFilter === '1' ? 'strict' : 'loose'}`, () => {
  const sim = useSimulatedEc2('e2edock', {
    hostSysctls: { 'net.ipv4.conf.all.rp_filter': rpFilter, 'net.ipv4.conf.default.rp_filter': rpFilter },
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20'], deviceNumber: 1 },
    ],
  });
  let dockerd: DockerDaemon;
  let daemon: ManagedProcess;
  const host = (): string => sim().net.ns.host;
  const client = (): string => sim().net.ns.client;
  const reach = async (ip: string, port: number, body: string): Promise<boolean> => {
    for (let i = 0; i < 10; i++) if ((await httpGet(client(), ip, port)) === body) return true;
    return false;
  };
  const mangle = async (): Promise<string[]> =>
    (await sim().net.exec('host', ['iptables-save', '-t', 'mangle'])).stdout.split('\n').filter((l) => l.startsWith('-A '));

  beforeAll(async () => {
    dockerd = await startDocker(host());
    await dockerd.runContainer({ name: 'web', publish: ['8080:80'], restart: 'always' });
    await sim().net.exec('host', ['iptables', '-t', 'mangle', '-A', 'PREROUTING', '-j', 'MARK', '--set-xmark', '0x4000/0x4000']);
  }, 120_000);
  afterAll(async () => {
    await daemon?.stop(2000);
    await dockerd?.stop();
  });

  it('without ec2netd the published port does not answer through eth1', async () => {
    expect(await httpGet(client(), '10.0.1.20', 8080)).toBeUndefined();
  });

  it('converges: container objects in place, the port answers through eth1 and eth0', async () => {
    daemon = sim().startDaemon();
    const daemonLog = (): string => { const o = daemon.output(); return `${o.stdout.slice(-4000)}\n${o.stderr.slice(-2000)}`; };
    await eventually('fwmark rule', async () => (await ownedRules(sim())).some((r) => r.includes('fwmark 0x1 lookup 10001')), 15_000)
      .catch((err: Error) => { throw new Error(`${err.message}\ndaemon output:\n${daemonLog()}`); });
    // The chain is synced after the kernel plan of the same run.
    await eventually('jump to EC2NETD', async () => (await mangle())[0] === '-A PREROUTING -j EC2NETD', 15_000)
      .catch((err: Error) => { throw new Error(`${err.message}\ndaemon output:\n${daemonLog()}`); });
    expect((await sim().net.exec('host', ['ip', 'rule', 'show', 'pref', '10200'])).stdout).toContain('fwmark 0x1/0x1f7f lookup 10001 proto 236');
    expect((await sim().net.exec('host', ['ip', 'rule', 'show', 'pref', '10050'])).stdout).toContain('to 172.17.0.0/16 lookup main proto 236');
    expect(await routes(sim(), 10001)).toEqual(expect.arrayContaining([expect.objectContaining({ dst: '172.17.0.0/16', dev: 'docker0', protocol: '236' })]));
    expect((await sim().net.exec('host', ['sysctl', '-n', 'net.ipv4.conf.all.src_valid_mark'])).stdout.trim()).toBe('1');
    expect((await mangle())[0]).toBe('-A PREROUTING -j EC2NETD');
    expect(await mangle()).toContain('-A PREROUTING -j MARK --set-xmark 0x4000/0x4000');
    expect(await reach('10.0.1.20', 8080, 'hello from web')).toBe(true);
    expect(await reach('10.0.1.10', 8080, 'hello from web')).toBe(true);
  });

  it('a new network is picked up; its removal is cleaned up', async () => {
    const net = await dockerd.networkCreate('appnet', '172.30.0.0/24');
    await dockerd.runContainer({ name: 'web2', network: 'appnet', publish: ['8081:80'], restart: 'always' });
    await eventually('appnet planned', async () => (await mangle()).some((l) => l.includes(`-i ${net.bridge} `)), 15_000);
    expect(await reach('10.0.1.20', 8081, 'hello from web2')).toBe(true);
    await dockerd.docker(['rm', '-f', 'web2']);
    await dockerd.networkRemove('appnet');
    await eventually('appnet gone', async () => !(await mangle()).some((l) => l.includes(net.bridge)), 15_000);
    await eventually('appnet rule gone', async () => !(await sim().net.exec('host', ['ip', 'rule', 'show', 'pref', '10050'])).stdout.includes('172.30.0.0/24'), 15_000);
  });

  it('someone flushing the chain or deleting the jump is repaired at once (nftables events, not the 60 s refresh)', async () => {
    const before = await mangle();
    await sim().net.exec('host', ['iptables', '-t', 'mangle', '-F', 'EC2NETD']);
    await eventually('chain refilled', async () => JSON.stringify(await mangle()) === JSON.stringify(before), 10_000);
    await sim().net.exec('host', ['iptables', '-t', 'mangle', '-D', 'PREROUTING', '-j', 'EC2NETD']);
    await eventually('jump back first', async () => JSON.stringify(await mangle()) === JSON.stringify(before), 10_000);
    expect(daemon.output().stdout).toContain('iptables mangle chain EC2NETD rebuilt');
  });

  it('a dockerd restart keeps the published port answering through eth1', async () => {
    await dockerd.restart();
    expect(await reach('10.0.1.20', 8080, 'hello from web')).toBe(true);
    expect((await mangle())[0]).toBe('-A PREROUTING -j EC2NETD');
  }, 60_000);

  it('flush removes ec2netd\'s chain and nothing else', async () => {
    await daemon.stop(2000);
    const res = await sim().ec2netd(['flush']);
    expect(res.code).toBe(0);
    expect(await mangle()).toEqual(['-A PREROUTING -j MARK --set-xmark 0x4000/0x4000']);
  });
});
