// Reads the kernel objects ec2netd looks at into a KernelState.
import type { KernelState } from '../core/types';
import { dumpAddresses } from './addresses';
import { dumpLinks } from './links';
import type { Netlink } from './netlink';
import { dumpRoutes } from './routes';
import { dumpRules } from './rules';

export type ObjectKind = 'link' | 'address' | 'route' | 'rule';
export const ALL_KINDS: ReadonlySet<ObjectKind> = new Set<ObjectKind>(['link', 'address', 'route', 'rule']);

/**
 * Dumps the kinds asked for (all by default); the others are taken from `previous` (empty when there is none).
 * Table 255 (local) is left out of the routes: the kernel fills it from addresses, ec2netd never writes or
 * deletes there, and it is the largest table on a host with many addresses (2 routes per IPv4 address).
 */
export async function readKernelState(nl: Netlink, kinds: ReadonlySet<ObjectKind> = ALL_KINDS, previous?: KernelState): Promise<KernelState> {
  // One after the other: a netlink socket runs one dump at a time (a second one is EBUSY).
  const links = kinds.has('link') ? await dumpLinks(nl) : previous?.links ?? [];
  const addresses = kinds.has('address') ? await dumpAddresses(nl) : previous?.addresses ?? [];
  const routes = kinds.has('route') ? await dumpRoutes(nl, { skipLocal: true }) : previous?.routes ?? [];
  const rules = kinds.has('rule') ? await dumpRules(nl) : previous?.rules ?? [];
  return { links, addresses, routes, rules };
}
