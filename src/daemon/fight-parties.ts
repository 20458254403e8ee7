// Who is likely on the other side of a fight: the network managers doctor knows (src/kernel/foreign.ts), read
// once per daemon at the first fight (fights are rare; the files do not change while one goes on).
import type { ManagerPresence } from '../core/coexistence';
import { detectManagers, detectNetworkd, type NetworkdFacts } from '../kernel/foreign';

export interface PartyFacts {
  networkd: Pick<NetworkdFacts, 'state' | 'manageForeignRoutingPolicyRules' | 'manageForeignRoutes'>;
  managers: readonly ManagerPresence[];
}

/** Pure: the tools that plausibly undo this kind of object ("rule", "route", "address", "link"). */
export function likelyParties(objectKind: string, facts: PartyFacts): string[] {
  const out: string[] = [];
  const n = facts.networkd;
  if (n.state === 'active' || n.state === 'enabled') {
    // systemd-networkd deletes foreign rules and routes unless told not to (doctor's networkd check).
    if (objectKind === 'rule' && n.manageForeignRoutingPolicyRules !== false) out.push('systemd-networkd (ManageForeignRoutingPolicyRules is not "no")');
    else if (objectKind === 'route' && n.manageForeignRoutes !== false) out.push('systemd-networkd (ManageForeignRoutes is not "no")');
    else if (objectKind === 'address' || objectKind === 'link') out.push('systemd-networkd');
  }
  for (const m of facts.managers) {
    if (m.active) out.push(`${m.id} (active)`);
    else if (m.installed) out.push(`${m.id} (installed)`);
  }
  return out;
}

export class FightParties {
  private facts: PartyFacts | undefined;

  constructor(private readonly root: string) {}

  /** "likely systemd-networkd (...)" or "no known network manager found". */
  describe(objectKind: string): string {
    this.facts ??= { networkd: detectNetworkd(this.root), managers: detectManagers(this.root) };
    const parties = likelyParties(objectKind, this.facts);
    return parties.length > 0 ? `likely ${parties.join(', ')}` : 'no known network manager found';
  }
}
