// A model of the kernel good enough for the planner's tests: applies a Plan to a KernelState the way rtnetlink
// would. Routes come back as the kernel reports them (IPv6: metric 1024 when none was given, scope universe), an
// EXCL add on a taken slot fails, a replace swaps within the slot, a delete removes the first match (a miss is
// ENOENT: nothing happens).
import { addressKey, effectiveMetric, routeKey, ruleKey } from '../../src/core/diff';
import type { EniInfo, KernelRoute, KernelState, Plan } from '../../src/core/types';

/** An ENI as the snapshot reader returns it, in 10.0.1.0/24, with what a test does not care about empty. */
export function eni(mac: string, dev: number, ips: string[], extra: Partial<EniInfo> = {}): EniInfo {
  return {
    mac, deviceNumber: dev, networkCard: 0, interfaceId: `eni-${dev}abc`, ipv4s: ips, ipv4Prefixes: [],
    ipv6s: [], ipv6Prefixes: [], subnetIpv4Cidr: '10.0.1.0/24', subnetIpv6Cidrs: [], ...extra,
  };
}

/** What rtnetlink reports for a route the kernel accepted. */
export function asKernelReports(r: KernelRoute): KernelRoute {
  if (r.family === 4) return { ...r };
  return { ...r, metric: effectiveMetric(r), scope: 0 };
}

/** Applies a plan as the kernel would: EXCL adds fail on a taken slot, replace swaps within the slot. */
export function applyKernel(state: KernelState, plan: Plan): KernelState {
  const copy = structuredClone(state);
  let [links, addresses, routes, rules] = [[...copy.links], [...copy.addresses], [...copy.routes], [...copy.rules]];
  const slotOf = (r: KernelRoute) => `${r.family}|${r.table}|${r.dst}|${effectiveMetric(r)}`;
  const removeFirst = <T>(list: T[], match: (x: T) => boolean) => {
    const i = list.findIndex(match);
    if (i >= 0) list.splice(i, 1);
  };
  for (const c of plan) {
    switch (c.op) {
      case 'link-up': links = links.map((l) => (l.index === c.link.index ? { ...l, up: true } : l)); break;
      case 'add-address':
        if (!addresses.some((a) => addressKey(a) === addressKey(c.address))) addresses.push({ ...c.address });
        break;
      case 'del-address': addresses = addresses.filter((a) => addressKey(a) !== addressKey(c.address)); break;
      case 'add-route':
        if (!routes.some((r) => slotOf(r) === slotOf(c.route))) routes.push(asKernelReports(c.route));
        break;
      case 'replace-route':
        removeFirst(routes, (r) => slotOf(r) === slotOf(c.route) && routeKey(r) === routeKey(c.previous) && r.protocol === c.previous.protocol);
        routes.push(asKernelReports(c.route));
        break;
      case 'del-route': removeFirst(routes, (r) => routeKey(r) === routeKey(c.route) && r.protocol === c.route.protocol); break;
      case 'add-rule': rules.push(c.rule); break;
      case 'del-rule': removeFirst(rules, (r) => ruleKey(r) === ruleKey(c.rule) && r.protocol === c.rule.protocol); break;
    }
  }
  return { links, addresses, routes, rules };
}

