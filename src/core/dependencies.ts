// Which deletions a failed addition must hold back. Make-before-break is per subject, not per plan: a rule the
// kernel refuses on eth2 must not keep a stale rule of eth1 in place, but it must keep the old path of the
// very thing it was replacing (the same source address, the same table). Pure.
import { canonicalAddress, parseCidr } from './ip';
import type { Change, Plan } from './types';

export function isDeletion(change: Change): boolean {
  return change.op === 'del-address' || change.op === 'del-route' || change.op === 'del-rule';
}

/** A source selector or address as one subject: a host (/32, /128) is its address, a prefix stays a prefix. */
function ipSubject(value: string): string {
  const cidr = parseCidr(value.includes('/') ? value : `${value}/${value.includes(':') ? 128 : 32}`);
  if (cidr === undefined) return `ip:${value}`;
  const host = cidr.prefixLen === (cidr.family === 4 ? 32 : 128);
  return `ip:${canonicalAddress(cidr.address)}${host ? '' : `/${cidr.prefixLen}`}`;
}

/**
 * The subjects a change serves: the routing table it fills or points to, the link it configures, the source
 * address or prefix, the mark or destination a rule selects. Two changes that share a subject belong together.
 */
export function subjectsOf(change: Change): string[] {
  switch (change.op) {
    case 'link-up': return [`link:${change.link.index}`];
    case 'add-address':
    case 'del-address': return [`link:${change.address.ifindex}`, ipSubject(change.address.address)];
    case 'add-route':
    case 'replace-route':
    case 'del-route': return [`table:${change.route.table}`];
    case 'add-rule':
    case 'del-rule': {
      const r = change.rule;
      const out = [`table:${r.table}`];
      if (r.src !== undefined) out.push(ipSubject(r.src));
      if (r.dst !== undefined) out.push(`to:${r.dst}`);
      if (r.fwmark !== undefined) out.push(`mark:${r.fwmark}/${r.fwmask ?? 0xffffffff}`);
      return out;
    }
  }
}

/**
 * The deletions of `plan` that must not run because `failed` additions did not go through. Changes that share a
 * subject, directly or through other changes of the plan, are one unit of make-before-break: an IP moving from
 * table A to table B whose table B route failed keeps its rule to A, and table A keeps the routes that rule needs.
 * Deletions in units without a failed addition (another ENI, another table) go ahead.
 */
export function blockedDeletions(plan: Plan, failed: ReadonlySet<Change>): Set<Change> {
  const blocked = new Set<Change>();
  if (failed.size === 0) return blocked;
  // Union-find over the subjects of the plan's changes.
  const parent = new Map<string, string>();
  const find = (s: string): string => {
    let root = s;
    while (parent.has(root) && parent.get(root) !== root) root = parent.get(root) as string;
    parent.set(s, root);
    return root;
  };
  const union = (a: string, b: string): void => {
    const ra = find(a);
    const rb = find(b);
    if (ra !== rb) parent.set(ra, rb);
  };
  for (const change of plan) {
    const [first, ...rest] = subjectsOf(change);
    if (first === undefined) continue;
    find(first);
    for (const s of rest) union(first, s);
  }
  const tainted = new Set<string>();
  for (const change of failed) for (const s of subjectsOf(change)) tainted.add(find(s));
  for (const change of plan) {
    if (isDeletion(change) && subjectsOf(change).some((s) => tainted.has(find(s)))) blocked.add(change);
  }
  return blocked;
}
