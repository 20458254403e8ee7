// Addresses: dump IPv4 and IPv6, add (optionally with IFA_F_NOPREFIXROUTE), delete.
import type { DesiredAddress, KernelAddress } from '../core/types';
import { NLM_F_CREATE_EXCL, afOf, familyOfAf, ipFromBuffer, ipToBuffer, sendOne, type Netlink, type NetlinkRequest } from './netlink';
import { forEachAttribute, RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR, dumpRequest, encodeMessage, type Attr } from './rtnl-codec';

const IFADDRMSG_LEN = 8;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_FLAGS = 8;
const IFA_F_NOPREFIXROUTE = 0x200;
const IFA_F_NODAD = 0x02;

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
  forEachAttribute(data, IFADDRMSG_LEN, data.length, (type, value, end) => {
    switch (type) {
      case IFA_LOCAL: local = data.subarray(value, end); break;
      case IFA_ADDRESS: peer = data.subarray(value, end); break;
      case IFA_FLAGS: if (end - value >= 4) flags = data.readUInt32LE(value); break;
    }
  });
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
  return nl.dumpWith('dump addresses', RTM_GETADDR, [dumpRequest('address')], parseAddressMessage);
}

export function describeAddress(a: KernelAddress | DesiredAddress, linkName?: string): string {
  const dev = linkName === undefined ? `ifindex ${a.ifindex}` : `dev ${linkName}`;
  const nodad = 'noDad' in a && a.noDad === true ? ' nodad' : '';
  return `${a.address}/${a.prefixLen} ${dev}${a.noPrefixRoute === true ? ' noprefixroute' : ''}${nodad}`;
}

/** `ip addr add`: CREATE|EXCL, so an address that is already there is EEXIST. */
export async function addAddress(nl: Netlink, a: DesiredAddress | KernelAddress, linkName?: string): Promise<void> {
  await sendOne(nl, `add address ${describeAddress(a, linkName)}`, addressRequest(a, 'add'));
}

/** `ip addr del`: a missing address is EADDRNOTAVAIL, a missing link ENODEV. */
export async function deleteAddress(nl: Netlink, a: KernelAddress, linkName?: string): Promise<void> {
  await sendOne(nl, `delete address ${describeAddress(a, linkName)}`, addressRequest(a, 'del'));
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
    type: op === 'add' ? RTM_NEWADDR : RTM_DELADDR,
    flags: op === 'add' ? NLM_F_CREATE_EXCL : 0,
    body: [encodeMessage(header, attrs)],
  };
}
