// The part of the `netlink` package ec2netd uses: its request socket (the N-API addon and request tracking),
// required from its own files. The package's index also loads its generic netlink, nl80211 and WireGuard modules,
// and its rt layer ~240 KB of generated rtnetlink structs (≈6 MB resident); ec2netd encodes and parses the
// messages it needs itself (src/kernel/rtnl-codec.ts and the object modules).
import { createNetlink, type NetlinkSocket } from 'netlink/dist/netlink';
export type { RequestOptions } from 'netlink/dist/netlink';
// mallocTrim: glibc's malloc_trim(0), added by ec2netd's patch to the addon (the one native module it builds).
export { mallocTrim, RawNetlinkSocket } from 'netlink/dist/raw';
export { formatMessage, type NetlinkMessage } from 'netlink/dist/structs';

const NETLINK_ROUTE = 0;

/** The rtnetlink request socket: the package's NetlinkSocket (sequence numbers, ACKs, multipart replies). */
export interface RtNetlinkSocket {
  readonly socket: NetlinkSocket;
}

/** Unreferenced while no request is pending (the package's default), so an idle socket never holds the event loop. */
export function createRtNetlink(): RtNetlinkSocket {
  return { socket: createNetlink(NETLINK_ROUTE) };
}
