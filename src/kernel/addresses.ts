// Addresses: dump IPv4 and IPv6, add (optionally with IFA_F_NOPREFIXROUTE), delete.
import { rt } from 'netlink';
import type { DesiredAddress, KernelAddress } from '../core/types';
import { NLM_F_CREATE_EXCL, afOf, body, familyOfAf, ipFromBuffer, ipToBuffer, type Netlink, type NetlinkRequest } from './netlink';

export function addressFromMessage(msg: rt.AddressMessage): KernelAddress | undefined {
  const family = familyOfAf(msg.data.family);
  // IPv4 puts the interface address in IFA_LOCAL (IFA_ADDRESS is the peer on point-to-point links); IPv6 only
  // sends IFA_ADDRESS.
  const bytes = msg.attrs.local ?? msg.attrs.address;
  if (family === undefined || bytes === undefined || msg.data.index === undefined) return undefined;
  // IFA_FLAGS (32 bits) supersedes the 8-bit ifa_flags, which cannot hold NOPREFIXROUTE (0x200).
  const flags = msg.attrs.flags ?? msg.data.flags;
  const address: KernelAddress = { ifindex: msg.data.index, family, address: ipFromBuffer(bytes), prefixLen: msg.data.prefixlen ?? 0 };
  if (flags?.noprefixroute === true) address.noPrefixRoute = true;
  return address;
}

export async function dumpAddresses(nl: Netlink): Promise<KernelAddress[]> {
  // family AF_UNSPEC dumps every family; only IPv4 and IPv6 are kept.
  const msgs = await nl.dump('dump addresses', rt.MessageType.GETADDR, body((out) =>
    rt.formatAddressMessage({ kind: 'address', data: {}, attrs: {} }, out)));
  const addresses: KernelAddress[] = [];
  for (const msg of msgs) {
    if (msg.kind !== 'address') continue;
    const address = addressFromMessage(msg);
    if (address !== undefined) addresses.push(address);
  }
  return addresses;
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
  const { data, attrs } = request(a);
  if (op === 'del') delete attrs.flags;
  return {
    type: op === 'add' ? rt.MessageType.NEWADDR : rt.MessageType.DELADDR,
    flags: op === 'add' ? NLM_F_CREATE_EXCL : 0,
    body: body((out) => rt.formatAddressMessage({ kind: 'address', data, attrs }, out)),
  };
}
