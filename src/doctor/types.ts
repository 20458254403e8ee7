// `ec2netd doctor`: the facts it collects (src/doctor/collect.ts) and the findings its checks produce
// (src/doctor/checks.ts, pure). docs/doctor.md describes every check.
import type { Config } from '../config';
import type { ManagerPresence } from '../core/coexistence';
import type { DesiredState, ImdsSnapshot, KernelState } from '../core/types';
import type { NetworkdFacts } from '../kernel/foreign';

export type Severity = 'ok' | 'info' | 'warn' | 'error';

export const SEVERITY_ORDER: Record<Severity, number> = { ok: 0, info: 1, warn: 2, error: 3 };

export interface Finding {
  /** Short name of the check (rp-filter, imds, ...). */
  check: string;
  severity: Severity;
  /** What was found. */
  message: string;
  /** How to fix it (absent for ok). */
  fix?: string;
}

export type ImdsProbe =
  /** The token PUT answered 200. */
  | { token: 'ok'; snapshotError?: string }
  /** The token PUT answered another status; `v1` says whether a GET without a token answered 200. */
  | { token: 'http'; status: number; v1: boolean }
  /** No answer (timeout) or a connection error. */
  | { token: 'unreachable'; reason: string; v1: boolean };

/** One iptables variant's view: undefined when the variant is not installed or its dump failed. */
export interface IptablesVariantFacts {
  dockerChains: boolean;
  /** ec2netd's chain (config iptables.chain) exists in its mangle table. */
  ourChain: boolean;
}

export interface DoctorFacts {
  config: Config;
  kernel: KernelState;
  /** MTU by link name. */
  mtu: Record<string, number>;
  /**
   * IPv4 per-interface sysctls by `<iface>.<name>` (all.rp_filter, default.rp_filter, eth1.rp_filter,
   * all.src_valid_mark, eth1.arp_ignore, ...); missing keys could not be read.
   */
  sysctl: Record<string, number>;
  /** IPv6 per-interface sysctls by `<iface>.<name>` (eth1.accept_ra, eth1.forwarding, all.forwarding, ...). */
  sysctl6?: Record<string, number>;
  imds: ImdsProbe;
  snapshot?: ImdsSnapshot;
  /** What ec2netd wants, from IMDS (or rebuilt from its own rules in the kernel when IMDS does not answer). */
  desired: DesiredState;
  iptables: { nft?: IptablesVariantFacts; legacy?: IptablesVariantFacts };
  networkd: NetworkdFacts;
  managers: ManagerPresence[];
  /** An ec2netd daemon holds the instance socket in this network namespace. */
  daemonRunning: boolean;
  /** Kernel dumps that failed (their objects are missing from `kernel`): the checks that read it are skipped. */
  unreadable?: string[];
}
