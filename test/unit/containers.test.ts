import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError, defaultConfig } from '../../src/config';
import type { Config } from '../../src/config';
import {
  assignMarks, buildContainerObjects, isSafeIfname, maskBits, matchesBridgePattern, MarkSpaceError, maxSlot, slotOfMark, spreadSlot,
} from '../../src/core/containers';
import type { ContainerBridge, ContainerEni } from '../../src/core/containers';

const config = defaultConfig({});

function eni(dev: number, card = 0, name = `eth${dev}`): ContainerEni {
  return { mac: `02:00:00:00:${card.toString(16).padStart(2, '0')}:${dev.toString(16).padStart(2, '0')}`, deviceNumber: dev, networkCard: card, linkName: name, table: 10000 + 100 * card + dev };
}

function withMask(mask: number, over: Partial<Config> = {}): Config {
  return { ...config, ...over, containers: { ...config.containers, markMask: mask } };
}

const docker0: ContainerBridge = { name: 'docker0', ifindex: 5, subnets: ['172.17.0.1/16', 'fe80::1/64'] };
const brA: ContainerBridge = { name: 'br-0123456789ab', ifindex: 9, subnets: ['172.18.0.1/16'] };

describe('mark layout', () => {
  it('spreads slots into contiguous and non-contiguous masks', () => {
    expect(maskBits(0x1f00)).toEqual([8, 9, 10, 11, 12]);
    expect(spreadSlot(1, 0x1f00)).toBe(0x100);
    expect(spreadSlot(3, 0x1f00)).toBe(0x300);
    expect(spreadSlot(31, 0x1f00)).toBe(0x1f00);
    // 0x0f0f: low nibble takes slot bits 0-3, bits 8-11 take slot bits 4-7.
    expect(spreadSlot(0x12, 0x0f0f)).toBe(0x102);
    // Bits around kube-proxy's 0x4000 and portmap's 0x2000: 0x1f00 + 0x7f = 12 bits.
    expect(spreadSlot(0x80, 0x1f7f)).toBe(0x100);
    expect(spreadSlot(1, 0x80000000)).toBe(0x80000000);
    expect(maxSlot(0xffffffff)).toBe(2 ** 32 - 1);
    expect(() => spreadSlot(32, 0x1f00)).toThrow(RangeError);
  });

  it('spread and extract are inverse and stay inside the mask', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 0xffffffff }), fc.nat(), (mask, raw) => {
        const slot = raw % (maxSlot(mask) + 1);
        const value = spreadSlot(slot, mask);
        expect(value >>> 0).toBe(value);
        expect((value & ~mask) >>> 0).toBe(0);
        expect(slotOfMark(value, mask)).toBe(slot);
        if (slot !== 0) expect(value).not.toBe(0);
      }),
    );
  });

  it('gives the slot = table offset, so device 3 is mark 0x3 with the default mask 0x1f7f', () => {
    const { marks, unmarked } = assignMarks([eni(1), eni(3), eni(2)], config);
    expect(marks.map((m) => [m.linkName, m.slot, m.value, m.table])).toEqual([
      ['eth1', 1, 0x1, 10001], ['eth2', 2, 0x2, 10002], ['eth3', 3, 0x3, 10003],
    ]);
    expect(unmarked).toEqual([]);
  });

  it('is stable when another ENI detaches or attaches', () => {
    const before = assignMarks([eni(1), eni(2), eni(3)], config).marks;
    const after = assignMarks([eni(1), eni(3)], config).marks;
    const again = assignMarks([eni(4), eni(3), eni(1), eni(2)], config).marks;
    const valueOf = (ms: typeof before, name: string): number | undefined => ms.find((m) => m.linkName === name)?.value;
    for (const name of ['eth1', 'eth3']) {
      expect(valueOf(after, name)).toBe(valueOf(before, name));
      expect(valueOf(again, name)).toBe(valueOf(before, name));
    }
  });

  it('fails with an error naming containers.markMask when the mask is too small', () => {
    expect(() => assignMarks([eni(1), eni(4)], withMask(0x3))).toThrow(MarkSpaceError);
    try {
      assignMarks([eni(1), eni(4)], withMask(0x3));
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(/containers\.markMask/);
      expect((err as Error).message).toMatch(/0x3/);
      expect((err as Error).message).toMatch(/slot 4/);
    }
    // A second network card needs slot 100+: 7 bits, which 0x1f00 lacks and the default 0x1f7f (12 bits) has.
    expect(() => assignMarks([eni(0, 1)], withMask(0x1f00))).toThrow(/containers\.markMask/);
    expect(assignMarks([eni(0, 1)], config).marks[0]?.value).toBe(spreadSlot(100, 0x1f7f));
    expect(assignMarks([eni(0, 1)], withMask(0x7f00)).marks[0]?.value).toBe(spreadSlot(100, 0x7f00));
    // The default covers every table offset up to 4095 (network cards 0-40).
    expect(assignMarks([eni(95, 40)], config).marks[0]?.value).toBe(spreadSlot(4095, 0x1f7f));
    expect(() => assignMarks([eni(96, 40)], config)).toThrow(/containers\.markMask/);
    // Non-contiguous masks work the same way.
    expect(assignMarks([eni(3)], withMask(0x5)).marks[0]?.value).toBe(0x5);
    expect(assignMarks([eni(2)], withMask(0x5)).marks[0]?.value).toBe(0x4);
  });

  it('gives no mark to an ENI in the primary\'s place and rejects two ENIs in one slot', () => {
    const r = assignMarks([{ ...eni(0), mac: '02:00:00:00:00:99' }, eni(1)], config);
    expect(r.marks).toHaveLength(1);
    expect(r.unmarked[0]?.mac).toBe('02:00:00:00:00:99');
    expect(() => assignMarks([eni(1), { ...eni(0, 1), mac: '02:aa:00:00:00:01' }], { ...config, tablePerCard: 1 })).toThrow(/both map to slot 1/);
  });
});

describe('bridge patterns and names', () => {
  it('matches * as any run of characters and nothing else', () => {
    const p = config.containers.bridgePatterns;
    expect(matchesBridgePattern('docker0', p)).toBe(true);
    expect(matchesBridgePattern('br-0123456789ab', p)).toBe(true);
    expect(matchesBridgePattern('docker1', p)).toBe(false);
    expect(matchesBridgePattern('xbr-1', p)).toBe(false);
    expect(matchesBridgePattern('eth0', p)).toBe(false);
    expect(matchesBridgePattern('cni0', ['cni*', 'docker.0'])).toBe(true);
    expect(matchesBridgePattern('dockerx0', ['docker.0'])).toBe(false); // '.' is literal
  });

  it('accepts only safe interface names', () => {
    expect(isSafeIfname('eth0')).toBe(true);
    expect(isSafeIfname('veth1@if3')).toBe(true);
    expect(isSafeIfname('')).toBe(false);
    expect(isSafeIfname('a'.repeat(16))).toBe(false);
    expect(isSafeIfname('eth0 -j DROP')).toBe(false);
    expect(isSafeIfname('eth0\n-A')).toBe(false);
    expect(isSafeIfname('eth+')).toBe(false);
  });
});

describe('buildContainerObjects', () => {
  it('plans bridge routes in every ENI table, the to-rule, fwmark rules and the chain', () => {
    const o = buildContainerObjects([eni(2), eni(1)], [brA, docker0, { name: 'virbr0', ifindex: 12, subnets: ['192.168.122.1/24'] }], config);
    expect(o.subnets).toEqual(['172.17.0.0/16', '172.18.0.0/16']);
    expect(o.routes).toEqual([
      { family: 4, table: 10001, dst: '172.18.0.0/16', ifindex: 9, protocol: 236, scope: 253, type: 1 },
      { family: 4, table: 10001, dst: '172.17.0.0/16', ifindex: 5, protocol: 236, scope: 253, type: 1 },
      { family: 4, table: 10002, dst: '172.18.0.0/16', ifindex: 9, protocol: 236, scope: 253, type: 1 },
      { family: 4, table: 10002, dst: '172.17.0.0/16', ifindex: 5, protocol: 236, scope: 253, type: 1 },
    ]);
    expect(o.rules).toEqual([
      { family: 4, priority: 10050, table: 254, protocol: 236, dst: '172.17.0.0/16', action: 1 },
      { family: 4, priority: 10050, table: 254, protocol: 236, dst: '172.18.0.0/16', action: 1 },
      { family: 4, priority: 10200, table: 10001, protocol: 236, fwmark: 0x1, fwmask: 0x1f7f, action: 1 },
      { family: 4, priority: 10200, table: 10002, protocol: 236, fwmark: 0x2, fwmask: 0x1f7f, action: 1 },
    ]);
    expect(o.mangle).toEqual({
      chain: 'EC2NETD',
      mask: 0x1f7f,
      rules: [
        { kind: 'set-mark', inIface: 'eth1', value: 0x1, mask: 0x1f7f },
        { kind: 'restore-mark', inIface: 'eth1', mask: 0x1f7f },
        { kind: 'set-mark', inIface: 'eth2', value: 0x2, mask: 0x1f7f },
        { kind: 'restore-mark', inIface: 'eth2', mask: 0x1f7f },
        { kind: 'restore-mark', inIface: 'br-0123456789ab', mask: 0x1f7f },
        { kind: 'restore-mark', inIface: 'docker0', mask: 0x1f7f },
      ],
    });
  });

  it('wants nothing when disabled, without bridges, without addressed bridges or without secondary ENIs', () => {
    const off = { ...config, containers: { ...config.containers, enabled: false } };
    for (const o of [
      buildContainerObjects([eni(1)], [docker0], off),
      buildContainerObjects([eni(1)], [], config),
      buildContainerObjects([eni(1)], [{ ...docker0, subnets: [] }], config),
      buildContainerObjects([], [docker0], config),
    ]) {
      expect(o.routes).toEqual([]);
      expect(o.rules).toEqual([]);
      expect(o.mangle.rules).toEqual([]);
    }
  });

  it('leaves unsafe names out of iptables and reports them', () => {
    const o = buildContainerObjects([eni(1), eni(2, 0, 'eth 2')], [docker0, { name: 'br-x;y', ifindex: 3, subnets: ['10.9.0.1/24'] }], withMask(0x1f00, { containers: { ...config.containers, bridgePatterns: ['docker0', 'br-*'] } }));
    expect(o.unmarked.map((u) => u.mac)).toEqual([eni(2).mac]);
    expect(o.mangle.rules.map((r) => r.inIface)).toEqual(['eth1', 'eth1', 'docker0']);
  });
});

describe('buildContainerObjects over IPv6', () => {
  const docker6: ContainerBridge = { name: 'docker0', ifindex: 5, subnets: ['172.17.0.1/16', 'fe80::1/64', 'FD00:DEAD:BEEF:0:0:0:0:1/64'] };
  const only6: ContainerBridge = { name: 'br-00000000000b', ifindex: 11, subnets: ['fd00:b::1/64', 'fe80::1/64'] };

  it('plans the same objects for the bridges\' IPv6 networks: routes in every ENI table, to-rule, fwmark rules, the ip6tables chain', () => {
    const o = buildContainerObjects([eni(1), eni(2)], [docker6, brA], config);
    expect(o.subnets6).toEqual(['fd00:dead:beef::/64']);
    expect(o.routes.filter((r) => r.family === 6)).toEqual([
      { family: 6, table: 10001, dst: 'fd00:dead:beef::/64', ifindex: 5, protocol: 236, scope: 0, type: 1 },
      { family: 6, table: 10002, dst: 'fd00:dead:beef::/64', ifindex: 5, protocol: 236, scope: 0, type: 1 },
    ]);
    expect(o.rules.filter((r) => r.family === 6)).toEqual([
      { family: 6, priority: 10050, table: 254, protocol: 236, dst: 'fd00:dead:beef::/64', action: 1 },
      { family: 6, priority: 10200, table: 10001, protocol: 236, fwmark: 0x1, fwmask: 0x1f7f, action: 1 },
      { family: 6, priority: 10200, table: 10002, protocol: 236, fwmark: 0x2, fwmask: 0x1f7f, action: 1 },
    ]);
    // Same marks, same chain name; only the bridge with an IPv6 network restores for IPv6.
    expect(o.mangle6).toEqual({ ...o.mangle, rules: o.mangle.rules.filter((r) => r.inIface !== brA.name) });
    expect(o.mangle.rules.map((r) => r.inIface)).toEqual(['eth1', 'eth1', 'eth2', 'eth2', 'br-0123456789ab', 'docker0']);
  });

  it('an IPv6-only container network gets IPv6 objects only', () => {
    const o = buildContainerObjects([eni(1)], [only6], config);
    expect(o.mangle.rules).toEqual([]);
    expect(o.rules.every((r) => r.family === 6) && o.routes.every((r) => r.family === 6)).toBe(true);
    expect(o.mangle6.rules.map((r) => r.inIface)).toEqual(['eth1', 'eth1', only6.name]);
  });

  it('property: without an IPv6 network (link-local only), nothing of IPv6 is wanted and IPv4 is as before', () => {
    const v4only = (b: ContainerBridge): ContainerBridge => ({ ...b, subnets: b.subnets.filter((s) => !s.includes(':')) });
    fc.assert(fc.property(
      fc.subarray([1, 2, 3, 4]), fc.subarray([docker0, brA, { ...brA, name: 'br-cccccccccccc', ifindex: 14, subnets: ['10.7.0.1/24', 'fe80::42/64'] }]),
      (devs, bridges) => {
        const o = buildContainerObjects(devs.map((d) => eni(d)), bridges, config);
        expect(o.mangle6.rules).toEqual([]);
        expect([...o.routes, ...o.rules].some((x) => x.family === 6)).toBe(false);
        expect(o).toEqual({ ...buildContainerObjects(devs.map((d) => eni(d)), bridges.map(v4only), config), subnets6: [] });
      },
    ));
  });
});
