// End to end with real Docker over IPv6: a dual-stack simulated instance (the source/destination check enforced for
// IPv6 sources), dockerd with an IPv6 default network and ip6tables (Debian 12's docker.io 20.10: experimental), no
// userland proxy (a published port is reached only through Docker's DNAT, the path ec2netd's marks steer).
// A client connecting over IPv6 to a port published through eth1 must be answered through eth1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { CommandError, nsArgv, run } from '../../sim/exec';
import { startDocker } from '../helpers/docker';
import type { DockerDaemon } from '../helpers/docker';
import { eventually, flowPort, routes6, useSimulatedEc2 } from '../helpers/sim';

const SUBNET6 = '2600:1f18:aaaa:bb01::/64';
const V6 = (host: string): string => `2600:1f18:aaaa:bb01::${host}`;
const DOCKER6 = 'fd00:dead:beef::/64';

async function httpGet6(clientNs: string, ip: string, port: number, timeoutMs = 1500): Promise<string | undefined> {
  const s = (timeoutMs / 1000).toFixed(3);
  try {
    const { stdout } = await run(
      nsArgv(clientNs, ['socat', '-T', s, 'STDIO', `TCP6:[${ip}]:${port},connect-timeout=${s},sourceport=${flowPort()},reuseaddr`]),
      { input: 'GET / HTTP/1.0\r\n\r\n', timeoutMs: timeoutMs + 2000 },
    );
    return stdout.split('\r\n\r\n')[1]?.trim();
  } catch (err) {
    if (err instanceof CommandError) return undefined;
    throw err;
  }
}

describe('ec2netd with real Docker over IPv6', () => {
  const sim = useSimulatedEc2('e2edock6', {
    subnet6: SUBNET6,
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], ipv6s: [V6('10')], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20'], ipv6s: [V6('20')], deviceNumber: 1 },
    ],
  });
  let dockerd: DockerDaemon;
  let daemon: ManagedProcess | undefined;
  const client = (): string => sim().net.ns.client;
  const reach = async (ip: string): Promise<boolean> => {
    for (let i = 0; i < 10; i++) if ((await httpGet6(client(), ip, 8080)) === 'hello from web') return true;
    return false;
  };
  const mangle6 = async (): Promise<string[]> =>
    (await sim().net.exec('host', ['ip6tables-save', '-t', 'mangle'])).stdout.split('\n').filter((l) => l.startsWith('-A '));
  const rules6 = async (pref: number): Promise<string> => (await sim().net.exec('host', ['ip', '-6', 'rule', 'show', 'pref', String(pref)])).stdout;

  beforeAll(async () => {
    dockerd = await startDocker(sim().net.ns.host, {
      extraArgs: ['--experimental', '--ip6tables', '--ipv6', '--fixed-cidr-v6', DOCKER6, '--userland-proxy=false'],
    });
    await dockerd.runContainer({ name: 'web', publish: ['8080:80'] });
  }, 120_000);
  afterAll(async () => {
    await daemon?.stop(2000);
    await dockerd?.stop();
  });

  it('without ec2netd, the reply to a connection through eth1 leaves through eth0 and the VPC drops it', async () => {
    // What DHCPv6 and the RA leave on eth1 without policy routing.
    await sim().net.exec('host', ['ip', 'link', 'set', 'eth1', 'up']);
    await sim().net.exec('host', ['ip', '-6', 'address', 'add', `${V6('20')}/128`, 'dev', 'eth1', 'noprefixroute', 'nodad']);
    await eventually('RA on eth1', async () => (await routes6(sim(), 'main')).some((r) => r.dst === 'default' && r.dev === 'eth1'));
    // The port answers over IPv6 (through eth0), so the IPv6 DNAT path is in place.
    expect(await reach(V6('10'))).toBe(true);
    const before = (await sim().net.dropCounters()).ipv6;
    expect(await httpGet6(client(), V6('20'), 8080)).toBeUndefined();
    expect((await sim().net.dropCounters()).ipv6).toBeGreaterThan(before);
  });

  it('with ec2netd: the ip6tables chain, family-6 rules and bridge routes; answered through eth1', async () => {
    daemon = sim().startDaemon();
    const log = (): string => { const o = daemon?.output(); return `${o?.stdout.slice(-4000) ?? ''}\n${o?.stderr.slice(-2000) ?? ''}`; };
    await eventually('jump to EC2NETD in ip6tables', async () => (await mangle6())[0] === '-A PREROUTING -j EC2NETD', 15_000)
      .catch((err: Error) => { throw new Error(`${err.message}\ndaemon output:\n${log()}`); });
    expect(await mangle6()).toEqual(expect.arrayContaining([
      '-A EC2NETD -i eth1 -m conntrack --ctstate NEW -j CONNMARK --set-xmark 0x1/0x1f7f',
      '-A EC2NETD -i eth1 -j CONNMARK --restore-mark --nfmask 0x1f7f --ctmask 0x1f7f',
      '-A EC2NETD -i docker0 -j CONNMARK --restore-mark --nfmask 0x1f7f --ctmask 0x1f7f',
    ]));
    expect(await rules6(10200)).toContain('fwmark 0x1/0x1f7f lookup 10001 proto 236');
    expect(await rules6(10050)).toContain(`to ${DOCKER6} lookup main proto 236`);
    expect(await routes6(sim(), 10001)).toEqual(expect.arrayContaining([expect.objectContaining({ dst: DOCKER6, dev: 'docker0', protocol: '236' })]));
    const before = (await sim().net.dropCounters()).ipv6;
    expect(await reach(V6('20'))).toBe(true);
    // Through eth1 under the source/destination check: nothing of it dropped, and eth1's mark set on the connection.
    expect((await sim().net.dropCounters()).ipv6).toBe(before);
    const counted = (await sim().net.exec('host', ['ip6tables', '-t', 'mangle', '-L', 'EC2NETD', '-v', '-n', '-x'])).stdout
      .split('\n').find((l) => l.includes('ctstate NEW') && l.includes('eth1'));
    expect(Number(counted?.trim().split(/\s+/)[0])).toBeGreaterThan(0);
    expect(await reach(V6('10'))).toBe(true);
    // Read back as planned: the family-6 rules, routes and the ip6tables chain are in sync (no endless re-adds).
    const plan = await sim().ec2netd(['plan']);
    expect(plan.code, plan.stdout).toBe(0);
  });

  it('flush removes the ip6tables chain and its jump', async () => {
    await daemon?.stop(2000);
    expect((await sim().ec2netd(['flush'])).code).toBe(0);
    expect((await mangle6()).filter((l) => l.includes('EC2NETD'))).toEqual([]);
    expect(await rules6(10200)).toBe('');
  });
});
