// Fights: someone else (a network manager, a script) keeps undoing an object ec2netd owns, and ec2netd keeps
// putting it back. Without a damper each round costs a sync, a write and a journal line, as fast as the other
// party goes. The damper keeps the first repair immediate and spaces the repeated repairs of one object
// exponentially (`baseMs` doubling up to `capMs`); the rest of the plan is never held back. Pure: the clock is
// injected, nothing is read or written here (the Reconciler logs, the Daemon schedules the wake-ups).
import { keyOfAddress, keyOfRule, routeKey } from '../core/diff';
import { formatChange } from '../core/format';
import type { Change, Plan } from '../core/types';

export interface FightPolicy {
  /** Wait before the second repair of an object within the quiet period; doubles for each one after. */
  baseMs: number;
  /** Longest wait between two repairs. A fight is over once its object stayed for 2 × capMs. */
  capMs: number;
}

export interface Fight {
  key: string;
  /** The object, as `ip` shows it: "rule from 10.0.1.20 lookup 10001 pref 10100 proto 236". */
  object: string;
  /** When the fight was noticed (clock ms). */
  since: number;
  /** Repairs made since the object was first added in this streak. */
  repairs: number;
  /** When the next repair may be made, while one is withheld. */
  nextRepairAt?: number;
}

interface Track {
  /** The change that last created or repaired the object (described only when a fight is reported). */
  change: Change;
  /** Successful adds of the object within the quiet period (the first is its creation or first repair). */
  adds: number;
  lastAddAt: number;
  fightSince?: number;
  withheldUntil?: number;
}

/** Identity of the object a change creates or repairs (the diff's keys); deletions are never damped. */
export function objectKey(c: Change): string | undefined {
  switch (c.op) {
    case 'add-rule': return `rule|${keyOfRule(c.rule)}`;
    case 'add-route':
    case 'replace-route': return `route|${routeKey(c.route)}`;
    case 'add-address': return `address|${keyOfAddress(c.address)}`;
    case 'link-up': return `link|${c.link.index}`;
    default: return undefined;
  }
}

/** The object a deletion removes, under the key its creation has. */
function deletedKey(c: Change): string | undefined {
  switch (c.op) {
    case 'del-rule': return `rule|${keyOfRule(c.rule)}`;
    case 'del-route': return `route|${routeKey(c.route)}`;
    case 'del-address': return `address|${keyOfAddress(c.address)}`;
    default: return undefined;
  }
}

/** "rule from 10.0.1.20 lookup 10001 pref 10100 proto 236", "route default via ... table 10001", "link eth1 up". */
export function describeObject(c: Change): string {
  if (c.op === 'link-up') return `link ${c.link.name} up`;
  return formatChange(c).replace(/^ip (?:-6 )?(\w+) (?:add|replace|del) /, '$1 ');
}

export class FightDamper {
  private readonly tracks = new Map<string, Track>();

  constructor(private readonly policy: FightPolicy, private readonly now: () => number) {}

  private get quietMs(): number {
    return 2 * this.policy.capMs;
  }

  /** Wait after `adds` successful adds before the next: none for the first repair, then baseMs doubling to capMs. */
  private delayAfter(adds: number): number {
    if (adds <= 1) return 0;
    return Math.min(this.policy.baseMs * 2 ** (adds - 2), this.policy.capMs);
  }

  /** The changes that may go now; the repairs withheld wait for `nextWakeAt()`. */
  filter(plan: Plan): { allowed: Plan; withheld: Plan } {
    const now = this.now();
    const allowed: Plan = [];
    const withheld: Plan = [];
    // An object that is no longer in the plan (back by itself, or no longer wanted) is not waiting any more.
    for (const track of this.tracks.values()) track.withheldUntil = undefined;
    for (const change of plan) {
      const key = objectKey(change);
      const track = key === undefined ? undefined : this.tracks.get(key);
      if (track === undefined || now - track.lastAddAt > this.quietMs) {
        allowed.push(change);
        continue;
      }
      const at = track.lastAddAt + this.delayAfter(track.adds);
      if (now >= at) {
        track.withheldUntil = undefined;
        allowed.push(change);
      } else {
        track.withheldUntil = at;
        withheld.push(change);
      }
    }
    return { allowed, withheld };
  }

  /** Records the creations, repairs and deletions the kernel took. Returns the fights this started. */
  applied(changes: readonly Change[]): Fight[] {
    const now = this.now();
    const started: Fight[] = [];
    for (const change of changes) {
      // ec2netd removed it itself (an ENI detached, an IP unassigned): its next creation is not a repair.
      const deleted = deletedKey(change);
      if (deleted !== undefined) this.tracks.delete(deleted);
      const key = objectKey(change);
      if (key === undefined) continue;
      const track = this.tracks.get(key);
      if (track === undefined || now - track.lastAddAt > this.quietMs) {
        this.tracks.set(key, { change, adds: 1, lastAddAt: now });
        continue;
      }
      track.adds++;
      track.change = change;
      track.lastAddAt = now;
      track.withheldUntil = undefined;
      // Put back twice within the quiet period: someone keeps undoing it.
      if (track.adds >= 3 && track.fightSince === undefined) {
        track.fightSince = now;
        started.push(this.fight(key, track));
      }
    }
    return started;
  }

  /**
   * The kernel removed these objects itself (IPv4 routes when their link went down or their `src` address went
   * away): their next repair is not a round of a fight. Objects already in a fight stay damped.
   */
  forgive(kind: 'route'): void {
    for (const [key, track] of this.tracks) if (key.startsWith(`${kind}|`) && track.fightSince === undefined) this.tracks.delete(key);
  }

  /** Ends the fights whose object has stayed for the quiet period; forgets objects left alone. */
  expire(): Fight[] {
    const now = this.now();
    const ended: Fight[] = [];
    for (const [key, track] of this.tracks) {
      if (now - track.lastAddAt <= this.quietMs || track.withheldUntil !== undefined) continue;
      if (track.fightSince !== undefined) ended.push(this.fight(key, track));
      this.tracks.delete(key);
    }
    return ended;
  }

  /** When to look again: the next withheld repair, or the end of a fight's quiet period. */
  nextWakeAt(): number | undefined {
    let next: number | undefined;
    for (const track of this.tracks.values()) {
      const at = track.withheldUntil ?? (track.fightSince !== undefined ? track.lastAddAt + this.quietMs + 1 : undefined);
      if (at !== undefined && (next === undefined || at < next)) next = at;
    }
    return next;
  }

  inFight(change: Change): boolean {
    const key = objectKey(change);
    return key !== undefined && this.tracks.get(key)?.fightSince !== undefined;
  }

  get fights(): Fight[] {
    return [...this.tracks].filter(([, t]) => t.fightSince !== undefined).map(([key, t]) => this.fight(key, t));
  }

  private fight(key: string, t: Track): Fight {
    const f: Fight = { key, object: describeObject(t.change), since: t.fightSince ?? t.lastAddAt, repairs: t.adds - 1 };
    if (t.withheldUntil !== undefined) f.nextRepairAt = t.withheldUntil;
    return f;
  }
}
