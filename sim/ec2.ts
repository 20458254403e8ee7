// A whole simulated EC2 instance: the namespaces of sim/topology.ts, the IMDSv2 simulator answering on
// 169.254.169.254 inside the VPC namespace (reached through the instance's own routing, as on EC2), and
// helpers that keep "what AWS assigned" (the source/destination check) and "what IMDS says" in step.
// Used by the demo (sim/demo.ts), the end-to-end tests and the benchmarks.
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
const IMDS_SERVER = path.join(REPO_ROOT, 'dist', 'sim', 'imds-server.js');

export interface SimEniInput {
  /** Interface name in the instance (eth0, eth1...). */
  name: string;
  /** Private IPv4s, primary first. */
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

function macOf(eni: SimEniInput): string {
  return eni.mac ?? simMac(0x100 + (eni.networkCard ?? 0) * 0x40 + eni.deviceNumber);
}

function imdsEni(eni: SimEniInput, subnet: string, subnet6: string | undefined): ImdsEni {
  return {
    mac: macOf(eni), deviceNumber: eni.deviceNumber, networkCard: eni.networkCard ?? 0,
    interfaceId: `eni-${(0x0a000000 + (eni.networkCard ?? 0) * 0x100 + eni.deviceNumber).toString(16).padStart(17, '0')}`,
    ipv4s: eni.ipv4s, ipv4Prefixes: eni.ipv4Prefixes ?? [], subnetIpv4Cidr: subnet, vpcIpv4Cidrs: ['10.0.0.0/16'],
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
  const workDir = mkdtempSync(path.join(tmpdir(), 'ec2netd-sim-'));
  const primary = opts.enis[0];
  if (primary === undefined) throw new Error('a simulated instance needs at least one ENI');
  const net = await createInstance({
    ...opts,
    enis: opts.enis.map((e, i) => ({
      name: e.name, mac: macOf(e), ipv4s: e.ipv4s, ipv6s: e.ipv6s ?? [], deviceNumber: e.deviceNumber, configure: i === 0,
    })),
  });
  const processes = new Set<ManagedProcess>();
  try {
    const subnet = `${net.subnet}`;
    const subnet6 = net.subnet6;
    for (const e of opts.enis) await assignPrefixes(net, e);
    let state: ImdsInstance = { primaryMac: macOf(primary), enis: opts.enis.map((e) => imdsEni(e, subnet, subnet6)) };
    const instanceFile = path.join(workDir, 'imds-instance.json');
    writeFileSync(instanceFile, JSON.stringify(state));
    const controlPath = path.join(workDir, 'imds.sock');
    const server = net.spawn('vpc', [process.execPath, IMDS_SERVER, '--listen', `${net.imdsIp}:80`, '--control', controlPath, '--instance', instanceFile]);
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
      ...opts.config,
      // Merged, not replaced: a test that tunes one IMDS setting keeps the simulator's endpoint.
      imds: { endpoint: `http://${net.imdsIp}`, refreshIntervalMs: 60_000, timeoutMs: 1000, ...(opts.config?.imds as object | undefined) },
    }, null, 2));

    const names = new Map(opts.enis.map((e) => [e.name, macOf(e)]));
    const update = async (fn: (s: ImdsInstance) => ImdsInstance): Promise<void> => {
      state = fn(structuredClone(state));
      await imds.setInstance(state);
    };
    const patchEni = (name: string, fn: (e: ImdsEni) => ImdsEni) => update((s) => ({
      ...s, enis: s.enis.map((e) => (e.mac === names.get(name) ? fn(e) : e)),
    }));

    const sim: SimulatedEc2 = {
      net, imds, workDir, configPath,
      imdsState: () => structuredClone(state),
      async attachEni(eni, o = {}) {
        names.set(eni.name, macOf(eni));
        // `imds`: how IMDS describes the ENI when it first lists it (hide keys, override values: eventual consistency).
        const listInImds = () => update((s) => ({ ...s, enis: [...s.enis, { ...imdsEni(eni, subnet, subnet6), ...o.imds }] }));
        if (o.imdsFirst === true) await listInImds();
        await net.attachEni({
          name: eni.name, mac: macOf(eni), ipv4s: eni.ipv4s, ipv6s: eni.ipv6s ?? [], deviceNumber: eni.deviceNumber, configure: false, up: o.linkUp ?? false,
        });
        await assignPrefixes(net, eni);
        if (o.imdsFirst !== true) await listInImds();
      },
      async detachEni(name) {
        const mac = names.get(name);
        await net.detachEni(name);
        await update((s) => ({ ...s, enis: s.enis.filter((e) => e.mac !== mac) }));
      },
      async assignIp(name, ip) {
        await net.assignIp(name, ip);
        await patchEni(name, (e) => (familyOf(ip) === 6 ? { ...e, ipv6s: [...(e.ipv6s ?? []), ip] } : { ...e, ipv4s: [...e.ipv4s, ip] }));
      },
      async unassignIp(name, ip) {
        await patchEni(name, (e) => (familyOf(ip) === 6
          ? { ...e, ipv6s: (e.ipv6s ?? []).filter((x) => x !== ip) }
          : { ...e, ipv4s: e.ipv4s.filter((x) => x !== ip) }));
        await net.unassignIp(name, ip);
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
        await Promise.all([...processes].map((p) => p.stop(2000)));
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
