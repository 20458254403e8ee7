// iptables changes send no rtnetlink event. With the nft backend (iptables-nft, what Docker uses on current
// distributions) they are nftables transactions, which the kernel announces to the NFNLGRP_NFTABLES group of
// NETLINK_NETFILTER (what `nft monitor` prints; a subscribed socket of this process replaced that child). A
// message about the mangle table of family ip or ip6 (add or delete of a rule, chain, set or the table itself)
// makes the daemon compare its chain with iptables-save at once (`ip6 mangle`: the ip6tables chain, for IPv6
// container networks). Other tables (Docker's nat and filter churn) are ignored. With the legacy backend there
// is no such event: drift is then found on the periodic refresh.
import { NETLINK_NETFILTER, NetlinkEvents, type NetlinkEventsOptions } from '../kernel/netlink-events';
import { NLMSG_HDRLEN, forEachAttribute } from '../kernel/rtnl-codec';

const NFNLGRP_NFTABLES = 7;
const NFNL_SUBSYS_NFTABLES = 10;
/** NFT_MSG_NEWGEN: the end of every transaction, of any table (its attribute 1 is a generation id). */
const NFT_MSG_NEWGEN = 15;
const NFPROTO_IPV4 = 2;
const NFPROTO_IPV6 = 10;
/** nfgenmsg: family (u8), version (u8), resource id (be16). */
const NFGENMSG_LEN = 4;
/** The table name attribute (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE...: all 1). */
const NFTA_TABLE = 1;
const MANGLE = Buffer.from('mangle\0');

/** 1 when an nf_tables notification is about the IPv4 or the IPv6 mangle table. */
export function classifyNftables(buf: Buffer, offset: number, length: number): number {
  const type = buf.readUInt16LE(offset + 4);
  if (type >> 8 !== NFNL_SUBSYS_NFTABLES || (type & 0xff) === NFT_MSG_NEWGEN || length < NLMSG_HDRLEN + NFGENMSG_LEN) return 0;
  const family = buf[offset + NLMSG_HDRLEN];
  if (family !== NFPROTO_IPV4 && family !== NFPROTO_IPV6) return 0;
  let mangle: boolean | undefined;
  forEachAttribute(buf, offset + NLMSG_HDRLEN + NFGENMSG_LEN, offset + length, (type, value, end) => {
    if (type === NFTA_TABLE && mangle === undefined) mangle = end - value === MANGLE.length && buf.compare(MANGLE, 0, MANGLE.length, value, end) === 0;
  });
  return mangle === true ? 1 : 0;
}

export class NetfilterEvents extends NetlinkEvents<'mangle'> {
  constructor(options: NetlinkEventsOptions = {}) {
    super({ name: 'nftables events', protocol: NETLINK_NETFILTER, groups: [NFNLGRP_NFTABLES], kinds: ['mangle'], classify: classifyNftables }, options);
  }
}
