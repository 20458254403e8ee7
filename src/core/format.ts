// Renders changes and kernel objects as the `ip` commands a reader knows. Pure.
import type { Change, KernelRoute, KernelRule } from './types';

const SCOPES: Record<number, string> = { 0: 'global', 253: 'link', 254: 'host' };

function fam(family: 4 | 6): string {
  return family === 6 ? 'ip -6' : 'ip';
}

export function formatRoute(r: KernelRoute, linkName?: string): string {
  const dst = r.dst === '0.0.0.0/0' || r.dst === '::/0' ? 'default' : r.dst;
  const parts = [dst];
  if (r.gateway !== undefined) parts.push('via', r.gateway);
  if (linkName !== undefined) parts.push('dev', linkName);
  else if (r.ifindex !== undefined) parts.push('oif', String(r.ifindex));
  if (r.prefsrc !== undefined) parts.push('src', r.prefsrc);
  parts.push('table', String(r.table), 'proto', String(r.protocol));
  if (r.scope !== 0) parts.push('scope', SCOPES[r.scope] ?? String(r.scope));
  if (r.metric !== undefined && r.metric !== 0) parts.push('metric', String(r.metric));
  return parts.join(' ');
}

export function formatRule(r: KernelRule): string {
  const parts = ['from', r.src ?? 'all'];
  if (r.dst !== undefined) parts.push('to', r.dst);
  if (r.fwmark !== undefined) parts.push('fwmark', `0x${r.fwmark.toString(16)}/0x${(r.fwmask ?? 0xffffffff).toString(16)}`);
  parts.push('lookup', r.table === 254 ? 'main' : String(r.table), 'pref', String(r.priority), 'proto', String(r.protocol));
  return parts.join(' ');
}

export function formatChange(c: Change): string {
  switch (c.op) {
    case 'link-up':
      return `ip link set dev ${c.link.name} up`;
    case 'add-address':
      return `${fam(c.address.family)} address add ${c.address.address}/${c.address.prefixLen} dev ${c.linkName}${c.address.noPrefixRoute ? ' noprefixroute' : ''}${c.address.noDad === true ? ' nodad' : ''}`;
    case 'del-address':
      return `${fam(c.address.family)} address del ${c.address.address}/${c.address.prefixLen} dev ${c.linkName}`;
    case 'add-route':
      return `${fam(c.route.family)} route add ${formatRoute(c.route, c.linkName)}`;
    case 'replace-route':
      return `${fam(c.route.family)} route replace ${formatRoute(c.route, c.linkName)}`;
    case 'del-route':
      return `${fam(c.route.family)} route del ${formatRoute(c.route, c.linkName)}`;
    case 'add-rule':
      return `${fam(c.rule.family)} rule add ${formatRule(c.rule)}`;
    case 'del-rule':
      return `${fam(c.rule.family)} rule del ${formatRule(c.rule)}`;
  }
}
