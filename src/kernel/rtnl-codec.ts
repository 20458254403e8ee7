// The rtnetlink wire format ec2netd speaks, by hand: message types and flags, attribute encoding and the dump
// requests. Each kernel object's own module encodes its writes and parses its dumps (links.ts, addresses.ts,
// routes.ts, rules.ts) with these. The `netlink` package's generated rtnetlink structs (≈6 MB resident, ~240 KB of
// code to load) are not loaded: the package only provides the socket (netlink-package.ts). Encodings are byte for
// byte what the package's formatter produced (test/unit/rtnl-codec.test.ts compares them).
//
// Layout (include/uapi/linux/netlink.h, rtnetlink.h): nlmsghdr, a fixed header per kind (ifinfomsg, ifaddrmsg,
// rtmsg, fib_rule_hdr), then attributes of 4-byte length+type each padded to 4 bytes, except the last one (as the
// package does; the batch sender pads between messages). Integers are in host byte order: little-endian on the
// x86-64 and arm64 machines ec2netd is built for.

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_SETLINK = 19;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;
export const RTM_NEWRULE = 32;
export const RTM_DELRULE = 33;
export const RTM_GETRULE = 34;

export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;

export const NLMSG_HDRLEN = 16;
/** nla_type's top bits are NLA_F_NESTED and NLA_F_NET_BYTEORDER. */
export const NLA_TYPE_MASK = 0x3fff;

/**
 * Calls `visit` with the type (flags masked off) and the value's bounds of each attribute in data[start, end),
 * stopping at the first malformed one (a dump parser then reads what came before it).
 */
export function forEachAttribute(data: Buffer, start: number, end: number, visit: (type: number, value: number, end: number) => void): void {
  for (let pos = start; pos + 4 <= end;) {
    const len = data.readUInt16LE(pos);
    if (len < 4 || pos + len > end) return;
    visit(data.readUInt16LE(pos + 2) & NLA_TYPE_MASK, pos + 4, pos + len);
    pos += (len + 3) & ~3;
  }
}

export interface Attr {
  type: number;
  /** A u8 or u32 (native byte order), or raw bytes. */
  value: number | Buffer;
  u8?: boolean;
}

function attrLength(a: Attr): number {
  return 4 + (typeof a.value === 'number' ? (a.u8 === true ? 1 : 4) : a.value.length);
}

/** `header` followed by `attrs`, in one buffer. */
export function encodeMessage(header: Buffer, attrs: readonly Attr[]): Buffer {
  let length = header.length;
  for (let i = 0; i < attrs.length; i++) {
    length = (length + 3) & ~3;
    length += attrLength(attrs[i] as Attr);
  }
  const out = Buffer.alloc(length);
  header.copy(out, 0);
  let pos = header.length;
  for (const a of attrs) {
    pos = (pos + 3) & ~3;
    const len = attrLength(a);
    out.writeUInt16LE(len, pos);
    out.writeUInt16LE(a.type, pos + 2);
    if (typeof a.value !== 'number') a.value.copy(out, pos + 4);
    else if (a.u8 === true) out[pos + 4] = a.value;
    else out.writeUInt32LE(a.value >>> 0, pos + 4);
    pos += len;
  }
  return out;
}

/** nlmsghdr (length, type, flags, sequence number, port) in front of `body`. */
export function encodeNetlinkHeader(type: number, flags: number, seq: number, port: number, bodyLength: number): Buffer {
  const header = Buffer.alloc(NLMSG_HDRLEN);
  header.writeUInt32LE(NLMSG_HDRLEN + bodyLength, 0);
  header.writeUInt16LE(type, 4);
  header.writeUInt16LE(flags, 6);
  header.writeUInt32LE(seq >>> 0, 8);
  header.writeUInt32LE(port >>> 0, 12);
  return header;
}

/** One message of a received datagram: nlmsghdr fields and the body after the header. */
export interface NetlinkMessage {
  type: number;
  flags: number;
  seq: number;
  port: number;
  data: Buffer;
}

/** Splits a datagram into its messages; a truncated or malformed tail is dropped (the kernel never sends one). */
export function parseNetlinkMessages(buf: Buffer): NetlinkMessage[] {
  const out: NetlinkMessage[] = [];
  for (let pos = 0; pos + NLMSG_HDRLEN <= buf.length;) {
    const len = buf.readUInt32LE(pos);
    if (len < NLMSG_HDRLEN || pos + len > buf.length) break;
    out.push({ type: buf.readUInt16LE(pos + 4), flags: buf.readUInt16LE(pos + 6), seq: buf.readUInt32LE(pos + 8), port: buf.readUInt32LE(pos + 12), data: buf.subarray(pos + NLMSG_HDRLEN, pos + len) });
    pos += (len + 3) & ~3;
  }
  return out;
}

/** The fixed header of each kind of object, in bytes: ifinfomsg, ifaddrmsg, rtmsg, fib_rule_hdr. */
const HEADER_LENGTH = { link: 16, address: 8, route: 12, rule: 12 } as const;

/**
 * The body of a dump request: the kind's header, zeroed but for the family (AF_UNSPEC, 0, dumps every family).
 * The kernel's dump handlers read at most the header and filter nothing else from it.
 */
export function dumpRequest(kind: keyof typeof HEADER_LENGTH, family = 0): Buffer {
  const header = Buffer.alloc(HEADER_LENGTH[kind]);
  header[0] = family;
  return header;
}
