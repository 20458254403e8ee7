// Links: dump (index, name, MAC, up flag, kind) and set a link up. ENIs are keyed by MAC, so the MAC is lower-case.
import { ifla, rt } from 'netlink';
import type { KernelLink } from '../core/types';
import { body, type Netlink } from './netlink';

function macOf(buf: Buffer | undefined): string {
  if (buf === undefined) return '';
  let mac = '';
  for (let i = 0; i < buf.length; i++) mac += (i === 0 ? '' : ':') + (buf[i] ?? 0).toString(16).padStart(2, '0');
  return mac;
}

export function linkFromMessage(msg: rt.LinkMessage): KernelLink | undefined {
  const index = msg.data.index;
  const name = msg.attrs.ifname;
  if (index === undefined || name === undefined) return undefined;
  const link: KernelLink = { index, name, mac: macOf(msg.attrs.address), up: msg.data.flags?.up === true };
  // IFLA_MASTER: enslaved to a bridge or bond (a container's veth), never an ENI.
  if (msg.attrs.master !== undefined && msg.attrs.master !== 0) link.master = msg.attrs.master;
  if (msg.attrs.linkinfo !== undefined) {
    const kind = ifla.parseInfo(msg.attrs.linkinfo).kind;
    if (kind !== undefined) link.kind = kind;
  }
  return link;
}

export async function dumpLinks(nl: Netlink): Promise<KernelLink[]> {
  const msgs = await nl.dump('dump links', rt.MessageType.GETLINK, body((out) =>
    rt.formatLinkMessage({ kind: 'link', data: {}, attrs: {} }, out)));
  const links: KernelLink[] = [];
  for (const msg of msgs) {
    if (msg.kind !== 'link') continue;
    const link = linkFromMessage(msg);
    if (link !== undefined) links.push(link);
  }
  return links;
}

/** `ip link set NAME up`: sets IFF_UP only (the change mask leaves every other flag alone). */
export async function setLinkUp(nl: Netlink, link: Pick<KernelLink, 'index' | 'name'>): Promise<void> {
  await nl.call(`set link ${link.name} (index ${link.index}) up`, (o) =>
    nl.socket.setLink({ index: link.index, flags: { up: true }, change: { up: true } }, {}, o));
}
