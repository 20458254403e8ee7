// The Docker packet path, proven with real packets: a client reaches a port published by a real Docker
// container through the SECONDARY ENI of a simulated instance (with the VPC's source/destination check).
// ec2netd's per-ENI objects (address, table, `from` rule) are installed by hand, exactly as the planner
// plans them; the container objects come from src/core/containers.ts (routes and rules installed with
// `ip`, the mangle chain with the real iptables adapter). Each scenario removes or adds one piece to show
// which ones are needed, under loose and strict rp_filter. See docs/containers.md.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config';
import { buildContainerObjects, hex } from '../../src/core/containers';
import type { ContainerBridge, ContainerObjects, MangleSpec } from '../../src/core/containers';
import type { KernelRoute, KernelRule } from '../../src/core/types';
import { IptablesAdapter } from '../../src/iptables/apply';
import { CommandError, ipJson, nsArgv, nsRun, run } from '../../sim/exec';
import { simMac } from '../../sim/topology';
import { startDocker } from '../helpers/docker';
import type { DockerDaemon } from '../helpers/docker';
import { repoRoot, useInstance } from '../helpers/netns';

const config = defaultConfig({});
const ETH0_IP = '10.0.1.10';
const ETH1_IP = '10.0.1.20';
const T1 = 10001;

interface Probe {
  ok: boolean;
  body: string;
  error?: string;
  ms: number;
}

let nextPort = 41000;

/** One HTTP GET from the client namespace with a fresh fixed source port; never throws for network failures. */
async function httpProbe(clientNs: string, ip: string, port: number, timeoutMs = 1500): Promise<Probe> {
  const srcPort = nextPort++;
  const s = (timeoutMs / 1000).toFixed(3);
  const started = Date.now();
  try {
    const { stdout } = await run(
      nsArgv(clientNs, ['socat', '-T', s, 'STDIO', `TCP4:${ip}:${port},connect-timeout=${s},sourceport=${srcPort},reuseaddr`]),
      { input: 'GET / HTTP/1.0\r\n\r\n', timeoutMs: timeoutMs + 2000 },
    );
    const body = stdout.split('\r\n\r\n')[1]?.trim() ?? '';
    return { ok: stdout.startsWith('HTTP/1.') && body !== '', body, ms: Date.now() - started };
  } catch (err) {
    if (!(err instanceof CommandError)) throw err;
    return { ok: false, body: '', error: err.timedOut ? 'timeout' : err.stderr.trim().split('\n').pop(), ms: Date.now() - started };
  }
}

function routeCmd(op: 'add' | 'del', r: KernelRoute, names: Map<number, string>): string {
  return `route ${op} ${r.dst} dev ${names.get(r.ifindex ?? -1) ?? '?'} table ${r.table} scope link proto ${r.protocol}`;
}

function ruleCmd(op: 'add' | 'del', r: KernelRule): string {
  const sel = r.dst !== undefined ? `to ${r.dst}` : `fwmark ${hex(r.fwmark ?? 0)}/${hex(r.fwmask ?? 0)}`;
  return `rule ${op} ${sel} lookup ${r.table === 254 ? 'main' : r.table} pref ${r.priority} proto ${r.protocol}`;
}

/** `ip -force -batch -`: every line is tried (deleting something absent is fine here). */
async function ipForce(ns: string, lines: string[]): Promise<void> {
  if (lines.length === 0) return;
  await run(['ip', '-n', ns, '-force', '-batch', '-'], { input: `${lines.join('\n')}\n` }).catch(() => undefined);
}

interface Parts {
  bridgeRoutes: boolean;
  toRules: boolean;
  fwmarkRules: boolean;
  /** 'full' = containers.ts's chain; 'no-eni-restore' = the minimal scheme (set on ENI, restore on bridge). */
  chain: 'full' | 'no-eni-restore' | 'none';
}

const FULL: Parts = { bridgeRoutes: true, toRules: true, fwmarkRules: true, chain: 'full' };
const NONE: Parts = { bridgeRoutes: false, toRules: false, fwmarkRules: false, chain: 'none' };

describe('Docker published ports answer through the ENI they arrived on', () => {
  const get = useInstance('dpath', {
    enis: [
      { name: 'eth0', mac: simMac(0), ipv4s: [ETH0_IP] },
      { name: 'eth1', mac: simMac(1), ipv4s: [ETH1_IP] },
    ],
  });
  let dockerd: DockerDaemon;
  let host = '';
  let client = '';
  let iptables: IptablesAdapter;
  let objects: ContainerObjects;
  let names = new Map<number, string>();
  const results: string[] = [];

  async function bridges(): Promise<ContainerBridge[]> {
    const links = await ipJson<Array<{ ifindex: number; ifname: string; addr_info: Array<{ family: string; local: string; prefixlen: number }> }>>(host, ['addr', 'show']);
    return links
      .filter((l) => l.ifname === 'docker0' || l.ifname.startsWith('br-'))
      .map((l) => ({ name: l.ifname, ifindex: l.ifindex, subnets: l.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`) }));
  }

  async function plan(): Promise<void> {
    const found = await bridges();
    names = new Map(found.map((b) => [b.ifindex, b.name]));
    objects = buildContainerObjects([{ mac: simMac(1), deviceNumber: 1, networkCard: 0, linkName: 'eth1', table: T1 }], found, config);
  }

  /** Installs exactly `parts` of the planned container objects (removing the others) and flushes conntrack. */
  async function use(parts: Parts): Promise<void> {
    const lines: string[] = [];
    for (const r of objects.routes) lines.push(routeCmd(parts.bridgeRoutes ? 'add' : 'del', r, names));
    for (const r of objects.rules) {
      const wanted = r.dst !== undefined ? parts.toRules : parts.fwmarkRules;
      lines.push(ruleCmd('del', r));
      if (wanted) lines.push(ruleCmd('add', r));
    }
    await ipForce(host, lines);
    const spec: MangleSpec =
      parts.chain === 'full'
        ? objects.mangle
        : parts.chain === 'none'
          ? { ...objects.mangle, rules: [] }
          : { ...objects.mangle, rules: objects.mangle.rules.filter((r) => r.kind === 'set-mark' || r.inIface !== 'eth1') };
    await iptables.sync(spec);
    await nsRun(host, ['conntrack', '-F']).catch(() => undefined);
  }

  async function sysctls(rpFilter: number, srcValidMark: number): Promise<void> {
    await nsRun(host, ['sysctl', '-q', '-w', `net.ipv4.conf.all.rp_filter=${rpFilter}`, `net.ipv4.conf.all.src_valid_mark=${srcValidMark}`]);
  }

  async function counters(): Promise<{ srcDst: number; rpFilter: number }> {
    const drops = await get().dropCounters();
    const { stdout } = await nsRun(host, ['nstat', '-az', 'TcpExtIPReversePathFilter']);
    const rp = /TcpExtIPReversePathFilter\s+(\d+)/.exec(stdout)?.[1];
    return { srcDst: drops.ipv4, rpFilter: Number(rp ?? 0) };
  }

  /** Probes and records the outcome with what dropped the packets. */
  async function probe(label: string, ip: string, port: number): Promise<Probe & { srcDstDrops: number; rpDrops: number }> {
    const before = await counters();
    const p = await httpProbe(client, ip, port);
    const after = await counters();
    const r = { ...p, srcDstDrops: after.srcDst - before.srcDst, rpDrops: after.rpFilter - before.rpFilter };
    results.push(`${label.padEnd(64)} ${r.ok ? 'answered ' : 'no answer'} ${String(r.ms).padStart(5)} ms  src/dst-drops ${r.srcDstDrops}  rp_filter-drops ${r.rpDrops}`);
    return r;
  }

  beforeAll(async () => {
    const inst = get();
    host = inst.ns.host;
    client = inst.ns.client;
    // ec2netd's per-ENI objects for eth1 (device 1), as src/core/desired.ts plans them.
    await run(['ip', '-n', host, '-batch', '-'], {
      input: [
        `addr add ${ETH1_IP}/24 dev eth1 noprefixroute`,
        `route add 10.0.1.0/24 dev eth1 src ${ETH1_IP} table ${T1} proto 236`,
        `route add default via 10.0.1.1 dev eth1 table ${T1} proto 236`,
        `rule add from ${ETH1_IP}/32 lookup ${T1} pref 10100 proto 236`,
        '',
      ].join('\n'),
    });
    dockerd = await startDocker(host);
    await dockerd.runContainer({ name: 'web', publish: ['8080:80'], restart: 'always' });
    iptables = new IptablesAdapter(config, { wrapper: nsArgv(host, []) });
    await plan();
  }, 120_000);

  afterAll(async () => {
    await dockerd?.stop();
    // eslint-disable-next-line no-console
    if (results.length > 0) console.log(`docker path (dockerd start ${dockerd?.startTimesMs.join(', ')} ms):\n${results.join('\n')}`);
  });

  it('plans the objects for docker0', () => {
    expect(objects.subnets).toEqual(['172.17.0.0/16']);
    expect(objects.rules.map((r) => ruleCmd('add', r))).toEqual([
      'rule add to 172.17.0.0/16 lookup main pref 10050 proto 236',
      'rule add fwmark 0x1/0x1f7f lookup 10001 pref 10200 proto 236',
    ]);
  });

  it('loose rp_filter: without the container objects the reply leaves eth0 and the VPC drops it', async () => {
    await sysctls(2, 0);
    await use(NONE);
    expect((await probe('loose, ENI objects only, via eth0 (primary)', ETH0_IP, 8080)).ok).toBe(true);
    const p = await probe('loose, ENI objects only, via eth1', ETH1_IP, 8080);
    expect(p.ok).toBe(false);
    expect(p.srcDstDrops).toBeGreaterThan(0);
  });

  it('loose rp_filter: the minimal scheme (set on ENI, restore on bridge) is enough', async () => {
    await use({ ...FULL, chain: 'no-eni-restore' });
    expect((await probe('loose, minimal chain + routes + rules, via eth1', ETH1_IP, 8080)).body).toBe('hello from web');
    await use(FULL);
    expect((await probe('loose, full, via eth1', ETH1_IP, 8080)).body).toBe('hello from web');
    expect((await probe('loose, full, via eth0 (primary)', ETH0_IP, 8080)).ok).toBe(true);
  });

  it('strict rp_filter: the full scheme needs src_valid_mark=1', async () => {
    await sysctls(1, 0);
    await use(NONE);
    expect((await probe('strict, ENI objects only, via eth1', ETH1_IP, 8080)).ok).toBe(false);
    await use(FULL);
    const noSvm = await probe('strict, full, src_valid_mark=0, via eth1', ETH1_IP, 8080);
    expect(noSvm.ok).toBe(false);
    expect(noSvm.rpDrops).toBeGreaterThan(0);
    // src/iptables/sysctl.ts, run inside the instance namespace (/proc/sys/net is the writer's namespace).
    const { stdout } = await nsRun(host, [process.execPath, '--import', 'tsx', '-e',
      "require('./src/iptables/sysctl.ts').ensureContainerSysctls({ enabled: true, manageSysctls: true }).then((r) => console.log(JSON.stringify(r)))"],
      { cwd: repoRoot });
    expect(JSON.parse(stdout)).toEqual({ changed: true, previous: '0' });
    expect((await nsRun(host, ['sysctl', '-n', 'net.ipv4.conf.all.src_valid_mark'])).stdout.trim()).toBe('1');
    await nsRun(host, ['conntrack', '-F']).catch(() => undefined);
    expect((await probe('strict, full, src_valid_mark=1, via eth1', ETH1_IP, 8080)).body).toBe('hello from web');
    expect((await probe('strict, full, src_valid_mark=1, via eth0 (primary)', ETH0_IP, 8080)).ok).toBe(true);
  });

  it('strict rp_filter: which pieces are needed', async () => {
    await sysctls(1, 1);
    await use({ ...FULL, chain: 'no-eni-restore' });
    const noEniRestore = await probe('strict+svm, minimal chain (no restore on ENI), via eth1', ETH1_IP, 8080);
    expect(noEniRestore.ok).toBe(false);
    expect(noEniRestore.rpDrops).toBeGreaterThan(0);
    await use({ ...FULL, bridgeRoutes: false });
    const noRoutes = await probe('strict+svm, full minus bridge routes in ENI table, via eth1', ETH1_IP, 8080);
    await use({ ...FULL, toRules: false });
    const noTo = await probe('strict+svm, full minus to-bridge rule, via eth1', ETH1_IP, 8080);
    await use({ ...FULL, toRules: false, bridgeRoutes: false });
    const neither = await probe('strict+svm, full minus bridge routes and to-rule, via eth1', ETH1_IP, 8080);
    await use({ ...FULL, fwmarkRules: false });
    const noFwmark = await probe('strict+svm, full minus fwmark rule, via eth1', ETH1_IP, 8080);
    // The bridge route in the ENI table and the to-bridge rule each rescue the forward lookup of the marked
    // DNATed SYN; with neither it is routed back out of eth1 (docs/ec2-networking.md §1).
    expect(noRoutes.ok).toBe(true);
    expect(noTo.ok).toBe(true);
    expect(neither.ok).toBe(false);
    expect(noFwmark.ok).toBe(false);
    await use(FULL);
    expect((await probe('strict+svm, full again, via eth1', ETH1_IP, 8080)).ok).toBe(true);
  });

  it('keeps other tools\' mark bits: 0x4000 in the packet mark and in the connection mark survive', async () => {
    // raw runs before mangle: a foreign packet mark already set when ec2netd restores its bits; a foreign
    // connection-mark bit set ahead of ec2netd's jump (drift, left in place until the next sync).
    await nsRun(host, ['iptables', '-t', 'raw', '-A', 'PREROUTING', '-j', 'MARK', '--set-xmark', '0x4000/0x4000']);
    await nsRun(host, ['iptables', '-t', 'mangle', '-I', 'PREROUTING', '1', '-j', 'CONNMARK', '--set-xmark', '0x4000/0x4000']);
    await nsRun(host, ['iptables', '-t', 'mangle', '-A', 'FORWARD', '-i', 'docker0', '-m', 'mark', '--mark', '0x4001/0x5f7f']);
    await nsRun(host, ['conntrack', '-F']).catch(() => undefined);
    expect((await probe('strict+svm, full, foreign 0x4000 bits, via eth1', ETH1_IP, 8080)).ok).toBe(true);
    const ct = (await nsRun(host, ['conntrack', '-L', '-p', 'tcp', '--orig-port-dst', '8080'])).stdout;
    expect(ct).toMatch(/mark=16385/); // 0x4001: ec2netd's 0x1 for eth1 + the foreign 0x4000
    const fwd = (await nsRun(host, ['iptables-save', '-c', '-t', 'mangle'])).stdout;
    const replies = Number(/^\[(\d+):\d+\] -A FORWARD -i docker0 -m mark --mark 0x4001\/0x5f7f$/m.exec(fwd)?.[1] ?? 0);
    expect(replies, fwd).toBeGreaterThan(0); // the container's replies carried mark 0x4001 (both bits)
    await nsRun(host, ['iptables', '-t', 'raw', '-D', 'PREROUTING', '-j', 'MARK', '--set-xmark', '0x4000/0x4000']);
    await nsRun(host, ['iptables', '-t', 'mangle', '-D', 'FORWARD', '-i', 'docker0', '-m', 'mark', '--mark', '0x4001/0x5f7f']);
    const res = await iptables.sync(objects.mangle);
    expect(res.reasons).toEqual(['the jump to EC2NETD is rule 2 of PREROUTING, not the first']);
    await nsRun(host, ['iptables', '-t', 'mangle', '-D', 'PREROUTING', '-j', 'CONNMARK', '--set-xmark', '0x4000/0x4000']);
  });

  it('a user-defined network (br-…) works once its bridge is planned', async () => {
    const net = await dockerd.networkCreate('appnet', '172.30.0.0/24');
    await dockerd.runContainer({ name: 'web2', network: 'appnet', publish: ['8081:80'], restart: 'always' });
    expect((await probe('strict+svm, new network not planned yet, via eth1', ETH1_IP, 8081)).ok).toBe(false);
    await plan();
    expect(objects.subnets).toEqual(['172.17.0.0/16', '172.30.0.0/24']);
    expect(objects.mangle.rules.map((r) => r.inIface)).toContain(net.bridge);
    await use(FULL);
    expect((await probe('strict+svm, new network planned, via eth1', ETH1_IP, 8081)).body).toBe('hello from web2');
    expect((await probe('strict+svm, docker0 still, via eth1', ETH1_IP, 8080)).body).toBe('hello from web');
  });

  it('survives a dockerd restart: bridges, routes, rules and chain stay; containers come back', async () => {
    const ifindexes = (await bridges()).map((b) => `${b.name}:${b.ifindex}`).sort();
    const ms = await dockerd.restart();
    expect(ms).toBeLessThan(30_000);
    expect((await bridges()).map((b) => `${b.name}:${b.ifindex}`).sort()).toEqual(ifindexes);
    expect((await iptables.sync(objects.mangle)).changed).toBe(false);
    // Published ports come back when the restarted containers are up.
    let last: Probe | undefined;
    for (let i = 0; i < 20 && last?.ok !== true; i++) {
      last = await probe(`strict+svm, after dockerd restart (attempt ${i + 1}), via eth1`, ETH1_IP, 8081);
    }
    expect(last?.body).toBe('hello from web2');
    expect((await probe('strict+svm, after dockerd restart, docker0, via eth1', ETH1_IP, 8080)).body).toBe('hello from web');
  }, 90_000);
});
