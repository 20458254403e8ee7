// Applies a Plan to the kernel, in order, make-before-break.
import { blockedDeletions, isDeletion } from '../core/dependencies';
import type { Change, Plan } from '../core/types';
import type { Logger } from '../log';
import { addAddress, deleteAddress, describeAddress } from './addresses';
import { setLinkUp } from './links';
import { KernelError, toKernelError, type Netlink } from './netlink';
import { addRoute, deleteRoute, describeRoute, replaceRoute } from './routes';
import { addRule, deleteRule, describeRule } from './rules';

export interface ApplyResult {
  /** Changes that are in effect now, including adds that were already there and deletes already gone. */
  applied: number;
  failed: { change: Change; error: KernelError }[];
  /** Additions the kernel answered EEXIST: someone else made the object meanwhile, so it is not ec2netd's. */
  existed: Change[];
}

type ApplyLog = Pick<Logger, 'debug' | 'warn'>;

/**
 * Errors that mean the goal of the change is reached: an add that finds the object there (someone created it
 * meanwhile: EEXIST; rules and routes re-check that the existing object is really equal, else ECONFLICT), a
 * delete that finds it gone (routes ESRCH, rules ENOENT, addresses EADDRNOTAVAIL, and ENODEV: the link went
 * away, and the kernel removes a link's addresses and routes with it).
 */
function alreadyDone(change: Change, code: string): boolean {
  if (isDeletion(change)) return code === 'ENOENT' || code === 'ESRCH' || code === 'EADDRNOTAVAIL' || code === 'ENODEV';
  return code === 'EEXIST' && change.op !== 'link-up' && change.op !== 'replace-route';
}

async function applyOne(nl: Netlink, change: Change): Promise<void> {
  switch (change.op) {
    case 'link-up': return setLinkUp(nl, change.link);
    case 'add-address': return addAddress(nl, change.address, change.linkName);
    case 'del-address': return deleteAddress(nl, change.address, change.linkName);
    case 'add-route': return addRoute(nl, change.route, change.linkName);
    case 'replace-route': return replaceRoute(nl, change.route, change.linkName);
    case 'del-route': return deleteRoute(nl, change.route, change.linkName);
    case 'add-rule': return addRule(nl, change.rule);
    case 'del-rule': return deleteRule(nl, change.rule);
    default: {
      const never: never = change;
      throw new KernelError('EINVAL', `unknown change ${JSON.stringify(never)}`);
    }
  }
}

function describe(change: Change): string {
  switch (change.op) {
    case 'link-up': return `set link ${change.link.name} up`;
    case 'add-address': return `add address ${describeAddress(change.address, change.linkName)}`;
    case 'del-address': return `delete address ${describeAddress(change.address, change.linkName)}`;
    case 'add-route': return `add route ${describeRoute(change.route, change.linkName)}`;
    case 'replace-route': return `replace route ${describeRoute(change.route, change.linkName)}`;
    case 'del-route': return `delete route ${describeRoute(change.route, change.linkName)}`;
    case 'add-rule': return `add rule ${describeRule(change.rule)}`;
    case 'del-rule': return `delete rule ${describeRule(change.rule)}`;
  }
}

/**
 * Applies the changes in order. When an addition (link-up, add, replace) fails, the deletions that depend on it
 * (src/core/dependencies.ts: same table, link, source address, mark, or connected to it through other additions)
 * are skipped and reported as failed with code ESKIPPED: an old path is never removed while its replacement is
 * not in place. Every other change is still tried. Never throws.
 */
export async function applyPlan(nl: Netlink, plan: Plan, log?: ApplyLog): Promise<ApplyResult> {
  const result: ApplyResult = { applied: 0, failed: [], existed: [] };
  const failedAdds = new Map<Change, KernelError>();
  let blocked: { after: number; changes: Set<Change> } = { after: 0, changes: new Set() };
  for (const change of plan) {
    if (isDeletion(change) && failedAdds.size > 0) {
      if (blocked.after !== failedAdds.size) blocked = { after: failedAdds.size, changes: blockedDeletions(plan, new Set(failedAdds.keys())) };
      if (blocked.changes.has(change)) {
        const cause = [...failedAdds.values()].map((e) => e.message).join('; ');
        const error = new KernelError('ESKIPPED', describe(change), `not attempted: ${cause}`);
        result.failed.push({ change, error });
        log?.warn({ err: error.message }, error.message);
        continue;
      }
    }
    try {
      await applyOne(nl, change);
      result.applied++;
    } catch (err) {
      const error = toKernelError(err, describe(change));
      if (alreadyDone(change, error.code)) {
        result.applied++;
        if (!isDeletion(change)) result.existed.push(change);
        log?.debug({ err: error.message }, `${error.message}: counted as done`);
        continue;
      }
      result.failed.push({ change, error });
      log?.warn({ err: error.message }, error.message);
      if (!isDeletion(change)) failedAdds.set(change, error);
    }
  }
  return result;
}
