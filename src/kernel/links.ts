// Links: dump (index, name, MAC, up flag, kind) and set a link up. ENIs are keyed by MAC, so the MAC is lower-case.
import type { KernelLink } from '../core/types';
import { sendOne, type Netlink, type NetlinkRequest } from './netlink';
import { forEachAttribute, RTM_GETLINK, RTM_NEWLINK, RTM_SETLINK, dumpRequest } from './rtnl-codec';

function macOf(buf: Buffer | undefined): string {
  if (buf === undefined) return '';
  let mac = '';
  for (let i = 0; i < buf.length; i++) mac += (i === 0 ? '' : ':') + (buf[i] ?? 0).toString(16).padStart(2, '0');
  return mac;
}

const IFINFOMSG_LEN = 16;
const IFF_UP = 0x1;
const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MASTER = 10;
const IFLA_LINKINFO = 18;
const IFLA_INFO_KIND = 1;

function cString(buf: Buffer, start: number, end: number): string {
  const nul = buf.indexOf(0, start);
  return buf.toString('latin1', start, nul >= 0 && nul < end ? nul : end);
}

/**
 * Reads the five fields ec2netd uses from an RTM_NEWLINK message: ifinfomsg (index, flags) and the attributes
 * IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER and IFLA_LINKINFO/IFLA_INFO_KIND. Written by hand because the
 * generic parser decodes every attribute (two sets of counters among them): during a container storm the
 * link dump is most of a sync's CPU. test/integration/kernel-adapter.test.ts checks it against `ip -json`.
 */
export function parseLinkMessage(type: number, data: Buffer): KernelLink | undefined {
  if (type !== RTM_NEWLINK || data.length < IFINFOMSG_LEN) return undefined;
  const index = data.readInt32LE(4);
  const flags = data.readUInt32LE(8);
  let name: string | undefined;
  let mac = '';
  let master = 0;
  let kind: string | undefined;
  forEachAttribute(data, IFINFOMSG_LEN, data.length, (type, value, end) => {
    switch (type) {
      case IFLA_ADDRESS: mac = macOf(data.subarray(value, end)); break;
      case IFLA_IFNAME: name = cString(data, value, end); break;
      case IFLA_MASTER: if (end - value >= 4) master = data.readUInt32LE(value); break;
      case IFLA_LINKINFO:
        forEachAttribute(data, value, end, (inner, from, to) => { if (inner === IFLA_INFO_KIND) kind = cString(data, from, to); });
        break;
    }
  });
  if (name === undefined || index <= 0) return undefined;
  const link: KernelLink = { index, name, mac, up: (flags & IFF_UP) !== 0 };
  // IFLA_MASTER: enslaved to a bridge or bond (a container's veth), never an ENI.
  if (master !== 0) link.master = master;
  if (kind !== undefined && kind !== '') link.kind = kind;
  return link;
}

export async function dumpLinks(nl: Netlink): Promise<KernelLink[]> {
  return nl.dumpWith('dump links', RTM_GETLINK, [dumpRequest('link')], parseLinkMessage);
}

/** `ip link set NAME up`: sets IFF_UP only (the change mask leaves every other flag alone). */
export async function setLinkUp(nl: Netlink, link: Pick<KernelLink, 'index' | 'name'>): Promise<void> {
  await sendOne(nl, `set link ${link.name} (index ${link.index}) up`, linkUpRequest(link));
}

/** The netlink message of `ip link set up` of `link`, for Netlink.sendAll. */
export function linkUpRequest(link: Pick<KernelLink, 'index'>): NetlinkRequest {
  // ifinfomsg: family, pad, type (u16), index (s32), flags (u32), change (u32): IFF_UP in both.
  const header = Buffer.alloc(IFINFOMSG_LEN);
  header.writeInt32LE(link.index, 4);
  header.writeUInt32LE(IFF_UP, 8);
  header.writeUInt32LE(IFF_UP, 12);
  return { type: RTM_SETLINK, flags: 0, body: [header] };
}
