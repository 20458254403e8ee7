// The diff: the minimal, ordered list of kernel writes that turns the observed state into the desired one,
// touching only objects ec2netd owns. Pure.
import { canonicalAddress } from './ip';
import type { Change, DesiredState, KernelAddress, KernelLink, KernelRoute, KernelRule, KernelState, Plan } from './types';

/**
 * The metric the kernel gives a route added without one, and reports back: IPv4 0 (no attribute in the dump),
 * IPv6 1024 (IP6_RT_PRIO_USER, always in the dump). A desired IPv6 route without a metric and the kernel's copy of
 * it must land in the same slot, or every sync would plan it again.
 */
export function effectiveMetric(r: Pick<KernelRoute, 'family' | 'metric'>): number {
  return r.metric ?? (r.family === 6 ? 1024 : 0);
}

/**
 * What the kernel's own duplicate check (NLM_F_EXCL) sees as "the same route": table, dst and metric (IPv4 also
 * tos, which ec2netd never sets; IPv6 also the source prefix, which it never sets either: such routes are not
 * read in, see src/kernel/routes.ts). IPv6 differs in the default metric (see effectiveMetric) and in what an add
 * without NLM_F_EXCL does with a gateway route whose slot is taken (it joins it as an ECMP sibling): ec2netd
 * always adds with NLM_F_EXCL and replaces in place, so it never creates siblings.
 */
export function routeSlot(r: KernelRoute): string {
  return `${r.family}|${r.table}|${r.dst}|${effectiveMetric(r)}`;
}

/**
 * Full identity of a route: a different value in any field means the route must change. IPv6 has no route scope:
 * the kernel ignores rtm_scope on add and reports RT_SCOPE_UNIVERSE for every IPv6 route, so it is not compared.
 */
export function routeKey(r: KernelRoute): string {
  const scope = r.family === 6 ? 0 : r.scope;
  return `${routeSlot(r)}|${r.gateway ?? ''}|${r.ifindex ?? ''}|${r.prefsrc ?? ''}|${scope}|${r.type}`;
}

/** What the kernel compares for a rule (FRA_PROTOCOL is not part of it: a foreign twin makes ours EEXIST). */
export function ruleKey(r: KernelRule): string {
  const mark = r.fwmark === undefined ? '' : `${r.fwmark}/${r.fwmask ?? 0xffffffff}`;
  return `${r.family}|${r.priority}|${r.table}|${r.src ?? ''}|${r.dst ?? ''}|${mark}|${r.action}`;
}

export function addressKey(a: Pick<KernelAddress, 'ifindex' | 'address'>): string {
  return `${a.ifindex}|${canonicalAddress(a.address)}`;
}

// Keys are kept per object: kernel objects live as long as their dump, desired ones as long as their ENI's IMDS
// entry (buildDesired reuses them), so most of a plan's ~4,500 keys at 15 × 50 were made by an earlier plan, or by
// warmKeys after the dump. Building them all again was a third of a hot attach's plan (docs/performance.md).
const ruleKeys = new WeakMap<KernelRule, string>();
const addressKeys = new WeakMap<Pick<KernelAddress, 'ifindex' | 'address'>, string>();

function keyed<T extends object>(cache: WeakMap<T, string>, o: T, key: (o: T) => string): string {
  let k = cache.get(o);
  if (k === undefined) {
    k = key(o);
    cache.set(o, k);
  }
  return k;
}

/** ruleKey and addressKey, made once per object (the fight damper keys every change of a plan with them too). */
export const keyOfRule = (r: KernelRule): string => keyed(ruleKeys, r, ruleKey);
export const keyOfAddress = (a: Pick<KernelAddress, 'ifindex' | 'address'>): string => keyed(addressKeys, a, addressKey);

/** The observed rules by key: ec2netd's (by its protocol) with their duplicates, and the keys of everyone else's. */
interface RuleIndex {
  protocol: number;
  owned: Map<string, KernelRule[]>;
  foreign: Set<string>;
}

/** The observed addresses' keys, in dump order, and as a set. */
interface AddressIndex {
  keys: string[];
  present: Set<string>;
}

// And the same per dump: a KernelState's arrays are never changed (a read makes new ones), and a hot attach's plan
// runs on the rules and addresses the last settle read, so indexing their ~1,500 objects (a third of that plan, and
// most of its garbage) is done once per dump, by warmKeys, off the event's path.
const ruleIndexes = new WeakMap<readonly KernelRule[], RuleIndex>();
const addressIndexes = new WeakMap<readonly KernelAddress[], AddressIndex>();

function ruleIndex(rules: readonly KernelRule[], protocol: number): RuleIndex {
  const hit = ruleIndexes.get(rules);
  if (hit !== undefined && hit.protocol === protocol) return hit;
  const index: RuleIndex = { protocol, owned: new Map(), foreign: new Set() };
  for (const r of rules) {
    const key = keyOfRule(r);
    if (r.protocol !== protocol) {
      index.foreign.add(key);
      continue;
    }
    const same = index.owned.get(key);
    if (same === undefined) index.owned.set(key, [r]);
    else same.push(r);
  }
  ruleIndexes.set(rules, index);
  return index;
}

function addressIndex(addresses: readonly KernelAddress[]): AddressIndex {
  let index = addressIndexes.get(addresses);
  if (index === undefined) {
    const keys = addresses.map(keyOfAddress);
    index = { keys, present: new Set(keys) };
    addressIndexes.set(addresses, index);
  }
  return index;
}

/** Indexes a fresh dump for the next diff, off the path of the event that will need it. */
export function warmKeys(kernel: Pick<KernelState, 'rules' | 'addresses'>, protocol: number): void {
  ruleIndex(kernel.rules, protocol);
  addressIndex(kernel.addresses);
}

/** Key of an address in the ownership ledger: by MAC, since ifindexes and names change. */
export function ownedAddressKey(mac: string, address: string): string {
  return `${mac}|${canonicalAddress(address)}`;
}

export interface DiffInput {
  desired: DesiredState;
  observed: KernelState;
  /** rtnetlink protocol that marks ec2netd's routes and rules. */
  protocol: number;
  /** Ledger of addresses ec2netd added, keyed by ownedAddressKey. */
  ownedAddresses: ReadonlySet<string>;
}

export interface DiffResult {
  plan: Plan;
  /** Desired objects that a foreign object already occupies: left alone, reported. */
  conflicts: string[];
}

function linkName(links: Map<number, KernelLink>, ifindex: number | undefined): string | undefined {
  return ifindex === undefined ? undefined : links.get(ifindex)?.name;
}

function diffRoutes(input: DiffInput, links: Map<number, KernelLink>, conflicts: string[]) {
  const adds: Change[] = [];
  const dels: Change[] = [];
  const owned = input.observed.routes.filter((r) => r.protocol === input.protocol);
  const foreignSlots = new Set(input.observed.routes.filter((r) => r.protocol !== input.protocol).map(routeSlot));
  const ownedBySlot = new Map<string, KernelRoute[]>();
  for (const r of owned) {
    const slot = routeSlot(r);
    const same = ownedBySlot.get(slot);
    if (same === undefined) ownedBySlot.set(slot, [r]);
    else same.push(r);
  }
  const wanted = new Set(input.desired.routes.map(routeKey));
  const kept = new Set<KernelRoute>();

  for (const route of input.desired.routes) {
    const name = linkName(links, route.ifindex);
    const inSlot = ownedBySlot.get(routeSlot(route)) ?? [];
    const same = inSlot.find((r) => routeKey(r) === routeKey(route));
    if (same !== undefined) { kept.add(same); continue; }
    const stale = inSlot.find((r) => !kept.has(r) && !wanted.has(routeKey(r)));
    if (stale !== undefined) {
      kept.add(stale);
      adds.push({ op: 'replace-route', route, previous: stale, linkName: name, reason: 'owned route changed' });
    } else if (foreignSlots.has(routeSlot(route))) {
      conflicts.push(`table ${route.table}: a route to ${route.dst} that ec2netd does not own is in the way`);
    } else {
      adds.push({ op: 'add-route', route, linkName: name, reason: 'missing' });
    }
  }
  for (const r of owned) {
    if (!kept.has(r)) dels.push({ op: 'del-route', route: r, linkName: linkName(links, r.ifindex), reason: 'no longer desired' });
  }
  // Within a table: connected routes before the gateway routes that need them; removal in reverse.
  adds.sort((a, b) => scopeOrder(a) - scopeOrder(b));
  dels.sort((a, b) => scopeOrder(b) - scopeOrder(a));
  return { adds, dels };
}

function scopeOrder(c: Change): number {
  return 'route' in c ? -c.route.scope : 0;
}

function diffRules(input: DiffInput, conflicts: string[]) {
  const adds: Change[] = [];
  const dels: Change[] = [];
  const { owned: ownedByKey, foreign: foreignKeys } = ruleIndex(input.observed.rules, input.protocol);
  const wanted = new Set<string>();
  for (const rule of input.desired.rules) {
    const key = keyOfRule(rule);
    if (wanted.has(key)) continue;
    wanted.add(key);
    if (ownedByKey.has(key)) continue;
    if (foreignKeys.has(key)) {
      conflicts.push(`rule ${key} exists already, owned by another tool: left as it is`);
      continue;
    }
    adds.push({ op: 'add-rule', rule, reason: 'missing' });
  }
  // Keep one of each wanted rule; everything else (stale rules, duplicates) goes. (forEach and an index: no entry
  // or slice per rule, garbage on every plan.)
  ownedByKey.forEach((rules, key) => {
    const keep = wanted.has(key);
    for (let i = keep ? 1 : 0; i < rules.length; i++) {
      dels.push({ op: 'del-rule', rule: rules[i] as KernelRule, reason: keep ? 'duplicate' : 'no longer desired' });
    }
  });
  return { adds, dels };
}

function diffAddresses(input: DiffInput, links: Map<number, KernelLink>) {
  const adds: Change[] = [];
  const dels: Change[] = [];
  const { keys: observedKeys, present } = addressIndex(input.observed.addresses);
  const desiredKeys = new Set<string>();
  for (const address of input.desired.addresses) {
    const key = keyOfAddress(address);
    if (desiredKeys.has(key)) continue;
    desiredKeys.add(key);
    const name = linkName(links, address.ifindex);
    if (!present.has(key) && name !== undefined) adds.push({ op: 'add-address', address, linkName: name, reason: 'missing' });
  }
  // Addresses ec2netd added, on the links of configured ENIs, that IMDS no longer lists.
  const configured = new Set(input.desired.enis.map((e) => e.link.index));
  const observed = input.observed.addresses;
  for (let i = 0; i < observed.length; i++) {
    const address = observed[i] as KernelAddress;
    const link = links.get(address.ifindex);
    if (link === undefined || !configured.has(address.ifindex) || desiredKeys.has(observedKeys[i] ?? '')) continue;
    if (input.ownedAddresses.has(ownedAddressKey(link.mac, address.address))) {
      dels.push({ op: 'del-address', address, linkName: link.name, reason: 'no longer assigned to the ENI' });
    }
  }
  return { adds, dels };
}

export function diff(input: DiffInput): DiffResult {
  const conflicts: string[] = [];
  const links = new Map(input.observed.links.map((l) => [l.index, l]));
  const linkUps: Change[] = input.desired.linksUp
    .map((index) => links.get(index))
    .filter((l): l is KernelLink => l !== undefined && !l.up)
    .map((link) => ({ op: 'link-up', link, reason: 'ENI link is down' }));
  const addresses = diffAddresses(input, links);
  const routes = diffRoutes(input, links, conflicts);
  const rules = diffRules(input, conflicts);
  // Make-before-break: everything new is in place before anything old is removed;
  // rules go before the routes they point at, addresses last.
  const plan: Plan = [
    ...linkUps, ...addresses.adds, ...routes.adds, ...rules.adds,
    ...rules.dels, ...routes.dels, ...addresses.dels,
  ];
  return { plan, conflicts };
}
