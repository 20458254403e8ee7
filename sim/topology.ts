// The simulated EC2 instance, in network namespaces (docs: /work/shared/docs/testbed.md §1).
//
//   ${prefix}-cli  eth0 192.168.50.2 ── to-cli 192.168.50.1 ┐
//                                                           ${prefix}-vpc: router (ip_forward), lo 169.254.169.254,
//                                                           br0 10.0.1.1/24 (fixed MAC) = the subnet,
//                                                           nft bridge table "ec2sim" = source/destination check
//   ${prefix}-host  eth0 ── p-eth0 (port of br0)            ┘
//                   eth1 ── p-eth1 (port of br0)
//
// IPv6 (when `subnet6` is given, docs/ipv6.md "The simulator"): br0 also holds <subnet6>::1 and the VPC router's
// link-local address fe80::<EUI-64 of br0's MAC> (as on EC2, where the router's link-local address derives from its
// MAC); the client gets 2001:db8:50::2/64 behind to-cli 2001:db8:50::1; the nft table also checks IPv6 sources
// (set `owned6`; link-local and unspecified sources pass, so NDP works); every assigned IPv6 gets a PERMANENT
// neighbour entry in the VPC. There is no radvd: the router's advertisement is simulated by installing what the
// kernel would learn from it, `<subnet6> dev ethN proto ra` and `default via <router> dev ethN proto ra`, whenever
// an ENI's link comes up (an `ip monitor link` in the host namespace), as the kernel's router solicitation at
// link-up would bring it. DHCPv6 on the primary ENI is simulated as DHCPv4 is: its first IPv6 as /128.
//
// More instances on the same VPC subnet (addInstance): each has its own namespace `${prefix}-host<k>` and ports
// `p<k>-<name>` on the same br0; the nft bridge table marks their frames with k, and a nat rule sends their
// IMDS requests (169.254.169.254:80) to port IMDS_PORT_BASE + k in the VPC namespace, where their own IMDS
// simulator listens. A private IP can move between ENIs of any instance (assignIp with `reassign`), the source
// check and the VPC's neighbour entry following it, as `assign-private-ip-addresses --allow-reassignment` does.
//
// The instance ends of the ENI veth pairs are created directly in the host namespace and the ports directly
// in the vpc namespace, so no interface ever exists in the caller's namespace and names never collide
// across instances. Nothing here touches the namespace this process runs in.
import { canonicalAddress, cidrContains, familyOf, intToIpv4, ipv4ToInt, networkOf, normalizeMac, parseCidr, subnetGateway } from '../src/core/ip';
import { ipBatch, nsArgv, nsRun, run, startProcess } from './exec';
import type { ManagedProcess, RunOptions, RunResult } from './exec';

/** One ENI to attach. */
export interface SimEniSpec {
  /** Interface name inside the instance (eth0, eth1, ens6...): at most 13 characters (the port is `p-<name>`). */
  name: string;
  /** The ENI's fixed MAC (lower-case, colon-separated). */
  mac: string;
  /**
   * Private IPv4 addresses AWS has assigned to the ENI, primary first: each one is allowed as a source on the
   * ENI's port and gets a PERMANENT neighbour entry in the VPC. Assigning does not configure the instance.
   */
  ipv4s?: string[];
  /**
   * Configure the instance side as DHCP on the primary ENI would: primary IPv4 /subnet-len on the link and
   * `default via <gateway>` (none on an IPv6-only ENI), the first IPv6 as DHCPv6 would. Default: true for the first ENI given to createInstance, false otherwise
   * (secondary ENIs get nothing: ec2netd configures them).
   */
  configure?: boolean;
  /** Bring the instance end up. Default true (a freshly hot-attached ENI on EC2 is down: pass false). */
  up?: boolean;
  /** Metadata for IMDS simulators (device-number); default: position in attach order. */
  deviceNumber?: number;
  /**
   * IPv6 addresses AWS has assigned (needs `subnet6`): source allowed on the port + PERMANENT neighbour in the VPC.
   * With `configure`, the first one is put on the link as DHCPv6 would (/128, noprefixroute).
   */
  ipv6s?: string[];
}

export interface CreateInstanceOptions {
  /** Namespace name prefix: `${prefix}-vpc`, `${prefix}-host`, `${prefix}-cli`. [A-Za-z0-9-], ≤ 40 chars. */
  prefix: string;
  /**
   * The ENIs' subnet (the client subnet and IMDS address are fixed around it). 10.0.0.0/16 (the whole VPC CIDR of
   * sim/ec2.ts) is for instances with more than 254 addresses, e.g. 15 ENIs × 50 IPv4s.
   */
  subnet?: '10.0.1.0/24' | '10.0.0.0/16';
  /**
   * IPv6 subnet of the ENIs (a /64, e.g. 2600:1f18:aaaa:bb01::/64): enables IPv6 in the VPC, the client and the
   * source/destination check (see the header). Without it the instance is IPv4-only.
   */
  subnet6?: string;
  /**
   * Metric of the routes the simulated router advertisement leaves in the instance's main table, by device number.
   * Default 512 + 10 × device-number, the order a network manager gives the ENIs (ec2-net-utils: RouteMetric); a
   * plain kernel would use 1024 on every link (docs/ipv6.md).
   */
  raMetric?: (deviceNumber: number) => number;
  enis: SimEniSpec[];
  /**
   * sysctls set in the instance namespace before any ENI exists (so `default.*` applies to them).
   * A new namespace's IPv4 values may be inherited from the machine's (net.core.devconf_inherit_init_net), so
   * the default pins rp_filter to 0 on all/default; pass e.g. `{ 'net.ipv4.conf.all.rp_filter': '1' }` to test
   * strict mode. Keys given here replace the defaults with the same key.
   */
  hostSysctls?: Record<string, string>;
  /** Also drop ARP whose sender IP is not owned by the port (sender 0.0.0.0, i.e. probes, passes). Default true. */
  arpCheck?: boolean;
}

/** An attached ENI as the simulator knows it. */
export interface SimEni {
  /** Name given at attach time (the key for detach/assign, even if the instance renames the link). */
  readonly name: string;
  readonly mac: string;
  /** The bridge port in the vpc namespace. */
  readonly portName: string;
  readonly deviceNumber: number;
  /** Assigned private IPv4s (primary first). */
  readonly ipv4s: readonly string[];
  /** Assigned IPv6s. */
  readonly ipv6s: readonly string[];
  /** Extra source ranges allowed on the port (allowSource with a CIDR or an IP not in ipv4s). */
  readonly extraSources: readonly string[];
}

export type SimNsRole = 'vpc' | 'host' | 'client';

export interface SimInstance {
  readonly prefix: string;
  readonly ns: { readonly vpc: string; readonly host: string; readonly client: string };
  readonly subnet: string;
  readonly prefixLen: number;
  readonly gateway: string;
  readonly clientIp: string;
  readonly imdsIp: string;
  /** IPv6 (undefined without `subnet6`): the ENIs' /64, the client's address, the VPC router's link-local. */
  readonly subnet6: string | undefined;
  readonly clientIp6: string | undefined;
  readonly routerIp6: string | undefined;
  /** IMDS's IPv6 address (fd00:ec2::254) on the VPC's loopback, with `subnet6`; reached through the RA's default route. */
  readonly imdsIp6: string | undefined;
  /** Current ENIs, in attach order (copies). */
  enis(): SimEni[];
  eni(name: string): SimEni;
  /** Hot attach: veth pair, instance end named and MAC'd as given, peer a port of the bridge. */
  attachEni(spec: SimEniSpec): Promise<SimEni>;
  /** Hot detach: deletes the pair (from the vpc side, so it works after a rename inside the instance). */
  detachEni(name: string): Promise<void>;
  /**
   * AWS assigns a private IP (IPv4, or IPv6 with `subnet6`): source allowed on the port + PERMANENT neighbour in the VPC.
   * `reassign` (--allow-reassignment): an IP held by another ENI, of this or another instance on the subnet, moves.
   */
  assignIp(eniName: string, ip: string, opts?: { reassign?: boolean }): Promise<void>;
  unassignIp(eniName: string, ip: string): Promise<void>;
  /** Only the source/destination check part: `ip` may be an address or a CIDR (delegated prefix), IPv4 or IPv6. */
  allowSource(eniName: string, ipOrCidr: string): Promise<void>;
  revokeSource(eniName: string, ipOrCidr: string): Promise<void>;
  /**
   * AWS delegates a prefix to an ENI: allowed as a source on its port, and routed to the ENI by the VPC (a route
   * via the ENI's first address of that family). Assign the ENI's address of that family first.
   */
  assignPrefix(eniName: string, cidr: string): Promise<void>;
  /**
   * What the VPC router's advertisement leaves in the instance for that link (see the header); done automatically
   * when the link comes up. Idempotent.
   */
  advertiseRouter(eniName: string): Promise<void>;
  /**
   * Another instance on the same subnet (IPv4 only): its own namespace and ENIs (the first one configured as DHCP
   * would), ports on the same bridge. Its IMDS requests go to IMDS_PORT_BASE + index in the VPC namespace (see the
   * header). Destroyed with this instance, or on its own.
   */
  addInstance(opts: { enis: SimEniSpec[]; hostSysctls?: Record<string, string> }): Promise<SimInstance>;
  /** 0 for the instance createInstance made, k for the k-th added one. */
  readonly index: number;
  /** Port in the VPC namespace where this instance's IMDS requests arrive (80 for instance 0). */
  readonly imdsPort: number;
  /** Packets dropped so far by the emulated source/destination check. */
  dropCounters(): Promise<{ ipv4: number; arp: number; ipv6: number }>;
  /** Runs a command in one of the instance's namespaces. */
  exec(role: SimNsRole, argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Starts a long-running command in a namespace; destroy() stops it. */
  spawn(role: SimNsRole, argv: readonly string[], opts?: { cwd?: string; env?: NodeJS.ProcessEnv }): ManagedProcess;
  /** Stops started processes, kills anything else left in the namespaces, deletes them. Idempotent. */
  destroy(): Promise<void>;
}

const BRIDGE = 'br0';
const BRIDGE_MAC = '02:ec:2a:00:01:01';
const CLIENT_LINK_VPC = 'to-cli';
const CLIENT_LINK = 'eth0';
const CLIENT_SUBNET_LEN = 24;
const CLIENT_GW = '192.168.50.1';
const CLIENT_IP = '192.168.50.2';
const IMDS_IP = '169.254.169.254';
/** IMDS's IPv6 endpoint (Nitro), the only one an instance without IPv4 can reach. */
const IMDS_IP6 = 'fd00:ec2::254';
const NFT_TABLE = 'ec2sim';
const NFT_SET4 = 'owned4';
const NFT_DROP4 = 'drop4';
const NFT_DROPARP = 'droparp';
const NFT_SET6 = 'owned6';
const NFT_DROP6 = 'drop6';
const CLIENT_IP6 = '2001:db8:50::2';
const CLIENT_GW6 = '2001:db8:50::1';
const CLIENT_SUBNET6_LEN = 64;

const PREFIX_RE = /^[A-Za-z0-9][A-Za-z0-9-]{0,39}$/;
const IFNAME_MAX = 15;
/** Port `p-<name>` for instance 0, `p<k>-<name>` for the k-th added one. */
function portPrefix(index: number): string {
  return index === 0 ? 'p-' : `p${index}-`;
}
/** Instance k > 0 reaches its IMDS simulator on this port + k in the VPC namespace. */
export const IMDS_PORT_BASE = 8000;
const NFT_NAT_TABLE = 'ec2simnat';

const DEFAULT_HOST_SYSCTLS: Record<string, string> = {
  'net.ipv4.conf.all.rp_filter': '0',
  'net.ipv4.conf.default.rp_filter': '0',
};

export function namespaceNames(prefix: string): { vpc: string; host: string; client: string } {
  return { vpc: `${prefix}-vpc`, host: `${prefix}-host`, client: `${prefix}-cli` };
}

function sysctlArgv(values: Record<string, string>): string[] {
  return ['sysctl', '-q', '-w', ...Object.entries(values).map(([k, v]) => `${k}=${v}`)];
}

function checkIfname(name: string, prefix: string): void {
  if (!/^[A-Za-z0-9_.-]+$/.test(name) || name.length + prefix.length > IFNAME_MAX) {
    throw new Error(`ENI name ${JSON.stringify(name)}: use [A-Za-z0-9_.-], at most ${IFNAME_MAX - prefix.length} characters`);
  }
}

function checkMac(mac: string): string {
  const m = normalizeMac(mac);
  if (m === undefined) throw new Error(`not a MAC: ${JSON.stringify(mac)}`);
  return m;
}

function checkIpv4(ip: string): void {
  if (familyOf(ip) !== 4) throw new Error(`not an IPv4 address: ${JSON.stringify(ip)}`);
}

/** An address or CIDR, in nft element syntax (network/len for a CIDR), with its family. */
function sourceElement(ipOrCidr: string): { family: 4 | 6; element: string } {
  const c = parseCidr(ipOrCidr);
  if (c === undefined) throw new Error(`not an address or CIDR: ${JSON.stringify(ipOrCidr)}`);
  const host = c.prefixLen === (c.family === 4 ? 32 : 128);
  return { family: c.family, element: host ? canonicalAddress(c.address) : networkOf(c) };
}

/** fe80::/64 address from a MAC by modified EUI-64 (RFC 4291 appendix A), as the kernel forms it. */
export function linkLocalFromMac(mac: string): string {
  const b = mac.split(':').map((h) => parseInt(h, 16));
  const [b0 = 0, b1 = 0, b2 = 0, b3 = 0, b4 = 0, b5 = 0] = b;
  const hex = (hi: number, lo: number): string => ((hi << 8) | lo).toString(16);
  return canonicalAddress(`fe80::${hex(b0 ^ 2, b1)}:${hex(b2, 0xff)}:${hex(0xfe, b3)}:${hex(b4, b5)}`);
}

function nftElement(port: string, src: string): string {
  return `"${port}" . ${src}`;
}

function nftRuleset(arpCheck: boolean): string {
  // Bridge family: priority filter is -200. Frames from the bridge itself (the router) do not pass
  // prerouting, only frames entering from ports, i.e. from ENIs.
  // IPv6: the check is for global sources. NDP, MLD and DAD use link-local or unspecified sources and pass (an
  // instance answers neighbour solicitations for its own addresses and solicits the router from them, both fine).
  return [
    `table bridge ${NFT_TABLE} {`,
    `  set ${NFT_SET4} { type ifname . ipv4_addr; flags interval; }`,
    `  set ${NFT_SET6} { type ifname . ipv6_addr; flags interval; }`,
    `  counter ${NFT_DROP4} { }`,
    `  counter ${NFT_DROPARP} { }`,
    `  counter ${NFT_DROP6} { }`,
    '  chain prerouting {',
    '    type filter hook prerouting priority filter; policy accept;',
    `    ether type ip iifname . ip saddr != @${NFT_SET4} counter name "${NFT_DROP4}" drop`,
    '    ether type ip6 ip6 saddr { ::, fe80::/10 } accept',
    `    ether type ip6 iifname . ip6 saddr != @${NFT_SET6} counter name "${NFT_DROP6}" drop`,
    ...(arpCheck
      ? [`    ether type arp arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @${NFT_SET4} counter name "${NFT_DROPARP}" drop`]
      : []),
    '  }',
    '}',
    '',
  ].join('\n');
}

interface EniState {
  name: string;
  mac: string;
  portName: string;
  deviceNumber: number;
  ipv4s: string[];
  ipv6s: string[];
  extraSources: string[];
  /** The simulated router advertisement is in place for the link's current up period. */
  advertised: boolean;
}

class Instance implements SimInstance {
  readonly ns: { vpc: string; host: string; client: string };
  readonly subnet: string;
  readonly prefixLen: number;
  readonly gateway: string;
  readonly clientIp = CLIENT_IP;
  readonly imdsIp = IMDS_IP;
  readonly subnet6: string | undefined;
  readonly clientIp6: string | undefined;
  readonly routerIp6: string | undefined;
  readonly imdsIp6: string | undefined;
  private readonly eniStates = new Map<string, EniState>();
  private readonly raMetric: (deviceNumber: number) => number;
  private readonly processes = new Set<ManagedProcess>();
  private nextDevice = 0;
  private destroying: Promise<void> | undefined;
  readonly index: number;
  readonly imdsPort: number;
  /** Every instance on the subnet, the one createInstance made first (shared by all of them). */
  private readonly fabric: Instance[];

  constructor(
    readonly prefix: string,
    subnet: string,
    private readonly arpCheck: boolean,
    subnet6?: string,
    raMetric?: (deviceNumber: number) => number,
    peerOf?: { fabric: Instance[]; index: number },
  ) {
    this.index = peerOf?.index ?? 0;
    this.imdsPort = this.index === 0 ? 80 : IMDS_PORT_BASE + this.index;
    this.fabric = peerOf?.fabric ?? [];
    this.fabric.push(this);
    this.ns = peerOf === undefined ? namespaceNames(prefix) : { ...namespaceNames(prefix), host: `${prefix}-host${this.index}` };
    const c = parseCidr(subnet);
    if (c === undefined || c.family !== 4) throw new Error(`bad subnet ${subnet}`);
    this.subnet = networkOf(c);
    this.prefixLen = c.prefixLen;
    this.gateway = subnetGateway(c);
    if (subnet6 !== undefined) {
      const c6 = parseCidr(subnet6);
      if (c6 === undefined || c6.family !== 6 || c6.prefixLen !== 64) throw new Error(`subnet6 must be an IPv6 /64, got ${subnet6}`);
      this.subnet6 = networkOf(c6);
      this.clientIp6 = CLIENT_IP6;
      this.routerIp6 = linkLocalFromMac(BRIDGE_MAC);
      this.imdsIp6 = IMDS_IP6;
    }
    this.raMetric = raMetric ?? ((device) => 512 + 10 * device);
  }

  enis(): SimEni[] {
    return [...this.eniStates.values()].map((e) => this.copy(e));
  }

  eni(name: string): SimEni {
    return this.copy(this.state(name));
  }

  private copy(e: EniState): SimEni {
    return {
      name: e.name, mac: e.mac, portName: e.portName, deviceNumber: e.deviceNumber,
      ipv4s: [...e.ipv4s], ipv6s: [...e.ipv6s], extraSources: [...e.extraSources],
    };
  }

  private state(name: string): EniState {
    const e = this.eniStates.get(name);
    if (e === undefined) throw new Error(`no ENI ${name} in ${this.prefix}`);
    return e;
  }

  private nsOf(role: SimNsRole): string {
    return this.ns[role];
  }

  exec(role: SimNsRole, argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
    return nsRun(this.nsOf(role), argv, opts);
  }

  spawn(role: SimNsRole, argv: readonly string[], opts?: { cwd?: string; env?: NodeJS.ProcessEnv }): ManagedProcess {
    if (this.destroying !== undefined) throw new Error(`instance ${this.prefix} is destroyed`);
    const p = startProcess(nsArgv(this.nsOf(role), argv), opts);
    this.processes.add(p);
    void p.exited.then(() => this.processes.delete(p));
    return p;
  }

  /** Builds everything but the ENIs. */
  async setup(hostSysctls: Record<string, string>): Promise<void> {
    const { vpc, host, client } = this.ns;
    await ipBatch(undefined, [`netns add ${vpc}`, `netns add ${host}`, `netns add ${client}`]);
    await ipBatch(vpc, [
      'link set lo up',
      `addr add ${IMDS_IP}/32 dev lo`,
      // Fixed MAC: a bridge whose MAC follows its ports changes it when a port is added, which flushes
      // even PERMANENT neighbour entries.
      `link add ${BRIDGE} address ${BRIDGE_MAC} type bridge`,
      `addr add ${this.gateway}/${this.prefixLen} dev ${BRIDGE}`,
      `link set ${BRIDGE} up`,
      `link add ${CLIENT_LINK_VPC} type veth peer name ${CLIENT_LINK} netns ${client}`,
      `addr add ${CLIENT_GW}/${CLIENT_SUBNET_LEN} dev ${CLIENT_LINK_VPC}`,
      `link set ${CLIENT_LINK_VPC} up`,
    ]);
    await ipBatch(client, [
      'link set lo up',
      `link set ${CLIENT_LINK} up`,
      `addr add ${CLIENT_IP}/${CLIENT_SUBNET_LEN} dev ${CLIENT_LINK}`,
      `route add default via ${CLIENT_GW}`,
    ]);
    await Promise.all([
      nsRun(vpc, sysctlArgv({
        'net.ipv4.ip_forward': '1',
        'net.ipv4.conf.all.rp_filter': '0',
        'net.ipv4.conf.default.rp_filter': '0',
        [`net.ipv4.conf.${BRIDGE}.rp_filter`]: '0',
      })),
      nsRun(vpc, ['nft', '-f', '-'], { input: nftRuleset(this.arpCheck) }),
      (async () => {
        await nsRun(host, sysctlArgv(hostSysctls));
        await ipBatch(host, ['link set lo up']);
      })(),
    ]);
    if (this.subnet6 !== undefined && this.routerIp6 !== undefined) await this.setup6(this.subnet6, this.routerIp6);
  }

  /** IPv6 of the VPC and the client; the watcher that answers link-ups with the router's advertisement. */
  private async setup6(subnet6: string, router: string): Promise<void> {
    const { vpc, client, host } = this.ns;
    // The VPC is not an L2 segment where duplicates can appear: no DAD on its side (addresses usable at once).
    await nsRun(vpc, sysctlArgv({ 'net.ipv6.conf.all.forwarding': '1', 'net.ipv6.conf.all.accept_dad': '0', 'net.ipv6.conf.default.accept_dad': '0' }));
    const base = subnet6.split('/')[0] ?? '::';
    await ipBatch(vpc, [
      `link set ${BRIDGE} addrgenmode none`,
      `addr add ${router}/64 dev ${BRIDGE} nodad`,
      `addr add ${canonicalAddress(base.replace(/::$/, '::1'))}/64 dev ${BRIDGE} nodad`,
      `addr add ${CLIENT_GW6}/${CLIENT_SUBNET6_LEN} dev ${CLIENT_LINK_VPC} nodad`,
      `addr add ${IMDS_IP6}/128 dev lo nodad`,
    ]);
    await ipBatch(client, [
      `addr add ${CLIENT_IP6}/${CLIENT_SUBNET6_LEN} dev ${CLIENT_LINK} nodad`,
      `route add default via ${CLIENT_GW6} dev ${CLIENT_LINK}`,
    ]);
    const watch = this.spawn('host', ['ip', '-o', 'monitor', 'link']);
    let buffer = '';
    watch.child.stdout?.on('data', (chunk: Buffer | string) => {
      buffer += chunk.toString();
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      for (const line of lines) this.onLinkLine(line);
    });
    // The watcher is listening once it reports anything: poke a harmless change and wait for its line.
    const deadline = Date.now() + 5000;
    for (let i = 0; !watch.output().stdout.includes(': lo:'); i++) {
      if (watch.hasExited() || Date.now() > deadline) throw new Error(`ip monitor link in ${host} did not start: ${watch.output().stderr}`);
      if (i % 20 === 0) await ipBatch(host, [`link set lo mtu ${i % 40 === 0 ? 65535 : 65536}`]);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async addInstance(opts: { enis: SimEniSpec[]; hostSysctls?: Record<string, string> }): Promise<SimInstance> {
    const root = this.fabric[0] ?? this;
    if (root.destroying !== undefined) throw new Error(`instance ${this.prefix} is destroyed`);
    const index = Math.max(...this.fabric.map((i) => i.index)) + 1;
    const peer = new Instance(this.prefix, this.subnet, this.arpCheck, undefined, undefined, { fabric: this.fabric, index });
    try {
      await peer.setupPeer({ ...DEFAULT_HOST_SYSCTLS, ...(opts.hostSysctls ?? {}) });
      for (const [i, spec] of opts.enis.entries()) await peer.attachEni(spec, i === 0);
    } catch (err) {
      await peer.destroy().catch(() => undefined);
      throw err;
    }
    return peer;
  }

  /** An added instance: its namespace, and its frames marked so its IMDS requests reach its own simulator. */
  private async setupPeer(hostSysctls: Record<string, string>): Promise<void> {
    const { vpc, host } = this.ns;
    if ((await listNamespaces()).includes(host)) throw new Error(`namespace ${host} already exists (sweep stale ones first)`);
    await ipBatch(undefined, [`netns add ${host}`]);
    await nsRun(host, sysctlArgv(hostSysctls));
    await ipBatch(host, ['link set lo up']);
    // The mark survives the bridge into the VPC's IP stack, where nat picks the instance's IMDS port by it.
    await nsRun(vpc, ['nft', '-f', '-'], {
      input: [
        `insert rule bridge ${NFT_TABLE} prerouting iifname "${portPrefix(this.index)}*" meta mark set ${this.index}`,
        `add table ip ${NFT_NAT_TABLE}`,
        `add chain ip ${NFT_NAT_TABLE} prerouting { type nat hook prerouting priority dstnat; policy accept; }`,
        `add rule ip ${NFT_NAT_TABLE} prerouting meta mark ${this.index} ip daddr ${IMDS_IP} tcp dport 80 dnat to ${IMDS_IP}:${this.imdsPort}`,
        '',
      ].join('\n'),
    });
  }

  /** `ip -o monitor link` line: an ENI link that is up gets the router's advertisement once per up period. */
  private onLinkLine(line: string): void {
    const m = /^(Deleted )?\d+: ([^:@\s]+)(@\S+)?: <([^>]*)>/.exec(line.trim());
    if (m === null) return;
    const e = this.eniStates.get(m[2] ?? '');
    if (e === undefined) return;
    const flags = (m[4] ?? '').split(',');
    const up = m[1] === undefined && flags.includes('UP') && flags.includes('LOWER_UP');
    if (!up) {
      e.advertised = false;
      return;
    }
    if (e.advertised) return;
    void this.advertiseRouter(e.name).catch(() => undefined);
  }

  async advertiseRouter(eniName: string): Promise<void> {
    const e = this.state(eniName);
    if (this.subnet6 === undefined || this.routerIp6 === undefined) throw new Error('advertiseRouter: no subnet6');
    e.advertised = true;
    const metric = this.raMetric(e.deviceNumber);
    try {
      // What the kernel learns from the VPC router's RA: the on-link /64 (prefix information, L flag, no
      // autoconfiguration: addresses come from DHCPv6) and the default router, both `proto ra`, with lifetimes.
      await ipBatch(this.ns.host, [
        `route replace ${this.subnet6} dev ${e.name} proto ra metric ${metric} expires 2592000`,
        `route replace default via ${this.routerIp6} dev ${e.name} proto ra metric ${metric} expires 1800`,
      ]);
    } catch (err) {
      e.advertised = false;
      throw err;
    }
  }

  async attachEni(spec: SimEniSpec, configureDefault = false): Promise<SimEni> {
    checkIfname(spec.name, portPrefix(this.index));
    const mac = checkMac(spec.mac);
    if (this.eniStates.has(spec.name)) throw new Error(`ENI ${spec.name} already attached to ${this.prefix}`);
    for (const e of this.eniStates.values()) if (e.mac === mac) throw new Error(`MAC ${mac} already used by ${e.name}`);
    const ipv4s = spec.ipv4s ?? [];
    ipv4s.forEach(checkIpv4);
    const ipv6s = spec.ipv6s ?? [];
    for (const ip of ipv6s) this.checkIpv6(ip);
    const configure = spec.configure ?? configureDefault;
    if (configure && ipv4s[0] === undefined && ipv6s[0] === undefined) throw new Error(`ENI ${spec.name}: configure needs an address`);
    const deviceNumber = spec.deviceNumber ?? this.nextDevice;
    this.nextDevice = Math.max(this.nextDevice, deviceNumber) + 1;
    const state: EniState = {
      name: spec.name, mac, portName: portPrefix(this.index) + spec.name, deviceNumber, ipv4s: [], ipv6s: [], extraSources: [], advertised: false,
    };
    const { vpc, host } = this.ns;
    this.eniStates.set(spec.name, state);
    // The VPC delivers an ENI's IPs before the instance sees its link, as EC2 does (the source check's elements name
    // the port as a string, and neighbour entries are on the bridge): nothing of the fabric's is still being set up
    // once the link appears. Done after it, ~100 `nft`/`ip` processes ran on the instance's cores while ec2netd
    // configured the link (the hot-attach bench's window: docs/performance.md).
    try {
      for (const ip of [...ipv4s, ...ipv6s]) await this.assignIp(spec.name, ip);
      await ipBatch(vpc, [
        `link add ${state.portName} type veth peer name ${spec.name} address ${mac} netns ${host}`,
        `link set ${state.portName} master ${BRIDGE} up`,
      ]);
    } catch (err) {
      for (const ip of [...state.ipv4s, ...state.ipv6s]) await this.unassignIp(spec.name, ip).catch(() => undefined);
      this.eniStates.delete(spec.name);
      throw err;
    }
    // The fabric knows where every ENI is: a static FDB entry, no flooding needed to find it.
    await run(['bridge', '-n', vpc, 'fdb', 'replace', mac, 'dev', state.portName, 'master', 'static']);
    const hostLines: string[] = [];
    if (spec.up ?? true) hostLines.push(`link set ${spec.name} up`);
    if (configure && ipv4s[0] !== undefined) {
      hostLines.push(`addr add ${ipv4s[0]}/${this.prefixLen} dev ${spec.name}`);
      if (spec.up ?? true) hostLines.push(`route add default via ${this.gateway} dev ${spec.name}`);
    }
    // DHCPv6 on EC2 hands out a /128 (the /64 is on-link through the RA); networkd marks it noprefixroute.
    if (configure && ipv6s[0] !== undefined) hostLines.push(`addr add ${ipv6s[0]}/128 dev ${spec.name} noprefixroute nodad`);
    await ipBatch(host, hostLines);
    // Up at attach: the watcher may have seen the link come up before the ENI was known.
    if ((spec.up ?? true) && this.subnet6 !== undefined) await this.advertiseRouter(spec.name);
    return this.eni(spec.name);
  }

  async detachEni(name: string): Promise<void> {
    const e = this.state(name);
    const { vpc } = this.ns;
    // Deleting the port deletes its peer in the instance; set elements for the port go with it below.
    await run(['ip', '-n', vpc, 'link', 'del', e.portName]);
    for (const ip of [...e.ipv4s, ...e.ipv6s]) await this.unassignIp(name, ip);
    for (const src of [...e.extraSources]) await this.revokeSource(name, src);
    this.eniStates.delete(name);
  }

  private checkIpv6(ip: string): void {
    if (familyOf(ip) !== 6) throw new Error(`not an IPv6 address: ${JSON.stringify(ip)}`);
    const subnet6 = this.subnet6 === undefined ? undefined : parseCidr(this.subnet6);
    if (subnet6 === undefined) throw new Error(`IPv6 address ${ip}: the instance has no subnet6`);
    if (!cidrContains(subnet6, ip)) throw new Error(`IPv6 address ${ip} is outside ${this.subnet6}`);
  }

  async assignIp(eniName: string, address: string, opts: { reassign?: boolean } = {}): Promise<void> {
    const family = familyOf(address);
    if (family === 6) this.checkIpv6(address);
    else checkIpv4(address);
    const ip = canonicalAddress(address);
    const e = this.state(eniName);
    for (const inst of this.fabric) {
      for (const other of inst.eniStates.values()) {
        if (!other.ipv4s.includes(ip) && !other.ipv6s.includes(ip)) continue;
        if (opts.reassign !== true || other === e) throw new Error(`${ip} is already assigned to ${other.name}${inst === this ? '' : ` of ${inst.ns.host}`}`);
        // The VPC takes the IP off its previous ENI; the neighbour entry is replaced below.
        await inst.nftElements('delete', other.portName, ip, family === 6 ? 6 : 4);
        other.ipv4s = other.ipv4s.filter((x) => x !== ip);
        other.ipv6s = other.ipv6s.filter((x) => x !== ip);
      }
    }
    await this.nftElements('add', e.portName, ip, family === 6 ? 6 : 4);
    await run(['ip', '-n', this.ns.vpc, 'neigh', 'replace', ip, 'lladdr', e.mac, 'dev', BRIDGE, 'nud', 'permanent']);
    if (family === 6) e.ipv6s.push(ip);
    else e.ipv4s.push(ip);
  }

  async unassignIp(eniName: string, address: string): Promise<void> {
    const e = this.state(eniName);
    const ip = canonicalAddress(address);
    const family = familyOf(ip) === 6 ? 6 : 4;
    if (!(family === 6 ? e.ipv6s : e.ipv4s).includes(ip)) throw new Error(`${ip} is not assigned to ${eniName}`);
    await this.nftElements('delete', e.portName, ip, family);
    await run(['ip', '-n', this.ns.vpc, 'neigh', 'del', ip, 'dev', BRIDGE]).catch(() => undefined);
    if (family === 6) e.ipv6s = e.ipv6s.filter((x) => x !== ip);
    else e.ipv4s = e.ipv4s.filter((x) => x !== ip);
  }

  async allowSource(eniName: string, ipOrCidr: string): Promise<void> {
    const e = this.state(eniName);
    const { family, element } = sourceElement(ipOrCidr);
    if (family === 6 && this.subnet6 === undefined) throw new Error(`${ipOrCidr}: the instance has no subnet6`);
    await this.nftElements('add', e.portName, element, family);
    if (!e.extraSources.includes(element)) e.extraSources.push(element);
  }

  async revokeSource(eniName: string, ipOrCidr: string): Promise<void> {
    const e = this.state(eniName);
    const { family, element } = sourceElement(ipOrCidr);
    await this.nftElements('delete', e.portName, element, family);
    e.extraSources = e.extraSources.filter((x) => x !== element);
  }

  async assignPrefix(eniName: string, cidr: string): Promise<void> {
    const e = this.state(eniName);
    const c = parseCidr(cidr);
    if (c === undefined || !cidr.includes('/')) throw new Error(`not a CIDR: ${JSON.stringify(cidr)}`);
    const via = c.family === 6 ? e.ipv6s[0] : e.ipv4s[0];
    if (via === undefined) throw new Error(`assignPrefix ${cidr}: ${eniName} has no IPv${c.family} address to route it to`);
    await this.allowSource(eniName, cidr);
    // The VPC delivers the prefix to the ENI: a route via the ENI's address (its neighbour entry is permanent).
    await run(['ip', '-n', this.ns.vpc, c.family === 6 ? '-6' : '-4', 'route', 'replace', networkOf(c), 'via', via, 'dev', BRIDGE]);
  }

  private async nftElements(op: 'add' | 'delete', port: string, src: string, family: 4 | 6 = 4): Promise<void> {
    try {
      const set = family === 6 ? NFT_SET6 : NFT_SET4;
      await nsRun(this.ns.vpc, ['nft', op, 'element', 'bridge', NFT_TABLE, set, `{ ${nftElement(port, src)} }`]);
    } catch (err) {
      // Deleting an element that is not there (allowed twice, revoked twice) is not an error for the fabric.
      if (op === 'delete' && err instanceof Error && /No such file or directory/.test(err.message)) return;
      throw err;
    }
  }

  async dropCounters(): Promise<{ ipv4: number; arp: number; ipv6: number }> {
    const { stdout } = await nsRun(this.ns.vpc, ['nft', '-j', 'list', 'counters', 'table', 'bridge', NFT_TABLE]);
    const parsed = JSON.parse(stdout) as { nftables?: Array<{ counter?: { name: string; packets: number } }> };
    const get = (name: string): number => parsed.nftables?.find((o) => o.counter?.name === name)?.counter?.packets ?? 0;
    return { ipv4: get(NFT_DROP4), arp: get(NFT_DROPARP), ipv6: get(NFT_DROP6) };
  }

  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      if (this.index !== 0) {
        // An added instance owns only its namespace (its ports go with it); the subnet stays.
        await destroyNamespaces([this.ns.host], [...this.processes]);
        this.fabric.splice(this.fabric.indexOf(this), 1);
        return;
      }
      for (const peer of this.fabric.filter((i) => i !== this)) await peer.destroy().catch(() => undefined);
      await destroyNamespaces(Object.values(this.ns), [...this.processes]);
    })();
    return this.destroying;
  }
}

/**
 * Stops the given processes, kills (by pid) whatever else still runs in the namespaces, deletes them.
 * Missing namespaces are fine. Processes left as zombies are not waited for.
 */
export async function destroyNamespaces(names: readonly string[], processes: readonly ManagedProcess[] = []): Promise<void> {
  await Promise.all(processes.map((p) => p.stop(500)));
  const existing = new Set(await listNamespaces());
  const errors: string[] = [];
  for (const ns of names) {
    if (!existing.has(ns)) continue;
    try {
      const { stdout } = await run(['ip', 'netns', 'pids', ns]);
      for (const pid of stdout.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number)) {
        if (pid === process.pid) continue;
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
    } catch {
      // The namespace may disappear meanwhile.
    }
    try {
      await run(['ip', 'netns', 'del', ns]);
    } catch (err) {
      if ((await listNamespaces()).includes(ns)) errors.push(err instanceof Error ? err.message : String(err));
    }
  }
  if (errors.length > 0) throw new Error(`destroy: ${errors.join('; ')}`);
}

/** Names from `ip netns list` (which prints `name (id: N)` for namespaces with an id). */
export async function listNamespaces(): Promise<string[]> {
  const { stdout } = await run(['ip', 'netns', 'list']);
  return parseNetnsList(stdout);
}

export function parseNetnsList(stdout: string): string[] {
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

/** Builds a simulated instance; on any failure the partial instance is destroyed before the error is thrown. */
export async function createInstance(opts: CreateInstanceOptions): Promise<SimInstance> {
  if (!PREFIX_RE.test(opts.prefix)) throw new Error(`prefix ${JSON.stringify(opts.prefix)}: use [A-Za-z0-9-], ≤ 40 chars`);
  const subnet = opts.subnet ?? '10.0.1.0/24';
  const existing = await listNamespaces();
  const names = Object.values(namespaceNames(opts.prefix));
  const clash = names.filter((n) => existing.includes(n));
  if (clash.length > 0) throw new Error(`namespaces already exist: ${clash.join(', ')} (sweep stale ones first)`);
  const inst = new Instance(opts.prefix, subnet, opts.arpCheck ?? true, opts.subnet6, opts.raMetric);
  try {
    await inst.setup({ ...DEFAULT_HOST_SYSCTLS, ...(opts.hostSysctls ?? {}) });
    for (const [i, spec] of opts.enis.entries()) await inst.attachEni(spec, i === 0);
  } catch (err) {
    await inst.destroy().catch(() => undefined);
    throw err;
  }
  return inst;
}

/** `0a:ec:00:00:<aa>:<bb>` for device n: a locally administered unicast MAC, handy in tests. */
export function simMac(n: number): string {
  const hex = (v: number): string => v.toString(16).padStart(2, '0');
  return `0a:ec:00:00:${hex((n >> 8) & 0xff)}:${hex(n & 0xff)}`;
}

/** The n-th host address of the subnet (10.0.1.0/24, 10 → 10.0.1.10). */
export function subnetHost(subnet: string, n: number): string {
  const c = parseCidr(subnet);
  if (c === undefined || c.family !== 4) throw new Error(`bad subnet ${subnet}`);
  const base = networkOf(c).split('/')[0] ?? '0.0.0.0';
  return intToIpv4(ipv4ToInt(base) + n);
}
