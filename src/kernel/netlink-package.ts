// The parts of the `netlink` package ec2netd uses, required from their own files: the package's index also
// loads its generic netlink, nl80211 and WireGuard modules, about a third of the daemon's module loading time.
export { FlagsNew } from 'netlink/dist/constants';
export type { RequestOptions } from 'netlink/dist/netlink';
export { createRtNetlink, type RtNetlinkSocket } from 'netlink/dist/rt/rt';
export * as rt from 'netlink/dist/rt/structs';
export { AttrStream, formatMessage, type NetlinkMessage } from 'netlink/dist/structs';
export { RawNetlinkSocket } from 'netlink/dist/raw';
