// The address ledger's pruning (src/daemon/ledger.ts): an entry goes when its address is no longer on a link with
// that MAC, and a prune that cannot change anything (the same addresses dump, every link keeping its MAC) is skipped.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { KernelAddress, KernelLink, KernelState } from '../../src/core/types';
import { AddressLedger } from '../../src/daemon/ledger';

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });
const tmpDir = (): string => {
  const dir = mkdtempSync(join(tmpdir(), 'ec2netd-ledger-'));
  dirs.push(dir);
  return dir;
};
const ledger = (): AddressLedger => new AddressLedger(tmpDir());

const MAC1 = '02:00:00:00:00:01';
const MAC2 = '02:00:00:00:00:02';
const link = (index: number, mac: string): KernelLink => ({ index, name: `eth${index}`, mac, up: true });
const addr = (ifindex: number, address: string): KernelAddress => ({ ifindex, family: 4, address, prefixLen: 24 });
const state = (links: KernelLink[], addresses: KernelAddress[]): KernelState => ({ links, addresses, routes: [], rules: [] });
const owned = (l: AddressLedger): string[] => [...l.owned].sort();

describe('AddressLedger.prune', () => {
  it('forgets an entry whose address went, or whose link now has another MAC or is gone', () => {
    const l = ledger();
    l.add(MAC1, '10.0.1.20');
    l.add(MAC1, '10.0.1.21');
    l.add(MAC2, '10.0.2.20');
    const addresses = [addr(2, '10.0.1.20'), addr(2, '10.0.1.21'), addr(3, '10.0.2.20')];
    l.prune(state([link(2, MAC1), link(3, MAC2)], addresses));
    expect(owned(l)).toHaveLength(3);
    l.prune(state([link(2, MAC1), link(3, MAC2)], addresses.slice(1)));
    expect(owned(l)).toEqual([`${MAC1}|10.0.1.21`, `${MAC2}|10.0.2.20`]);
    // The same dump as the last prune, but eth3 is now another ENI's: its entry goes.
    const again = addresses.slice(1);
    l.prune(state([link(2, MAC1), link(3, MAC2)], again));
    l.prune(state([link(2, MAC1), link(3, '02:00:00:00:00:09')], again));
    expect(owned(l)).toEqual([`${MAC1}|10.0.1.21`]);
    l.prune(state([link(3, '02:00:00:00:00:09')], again));
    expect(owned(l)).toEqual([]);
  });

  it('the same dump with a link added (a hot attach) changes nothing; a new dump prunes what was added since', () => {
    const l = ledger();
    const addresses = [addr(2, '10.0.1.20')];
    l.add(MAC1, '10.0.1.20');
    l.prune(state([link(2, MAC1)], addresses));
    // Added after that dump (a write whose address is not in it): kept while the dump is the same...
    l.add(MAC1, '10.0.1.30');
    l.prune(state([link(2, MAC1), link(3, MAC2)], addresses));
    expect(owned(l)).toEqual([`${MAC1}|10.0.1.20`, `${MAC1}|10.0.1.30`]);
    // ...and judged by the next dump, which every write makes the next observation read.
    l.prune(state([link(2, MAC1), link(3, MAC2)], [...addresses]));
    expect(owned(l)).toEqual([`${MAC1}|10.0.1.20`]);
  });
});

describe('AddressLedger.save', () => {
  const inode = (path: string): number => statSync(path).ino;

  it('writes what it owns, again only when that changed, and makes its directory again if it went', () => {
    const state = join(tmpDir(), 'state');
    const file = join(state, 'addresses.json');
    const own = new AddressLedger(state);
    own.add(MAC1, '10.0.1.20');
    own.save();
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual([`${MAC1}|10.0.1.20`]);
    const first = inode(file);
    own.add(MAC1, '10.0.1.20');
    own.save();
    expect(inode(file)).toBe(first); // nothing new: not rewritten
    own.add(MAC2, '10.0.2.20');
    own.save();
    expect(inode(file)).not.toBe(first);
    rmSync(state, { recursive: true });
    own.delete(MAC2, '10.0.2.20');
    own.save();
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual([`${MAC1}|10.0.1.20`]);
    const reloaded = new AddressLedger(state);
    expect(reloaded.load()).toBeUndefined();
    expect(owned(reloaded)).toEqual(owned(own));
  });
});
