// iptables changes send no rtnetlink event. With the nft backend (iptables-nft, what Docker uses on current
// distributions) they are nftables transactions, which `nft monitor` reports: a line naming the mangle
// table (`add rule ip mangle EC2NETD ...`, `delete chain ip mangle ...`, `delete table ip mangle`) makes
// the daemon compare its chain with iptables-save at once (`ip6 mangle`: the ip6tables chain, for IPv6 container
// networks). Other tables (Docker's nat and filter churn) are ignored. With the legacy backend there is no such event: drift is then found on the periodic refresh.
import { MonitorProcess, NETLINK_NETFILTER, type MonitorOptions } from '../kernel/monitor';

const MANGLE = Buffer.from(' ip mangle');
const MANGLE6 = Buffer.from(' ip6 mangle');

/** 1 when an `nft monitor` line is about the IPv4 or the IPv6 mangle table. */
export function classifyNftMonitorLine(buf: Buffer, start: number, end: number): number {
  const within = (needle: Buffer): boolean => {
    const at = buf.indexOf(needle, start);
    return at >= 0 && at < end;
  };
  return within(MANGLE) || within(MANGLE6) ? 1 : 0;
}

export class NetfilterEvents extends MonitorProcess<'mangle'> {
  constructor(options: MonitorOptions & { nftPath?: string } = {}) {
    const nft = options.nftPath ?? 'nft';
    super({
      name: `${nft} monitor`, command: nft, args: ['monitor'],
      netlinkProtocol: NETLINK_NETFILTER, kinds: ['mangle'], classify: classifyNftMonitorLine,
    }, options);
  }
}
