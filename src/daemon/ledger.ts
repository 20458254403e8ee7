// The addresses ec2netd added, remembered by MAC in stateDir (tmpfs: gone on reboot, like the addresses).
// Addresses carry no portable owner field, so this ledger is what keeps ec2netd from removing an address
// that DHCP or an administrator put on an ENI.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ownedAddressKey } from '../core/diff';
import type { KernelState } from '../core/types';

export class AddressLedger {
  private keys = new Set<string>();
  private readonly file: string;
  private lastPruned: { addresses: KernelState['addresses']; macs: Map<number, string> } | undefined;

  constructor(private readonly dir: string) {
    this.file = join(dir, 'addresses.json');
  }

  /** Loads the ledger; an unreadable or corrupt file means "owns nothing" (the safe direction). */
  load(): string | undefined {
    this.lastPruned = undefined;
    try {
      const doc: unknown = JSON.parse(readFileSync(this.file, 'utf8'));
      if (Array.isArray(doc) && doc.every((k) => typeof k === 'string')) {
        this.keys = new Set(doc);
        return undefined;
      }
      return `${this.file} is not a list of strings; starting with an empty ledger`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      return `cannot read ${this.file}: ${(err as Error).message}; starting with an empty ledger`;
    }
  }

  get owned(): ReadonlySet<string> {
    return this.keys;
  }

  add(mac: string, address: string): void {
    this.keys.add(ownedAddressKey(mac, address));
  }

  delete(mac: string, address: string): void {
    this.keys.delete(ownedAddressKey(mac, address));
  }

  /**
   * Forgets entries whose address is no longer on a link with that MAC. Skipped when the addresses are the very
   * dump the last prune saw and every link it saw still has its MAC (a hot attach reads the links alone): nothing can
   * have gone then, and keying ~750 addresses was a millisecond of the attach. Entries added since (a write) are
   * pruned at the next observe, which re-reads the addresses after every write (KernelCache.written).
   */
  prune(state: KernelState): void {
    const macs = new Map(state.links.map((l) => [l.index, l.mac]));
    const last = this.lastPruned;
    this.lastPruned = { addresses: state.addresses, macs };
    if (last !== undefined && last.addresses === state.addresses && [...last.macs].every(([index, mac]) => macs.get(index) === mac)) return;
    const present = new Set(state.addresses.flatMap((a) => {
      const mac = macs.get(a.ifindex);
      return mac === undefined ? [] : [ownedAddressKey(mac, a.address)];
    }));
    for (const key of this.keys) if (!present.has(key)) this.keys.delete(key);
  }

  clear(): void {
    this.lastPruned = undefined;
    this.keys.clear();
  }

  /** Writes atomically (temp file + rename) so a crash never leaves half a ledger. */
  save(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify([...this.keys].sort()), { mode: 0o644 });
    renameSync(tmp, this.file);
  }
}
