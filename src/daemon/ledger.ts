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
  /** Changed since the last save (true at first: the first save writes the file whatever it holds). */
  private dirty = true;

  constructor(private readonly dir: string) {
    this.file = join(dir, 'addresses.json');
  }

  /** Loads the ledger; an unreadable or corrupt file means "owns nothing" (the safe direction). */
  load(): string | undefined {
    this.lastPruned = undefined;
    this.dirty = true;
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
    const key = ownedAddressKey(mac, address);
    if (this.keys.has(key)) return;
    this.keys.add(key);
    this.dirty = true;
  }

  delete(mac: string, address: string): void {
    if (this.keys.delete(ownedAddressKey(mac, address))) this.dirty = true;
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
    for (const key of this.keys) {
      if (!present.has(key)) {
        this.keys.delete(key);
        this.dirty = true;
      }
    }
  }

  clear(): void {
    this.lastPruned = undefined;
    if (this.keys.size > 0) this.dirty = true;
    this.keys.clear();
  }

  /**
   * Writes atomically (temp file + rename) so a crash never leaves half a ledger; nothing when nothing changed since
   * the last save. It is on a write's path (the write-ahead before an address is added: 1-2.6 ms of a hot attach
   * when it also made the directory, sorted the keys, and was written again after the writes with nothing new).
   */
  save(): void {
    if (!this.dirty) return;
    const tmp = `${this.file}.${process.pid}.tmp`;
    const text = JSON.stringify([...this.keys]);
    try {
      writeFileSync(tmp, text, { mode: 0o644 });
    } catch (err) {
      // No directory yet (the first save), or someone removed it: made, and written again.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      mkdirSync(this.dir, { recursive: true, mode: 0o755 });
      writeFileSync(tmp, text, { mode: 0o644 });
    }
    renameSync(tmp, this.file);
    this.dirty = false;
  }
}
