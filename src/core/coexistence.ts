// Coexistence with other managers of the same sources and tables (amazon-ec2-net-utils, cloud-init/netplan,
// anything else that writes `from <ENI address>` rules or routes in an ENI's table). Pure: the facts about
// the other tools' files and units come from src/kernel/foreign.ts. Policy and reasons: docs/coexistence.md.
//
// A secondary ENI is *claimed* when the kernel holds a foreign object (any protocol but ec2netd's) that
//   - is a rule whose source overlaps one of the ENI's sources (its private IPs and delegated prefixes), or
//   - is a rule that looks up the ENI's table, or
//   - is a route in the ENI's table.
// What ec2netd then does with the ENI is the policy's:
//   refuse  (default) hands off: no write at all for that ENI (not even removing what ec2netd put there
//           earlier), reported as a conflict in the log, `status`, `plan` and `doctor`. No fight is possible.
//   adopt   takes over once the owner has stopped: when every claim is attributed to a known tool that is
//           installed (evidence: its units or files, never the table numbers alone) and not active any more
//           (leftovers, e.g. ec2-net-utils stopped and disabled), ec2netd installs
//           its own objects, replaces the foreign routes in its table atomically (NLM_F_REPLACE) and deletes
//           the foreign rules and routes last, make-before-break. While the owner is active, or when it
//           cannot be named, adopt behaves like refuse.
//   coexist configures the ENI next to the foreign objects and never touches them; the conflicts and the
//           shadowing (a foreign rule consulted first) are reported. Only safe when the other tool does not
//           delete foreign rules (systemd-networkd: ManageForeignRoutingPolicyRules=no).
import type { Config } from '../config';
import { formatRoute, formatRule } from './format';
import { PrefixSet, rangeOf } from './prefix-set';
import { routeSlot, ruleKey } from './diff';
import type { Change, DesiredState, ImdsSnapshot, KernelRoute, KernelRule, KernelState, Plan } from './types';

export type CoexistencePolicy = Config['coexistence']['policy'];
export type KnownManager = 'amazon-ec2-net-utils' | 'cloud-init/netplan';
export type ManagerId = KnownManager | 'unknown';

/** What the filesystem says about another tool (src/kernel/foreign.ts). */
export interface ManagerPresence {
  id: KnownManager;
  /** Installed or configured: unit files, config files. */
  installed: boolean;
  /** Live: runtime files it wrote, active or enabled units. An active tool's objects are never deleted. */
  active: boolean;
  /** Paths and unit names that made the decision, for messages. */
  evidence: string[];
}

export interface Claim {
  kind: 'rule' | 'route';
  rule?: KernelRule;
  route?: KernelRoute;
  /** `ip rule` / `ip route` text of the object. */
  text: string;
  manager: ManagerId;
  /** A foreign rule for one of the ENI's sources, consulted before ec2netd's (lower priority number). */
  shadows: boolean;
  /** The rule sends the traffic to a table other than the ENI's. */
  elsewhere: boolean;
}

export interface EniClaims {
  mac: string;
  interfaceId: string;
  linkName: string;
  table: number;
  sources: string[];
  claims: Claim[];
}

export type EniAction = 'configure' | 'hands-off' | 'adopt';

export interface EniVerdict extends EniClaims {
  action: EniAction;
  /** One line for the log, status and doctor. */
  reason: string;
}

const FR_ACT_TO_TBL = 1;
/** cloud-init's multi-NIC netplan config uses table 100 + NIC index. */
const CLOUD_INIT_TABLES = { min: 100, max: 199 };

/** Who probably wrote a foreign rule: the tools' conventions first, then the only installed tool. */
export function attributeRule(rule: KernelRule, config: Pick<Config, 'tableBase'>, managers: readonly ManagerPresence[]): ManagerId {
  if (rule.table >= config.tableBase && rule.priority === rule.table) return 'amazon-ec2-net-utils';
  if (rule.src !== undefined && rule.table >= CLOUD_INIT_TABLES.min && rule.table <= CLOUD_INIT_TABLES.max) return 'cloud-init/netplan';
  const installed = managers.filter((m) => m.installed || m.active);
  return installed.length === 1 && installed[0] !== undefined ? installed[0].id : 'unknown';
}

/**
 * The other tools' presence, or how to find it (src/kernel/foreign.ts reads ~30 paths): asked only when a foreign
 * object claims an ENI, since it only names who owns such objects.
 */
export type Managers = readonly ManagerPresence[] | (() => readonly ManagerPresence[]);

/** `managers` as a function that looks them up at most once. */
function presenceOf(managers: Managers): () => readonly ManagerPresence[] {
  let present: readonly ManagerPresence[] | undefined;
  return () => (present ??= typeof managers === 'function' ? managers() : managers);
}

/** Each table's `from` sources among ec2netd's desired rules (mark rules have none). */
function sourcesByTable(desired: DesiredState, protocol: number): Map<number, string[]> {
  const out = new Map<number, Set<string>>();
  for (const r of desired.rules) {
    if (r.protocol !== protocol || r.src === undefined || r.fwmark !== undefined) continue;
    const set = out.get(r.table);
    if (set === undefined) out.set(r.table, new Set([r.src]));
    else set.add(r.src);
  }
  return new Map([...out].map(([table, set]) => [table, [...set]]));
}

/** Foreign objects that claim the sources or the table of each secondary ENI ec2netd wants to configure. */
export function findClaims(
  desired: DesiredState, kernel: Pick<KernelState, 'rules' | 'routes'>, config: Pick<Config, 'protocol' | 'tableBase' | 'priorities'>,
  managers: Managers,
): EniClaims[] {
  const out: EniClaims[] = [];
  const foreignRules = kernel.rules.filter((r) => r.protocol !== config.protocol && r.action === FR_ACT_TO_TBL)
    .map((rule) => ({ rule, src: rule.src === undefined ? undefined : rangeOf(rule.src) }));
  // Built only when some foreign rule is there to check them against (on most hosts, none is).
  let sourcesOf: Map<number, string[]> | undefined;
  const presence = presenceOf(managers);
  for (const d of desired.enis) {
    if (d.table === undefined) continue;
    const table = d.table;
    const sources = foreignRules.length === 0 ? [] : (sourcesOf ??= sourcesByTable(desired, config.protocol)).get(table) ?? [];
    let sourceSet: PrefixSet | undefined;
    const claims: Claim[] = [];
    const ruleManagers: ManagerId[] = [];
    for (const { rule: r, src } of foreignRules) {
      const sameSource = src !== undefined && (sourceSet ??= new PrefixSet(sources)).overlaps(src);
      if (!sameSource && r.table !== table) continue;
      const manager = attributeRule(r, config, presence());
      if (r.table === table) ruleManagers.push(manager);
      claims.push({
        kind: 'rule', rule: r, text: `rule ${formatRule(r)}`, manager,
        shadows: sameSource && r.priority < config.priorities.fromAddress, elsewhere: r.table !== table,
      });
    }
    const routeOwner = (): ManagerId => {
      const live = presence().filter((m) => m.installed || m.active);
      return ruleManagers.find((m) => m !== 'unknown') ?? (live.length === 1 ? live[0]?.id ?? 'unknown' : 'unknown');
    };
    for (const r of kernel.routes) {
      if (r.table !== table || r.protocol === config.protocol) continue;
      claims.push({ kind: 'route', route: r, text: `route ${formatRoute(r)}`, manager: routeOwner(), shadows: false, elsewhere: false });
    }
    if (claims.length > 0) {
      out.push({ mac: d.eni.mac, interfaceId: d.eni.interfaceId, linkName: d.link.name, table, sources, claims });
    }
  }
  return out;
}

function owners(c: EniClaims): ManagerId[] {
  return [...new Set(c.claims.map((x) => x.manager))];
}

function describeOwners(c: EniClaims): string {
  return owners(c).map((m) => (m === 'unknown' ? 'another tool' : m)).join(' and ');
}

function objects(c: EniClaims, max = 3): string {
  const shown = c.claims.slice(0, max).map((x) => x.text).join('; ');
  return c.claims.length > max ? `${shown}; and ${c.claims.length - max} more` : shown;
}

/** The policy's verdict for each claimed ENI. Pure. */
export function decide(claimed: readonly EniClaims[], policy: CoexistencePolicy, managers: readonly ManagerPresence[]): EniVerdict[] {
  return claimed.map((c) => {
    const head = `${c.linkName} (${c.interfaceId}, table ${c.table})`;
    const who = describeOwners(c);
    if (policy === 'coexist') {
      const shadow = c.claims.filter((x) => x.shadows && x.elsewhere);
      const effect = shadow.length > 0
        ? `; ${shadow.map((x) => x.text).join('; ')} is consulted first, so ec2netd's rules for those sources have no effect`
        : '';
      return { ...c, action: 'configure', reason: `${head}: configured next to ${who}'s objects (coexistence.policy coexist; they are left alone): ${objects(c)}${effect}` };
    }
    if (policy === 'adopt') {
      const ids = owners(c);
      if (ids.includes('unknown')) {
        return { ...c, action: 'hands-off', reason: `${head}: not configured: objects of a tool ec2netd cannot name claim it, so it cannot tell whether that tool still runs (coexistence.policy adopt only takes over leftovers of a stopped tool): ${objects(c)}` };
      }
      // Table numbers and priorities only say whose convention a rule follows. Deleting it needs evidence on
      // this machine that the tool is installed (its units or files): without, it may be a hand-made rule.
      const unproven = ids.filter((id) => !managers.some((m) => m.id === id && m.installed && m.evidence.length > 0));
      if (unproven.length > 0) {
        return { ...c, action: 'hands-off', reason: `${head}: not configured: its objects follow ${unproven.join(' and ')}'s conventions, but no file or unit of ${unproven.length > 1 ? 'those tools' : 'that tool'} is installed, so ec2netd cannot tell they are its leftovers and does not delete them (coexistence.policy adopt needs that evidence); remove them by hand if they are stale: ${objects(c)}` };
      }
      const live = managers.filter((m) => ids.includes(m.id) && m.active);
      if (live.length > 0) {
        return { ...c, action: 'hands-off', reason: `${head}: not configured yet: ${live.map((m) => `${m.id} is still active (${m.evidence.slice(0, 3).join(', ')})`).join('; ')}; ec2netd takes over once it is stopped and disabled: ${objects(c)}` };
      }
      return { ...c, action: 'adopt', reason: `${head}: adopting the leftovers of ${who} (not active any more): ${objects(c)}` };
    }
    return { ...c, action: 'hands-off', reason: `${head}: not configured: its sources or table are managed by ${who} (${objects(c)}). ec2netd makes no change to this ENI while that is so; stop and disable the other tool, or set coexistence.policy (docs/coexistence.md)` };
  });
}

export interface CoexistenceInput {
  snapshot: ImdsSnapshot;
  kernel: KernelState;
  config: Config;
  managers: Managers;
  /** The planner (buildDesired with the kernel and config bound). */
  build: (snapshot: ImdsSnapshot) => DesiredState;
}

export interface CoexistenceResult {
  desired: DesiredState;
  /** The kernel state the diff must see: foreign objects being adopted are left out of it. */
  observed: KernelState;
  verdicts: EniVerdict[];
  /** Lines for the log, status, plan (reported with the diff's conflicts). */
  notes: string[];
  /** Adoption: foreign routes in a wanted slot, by slot (their add becomes a replace), and the foreign objects to delete last. */
  adoptedSlots: Map<string, KernelRoute>;
  adoptDeletions: Change[];
}

/**
 * Builds the desired state under the coexistence policy. ENIs handed off are planned without their IMDS entry
 * and with ec2netd's own objects of their table frozen as they are (so the diff writes nothing for them).
 */
export function resolveCoexistence(input: CoexistenceInput): CoexistenceResult {
  const { config, kernel } = input;
  const first = input.build(input.snapshot);
  const managers = presenceOf(input.managers);
  const claimed = findClaims(first, kernel, config, managers);
  const verdicts = claimed.length === 0 ? [] : decide(claimed, config.coexistence.policy, managers());
  const handsOff = verdicts.filter((v) => v.action === 'hands-off');
  let desired = first;
  if (handsOff.length > 0) {
    const macs = new Set(handsOff.map((v) => v.mac));
    const tables = new Set(handsOff.map((v) => v.table));
    const rest = input.build({ ...input.snapshot, enis: input.snapshot.enis.filter((e) => !macs.has(e.mac)) });
    desired = {
      ...rest,
      routes: [...rest.routes, ...kernel.routes.filter((r) => r.protocol === config.protocol && tables.has(r.table))],
      rules: [...rest.rules, ...kernel.rules.filter((r) => r.protocol === config.protocol && tables.has(r.table))],
    };
  }
  const adoptedSlots = new Map<string, KernelRoute>();
  const adoptDeletions: Change[] = [];
  const dropRoutes = new Set<KernelRoute>();
  const dropRules = new Set<KernelRule>();
  const adopting = verdicts.filter((x) => x.action === 'adopt');
  // Only an adoption needs these (every plan built them: 1,500 rule keys at 15 × 50).
  const wantedSlots = new Set(adopting.length === 0 ? [] : desired.routes.map(routeSlot));
  const wantedRules = new Set(adopting.length === 0 ? [] : desired.rules.map(ruleKey));
  for (const v of adopting) {
    for (const c of v.claims) {
      if (c.rule !== undefined) {
        // A foreign twin of a wanted rule already does ec2netd's job; deleting it would delete the only copy.
        if (wantedRules.has(ruleKey(c.rule))) continue;
        dropRules.add(c.rule);
        adoptDeletions.push({ op: 'del-rule', rule: c.rule, reason: `adopted from ${c.manager}` });
      } else if (c.route !== undefined) {
        dropRoutes.add(c.route);
        const slot = routeSlot(c.route);
        if (wantedSlots.has(slot) && !adoptedSlots.has(slot)) adoptedSlots.set(slot, c.route);
        else adoptDeletions.push({ op: 'del-route', route: c.route, linkName: v.linkName, reason: `adopted from ${c.manager}` });
      }
    }
  }
  // Rules before the routes they point to; gateway routes before the connected routes they need.
  adoptDeletions.sort((a, b) => order(a) - order(b));
  const observed: KernelState = dropRoutes.size + dropRules.size === 0 ? kernel : {
    ...kernel,
    routes: kernel.routes.filter((r) => !dropRoutes.has(r)),
    rules: kernel.rules.filter((r) => !dropRules.has(r)),
  };
  return { desired, observed, verdicts, notes: verdicts.map((v) => v.reason), adoptedSlots, adoptDeletions };
}

function order(c: Change): number {
  if (c.op === 'del-rule') return 0;
  return c.op === 'del-route' ? 1 + (c.route.scope === 0 ? 0 : 1) : 3;
}

/**
 * The diff's plan with adoption folded in: an add into a slot a foreign route holds becomes an atomic replace
 * of that route, and the adopted foreign objects are deleted after everything else (skipped if an add failed).
 */
export function withAdoption(plan: Plan, result: Pick<CoexistenceResult, 'adoptedSlots' | 'adoptDeletions'>): Plan {
  if (result.adoptedSlots.size === 0 && result.adoptDeletions.length === 0) return plan;
  const replaced: Plan = plan.map((c) => {
    if (c.op !== 'add-route') return c;
    const previous = result.adoptedSlots.get(routeSlot(c.route));
    return previous === undefined ? c : { op: 'replace-route', route: c.route, previous, linkName: c.linkName, reason: 'adopted: replaces a leftover foreign route' };
  });
  return [...replaced, ...result.adoptDeletions];
}
