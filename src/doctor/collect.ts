// The doctor's collection adapter: reads every fact the checks need. Reads only: no kernel write, no
// sysctl write, no iptables change (iptables-*-save only), no file written.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config';
import { buildDesired } from '../core/desired';
import type { DesiredState, EniInfo, ImdsSnapshot, KernelState } from '../core/types';
import { ImdsClient } from '../imds/client';
import { readSnapshot } from '../imds/snapshot';
import { BACKEND_COMMANDS } from '../iptables/backend';
import { hasDockerChains } from '../iptables/backend';
import { execArgv, IptablesError } from '../iptables/exec';
import { detectManagers, detectNetworkd, ec2netdRunning } from '../kernel/foreign';
import { openNetlink } from '../kernel/netlink';
import { ALL_KINDS, readKernelState } from '../kernel/observe';
import type { DoctorFacts, ImdsProbe, IptablesVariantFacts } from './types';

export interface CollectOptions {
  /** /proc/sys and /sys/class/net (they reflect the reader's network namespace). */
  procSys?: string;
  sysClassNet?: string;
  /** Prefix for the iptables commands (tests). */
  iptablesWrapper?: readonly string[];
}

const IF_SYSCTLS = ['rp_filter', 'arp_ignore', 'arp_announce'];

/** Synchronous: one /proc/sys value; and node:fs/promises would cost the daemon, which bundles this module, 1 MB. */
async function readNumber(path: string): Promise<number | undefined> {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

async function collectSysctls(kernel: KernelState, procSys: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const names = ['all', 'default', ...kernel.links.map((l) => l.name)];
  await Promise.all(names.flatMap((name) => IF_SYSCTLS.map(async (key) => {
    // Interface names are read from the kernel; a name is a single path component ('/' is not allowed in one).
    const value = await readNumber(join(procSys, 'net', 'ipv4', 'conf', name, key));
    if (value !== undefined) out[`${name}.${key}`] = value;
  })));
  const svm = await readNumber(join(procSys, 'net', 'ipv4', 'conf', 'all', 'src_valid_mark'));
  if (svm !== undefined) out['all.src_valid_mark'] = svm;
  return out;
}

const IF_SYSCTLS6 = ['accept_ra', 'forwarding'];

async function collectSysctls6(kernel: KernelState, procSys: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const names = ['all', 'default', ...kernel.links.map((l) => l.name)];
  await Promise.all(names.flatMap((name) => IF_SYSCTLS6.map(async (key) => {
    const value = await readNumber(join(procSys, 'net', 'ipv6', 'conf', name, key));
    if (value !== undefined) out[`${name}.${key}`] = value;
  })));
  return out;
}

async function collectMtu(kernel: KernelState, sysClassNet: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  await Promise.all(kernel.links.map(async (l) => {
    const mtu = await readNumber(join(sysClassNet, l.name, 'mtu'));
    if (mtu !== undefined) out[l.name] = mtu;
  }));
  return out;
}

function errorReason(err: unknown, timeoutMs: number, signal: AbortSignal): string {
  if (signal.aborted) return `no answer within ${timeoutMs} ms`;
  let current: unknown = err;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code !== '') return `connection failed (${code})`;
    current = current.cause;
  }
  return err instanceof Error ? err.message : String(err);
}

async function request(url: string, method: 'GET' | 'PUT', headers: Record<string, string>, timeoutMs: number): Promise<{ status: number } | { error: string }> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const r = await fetch(url, { method, headers: { ...headers, 'user-agent': 'ec2netd-doctor' }, signal, redirect: 'manual' });
    await r.body?.cancel().catch(() => undefined);
    return { status: r.status };
  } catch (err) {
    return { error: errorReason(err, timeoutMs, signal) };
  }
}

/** Token PUT; when it fails, whether IMDSv1 (a GET without a token) answers. */
export async function probeImds(config: Config): Promise<ImdsProbe> {
  const base = config.imds.endpoint.replace(/\/+$/, '');
  const timeout = config.imds.timeoutMs;
  const put = await request(`${base}/latest/api/token`, 'PUT', { 'X-aws-ec2-metadata-token-ttl-seconds': '60' }, timeout);
  if ('status' in put && put.status === 200) return { token: 'ok' };
  const get = await request(`${base}/latest/meta-data/`, 'GET', {}, timeout);
  const v1 = 'status' in get && get.status === 200;
  return 'status' in put ? { token: 'http', status: put.status, v1 } : { token: 'unreachable', reason: put.error, v1 };
}

async function iptablesVariant(command: string, chain: string, wrapper: readonly string[]): Promise<IptablesVariantFacts | undefined> {
  try {
    const dump = await execArgv([...wrapper, command], { timeoutMs: 5000 });
    return { dockerChains: hasDockerChains(dump), ourChain: new RegExp(`^:${chain} `, 'm').test(dump) };
  } catch (err) {
    if (err instanceof IptablesError) return undefined;
    throw err;
  }
}

/**
 * Without IMDS, ec2netd's wishes are rebuilt from its own rules in the kernel: one "ENI" per table its
 * `from` rules point to, on the link its routes in that table use.
 */
export function desiredFromKernel(kernel: KernelState, config: Config): DesiredState {
  const state: DesiredState = {
    enis: [], skipped: [], linksUp: [], addresses: [], routes: [], problems: [],
    rules: kernel.rules.filter((r) => r.protocol === config.protocol && r.src !== undefined),
    mangle: { chain: config.iptables.chain, mask: config.containers.markMask >>> 0, rules: [] },
    mangle6: { chain: config.iptables.chain, mask: config.containers.markMask >>> 0, rules: [] },
  };
  for (const table of [...new Set(state.rules.map((r) => r.table))]) {
    const route = kernel.routes.find((r) => r.table === table && r.protocol === config.protocol && r.gateway !== undefined)
      ?? kernel.routes.find((r) => r.table === table && r.protocol === config.protocol);
    const link = kernel.links.find((l) => l.index === route?.ifindex);
    if (link === undefined) continue;
    const eni: EniInfo = {
      mac: link.mac, deviceNumber: table - config.tableBase, networkCard: 0, interfaceId: `(${link.name}, IMDS not read)`,
      ipv4s: [], ipv4Prefixes: [], ipv6s: [], ipv6Prefixes: [], subnetIpv4Cidr: '', subnetIpv6Cidrs: [],
    };
    state.enis.push({ eni, link, primary: false, table });
  }
  return state;
}

export async function collectFacts(config: Config, opts: CollectOptions = {}): Promise<DoctorFacts> {
  const nl = openNetlink({ timeoutMs: config.sync.requestTimeoutMs });
  // Kind by kind: a dump the kernel (or an emulator: qemu-user has no FIB rule dumps) refuses is reported, and
  // the doctor still says what it can without it.
  let kernel: KernelState = { links: [], addresses: [], routes: [], rules: [] };
  const unreadable: string[] = [];
  try {
    for (const kind of ALL_KINDS) {
      try {
        kernel = await readKernelState(nl, new Set([kind]), kernel); // the other kinds carried over
      } catch (err) {
        unreadable.push(err instanceof Error ? err.message : String(err));
      }
    }
  } finally {
    nl.close();
  }
  const imds = await probeImds(config);
  let snapshot: ImdsSnapshot | undefined;
  if (imds.token === 'ok') {
    try {
      snapshot = await readSnapshot(new ImdsClient({ ...config.imds, attempts: 1 }));
    } catch (err) {
      imds.snapshotError = err instanceof Error ? err.message : String(err);
    }
  }
  const wrapper = opts.iptablesWrapper ?? [];
  const [sysctl, sysctl6, mtu, nft, legacy, daemonRunning] = await Promise.all([
    collectSysctls(kernel, opts.procSys ?? '/proc/sys'),
    collectSysctls6(kernel, opts.procSys ?? '/proc/sys'),
    collectMtu(kernel, opts.sysClassNet ?? '/sys/class/net'),
    iptablesVariant(BACKEND_COMMANDS.nft.save, config.iptables.chain, wrapper),
    iptablesVariant(BACKEND_COMMANDS.legacy.save, config.iptables.chain, wrapper),
    ec2netdRunning(),
  ]);
  return {
    config, kernel, mtu, sysctl, sysctl6, imds, snapshot,
    desired: snapshot === undefined ? desiredFromKernel(kernel, config) : buildDesired(snapshot, kernel, config),
    iptables: { nft, legacy },
    networkd: detectNetworkd(config.coexistence.root),
    managers: detectManagers(config.coexistence.root),
    ...(unreadable.length > 0 ? { unreadable } : {}),
    daemonRunning,
  };
}
