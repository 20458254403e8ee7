// A whole simulated EC2 instance: the namespaces of sim/topology.ts, the IMDSv2 simulator answering on
// 169.254.169.254 inside the VPC namespace (reached through the instance's own routing, as on EC2), and
// helpers that keep "what AWS assigned" (the source/destination check) and "what IMDS says" in step.
// Used by the demo (sim/demo.ts), the end-to-end tests and the benchmarks.
//
// addInstance puts a second instance (own namespace, own IMDS, ENIs on the same subnet) next to the first, and
// reassignIp moves a private IP between them as `assign-private-ip-addresses --allow-reassignment` does: the VPC
// (source/destination check, neighbour entry) follows at once, each instance's IMDS after its own delay.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { familyOf } from '../src/core/ip';
import { nsArgv, nsRun, startProcess, type ManagedProcess, type RunResult } from './exec';
import { imdsControl, type ImdsControl } from './imds-control';
import type { SimEni as ImdsEni, SimInstance as ImdsInstance } from './imds-server';
import { createInstance, simMac, type CreateInstanceOptions, type SimInstance } from './topology';

/** The repository root, from sim/ (tests, via vitest) or dist/sim/ (the built demo). */
export const REPO_ROOT = [path.resolve(__dirname, '..'), path.resolve(__dirname, '..', '..')]
  .find((dir) => existsSync(path.join(dir, 'package.json'))) ?? path.resolve(__dirname, '..');
/** Built CLI (dist/src/cli.js) through the bin/ec2netd launcher on the bundled runtime: the files the package installs. */
export const EC2NETD_BIN = path.join(REPO_ROOT, 'bin', 'ec2netd');
// The launcher passes its node flags (V8 sizing), so the daemon runs here as it does when installed;
// EC2NETD_NODE_FLAGS in the environment replaces them (it reaches the launcher), to compare settings with `npm run bench`.
const IMDS_SERVER = path.join(REPO_ROOT, 'dist', 'sim', 'imds-server.js');

export interface SimEniInput {
  /** Interface name in the instance (eth0, eth1...). */
  name: string;
  /** Private IPv4s, primary first. None: an ENI of an IPv6-only subnet (IMDS serves no IPv4 key for it). */
  ipv4s: string[];
  deviceNumber: number;
  networkCard?: number;
  ipv4Prefixes?: string[];
  /** IPv6s (the instance needs `subnet6`); IMDS lists them under ipv6s, and the fabric allows and delivers them. */
  ipv6s?: string[];
  /** Delegated IPv6 prefixes (ipv6-prefix), routed by the VPC to the ENI's first IPv6. */
  ipv6Prefixes?: string[];
  mac?: string;
}

export interface SimulatedEc2 {
  readonly net: SimInstance;
  readonly imds: ImdsControl;
  readonly workDir: string;
  readonly configPath: string;
  /** What IMDS currently serves (change it through the methods below, or imds.setInstance). */
  imdsState(): ImdsInstance;
  /** AWS attaches an ENI: the link appears in the instance (down, as on EC2) and IMDS lists it. */
  attachEni(eni: SimEniInput, opts?: { imdsFirst?: boolean; linkUp?: boolean; imds?: Partial<ImdsEni> }): Promise<void>;
  /** AWS detaches an ENI: the link disappears and IMDS stops listing it. */
  detachEni(name: string): Promise<void>;
  /** AWS assigns a secondary private IPv4 or an IPv6 to an ENI (no event reaches the instance). */
  assignIp(name: string, ip: string): Promise<void>;
  unassignIp(name: string, ip: string): Promise<void>;
  /**
   * AWS moves a private IP to this instance's ENI `name` from whichever ENI (of any instance on the subnet) holds
   * it: the VPC delivers it here at once; this IMDS lists it after `listAfterMs`, the old owner's IMDS stops listing
   * it after `unlistAfterMs` (IMDS propagation). Nothing is done inside either instance. Resolves once the VPC has
   * moved; `listed` and `unlisted` resolve (with Date.now()) when each IMDS has changed. Let both settle before
   * moving the same IP again.
   */
  reassignIp(name: string, ip: string, opts?: { listAfterMs?: number; unlistAfterMs?: number }): Promise<{ listed: Promise<number>; unlisted: Promise<number> }>;
  /**
   * Another instance on the same subnet (IPv4), with its own IMDS simulator and config; destroyed with this one.
   * Its MACs differ from this instance's (MAC = simMac(0x100 + 0x1000·k + 0x40·card + device) unless given).
   */
  addInstance(opts: { enis: SimEniInput[]; hostSysctls?: Record<string, string>; config?: Record<string, unknown> }): Promise<SimulatedEc2>;
  /** Updates one ENI's IMDS entry (hide keys, override values...). */
  patchImdsEni(name: string, patch: Partial<ImdsEni>): Promise<void>;
  /** Starts `ec2netd run` in the instance namespace. */
  startDaemon(args?: string[]): ManagedProcess;
  /** Runs an ec2netd command once in the instance namespace (never throws on a non-zero exit). */
  ec2netd(args: string[]): Promise<RunResult & { code: number }>;
  destroy(): Promise<void>;
}

export interface SimulatedEc2Options extends Omit<CreateInstanceOptions, 'enis'> {
  enis: SimEniInput[];
  /** Config overlay for ec2netd (JSON), on top of what the simulation needs. */
  config?: Record<string, unknown>;
}

/** `instance`: 0 for the first instance on the subnet, k for the k-th added one (distinct MACs and ENI ids). */
function macOf(eni: SimEniInput, instance = 0): string {
  return eni.mac ?? simMac(0x100 + instance * 0x1000 + (eni.networkCard ?? 0) * 0x40 + eni.deviceNumber);
}

function imdsEni(eni: SimEniInput, subnet: string, subnet6: string | undefined, instance = 0): ImdsEni {
  return {
    mac: macOf(eni, instance), deviceNumber: eni.deviceNumber, networkCard: eni.networkCard ?? 0,
    interfaceId: `eni-${(0x0a000000 + instance * 0x10000 + (eni.networkCard ?? 0) * 0x100 + eni.deviceNumber).toString(16).padStart(17, '0')}`,
    ipv4s: eni.ipv4s, ipv4Prefixes: eni.ipv4Prefixes ?? [],
    // An IPv6-only subnet: EC2 lists neither local-ipv4s nor subnet-ipv4-cidr-block (empty values are not served).
    subnetIpv4Cidr: eni.ipv4s.length === 0 ? '' : subnet, vpcIpv4Cidrs: ['10.0.0.0/16'],
    // A dual-stack subnet's IPv6 CIDR is listed for every ENI in it, with or without IPv6 addresses.
    ipv6s: eni.ipv6s ?? [], ipv6Prefixes: eni.ipv6Prefixes ?? [], subnetIpv6Cidrs: subnet6 === undefined ? [] : [subnet6],
    subnetId: 'subnet-0123456789abcdef0', vpcId: 'vpc-0123456789abcdef0',
  };
}

/** The fabric's side of an ENI's delegated prefixes (source check and delivery). */
async function assignPrefixes(net: SimInstance, eni: SimEniInput): Promise<void> {
  for (const prefix of [...(eni.ipv4Prefixes ?? []), ...(eni.ipv6Prefixes ?? [])]) await net.assignPrefix(eni.name, prefix);
}

export async function startSimulatedEc2(opts: SimulatedEc2Options): Promise<SimulatedEc2> {
  const primary = opts.enis[0];
  if (primary === undefined) throw new Error('a simulated instance needs at least one ENI');
  const net = await createInstance({
    ...opts,
    enis: opts.enis.map((e, i) => ({
      name: e.name, mac: macOf(e), ipv4s: e.ipv4s, ipv6s: e.ipv6s ?? [], deviceNumber: e.deviceNumber, configure: i === 0,
    })),
  });
  return simulate(net, opts.enis, opts.config, []);
}

/** What reassignIp needs from each instance on the subnet: who lists an IP, and how to stop listing it. */
interface Peer {
  lists(ip: string): boolean;
  unlist(ip: string): Promise<void>;
}

/** The IMDS simulator, config and helpers around an instance whose ENIs are attached; destroys `net` on failure. */
async function simulate(net: SimInstance, enis: SimEniInput[], config: Record<string, unknown> | undefined, peers: Peer[]): Promise<SimulatedEc2> {
  const workDir = mkdtempSync(path.join(tmpdir(), 'ec2netd-sim-'));
  const primary = enis[0];
  if (primary === undefined) throw new Error('a simulated instance needs at least one ENI');
  const mac = (e: SimEniInput): string => macOf(e, net.index);
  const processes = new Set<ManagedProcess>();
  try {
    const subnet = `${net.subnet}`;
    const subnet6 = net.subnet6;
    for (const e of enis) await assignPrefixes(net, e);
    let state: ImdsInstance = { primaryMac: mac(primary), enis: enis.map((e) => imdsEni(e, subnet, subnet6, net.index)) };
    const instanceFile = path.join(workDir, 'imds-instance.json');
    writeFileSync(instanceFile, JSON.stringify(state));
    const controlPath = path.join(workDir, 'imds.sock');
    // An instance whose primary ENI has no IPv4 reaches IMDS at its IPv6 endpoint only (as on EC2, Nitro). Added
    // instances (IPv4) reach theirs through the VPC's nat, on their own port (sim/topology.ts).
    const endpoint = primary.ipv4s.length === 0 && net.imdsIp6 !== undefined ? `[${net.imdsIp6}]` : net.imdsIp;
    const server = net.spawn('vpc', [process.execPath, IMDS_SERVER, '--listen', `${endpoint}:${net.imdsPort}`, '--control', controlPath, '--instance', instanceFile]);
    const deadline = Date.now() + 10_000;
    while (!server.output().stdout.includes('ready')) {
      if (server.hasExited() || Date.now() > deadline) throw new Error(`IMDS simulator did not start: ${server.output().stderr}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    const imds = imdsControl(controlPath);
    const configPath = path.join(workDir, 'config.json');
    writeFileSync(configPath, JSON.stringify({
      stateDir: path.join(workDir, 'state'),
      // The simulated ENIs are veth pairs (the kernel has no other way to put a NIC in a namespace).
      eniLinkKinds: ['physical', 'veth'],
      ...config,
      // Merged, not replaced: a test that tunes one IMDS setting keeps the simulator's endpoint.
      imds: { endpoint: `http://${endpoint}`, refreshIntervalMs: 60_000, timeoutMs: 1000, ...(config?.imds as object | undefined) },
    }, null, 2));

    const names = new Map(enis.map((e) => [e.name, mac(e)]));
    const update = async (fn: (s: ImdsInstance) => ImdsInstance): Promise<void> => {
      state = fn(structuredClone(state));
      await imds.setInstance(state);
    };
    const patchEni = (name: string, fn: (e: ImdsEni) => ImdsEni) => update((s) => ({
      ...s, enis: s.enis.map((e) => (e.mac === names.get(name) ? fn(e) : e)),
    }));
    const withIp = (e: ImdsEni, ip: string): ImdsEni =>
      (familyOf(ip) === 6 ? { ...e, ipv6s: [...(e.ipv6s ?? []), ip] } : { ...e, ipv4s: [...e.ipv4s, ip] });
    const withoutIp = (e: ImdsEni, ip: string): ImdsEni => (familyOf(ip) === 6
      ? { ...e, ipv6s: (e.ipv6s ?? []).filter((x) => x !== ip) }
      : { ...e, ipv4s: e.ipv4s.filter((x) => x !== ip) });
    const after = (ms: number, fn: () => Promise<void>): Promise<number> => new Promise((resolve, reject) => {
      setTimeout(() => { fn().then(() => resolve(Date.now()), reject); }, ms);
    });
    const self: Peer = {
      lists: (ip) => state.enis.some((e) => e.ipv4s.includes(ip) || (e.ipv6s ?? []).includes(ip)),
      unlist: (ip) => update((s) => ({ ...s, enis: s.enis.map((e) => withoutIp(e, ip)) })),
    };
    peers.push(self);
    const added: SimulatedEc2[] = [];

    const sim: SimulatedEc2 = {
      net, imds, workDir, configPath,
      imdsState: () => structuredClone(state),
      async attachEni(eni, o = {}) {
        names.set(eni.name, mac(eni));
        // `imds`: how IMDS describes the ENI when it first lists it (hide keys, override values: eventual consistency).
        const listInImds = () => update((s) => ({ ...s, enis: [...s.enis, { ...imdsEni(eni, subnet, subnet6, net.index), ...o.imds }] }));
        if (o.imdsFirst === true) await listInImds();
        await net.attachEni({
          name: eni.name, mac: mac(eni), ipv4s: eni.ipv4s, ipv6s: eni.ipv6s ?? [], deviceNumber: eni.deviceNumber, configure: false, up: o.linkUp ?? false,
        });
        await assignPrefixes(net, eni);
        if (o.imdsFirst !== true) await listInImds();
      },
      async detachEni(name) {
        const m = names.get(name);
        await net.detachEni(name);
        await update((s) => ({ ...s, enis: s.enis.filter((e) => e.mac !== m) }));
      },
      async assignIp(name, ip) {
        await net.assignIp(name, ip);
        await patchEni(name, (e) => withIp(e, ip));
      },
      async unassignIp(name, ip) {
        await patchEni(name, (e) => withoutIp(e, ip));
        await net.unassignIp(name, ip);
      },
      async reassignIp(name, ip, o = {}) {
        const from = peers.filter((p) => p !== self && p.lists(ip));
        await net.assignIp(name, ip, { reassign: true });
        const listed = after(o.listAfterMs ?? 0, () => patchEni(name, (e) => withIp(withoutIp(e, ip), ip)));
        const unlisted = after(o.unlistAfterMs ?? 0, async () => { for (const p of from) await p.unlist(ip); });
        // Callers may await either, both or neither: a failure is theirs to see, never an unhandled rejection.
        listed.catch(() => undefined);
        unlisted.catch(() => undefined);
        return { listed, unlisted };
      },
      async addInstance(o) {
        const peerNet = await net.addInstance({
          hostSysctls: o.hostSysctls,
          enis: o.enis.map((e, i) => ({
            name: e.name, mac: macOf(e, net.index + 1), ipv4s: e.ipv4s, deviceNumber: e.deviceNumber, configure: i === 0,
          })),
        });
        if (peerNet.index !== net.index + 1) {
          await peerNet.destroy();
          throw new Error('addInstance: add instances to the first instance of a subnet, one after the other');
        }
        const peer = await simulate(peerNet, o.enis, o.config, peers);
        added.push(peer);
        return peer;
      },
      patchImdsEni: (name, patch) => patchEni(name, (e) => ({ ...e, ...patch })),
      startDaemon(args = []) {
        const p = startProcess(nsArgv(net.ns.host, [EC2NETD_BIN, 'run', '--config', configPath, ...args]));
        processes.add(p);
        return p;
      },
      async ec2netd(args) {
        try {
          return { ...(await nsRun(net.ns.host, [EC2NETD_BIN, ...args, '--config', configPath], { timeoutMs: 30_000 })), code: 0 };
        } catch (err) {
          const e = err as { exitCode?: number; stdout?: string; stderr?: string };
          if (e.exitCode === undefined) throw err;
          return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: e.exitCode };
        }
      },
      async destroy() {
        for (const peer of added.splice(0)) await peer.destroy().catch(() => undefined);
        await Promise.all([...processes].map((p) => p.stop(2000)));
        if (peers.includes(self)) peers.splice(peers.indexOf(self), 1);
        await net.destroy();
        rmSync(workDir, { recursive: true, force: true });
      },
    };
    return sim;
  } catch (err) {
    await Promise.all([...processes].map((p) => p.stop(500)));
    await net.destroy();
    rmSync(workDir, { recursive: true, force: true });
    throw err;
  }
}
