// Addresses: dump IPv4 and IPv6, add (optionally with IFA_F_NOPREFIXROUTE), delete.
import { rt } from './netlink-package';
import type { DesiredAddress, KernelAddress } from '../core/types';
import { encodeMessage, type Attr } from './encode';
import { NLM_F_CREATE_EXCL, afOf, body, familyOfAf, ipFromBuffer, ipToBuffer, type Netlink, type NetlinkRequest } from './netlink';

const RTM_NEWADDR = 20;
const IFADDRMSG_LEN = 8;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_FLAGS = 8;
const IFA_F_NOPREFIXROUTE = 0x200;
const IFA_F_NODAD = 0x02;
const NLA_TYPE_MASK = 0x3fff;

/**
 * Reads an address from an RTM_NEWADDR message without the generic parser's object per attribute (a dump lists every address of every link).
 */
export function parseAddressMessage(type: number, data: Buffer): KernelAddress | undefined {
  if (type !== RTM_NEWADDR || data.length < IFADDRMSG_LEN) return undefined;
  const family = familyOfAf(data[0]);
  if (family === undefined) return undefined;
  let local: Buffer | undefined;
  let peer: Buffer | undefined;
  // IFA_FLAGS (32 bits) supersedes the 8-bit ifa_flags, which cannot hold NOPREFIXROUTE.
  let flags = data[2] ?? 0;
  for (let pos = IFADDRMSG_LEN; pos + 4 <= data.length;) {
    const len = data.readUInt16LE(pos);
    if (len < 4 || pos + len > data.length) break;
    const value = pos + 4;
    const end = pos + len;
    switch (data.readUInt16LE(pos + 2) & NLA_TYPE_MASK) {
      case IFA_LOCAL: local = data.subarray(value, end); break;
      case IFA_ADDRESS: peer = data.subarray(value, end); break;
      case IFA_FLAGS: if (end - value >= 4) flags = data.readUInt32LE(value); break;
    }
    pos += (len + 3) & ~3;
  }
  // IPv4 puts the interface address in IFA_LOCAL (IFA_ADDRESS is the peer on point-to-point links); IPv6 only
  // sends IFA_ADDRESS.
  const bytes = local ?? peer;
  if (bytes === undefined) return undefined;
  const address: KernelAddress = { ifindex: data.readUInt32LE(4), family, address: ipFromBuffer(bytes), prefixLen: data[1] ?? 0 };
  if ((flags & IFA_F_NOPREFIXROUTE) !== 0) address.noPrefixRoute = true;
  return address;
}

export async function dumpAddresses(nl: Netlink): Promise<KernelAddress[]> {
  // family AF_UNSPEC dumps every family; only IPv4 and IPv6 are kept.
  return nl.dumpWith('dump addresses', rt.MessageType.GETADDR, body((out) =>
    rt.formatAddressMessage({ kind: 'address', data: {}, attrs: {} }, out)), parseAddressMessage);
}

export function describeAddress(a: KernelAddress | DesiredAddress, linkName?: string): string {
  const dev = linkName === undefined ? `ifindex ${a.ifindex}` : `dev ${linkName}`;
  const nodad = 'noDad' in a && a.noDad === true ? ' nodad' : '';
  return `${a.address}/${a.prefixLen} ${dev}${a.noPrefixRoute === true ? ' noprefixroute' : ''}${nodad}`;
}

function request(a: KernelAddress | DesiredAddress): { data: rt.Address; attrs: rt.AddressAttrs } {
  const bytes = ipToBuffer(a.address);
  const attrs: rt.AddressAttrs = { local: bytes, address: bytes };
  if (a.noPrefixRoute === true || ('noDad' in a && a.noDad === true)) {
    attrs.flags = {};
    if (a.noPrefixRoute === true) attrs.flags.noprefixroute = true;
    if ('noDad' in a && a.noDad === true) attrs.flags.nodad = true;
  }
  return { data: { family: afOf(a.family), prefixlen: a.prefixLen, index: a.ifindex, scope: 0 }, attrs };
}

/** `ip addr add`: CREATE|EXCL, so an address that is already there is EEXIST. */
export async function addAddress(nl: Netlink, a: DesiredAddress | KernelAddress, linkName?: string): Promise<void> {
  const { data, attrs } = request(a);
  await nl.call(`add address ${describeAddress(a, linkName)}`, (o) => nl.socket.newAddress(data, attrs, o), NLM_F_CREATE_EXCL);
}

/** `ip addr del`: a missing address is EADDRNOTAVAIL, a missing link ENODEV. */
export async function deleteAddress(nl: Netlink, a: KernelAddress, linkName?: string): Promise<void> {
  const { data, attrs } = request(a);
  delete attrs.flags;
  await nl.call(`delete address ${describeAddress(a, linkName)}`, (o) => nl.socket.delAddress(data, attrs, o));
}

/** The netlink message of `ip addr add` (CREATE|EXCL) or `ip addr del` of `a`, for Netlink.sendAll. */
export function addressRequest(a: DesiredAddress | KernelAddress, op: 'add' | 'del'): NetlinkRequest {
  // ifaddrmsg: family, prefixlen, flags, scope, index (u32); then IFA_LOCAL, IFA_ADDRESS and, on adds, IFA_FLAGS.
  const header = Buffer.alloc(IFADDRMSG_LEN);
  header[0] = afOf(a.family);
  header[1] = a.prefixLen;
  header.writeUInt32LE(a.ifindex, 4);
  const bytes = ipToBuffer(a.address);
  const attrs: Attr[] = [{ type: IFA_LOCAL, value: bytes }, { type: IFA_ADDRESS, value: bytes }];
  const noDad = 'noDad' in a && a.noDad === true;
  if (op === 'add' && (a.noPrefixRoute === true || noDad)) {
    attrs.push({ type: IFA_FLAGS, value: (a.noPrefixRoute === true ? IFA_F_NOPREFIXROUTE : 0) | (noDad ? IFA_F_NODAD : 0) });
  }
  return {
    type: op === 'add' ? rt.MessageType.NEWADDR : rt.MessageType.DELADDR,
    flags: op === 'add' ? NLM_F_CREATE_EXCL : 0,
    body: [encodeMessage(header, attrs)],
  };
}
