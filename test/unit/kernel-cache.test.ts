// The kernel cache (src/kernel/cache.ts): which kinds an observation dumps. With ec2netd's own echoes dropped in the
// kernel, no sync re-reads what a write changed unless the cache says so: the kinds written are read again at the
// next observation, whatever kinds it asks for, and only those.
import { describe, expect, it } from 'vitest';
import type { Change } from '../../src/core/types';
import { KernelCache } from '../../src/kernel/cache';
import type { Netlink } from '../../src/kernel/netlink';
import { kindOf } from '../../src/daemon/reconciler';

/** A Netlink whose dumps are empty and recorded by name ('dump links', 'dump IPv4 routes', ...). */
function recordingNetlink(): { nl: Netlink; dumps: string[] } {
  const dumps: string[] = [];
  const nl = { dumpWith: async (what: string) => { dumps.push(what.replace(/^dump (IPv[46] )?/, '')); return []; } } as unknown as Netlink;
  return { nl, dumps };
}
const kindsRead = (dumps: string[]): string[] => [...new Set(dumps)].sort();

describe('KernelCache', () => {
  it('reads everything the first time, then only the kinds asked for (links and addresses with the routes)', async () => {
    const { nl, dumps } = recordingNetlink();
    const cache = new KernelCache(nl);
    await cache.observe(new Set(['rule']));
    expect(kindsRead(dumps.splice(0))).toEqual(['addresses', 'links', 'routes', 'rules']);
    await cache.observe(new Set(['rule']));
    expect(kindsRead(dumps.splice(0))).toEqual(['rules']);
    await cache.observe(new Set(['address']));
    expect(kindsRead(dumps.splice(0))).toEqual(['addresses', 'routes']);
  });

  it('the kinds ec2netd wrote are read again at the next observation, once', async () => {
    const { nl, dumps } = recordingNetlink();
    const cache = new KernelCache(nl);
    await cache.observe(new Set(['link']));
    dumps.splice(0);
    cache.written(['rule', 'rule']);
    await cache.observe(new Set(['link']));
    expect(kindsRead(dumps.splice(0))).toEqual(['links', 'routes', 'rules']);
    await cache.observe(new Set(['link']));
    expect(kindsRead(dumps.splice(0))).toEqual(['links', 'routes']);
    // An address written: its routes too (the kernel removes IPv4 routes whose src goes, without a message).
    cache.written(['address']);
    await cache.observe(new Set(['rule']));
    expect(kindsRead(dumps.splice(0))).toEqual(['addresses', 'routes', 'rules']);
    cache.forget();
    await cache.observe(new Set(['rule']));
    expect(kindsRead(dumps.splice(0))).toEqual(['addresses', 'links', 'routes', 'rules']);
  });

  it('stale: the kinds written since the last observation (none before the first, nor after forget)', async () => {
    const { nl, dumps } = recordingNetlink();
    const cache = new KernelCache(nl);
    cache.written(['rule']);
    expect([...cache.stale]).toEqual([]); // nothing cached: the next observation reads everything anyway
    await cache.observe(new Set());
    cache.written(['rule', 'address']);
    expect([...cache.stale].sort()).toEqual(['address', 'rule']);
    dumps.splice(0);
    // An observation of no kind (the daemon's settle) reads the stale kinds, and they are no longer stale.
    await cache.observe(new Set());
    expect(kindsRead(dumps.splice(0))).toEqual(['addresses', 'routes', 'rules']);
    expect([...cache.stale]).toEqual([]);
    cache.written(['link']);
    cache.forget();
    expect([...cache.stale]).toEqual([]);
  });

  it('links that only appeared (newLinksOnly): the links are read without the routes, unless a link was written', async () => {
    const { nl, dumps } = recordingNetlink();
    const cache = new KernelCache(nl);
    await cache.observe(new Set(['link']), { newLinksOnly: true });
    expect(kindsRead(dumps.splice(0))).toEqual(['addresses', 'links', 'routes', 'rules']); // the first read is whole
    await cache.observe(new Set(['link']), { newLinksOnly: true });
    expect(kindsRead(dumps.splice(0))).toEqual(['links']);
    await cache.observe(new Set(['link', 'address']), { newLinksOnly: true });
    expect(kindsRead(dumps.splice(0))).toEqual(['addresses', 'links', 'routes']);
    cache.written(['link']); // a link ec2netd set up: the kernel may have changed its routes
    await cache.observe(new Set(['link']), { newLinksOnly: true });
    expect(kindsRead(dumps.splice(0))).toEqual(['links', 'routes']);
    await cache.observe(new Set(['link']));
    expect(kindsRead(dumps.splice(0))).toEqual(['links', 'routes']);
  });

  it('kindOf: the kind each change writes', () => {
    const rule = { family: 4 as const, priority: 10100, table: 10001, protocol: 236, src: '10.0.1.20/32', action: 1 };
    const route = { family: 4 as const, table: 10001, dst: 'default', gateway: '10.0.1.1', protocol: 236, scope: 0, type: 1 };
    const address = { ifindex: 3, family: 4 as const, address: '10.0.1.20', prefixLen: 24, noPrefixRoute: true };
    const changes: Change[] = [
      { op: 'link-up', link: { index: 3, name: 'eth1', mac: '02:00:00:00:00:01', up: false }, reason: '' },
      { op: 'add-address', address, linkName: 'eth1', reason: '' }, { op: 'del-address', address, linkName: 'eth1', reason: '' },
      { op: 'add-route', route, reason: '' }, { op: 'replace-route', route, previous: route, reason: '' }, { op: 'del-route', route, reason: '' },
      { op: 'add-rule', rule, reason: '' }, { op: 'del-rule', rule, reason: '' },
    ];
    expect(changes.map(kindOf)).toEqual(['link', 'address', 'address', 'route', 'route', 'route', 'rule', 'rule']);
  });
});
