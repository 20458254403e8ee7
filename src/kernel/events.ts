// The kernel event watcher: which kinds of objects changed, never what changed (the sync re-reads them).
//
// A netlink socket of this process subscribed to the rtnetlink groups of links, addresses, routes and rules
// (src/kernel/netlink-events.ts). It replaced an `ip monitor` child: 2.9 MB resident, the formatting of every
// event as text, and with `nft monitor` 60–260 ms of start (spawn, then polling /proc until subscribed; the
// sockets take ~1 ms: docs/performance.md). The `netlink` addon used to abort the process on an overrun; the
// patched one reports it, and an overrun is a 'lost': a full resync.
//
// The kernel filters the socket (src/kernel/event-filter.ts, a classic BPF program): routes of the local table are
// dropped before they are queued, and so, once the daemon says which port its request socket has (ignoreOwnWrites),
// are the notifications of ec2netd's own writes (except address deletions): they never wake the thread.
//
// Contents used: a new link's MAC (RTM_NEWLINK), so that the daemon can start reading IMDS for an ENI it
// does not know as soon as the kernel announces it, before the sync that the 'change' asks for has even begun; and
// which links a link message is about, so that a link that only appeared costs no re-read of the routes.
//
// Events:
//   'link'   (link: KernelLink)        an RTM_NEWLINK, parsed (only while someone listens); before its 'change'
//   'unlink' (index: number)           an RTM_DELLINK (only while someone listens); before its 'change'
//   'change' (kinds: Set<ObjectKind>)  object kinds seen since the last emit, coalesced per event-loop turn
//   'lost'   (reason: string)          events may have been missed: resync everything
//   'ready'  (port: number)            the socket is subscribed
//   'unfiltered' (reason: string)      the kernel refused the filter: every message is read (as without one)
import type { KernelLink } from '../core/types';
import { rtnetlinkEventFilter } from './event-filter';
import { parseLinkMessage } from './links';
import { NETLINK_ROUTE, NetlinkEvents, type NetlinkEventsOptions } from './netlink-events';
import {
  NLMSG_HDRLEN, RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE, RTM_DELRULE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE, RTM_NEWRULE,
} from './rtnl-codec';
import type { ObjectKind } from './observe';

export interface KernelEventsOptions extends NetlinkEventsOptions {
  /** Filter in the kernel (default true); false: every message is read and classified here (tests compare). */
  kernelFilter?: boolean;
}

const KINDS: readonly ObjectKind[] = ['link', 'address', 'route', 'rule'];
const LINK = 1;
const ADDRESS = 2;
const ROUTE = 4;
const RULE = 8;

/** rtnetlink multicast groups (linux/rtnetlink.h, enum rtnetlink_groups). */
const RTNLGRP_LINK = 1;
const RTNLGRP_IPV4_IFADDR = 5;
const RTNLGRP_IPV4_ROUTE = 7;
const RTNLGRP_IPV4_RULE = 8;
const RTNLGRP_IPV6_IFADDR = 9;
const RTNLGRP_IPV6_ROUTE = 11;
const RTNLGRP_IPV6_RULE = 19;
export const RTNL_GROUPS: readonly number[] = [
  RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, RTNLGRP_IPV4_RULE, RTNLGRP_IPV6_RULE,
];

/** rtmsg: family, dst_len, src_len, tos, table (u8), protocol, scope, type, flags (u32). */
const RTMSG_TABLE = 4;
const RT_TABLE_LOCAL = 255;

/**
 * The kind of one rtnetlink notification, from its type. Routes of the local table are ignored: the kernel
 * derives them from addresses (two per IPv4 address: an address storm doubles its events with them), the
 * address event itself is reported, and the kernel cache leaves table 255 out (src/kernel/observe.ts).
 */
export function classifyRtnetlink(buf: Buffer, offset: number, length: number): number {
  switch (buf.readUInt16LE(offset + 4)) {
    case RTM_NEWLINK:
    case RTM_DELLINK:
      return LINK;
    case RTM_NEWADDR:
    case RTM_DELADDR:
      return ADDRESS;
    case RTM_NEWROUTE:
    case RTM_DELROUTE:
      return length > NLMSG_HDRLEN + RTMSG_TABLE && buf[offset + NLMSG_HDRLEN + RTMSG_TABLE] === RT_TABLE_LOCAL ? 0 : ROUTE;
    case RTM_NEWRULE:
    case RTM_DELRULE:
      return RULE;
    default:
      return 0;
  }
}

export declare interface KernelEvents {
  on(event: 'link', listener: (link: KernelLink) => void): this;
  on(event: 'unlink', listener: (index: number) => void): this;
  on(event: 'change', listener: (kinds: Set<ObjectKind>) => void): this;
  on(event: 'lost', listener: (reason: string) => void): this;
  on(event: 'ready', listener: (port: number) => void): this;
  on(event: 'unfiltered', listener: (reason: string) => void): this;
}

export class KernelEvents extends NetlinkEvents<ObjectKind> {
  private readonly kernelFilter: boolean;

  constructor(options: KernelEventsOptions = {}) {
    super({ name: 'rtnetlink events', protocol: NETLINK_ROUTE, groups: RTNL_GROUPS, kinds: KINDS, classify: classifyRtnetlink }, options);
    this.kernelFilter = options.kernelFilter ?? true;
    if (this.kernelFilter) this.setFilter(rtnetlinkEventFilter());
  }

  /**
   * The daemon's request socket now has port `port` (undefined: it has none open): the kernel drops the
   * notifications of what that socket writes, on this socket and on any it reopens. The ACKs tell the writer how
   * each write went; its echo would only cost a read and a sync that finds nothing to do.
   */
  ignoreOwnWrites(port: number | undefined): void {
    if (this.kernelFilter) this.setFilter(rtnetlinkEventFilter(port === undefined ? {} : { ownPort: port }));
  }

  protected override inspect(buf: Buffer, offset: number, length: number): void {
    const type = buf.readUInt16LE(offset + 4);
    // ifinfomsg: family (u8), pad, type (u16), index (s32), ...
    if (type === RTM_DELLINK && length >= NLMSG_HDRLEN + 8 && this.listenerCount('unlink') > 0) this.emit('unlink', buf.readInt32LE(offset + NLMSG_HDRLEN + 4));
    if (type !== RTM_NEWLINK || this.listenerCount('link') === 0) return;
    const link = parseLinkMessage(RTM_NEWLINK, buf.subarray(offset + NLMSG_HDRLEN, offset + length));
    if (link !== undefined) this.emit('link', link);
  }
}
