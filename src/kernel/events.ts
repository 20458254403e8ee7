// The kernel event watcher: which kinds of objects changed, never what changed (the sync re-reads them).
//
// Why a child process (`ip -o monitor label link address route rule`) and not a subscribed netlink socket in
// this process: the `netlink` package aborts the whole process with SIGABRT, which no JS handler can catch,
// when a subscribed socket overruns (docs/dependencies.md). `ip monitor` is a tiny, well-kept program that opens
// its socket with a 1 MB receive buffer, and on ENOBUFS prints "netlink receive error No buffer space available"
// to stderr and carries on (iproute2 lib/libnetlink.c, rtnl_listen). So the worst an overrun or a crash of the
// watcher can do is lose events, which is reported as 'lost' and turned into a full resync by the daemon.
//
// Events:
//   'change' (kinds: Set<ObjectKind>)  object kinds seen since the last emit, coalesced per event-loop turn
//   'lost'   (reason: string)          events may have been missed: resync everything
//   'ready'  (pid: number)             a watcher child is running and subscribed
//
// Output of iproute2 6.1 with `-o` and `label` (verified): one line per message, starting with the object tag,
// `Deleted ` follows it for deletions:
//   [ADDR]3: v0    inet 10.0.1.6/24 scope global secondary v0\       valid_lft forever ...
//   [ROUTE]Deleted 10.9.0.0/16 via 10.0.1.1 dev v0 table 10001 proto 236
//   [RULE]10050:	from all to 10.9.0.0/16 lookup 10001 proto 236
//   [LINK]2: v1@v0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 ...
import { MonitorProcess, NETLINK_ROUTE, type MonitorOptions } from './monitor';
import type { ObjectKind } from './observe';

export interface KernelEventsOptions extends MonitorOptions {
  /** The `ip` program (default: `ip` from PATH). */
  ipPath?: string;
}

const KINDS: readonly ObjectKind[] = ['link', 'address', 'route', 'rule'];
const LINK = 1;
const ADDRESS = 2;
const ROUTE = 4;
const RULE = 8;
const BRACKET = 0x5b; // [

/** The kind of one `ip -o monitor label` line, from its first bytes: [LINK], [ADDR], [ROUTE], [RULE]. */
export function classifyIpMonitorLine(buf: Buffer, start: number, end: number): number {
  if (end - start < 3 || buf[start] !== BRACKET) return 0;
  const c = buf[start + 1];
  if (c === 0x4c) return LINK;
  if (c === 0x41) return ADDRESS;
  if (c === 0x52) return buf[start + 2] === 0x55 ? RULE : ROUTE;
  return 0;
}

export class KernelEvents extends MonitorProcess<ObjectKind> {
  constructor(options: KernelEventsOptions = {}) {
    const ip = options.ipPath ?? 'ip';
    super({
      name: `${ip} monitor`, command: ip, args: ['-o', 'monitor', 'label', 'link', 'address', 'route', 'rule'],
      netlinkProtocol: NETLINK_ROUTE, kinds: KINDS, classify: classifyIpMonitorLine,
    }, options);
  }
}
