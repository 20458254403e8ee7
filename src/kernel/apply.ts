// Applies a Plan to the kernel, in order, make-before-break, in batches of netlink messages.
import { blockedDeletions, isDeletion } from '../core/dependencies';
import type { Change, Family, KernelRoute, KernelRule, Plan } from '../core/types';
import type { Logger } from '../log';
import { addressRequest, describeAddress } from './addresses';
import { linkUpRequest } from './links';
import { KernelError, afOf, toKernelError, type Netlink, type NetlinkRequest } from './netlink';
import { describeRoute, dumpRoutes, routeExistsError, routeRequest } from './routes';
import { describeRule, dumpRuleMessages, dumpRules, ruleDeleteBlocker, ruleExistsError, ruleRequest, type RuleMessage } from './rules';

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

/** The netlink message of a change. */
function requestOf(change: Change): NetlinkRequest {
  switch (change.op) {
    case 'link-up': return linkUpRequest(change.link);
    case 'add-address': return addressRequest(change.address, 'add');
    case 'del-address': return addressRequest(change.address, 'del');
    case 'add-route': return routeRequest(change.route, 'add');
    case 'replace-route': return routeRequest(change.route, 'replace');
    case 'del-route': return routeRequest(change.route, 'del');
    case 'add-rule': return ruleRequest(change.rule, 'add');
    case 'del-rule': return ruleRequest(change.rule, 'del');
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

/** One change's outcome: done, done because it was there already (EEXIST), or failed. */
type Outcome = 'done' | 'existed' | KernelError;

/**
 * Applies the changes in order. When an addition (link-up, add, replace) fails, the deletions that depend on it
 * (src/core/dependencies.ts: same table, link, source address, mark, or connected to it through the plan's other
 * changes) are skipped and reported as failed with code ESKIPPED: an old path is never removed while its
 * replacement is not in place. Every other change is still tried. Never throws.
 *
 * The writes go out in batches (Netlink.sendAll): the kernel handles a batch's messages in order, each seeing what
 * the ones before it did, so a run of additions (or of deletions) is exactly the same sequence of kernel
 * operations as one request after the other, with each answer attributed by sequence number. The only waits are
 * at the boundaries between additions and deletions, where make-before-break needs every answer first.
 */
export async function applyPlan(nl: Netlink, plan: Plan, log?: ApplyLog): Promise<ApplyResult> {
  const outcomes: Outcome[] = [];
  const failedAdds = new Map<Change, KernelError>();
  for (let start = 0; start < plan.length;) {
    const deleting = isDeletion(plan[start] as Change);
    let end = start;
    while (end < plan.length && isDeletion(plan[end] as Change) === deleting) end++;
    const run = plan.slice(start, end);
    if (!deleting) {
      (await applyAdditions(nl, run)).forEach((outcome, i) => {
        outcomes.push(outcome);
        if (outcome instanceof KernelError) failedAdds.set(run[i] as Change, outcome);
      });
    } else {
      const blocked = blockedDeletions(plan, new Set(failedAdds.keys()));
      const cause = [...failedAdds.values()].map((e) => e.message).join('; ');
      const free = run.filter((change) => !blocked.has(change));
      const done = free.length === 0 ? [] : await applyDeletions(nl, free);
      let k = 0;
      for (const change of run) {
        outcomes.push(blocked.has(change) ? new KernelError('ESKIPPED', describe(change), `not attempted: ${cause}`) : done[k++] as Outcome);
      }
    }
    start = end;
  }
  const result: ApplyResult = { applied: 0, failed: [], existed: [] };
  plan.forEach((change, i) => {
    const outcome = outcomes[i] ?? new KernelError('EIO', describe(change), 'no outcome');
    if (outcome instanceof KernelError) {
      result.failed.push({ change, error: outcome });
      log?.warn({ err: outcome.message }, outcome.message);
      return;
    }
    result.applied++;
    if (outcome === 'existed') {
      result.existed.push(change);
      log?.debug({ what: describe(change) }, `${describe(change)}: already there, counted as done`);
    }
  });
  return result;
}

/** Sends a run of additions; an EEXIST on a rule or route is checked against one dump of that kind per family. */
async function applyAdditions(nl: Netlink, run: Change[]): Promise<Outcome[]> {
  let answers: (string | undefined)[];
  try {
    answers = await nl.sendAll(run.map(requestOf));
  } catch (err) {
    return run.map((change) => toKernelError(err, describe(change)));
  }
  const routes = new Map<Family, Promise<KernelRoute[]>>();
  const rules = new Map<Family, Promise<KernelRule[]>>();
  const outcomes: Outcome[] = [];
  for (let i = 0; i < run.length; i++) {
    const change = run[i] as Change;
    const code = answers[i];
    if (code === undefined) {
      outcomes.push('done');
      continue;
    }
    let error = new KernelError(code, describe(change));
    try {
      if (code === 'EEXIST' && change.op === 'add-rule') {
        const family = change.rule.family;
        if (!rules.has(family)) rules.set(family, dumpRules(nl, family));
        error = ruleExistsError(await (rules.get(family) as Promise<KernelRule[]>), change.rule, error);
      } else if (code === 'EEXIST' && change.op === 'add-route') {
        const family = change.route.family;
        if (!routes.has(family)) routes.set(family, dumpRoutes(nl, { family }));
        error = routeExistsError(await (routes.get(family) as Promise<KernelRoute[]>), change.route, change.linkName, error);
      }
    } catch (err) {
      error = toKernelError(err, describe(change));
    }
    outcomes.push(alreadyDone(change, error.code) ? 'existed' : error);
  }
  return outcomes;
}

/**
 * Sends a run of deletions. A rule delete is checked first against one dump of its family (the kernel treats
 * left-out selectors as wildcards, see rules.ts), updated delete after delete as the kernel will be.
 */
async function applyDeletions(nl: Netlink, run: Change[]): Promise<Outcome[]> {
  const outcomes: Outcome[] = new Array<Outcome>(run.length);
  const toSend: number[] = [];
  try {
    const rules = new Map<Family, RuleMessage[]>();
    for (let i = 0; i < run.length; i++) {
      const change = run[i] as Change;
      if (change.op === 'del-rule') {
        const family = change.rule.family;
        let msgs = rules.get(family);
        if (msgs === undefined) rules.set(family, msgs = await dumpRuleMessages(nl, afOf(family)));
        const blocked = ruleDeleteBlocker(msgs, change.rule);
        if (blocked !== undefined) {
          outcomes[i] = alreadyDone(change, blocked.code) ? 'done' : blocked;
          continue;
        }
      }
      toSend.push(i);
    }
    const answers = await nl.sendAll(toSend.map((i) => requestOf(run[i] as Change)));
    toSend.forEach((i, k) => {
      const change = run[i] as Change;
      const code = answers[k];
      outcomes[i] = code === undefined || alreadyDone(change, code) ? 'done' : new KernelError(code, describe(change));
    });
  } catch (err) {
    for (let i = 0; i < run.length; i++) outcomes[i] ??= toKernelError(err, describe(run[i] as Change));
  }
  return outcomes;
}
