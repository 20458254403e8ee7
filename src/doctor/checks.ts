// The doctor's checks: each one a pure function from collected facts to findings. Read docs/doctor.md for
// why each matters. Nothing here does I/O; src/doctor/collect.ts gathers the facts.
import { decide, findClaims, type EniVerdict, type ManagerId } from '../core/coexistence';
import { matchesBridgePattern } from '../core/containers';
import { formatRule } from '../core/format';
import { networkOf, parseCidr } from '../core/ip';
import type { KernelRoute } from '../core/types';
import { checkAcceptRa, checkIpv6MainRoutes, ipv6OnlyImdsHint } from './ipv6';
import type { DoctorFacts, Finding, Severity } from './types';
import { SEVERITY_ORDER } from './types';

const MAIN = 254;
const VPC_MAX_MTU = 9001;

interface EniLink {
  name: string;
  ifindex: number;
  mac: string;
  primary: boolean;
  table?: number;
  subnet?: string;
}

/** The ENIs' links: from the desired state; the primary is the main default route's link when IMDS is silent. */
export function eniLinks(facts: Pick<DoctorFacts, 'desired' | 'kernel'>): EniLink[] {
  const out: EniLink[] = facts.desired.enis.map((d) => ({
    name: d.link.name, ifindex: d.link.index, mac: d.link.mac, primary: d.primary, table: d.table,
    subnet: d.eni.subnetIpv4Cidr === '' ? undefined : d.eni.subnetIpv4Cidr,
  }));
  if (!out.some((e) => e.primary)) {
    const def = facts.kernel.routes.find((r) => r.table === MAIN && r.family === 4 && r.dst === '0.0.0.0/0' && r.ifindex !== undefined);
    const link = facts.kernel.links.find((l) => l.index === def?.ifindex);
    if (link !== undefined && !out.some((e) => e.ifindex === link.index)) out.unshift({ name: link.name, ifindex: link.index, mac: link.mac, primary: true });
  }
  return out;
}

export function containerBridgeNames(facts: Pick<DoctorFacts, 'kernel' | 'config'>): string[] {
  if (!facts.config.containers.enabled) return [];
  return facts.kernel.links.filter((l) => matchesBridgePattern(l.name, facts.config.containers.bridgePatterns)).map((l) => l.name);
}

const ok = (check: string, message: string): Finding => ({ check, severity: 'ok', message });

// ---- the daemon itself ------------------------------------------------------------------------------------

export function checkDaemon(facts: Pick<DoctorFacts, 'daemonRunning'>): Finding[] {
  if (facts.daemonRunning) return [ok('daemon', 'an ec2netd daemon is running in this network namespace')];
  return [{
    check: 'daemon', severity: 'warn',
    message: 'no ec2netd daemon runs in this network namespace: nothing follows attaches, secondary-IP changes or repairs deleted rules',
    fix: 'systemctl enable --now ec2netd (or run `ec2netd run` under your supervisor)',
  }];
}

// ---- IMDS -------------------------------------------------------------------------------------------------

export function checkImds(facts: Pick<DoctorFacts, 'imds' | 'config' | 'kernel'>): Finding[] {
  const endpoint = facts.config.imds.endpoint;
  const out: Finding[] = [];
  const p = facts.imds;
  const reachFix = `check the route to the endpoint (ip route get ${endpoint.replace(/^https?:\/\/\[?/, '').replace(/[\]/].*$/, '').replace(/:\d+$/, '')}), firewall rules dropping it (iptables -S OUTPUT), and that the metadata endpoint is enabled (aws ec2 modify-instance-metadata-options --http-endpoint enabled)`;
  if (p.token === 'ok') {
    if (p.snapshotError === undefined) out.push(ok('imds', `IMDSv2 answers at ${endpoint} (token and network data)`));
    else out.push({ check: 'imds', severity: 'error', message: `IMDSv2 gives a token at ${endpoint} but reading the network data fails: ${p.snapshotError}`, fix: 'retry later; if it persists, check the values named (ec2netd refuses malformed ones) and IMDS throttling (1024 packets/s per ENI)' });
  } else if (p.token === 'http') {
    const v1 = p.v1 ? ' IMDSv1 (no token) answers, so something between the host and IMDS refuses the PUT (a proxy, an HTTP-filtering firewall).' : '';
    const meaning = p.status === 403 ? ' (403: the metadata endpoint is disabled for this instance, or the request was forwarded)' : p.status >= 500 ? ' (IMDS is failing)' : '';
    out.push({ check: 'imds', severity: 'error', message: `the IMDSv2 token request (PUT /latest/api/token) to ${endpoint} answers HTTP ${p.status}${meaning}.${v1} ec2netd only uses IMDSv2 and keeps the last good state`, fix: p.v1 ? 'let PUT requests with the X-aws-ec2-metadata-token-ttl-seconds header through to 169.254.169.254' : reachFix });
  } else {
    const v1 = p.v1 ? ' A GET without a token answers, so PUT requests are dropped on the way (IMDSv1-only path).' : '';
    out.push({ check: 'imds', severity: 'error', message: `IMDS at ${endpoint} is unreachable from the host: ${p.reason}.${v1} ec2netd keeps the last good state and cannot configure new ENIs or addresses`, fix: ipv6OnlyImdsHint(facts) ?? reachFix });
  }
  const bridges = containerBridgeNames({ kernel: facts.kernel, config: facts.config });
  if (bridges.length > 0) {
    out.push({
      check: 'imds-hop-limit', severity: 'info',
      message: `containers are in use (${bridges.join(', ')}): the IMDSv2 token answer leaves with IP TTL = the instance's http-put-response-hop-limit; at 1 it dies at the bridge, so containers get no token (IMDSv1 still works if enabled). The host cannot measure this`,
      fix: 'if containers need IMDSv2: aws ec2 modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2',
    });
  }
  return out;
}

// ---- rp_filter and src_valid_mark -------------------------------------------------------------------------

function sys(facts: Pick<DoctorFacts, 'sysctl'>, iface: string, key: string): number | undefined {
  return facts.sysctl[`${iface}.${key}`];
}

/** Effective value of a max(all, iface) sysctl (rp_filter, arp_ignore, arp_announce). */
export function effective(facts: Pick<DoctorFacts, 'sysctl'>, iface: string, key: string): number | undefined {
  const all = sys(facts, 'all', key);
  const own = sys(facts, iface, key);
  if (all === undefined && own === undefined) return undefined;
  return Math.max(all ?? 0, own ?? 0);
}

export function checkRpFilter(facts: Pick<DoctorFacts, 'sysctl' | 'desired' | 'kernel' | 'config'>): Finding[] {
  const out: Finding[] = [];
  const bridges = containerBridgeNames(facts);
  const svm = sys(facts, 'all', 'src_valid_mark');
  const secondaries = eniLinks(facts).filter((e) => !e.primary);
  for (const e of secondaries) {
    const value = effective(facts, e.name, 'rp_filter');
    if (value !== 1) continue;
    const why = `rp_filter on ${e.name} is strict (effective max(all=${sys(facts, 'all', 'rp_filter') ?? '?'}, ${e.name}=${sys(facts, e.name, 'rp_filter') ?? '?'}) = 1)`;
    if (bridges.length > 0 && svm !== 1) {
      out.push({
        check: 'rp-filter', severity: 'error',
        message: `${why}, containers are in use (${bridges.join(', ')}) and net.ipv4.conf.all.src_valid_mark=${svm ?? '?'}: the reverse-path check of a published port's DNATed packet ignores the connection mark, finds the primary ENI and drops it`,
        fix: `sysctl -w net.ipv4.conf.all.src_valid_mark=1 (ec2netd sets it when containers.manageSysctls is true), or loose mode: sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.${e.name}.rp_filter=2 (persist in /etc/sysctl.d/)`,
      });
    } else if (bridges.length === 0) {
      out.push({
        check: 'rp-filter', severity: 'info',
        message: `${why}: fine for host sockets (ec2netd's source rules make the reverse lookup find ${e.name}); containers added later need net.ipv4.conf.all.src_valid_mark=1 (now ${svm ?? '?'})`,
        fix: 'keep containers.manageSysctls true, or set net.ipv4.conf.all.src_valid_mark=1 in /etc/sysctl.d/',
      });
    }
  }
  if (out.length === 0) {
    out.push(ok('rp-filter', secondaries.length === 0 ? 'no secondary ENI to check' : `rp_filter lets traffic of ${secondaries.map((e) => e.name).join(', ')} through${bridges.length > 0 ? ` (src_valid_mark=${svm ?? '?'})` : ''}`));
  }
  return out;
}

// ---- ARP flux ---------------------------------------------------------------------------------------------

function subnetOf(e: EniLink, facts: Pick<DoctorFacts, 'kernel'>): string | undefined {
  if (e.subnet !== undefined) return normalize(e.subnet);
  const a = facts.kernel.addresses.find((x) => x.ifindex === e.ifindex && x.family === 4);
  return a === undefined ? undefined : normalize(`${a.address}/${a.prefixLen}`);
}

function normalize(cidr: string): string | undefined {
  const c = parseCidr(cidr);
  return c === undefined ? undefined : networkOf(c);
}

export function checkArp(facts: Pick<DoctorFacts, 'sysctl' | 'desired' | 'kernel'>): Finding[] {
  const enis = eniLinks(facts);
  const bySubnet = new Map<string, EniLink[]>();
  for (const e of enis) {
    const s = subnetOf(e, facts);
    if (s !== undefined) bySubnet.set(s, [...(bySubnet.get(s) ?? []), e]);
  }
  const shared = [...bySubnet.entries()].filter(([, list]) => list.length > 1);
  if (shared.length === 0) return [ok('arp', 'no two ENIs share a subnet: no ARP flux')];
  const out: Finding[] = [];
  for (const [subnet, list] of shared) {
    const loose = list.filter((e) => (effective(facts, e.name, 'arp_ignore') ?? 0) < 1 || (effective(facts, e.name, 'arp_announce') ?? 0) < 2);
    if (loose.length === 0) continue;
    out.push({
      check: 'arp', severity: 'info',
      message: `${list.map((e) => e.name).join(', ')} share ${subnet} and ${loose.map((e) => `${e.name} has arp_ignore=${effective(facts, e.name, 'arp_ignore') ?? '?'} arp_announce=${effective(facts, e.name, 'arp_announce') ?? '?'}`).join(', ')}: each ENI answers ARP for the others' addresses and may announce a foreign source (ARP flux). The VPC answers ARP itself, so this is cosmetic on EC2, but it confuses captures and on-host bridges`,
      fix: 'sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 (persist in /etc/sysctl.d/)',
    });
  }
  return out.length === 0 ? [ok('arp', 'arp_ignore/arp_announce prevent ARP flux between ENIs in one subnet')] : out;
}

// ---- MTU --------------------------------------------------------------------------------------------------

export function checkMtu(facts: Pick<DoctorFacts, 'mtu' | 'desired' | 'kernel'>): Finding[] {
  const enis = eniLinks(facts).filter((e) => facts.mtu[e.name] !== undefined);
  if (enis.length === 0) return [];
  const out: Finding[] = [];
  const values = new Map<number, string[]>();
  for (const e of enis) {
    const m = facts.mtu[e.name] as number;
    values.set(m, [...(values.get(m) ?? []), e.name]);
    if (m > VPC_MAX_MTU) {
      out.push({ check: 'mtu', severity: 'warn', message: `${e.name} has MTU ${m}, above the VPC's ${VPC_MAX_MTU}: larger frames are dropped`, fix: `ip link set ${e.name} mtu ${VPC_MAX_MTU} (and MTUBytes= in its networkd/netplan config)` });
    }
  }
  if (values.size > 1) {
    const text = [...values.entries()].map(([m, names]) => `${names.join(', ')}: ${m}`).join('; ');
    const max = Math.max(...values.keys());
    out.push({
      check: 'mtu', severity: 'warn',
      message: `the ENIs' MTUs differ (${text}): a connection's MSS depends on the ENI the SYN came in on, while policy routing may send the reply out another; PMTU black holes follow when ICMP is filtered`,
      fix: `give every ENI the same MTU (ip link set <dev> mtu ${max > VPC_MAX_MTU ? VPC_MAX_MTU : max}; persist with DHCP option or MTUBytes=), normally the DHCP-provided 9001`,
    });
  }
  if (out.length === 0) {
    const [m] = [...values.keys()];
    out.push(ok('mtu', `every ENI has MTU ${m}`));
    if (m === VPC_MAX_MTU) {
      out.push({ check: 'mtu', severity: 'info', message: 'MTU 9001 holds inside the VPC; traffic through an internet gateway, VPN, Direct Connect without jumbo frames or inter-region peering is limited to 1500 and relies on path-MTU discovery', fix: 'let ICMP "fragmentation needed" (type 3 code 4) in through security groups and NACLs, or clamp MSS for those paths' });
    }
  }
  return out;
}

// ---- main table connected routes --------------------------------------------------------------------------

export function checkMainRoutes(facts: Pick<DoctorFacts, 'desired' | 'kernel'>): Finding[] {
  const enis = eniLinks(facts);
  const primary = enis.find((e) => e.primary);
  if (primary === undefined) return [];
  const secondaries = new Map(enis.filter((e) => !e.primary).map((e) => [e.ifindex, e]));
  const main = facts.kernel.routes.filter((r) => r.table === MAIN && r.family === 4 && r.type === 1);
  const out: Finding[] = [];
  const metric = (r: KernelRoute): number => r.metric ?? 0;
  for (const r of main) {
    const sec = r.ifindex === undefined ? undefined : secondaries.get(r.ifindex);
    if (sec === undefined) continue;
    const ours = main.filter((p) => p.ifindex === primary.ifindex && p.dst === r.dst && (p.gateway === undefined) === (r.gateway === undefined));
    if (ours.length === 0) continue;
    const best = Math.min(...ours.map(metric));
    const what = r.dst === '0.0.0.0/0' ? 'the default route' : `the connected route for ${r.dst}`;
    if (metric(r) < best || metric(r) === best) {
      out.push({
        check: 'main-routes', severity: metric(r) < best ? 'error' : 'warn',
        message: `the main table holds ${what} via ${sec.name} (metric ${metric(r)}) ${metric(r) < best ? 'ahead of' : 'level with'} ${primary.name}'s (metric ${best}): traffic from the primary's addresses can leave through ${sec.name} and the VPC's source/destination check drops it`,
        fix: `ip route del ${r.dst === '0.0.0.0/0' ? 'default' : r.dst} dev ${sec.name} metric ${metric(r)} table main, and stop the DHCP client/networkd from adding it (ec2netd adds secondary ENI addresses with noprefixroute; for networkd: [DHCPv4] UseRoutes=no or RouteMetric= above the primary's)`,
      });
    }
  }
  return out.length === 0 ? [ok('main-routes', `the main table prefers ${primary.name} for its subnet`)] : out;
}

// ---- foreign rules and routes, duplicate managers ---------------------------------------------------------

function fixFor(manager: ManagerId, v: EniVerdict): string {
  const dels = v.claims.filter((c) => c.rule !== undefined).slice(0, 3).map((c) => `ip rule del ${formatRule(c.rule as NonNullable<typeof c.rule>)}`);
  if (manager === 'amazon-ec2-net-utils') {
    return 'stop amazon-ec2-net-utils (systemctl disable --now "refresh-policy-routes@*.timer" "policy-routes@*.service"; dnf remove amazon-ec2-net-utils), then set coexistence.policy "adopt" to take over its leftovers, or remove them and restart ec2netd';
  }
  if (manager === 'cloud-init/netplan') {
    return 'remove routing-policy (and the per-NIC tables) from /etc/netplan/*.yaml and disable cloud-init network config (network: {config: disabled} in /etc/cloud/cloud.cfg.d/), netplan apply, then delete the leftover rules or use coexistence.policy "adopt"';
  }
  return `find the tool that adds them and stop it${dels.length > 0 ? `; then remove them: ${dels.join('; ')}` : ''}`;
}

export function checkForeign(facts: Pick<DoctorFacts, 'desired' | 'kernel' | 'config' | 'managers'>): Finding[] {
  const claims = findClaims(facts.desired, facts.kernel, facts.config, facts.managers);
  const verdicts = decide(claims, facts.config.coexistence.policy, facts.managers);
  const out: Finding[] = [];
  for (const v of verdicts) {
    const shadow = v.claims.filter((c) => c.shadows && c.elsewhere);
    const managers = [...new Set(v.claims.map((c) => c.manager))];
    const manager = managers.find((m) => m !== 'unknown') ?? 'unknown';
    if (shadow.length > 0) {
      out.push({
        check: 'foreign-rules', severity: 'error',
        message: `${shadow.map((c) => c.text).join('; ')}: consulted before ec2netd's rules (pref ${facts.config.priorities.fromAddress}) for ${v.linkName}'s sources, it sends their traffic to another table than ${v.table}: replies can leave through the wrong ENI`,
        fix: fixFor(manager, v),
      });
    }
    out.push({
      check: 'coexistence', severity: 'warn',
      message: v.reason,
      fix: fixFor(manager, v),
    });
  }
  // Rules shaped like ec2netd's (its priority, a table in its range) with another protocol: a second ec2netd
  // configured with another `protocol`, or a copy made by hand.
  const lookalikes = facts.kernel.rules.filter((r) => r.protocol !== facts.config.protocol && r.priority === facts.config.priorities.fromAddress && r.table >= facts.config.tableBase);
  if (lookalikes.length > 0) {
    out.push({
      check: 'foreign-rules', severity: 'warn',
      message: `rules with ec2netd's priority and tables but protocol ${[...new Set(lookalikes.map((r) => r.protocol))].join(', ')} (not ${facts.config.protocol}): ${lookalikes.slice(0, 3).map(formatRule).join('; ')}: another ec2netd configured with a different protocol, or hand-made copies; ec2netd never removes them`,
      fix: 'run a single ec2netd with one protocol setting; remove the copies with ip rule del ...',
    });
  }
  return out.length === 0 ? [ok('foreign-rules', 'no foreign rule or route claims the ENIs\' sources or tables')] : out;
}

export function checkManagers(facts: Pick<DoctorFacts, 'managers'>): Finding[] {
  const out: Finding[] = [];
  for (const m of facts.managers) {
    if (!m.installed && !m.active) continue;
    const evidence = m.evidence.slice(0, 4).join(', ');
    out.push({
      check: 'managers', severity: m.active ? 'warn' : 'info',
      message: m.active
        ? `${m.id} is active (${evidence}): a second manager of policy routing; ec2netd leaves the ENIs it claims alone under coexistence.policy refuse/adopt`
        : `${m.id} is installed but not active (${evidence})`,
      fix: m.id === 'amazon-ec2-net-utils'
        ? 'dnf remove amazon-ec2-net-utils (or systemctl disable --now "refresh-policy-routes@*.timer" and mask policy-routes@.service)'
        : 'remove routing-policy from the netplan files and disable cloud-init network config for secondary NICs',
    });
  }
  return out.length === 0 ? [ok('managers', 'no other policy-routing manager (amazon-ec2-net-utils, netplan routing-policy) found')] : out;
}

// ---- systemd-networkd -------------------------------------------------------------------------------------

export function checkNetworkd(facts: Pick<DoctorFacts, 'networkd'>): Finding[] {
  const n = facts.networkd;
  if (n.state === 'absent') return [ok('networkd', 'systemd-networkd is not installed')];
  const rules = n.manageForeignRoutingPolicyRules ?? true;
  const routes = n.manageForeignRoutes ?? true;
  if (!rules && !routes) return [ok('networkd', `systemd-networkd (${n.state}) leaves foreign rules and routes alone (ManageForeignRoutingPolicyRules=no, ManageForeignRoutes=no)`)];
  const which = [rules ? 'ManageForeignRoutingPolicyRules' : '', routes ? 'ManageForeignRoutes' : ''].filter((x) => x !== '').join(' and ');
  const severity: Severity = n.state === 'active' ? 'error' : n.state === 'enabled' ? 'warn' : 'info';
  return [{
    check: 'networkd', severity,
    message: `systemd-networkd is ${n.state} and ${which} ${rules && routes ? 'are' : 'is'} yes (${n.files.length === 0 ? 'no networkd.conf: the default' : `read from ${n.files.join(', ')}`}): on restart, reload or when it configures a new link it deletes ec2netd's rules and routes, which ec2netd then re-adds (a fight, with outages in between)`,
    fix: 'install /etc/systemd/networkd.conf.d/ec2netd.conf with [Network] ManageForeignRoutingPolicyRules=no and ManageForeignRoutes=no (the package ships it in /usr/lib/systemd/networkd.conf.d/), then systemctl restart systemd-networkd',
  }];
}

// ---- iptables backend -------------------------------------------------------------------------------------

export function checkIptables(facts: Pick<DoctorFacts, 'iptables' | 'config'>): Finding[] {
  const { nft, legacy } = facts.iptables;
  const chain = facts.config.iptables.chain;
  const where = (pick: (v: NonNullable<typeof nft>) => boolean): string[] =>
    [nft !== undefined && pick(nft) ? 'nft' : '', legacy !== undefined && pick(legacy) ? 'legacy' : ''].filter((x) => x !== '');
  const ours = where((v) => v.ourChain);
  const docker = where((v) => v.dockerChains);
  if (nft === undefined && legacy === undefined) return [{ check: 'iptables', severity: 'info', message: 'neither iptables-nft-save nor iptables-legacy-save runs: cannot check the backend', fix: 'install iptables if containers need connection marks' }];
  if (ours.length > 0 && docker.length > 0 && !ours.some((b) => docker.includes(b))) {
    return [{
      check: 'iptables', severity: 'error',
      message: `ec2netd's chain ${chain} is in iptables-${ours.join('/')} but Docker's chains are in iptables-${docker.join('/')}: both run, neither sees the other; marks are set in one and Docker's NAT/FORWARD in the other, so published ports on secondary ENIs may reply through the wrong ENI`,
      fix: `set iptables.backend to "auto" (or "${docker[0] ?? 'nft'}") and run ec2netd flush + restart; then remove the stale chain with iptables-${ours[0] ?? 'legacy'} -t mangle -F ${chain}; -X ${chain}`,
    }];
  }
  const out: Finding[] = [];
  if (ours.length > 1) out.push({ check: 'iptables', severity: 'warn', message: `ec2netd's chain ${chain} exists in both iptables-nft and iptables-legacy: one is stale`, fix: `remove it from the backend Docker does not use (iptables-<backend> -t mangle -D PREROUTING -j ${chain}; -F ${chain}; -X ${chain})` });
  if (docker.length > 1) out.push({ check: 'iptables', severity: 'warn', message: "Docker's chains exist in both iptables-nft and iptables-legacy (Docker was run with both); ec2netd uses the system default", fix: 'restart Docker after cleaning the unused backend, or set iptables.backend explicitly' });
  if (out.length === 0) {
    out.push(ok('iptables', docker.length === 0
      ? `no Docker chains${ours.length > 0 ? `; ${chain} is in iptables-${ours[0]}` : ''}`
      : `${chain}${ours.length > 0 ? '' : ' (absent)'} and Docker's chains are in the same backend (iptables-${docker[0]})`));
  }
  return out;
}

// ---- all --------------------------------------------------------------------------------------------------

export const CHECKS: ((facts: DoctorFacts) => Finding[])[] = [
  checkDaemon, checkImds, checkRpFilter, checkForeign, checkManagers, checkNetworkd, checkIptables, checkMtu, checkArp, checkMainRoutes,
  checkIpv6MainRoutes, checkAcceptRa,
];

/**
 * Checks that judge the kernel's state: on a partial dump they would report what is merely unread. (imds reads
 * the links only to name container bridges in a hint: it still runs.)
 */
const KERNEL_CHECKS = new Set<(facts: DoctorFacts) => Finding[]>([
  checkRpFilter, checkForeign, checkMtu, checkArp, checkMainRoutes, checkIpv6MainRoutes, checkAcceptRa,
]);

export function runChecks(facts: DoctorFacts): Finding[] {
  const unreadable = facts.unreadable ?? [];
  if (unreadable.length === 0) return CHECKS.flatMap((check) => check(facts));
  const kernel: Finding = {
    check: 'kernel', severity: 'error',
    message: `cannot read the kernel's state (${unreadable.join('; ')}): the checks that need it were skipped`,
    fix: 'run doctor as root in the instance\'s network namespace, on a kernel (not an emulator) that answers rtnetlink dumps',
  };
  return [kernel, ...CHECKS.filter((check) => !KERNEL_CHECKS.has(check)).flatMap((check) => check(facts))];
}

export function worst(findings: readonly Finding[]): Severity {
  return findings.reduce<Severity>((w, f) => (SEVERITY_ORDER[f.severity] > SEVERITY_ORDER[w] ? f.severity : w), 'ok');
}

/** Exit code: 0 when the worst finding is ok or info, 1 for warn, 2 for error. */
export function exitCode(findings: readonly Finding[]): number {
  const w = worst(findings);
  return w === 'error' ? 2 : w === 'warn' ? 1 : 0;
}

export function renderText(findings: readonly Finding[]): string {
  return findings.map((f) => `${f.severity.toUpperCase().padEnd(5)} ${f.check}: ${f.message}${f.fix === undefined || f.severity === 'ok' ? '' : `. Fix: ${f.fix}`}`).join('\n');
}

