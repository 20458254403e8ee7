// Self-test of the simulated EC2 instance: the testbed must reproduce the real failure (a reply leaving the
// wrong ENI is dropped by the source/destination check) and its fix (policy routing), or no test built on it
// proves anything. The routing here is done by hand with `ip`, not by ec2netd.
import { afterAll, describe, expect, it } from 'vitest';
import { ipJson, run } from '../../sim/exec';
import { startTcpServer, tcpProbe, waitForTcp } from '../../sim/probe';
import type { TcpServer } from '../../sim/probe';
import { listNamespaces, simMac } from '../../sim/topology';
import { createTestInstance, destroyTestInstance, runInNs, sweepStale, useInstance } from '../helpers/netns';

const BASE = 'topo';
const ETH0_IP = '10.0.1.10';
const ETH1_IP = '10.0.1.20';
const PORT = 8080;

interface IpLink {
  ifname: string;
  address: string;
  operstate: string;
  flags: string[];
}

const timings: string[] = [];

describe('simulated instance: source/destination check and policy routing', () => {
  let setupMs = 0;
  const servers: TcpServer[] = [];
  const get = useInstance(BASE, {
    enis: [
      { name: 'eth0', mac: simMac(0), ipv4s: [ETH0_IP] },
      { name: 'eth1', mac: simMac(1), ipv4s: [ETH1_IP] },
    ],
  });

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  it('builds the namespaces with the ENIs as specified', async () => {
    const inst = get();
    const links = await ipJson<IpLink[]>(inst.ns.host, ['link', 'show']);
    const eth0 = links.find((l) => l.ifname === 'eth0');
    const eth1 = links.find((l) => l.ifname === 'eth1');
    expect(eth0?.address).toBe(simMac(0));
    expect(eth1?.address).toBe(simMac(1));
    expect(eth1?.flags).toContain('UP');
    // eth0 configured as DHCP would; eth1 untouched.
    const addrs = await ipJson<Array<{ ifname: string; addr_info: Array<{ family: string; local: string; prefixlen: number }> }>>(
      inst.ns.host,
      ['addr', 'show'],
    );
    const v4 = (name: string): string[] =>
      (addrs.find((a) => a.ifname === name)?.addr_info ?? []).filter((i) => i.family === 'inet').map((i) => `${i.local}/${i.prefixlen}`);
    expect(v4('eth0')).toEqual([`${ETH0_IP}/24`]);
    expect(v4('eth1')).toEqual([]);
    const routes = await ipJson<Array<{ dst: string; gateway?: string; dev: string }>>(inst.ns.host, ['route', 'show', 'default']);
    expect(routes).toEqual([expect.objectContaining({ dst: 'default', gateway: '10.0.1.1', dev: 'eth0' })]);
    // Fabric: permanent neighbours for both ENI addresses.
    const neigh = await ipJson<Array<{ dst: string; lladdr: string; state: string[] }>>(inst.ns.vpc, ['neigh', 'show', 'dev', 'br0']);
    expect(neigh.find((n) => n.dst === ETH1_IP)).toMatchObject({ lladdr: simMac(1), state: ['PERMANENT'] });
  });

  it('eth0 address answers', async () => {
    const inst = get();
    const t0 = Date.now();
    servers.push(await startTcpServer(inst.ns.host, ETH0_IP, PORT));
    setupMs = Date.now() - t0;
    timings.push(`socat server ready: ${setupMs} ms`);
    const r = await tcpProbe(inst.ns.client, ETH0_IP, PORT, { timeoutMs: 2000, srcPort: 41000 });
    expect(r).toMatchObject({ ok: true, answer: `ok-${ETH0_IP}` });
    timings.push(`successful probe: ${r.elapsedMs} ms`);
  });

  it('eth1 address configured without policy routing: the reply leaves eth0 and is dropped', async () => {
    const inst = get();
    await run(['ip', '-n', inst.ns.host, 'addr', 'add', `${ETH1_IP}/24`, 'dev', 'eth1']);
    servers.push(await startTcpServer(inst.ns.host, ETH1_IP, PORT));
    const before = await inst.dropCounters();
    const r = await tcpProbe(inst.ns.client, ETH1_IP, PORT, { timeoutMs: 1500, srcPort: 41001 });
    expect(r.ok).toBe(false);
    const after = await inst.dropCounters();
    // The SYN-ACK from 10.0.1.20 went out eth0 (port p-eth0, which does not own it).
    expect(after.ipv4).toBeGreaterThan(before.ipv4);
  });

  it('with `ip rule from 10.0.1.20 lookup 10001` and its table, the same flow succeeds', async () => {
    const inst = get();
    const h = inst.ns.host;
    await run(['ip', '-n', h, 'route', 'add', '10.0.1.0/24', 'dev', 'eth1', 'src', ETH1_IP, 'table', '10001']);
    await run(['ip', '-n', h, 'route', 'add', 'default', 'via', '10.0.1.1', 'dev', 'eth1', 'table', '10001']);
    await run(['ip', '-n', h, 'rule', 'add', 'from', ETH1_IP, 'lookup', '10001']);
    // Same source port as the failed attempt: one flow.
    const r = await waitForTcp(inst.ns.client, ETH1_IP, PORT, { srcPort: 41001, deadlineMs: 6000, attemptTimeoutMs: 2000 });
    expect(r).toMatchObject({ ok: true, answer: `ok-${ETH1_IP}` });
    // And a fresh flow works at once, with no new drops.
    const before = await inst.dropCounters();
    const fresh = await tcpProbe(inst.ns.client, ETH1_IP, PORT, { timeoutMs: 2000, srcPort: 41002 });
    expect(fresh).toMatchObject({ ok: true, answer: `ok-${ETH1_IP}` });
    expect((await inst.dropCounters()).ipv4).toBe(before.ipv4);
  });

  it('an address AWS has not assigned is not reachable (the fabric has no neighbour, ARP replies are dropped)', async () => {
    const inst = get();
    await inst.unassignIp('eth1', ETH1_IP);
    const before = await inst.dropCounters();
    const r = await tcpProbe(inst.ns.client, ETH1_IP, PORT, { timeoutMs: 1500, srcPort: 41003 });
    expect(r.ok).toBe(false);
    expect((await inst.dropCounters()).arp).toBeGreaterThan(before.arp);
    await inst.assignIp('eth1', ETH1_IP);
    const again = await waitForTcp(inst.ns.client, ETH1_IP, PORT, { srcPort: 41004, deadlineMs: 6000, attemptTimeoutMs: 2000 });
    expect(again.ok).toBe(true);
  });

  it('hot attach creates a down link with its MAC; detach removes it', async () => {
    const inst = get();
    const t0 = Date.now();
    const eni = await inst.attachEni({ name: 'eth2', mac: simMac(2), ipv4s: ['10.0.1.30'], up: false });
    timings.push(`attachEni: ${Date.now() - t0} ms`);
    expect(eni).toMatchObject({ name: 'eth2', portName: 'p-eth2', deviceNumber: 2, ipv4s: ['10.0.1.30'] });
    const link = await ipJson<IpLink[]>(inst.ns.host, ['link', 'show', 'eth2']);
    expect(link[0]).toMatchObject({ ifname: 'eth2', address: simMac(2) });
    expect(link[0]?.flags).not.toContain('UP');
    // Renamed inside the instance (as udev does), detach still finds it by its port.
    await run(['ip', '-n', inst.ns.host, 'link', 'set', 'eth2', 'name', 'ens7']);
    const t1 = Date.now();
    await inst.detachEni('eth2');
    timings.push(`detachEni: ${Date.now() - t1} ms`);
    const names = (await ipJson<IpLink[]>(inst.ns.host, ['link', 'show'])).map((l) => l.ifname);
    expect(names).not.toContain('ens7');
    expect(names).not.toContain('eth2');
    expect((await ipJson<IpLink[]>(inst.ns.vpc, ['link', 'show'])).map((l) => l.ifname)).not.toContain('p-eth2');
    const set = await inst.exec('vpc', ['nft', 'list', 'set', 'bridge', 'ec2sim', 'owned4']);
    expect(set.stdout).not.toContain('p-eth2');
    expect(inst.enis().map((e) => e.name)).toEqual(['eth0', 'eth1']);
  });

  it('runs a TypeScript helper inside a namespace', async () => {
    const inst = get();
    const { stdout } = await runInNs(inst.ns.host, 'test/helpers/print-interfaces.ts', ['x']);
    const parsed = JSON.parse(stdout) as { args: string[]; interfaces: string[] };
    expect(parsed.args).toEqual(['x']);
    expect(parsed.interfaces).toEqual(expect.arrayContaining(['eth0', 'eth1', 'lo']));
  });
});

describe('lifecycle', () => {
  it('destroy removes every namespace and process, and is idempotent', async () => {
    const t0 = Date.now();
    const inst = await createTestInstance(BASE, {
      enis: [
        { name: 'eth0', mac: simMac(0), ipv4s: [ETH0_IP] },
        { name: 'eth1', mac: simMac(1), ipv4s: [ETH1_IP] },
      ],
    });
    const setup = Date.now() - t0;
    const names = Object.values(inst.ns);
    expect(await listNamespaces()).toEqual(expect.arrayContaining(names));
    const server = await startTcpServer(inst.ns.host, ETH0_IP, PORT);
    const sleeper = inst.spawn('vpc', ['sleep', '60']);
    const t1 = Date.now();
    await destroyTestInstance(inst);
    const teardown = Date.now() - t1;
    timings.push(`createInstance (2 ENIs): ${setup} ms, destroy: ${teardown} ms`);
    await inst.destroy(); // idempotent
    const left = await listNamespaces();
    for (const n of names) expect(left).not.toContain(n);
    expect(await sleeper.exited).toBeDefined();
    expect(await server.process.exited).toBeDefined();
  });

  it('sweepStale removes leftovers of a dead owner and only those', async () => {
    // A leftover "from a crashed run": pid 999999999 cannot exist (above pid_max).
    const stale = `${BASE}-999999999-1-vpc`;
    await run(['ip', 'netns', 'add', stale]);
    try {
      const removed = await sweepStale(BASE);
      expect(removed).toContain(stale);
      expect(await listNamespaces()).not.toContain(stale);
    } finally {
      await run(['ip', 'netns', 'del', stale]).catch(() => undefined);
    }
  });
});

afterAll(() => {
  // Reported in the run's output (the brief asks for measured times).
  console.log(`[topology timings] ${timings.join('; ')}`);
});
