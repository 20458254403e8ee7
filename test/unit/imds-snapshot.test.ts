import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ImdsClient, type ImdsConfig, type ImdsReader } from '../../src/imds/client';
import { ImdsError, ImdsValidationError, describeValue } from '../../src/imds/errors';
import { mergeRead } from '../../src/core/last-good';
import { readEni, readImds, readSnapshot } from '../../src/imds/snapshot';
import { startImdsServer, type ImdsServer, type SimEni, type SimInstance } from '../../sim/imds-server';

const MAC0 = '0e:aa:00:00:00:01';
const MAC1 = '0e:aa:00:00:00:02';
const MAC2 = '0e:aa:00:00:00:03';
const macPath = (mac: string, key: string): string => `/latest/meta-data/network/interfaces/macs/${mac}/${key}`;

function eni0(): SimEni {
  return {
    mac: MAC0, deviceNumber: 0, networkCard: 0, interfaceId: 'eni-0123456789abcdef0',
    ipv4s: ['10.0.1.10', '10.0.1.11'], subnetIpv4Cidr: '10.0.1.0/24',
    ipv6s: ['2600:1F18:0:1::0A'], subnetIpv6Cidrs: ['2600:1f18:0:1::/64'],
    vpcIpv4Cidrs: ['10.0.0.0/16'], subnetId: 'subnet-1', vpcId: 'vpc-1',
  };
}
function eni1(): SimEni {
  return {
    mac: MAC1, deviceNumber: 1, networkCard: 0, interfaceId: 'eni-0000000000000000a',
    ipv4s: ['10.0.2.20'], ipv4Prefixes: ['10.0.2.32/28'], subnetIpv4Cidr: '10.0.2.0/24',
  };
}
function eni2(): SimEni {
  return {
    mac: MAC2, deviceNumber: 1, networkCard: 1, interfaceId: 'eni-0000000000000000b',
    ipv4s: ['10.0.3.30'], subnetIpv4Cidr: '10.0.3.0/24',
    subnetIpv6Cidrs: ['2600:1f18:0:3::/64'], ipv6Prefixes: ['2600:1f18:0:3:1234::/80'],
  };
}
function instance(...enis: SimEni[]): SimInstance {
  return { primaryMac: MAC0, enis: enis.length > 0 ? enis : [eni0(), eni1(), eni2()] };
}

let sim: ImdsServer;
beforeEach(async () => {
  sim = await startImdsServer({ host: '127.0.0.1', port: 0, instance: instance() });
});
afterEach(async () => {
  await sim.close();
});

function client(over: Partial<ImdsConfig> = {}): ImdsClient {
  return new ImdsClient({
    endpoint: sim.url, timeoutMs: 3000, tokenTtlSeconds: 60, attempts: 2,
    backoffBaseMs: 1, backoffMaxMs: 2, maxBodyBytes: 64 * 1024, ...over,
  }, { sleep: async () => undefined });
}

/** The snapshot of `enis` (primary first) must fail; returns the error. */
async function snapshotError(enis: SimEni[], over: Partial<ImdsConfig> = {}): Promise<ImdsError> {
  sim.setInstance(instance(...enis));
  try {
    await readSnapshot(client(over));
  } catch (err) {
    expect(err).toBeInstanceOf(ImdsError);
    return err as ImdsError;
  }
  throw new Error('expected the snapshot to fail');
}

describe('readSnapshot', () => {
  it('reads and canonicalizes three ENIs on two network cards', async () => {
    const snap = await readSnapshot(client());
    expect(snap).toEqual({
      primaryMac: MAC0,
      pending: [],
      held: [],
      enis: [
        {
          mac: MAC0, deviceNumber: 0, networkCard: 0, interfaceId: 'eni-0123456789abcdef0',
          ipv4s: ['10.0.1.10', '10.0.1.11'], ipv4Prefixes: [], ipv6s: ['2600:1f18:0:1::a'], ipv6Prefixes: [],
          subnetIpv4Cidr: '10.0.1.0/24', subnetIpv6Cidrs: ['2600:1f18:0:1::/64'],
        },
        {
          mac: MAC1, deviceNumber: 1, networkCard: 0, interfaceId: 'eni-0000000000000000a',
          ipv4s: ['10.0.2.20'], ipv4Prefixes: ['10.0.2.32/28'], ipv6s: [], ipv6Prefixes: [],
          subnetIpv4Cidr: '10.0.2.0/24', subnetIpv6Cidrs: [],
        },
        {
          mac: MAC2, deviceNumber: 1, networkCard: 1, interfaceId: 'eni-0000000000000000b',
          ipv4s: ['10.0.3.30'], ipv4Prefixes: [], ipv6s: [], ipv6Prefixes: ['2600:1f18:0:3:1234::/80'],
          subnetIpv4Cidr: '10.0.3.0/24', subnetIpv6Cidrs: ['2600:1f18:0:3::/64'],
        },
      ],
    });
    // One token; 2 top-level GETs; per ENI its directory listing and the 5 keys every ENI has (network-card present,
    // so no network-card-index), then the optional keys its listing names: MAC0 2 (IPv6), MAC1 1 (an IPv4 prefix), MAC2 2.
    expect(sim.stats().tokenPuts).toBe(1);
    expect(sim.stats().requests).toBe(1 + 2 + 3 * 6 + 2 + 1 + 2);
    expect(sim.stats().byPath[macPath(MAC0, 'network-card-index')]).toBeUndefined();
  });

  it('asks for an optional key only when the ENI\'s listing names it, and reads the same without listings', async () => {
    const lister = client();
    const withListing = await readSnapshot(lister);
    expect(sim.stats().byPath[macPath(MAC1, '')]).toBe(1);
    for (const key of ['ipv6s', 'ipv6-prefix', 'subnet-ipv6-cidr-blocks']) expect(sim.stats().byPath[macPath(MAC1, key)]).toBeUndefined();
    expect(sim.stats().byPath[macPath(MAC1, 'ipv4-prefix')]).toBe(1);
    // An IMDS without directory listings (a mock): every key is asked for, and the snapshot is the same.
    sim.resetStats();
    const inner = client();
    const noListing: ImdsReader = { get: (path) => (/macs\/[^/]+\/$/.test(path) ? Promise.resolve(undefined) : inner.get(path)) };
    expect(await readSnapshot(noListing)).toEqual(withListing);
    expect(sim.stats().byPath[macPath(MAC1, 'ipv6s')]).toBe(1);
    // A key the listing names that then answers 404 is absent, as before (here: the IPv4 part of MAC1 is held).
    sim.setInstance(instance(eni0(), { ...eni1(), hide: ['subnet-ipv4-cidr-block'] }));
    const one = await readEni(client(), MAC1, MAC0);
    expect(one.status === 'ready' && one.unsettled).toEqual([{ part: 'ipv4', reason: 'IMDS key absent: subnet-ipv4-cidr-block' }]);
  });

  it('an optional key its listing names that answers 404 unsettles its part: it is not read as "none"', async () => {
    sim.setInstance(instance({ ...eni0(), hide: ['ipv6s'] }, { ...eni1(), hide: ['ipv4-prefix'] }, eni2()));
    const read = await readImds(client());
    const unsettled = (mac: string): unknown => read.enis.map((r) => (r.mac === mac && r.status === 'ready' ? r.unsettled : undefined))
      .find((u) => u !== undefined);
    expect(unsettled(MAC0)).toEqual([{ part: 'ipv6', reason: 'ipv6s is listed but absent (HTTP 404) (IMDS not yet consistent)' }]);
    expect(unsettled(MAC1)).toEqual([{ part: 'ipv4', reason: 'ipv4-prefix is listed but absent (HTTP 404) (IMDS not yet consistent)' }]);
    expect(unsettled(MAC2)).toEqual([]);
  });

  it('an optional key the ENI had is asked for though its listing omits it: answering, its part is held; 404, it is gone', async () => {
    const previous = await readSnapshot(client());
    // Mid-change, the ENIs' listings stop naming keys that still answer.
    sim.setInstance(instance({ ...eni0(), unlisted: ['ipv6s'] }, { ...eni1(), unlisted: ['ipv4-prefix'] }, { ...eni2(), unlisted: ['ipv6-prefix'] }));
    sim.resetStats();
    const read = await readImds(client(), { previous });
    for (const [mac, key] of [[MAC0, 'ipv6s'], [MAC1, 'ipv4-prefix'], [MAC2, 'ipv6-prefix']] as const) {
      expect(sim.stats().byPath[macPath(mac, key)], `${mac} ${key}`).toBe(1);
    }
    expect(read.enis.map((r) => r.status === 'ready' ? r.unsettled : r.status)).toEqual([
      [{ part: 'ipv6', reason: 'ipv6s answers but the ENI\'s listing omits it (IMDS not yet consistent)' }],
      [{ part: 'ipv4', reason: 'ipv4-prefix answers but the ENI\'s listing omits it (IMDS not yet consistent)' }],
      [{ part: 'ipv6', reason: 'ipv6-prefix answers but the ENI\'s listing omits it (IMDS not yet consistent)' }],
    ]);
    // Folded into the last good state, every ENI keeps what it had.
    expect(mergeRead(previous, read, []).enis).toEqual(previous.enis);
    // With nothing to lose, the listing alone decides: the keys are not asked for.
    sim.resetStats();
    await readImds(client());
    expect(sim.stats().byPath[macPath(MAC0, 'ipv6s')]).toBeUndefined();
    // Listing and key agree that the values are gone (not named, 404): that is the statement, and they go.
    sim.setInstance(instance({ ...eni0(), ipv6s: [] }, { ...eni1(), ipv4Prefixes: [] }, { ...eni2(), ipv6Prefixes: [], ipv6s: ['2600:1f18:0:3::30'] }));
    const gone = mergeRead(previous, await readImds(client(), { previous }), []);
    expect(gone.held).toEqual([]);
    expect(gone.enis.map((e) => [e.ipv6s, e.ipv4Prefixes, e.ipv6Prefixes])).toEqual([
      [[], [], []], [[], [], []], [['2600:1f18:0:3::30'], [], []],
    ]);
  });

  it('normalizes an unaligned prefix or subnet, upper-case MACs, and duplicate addresses', async () => {
    sim.setInstance({
      primaryMac: MAC0.toUpperCase(),
      enis: [{ ...eni0(), mac: MAC0.toUpperCase(), subnetIpv4Cidr: '10.0.1.77/24', ipv4s: ['10.0.1.10', '10.0.1.10'], ipv4Prefixes: ['10.0.1.37/28'] }],
    });
    const snap = await readSnapshot(client());
    expect(snap.primaryMac).toBe(MAC0);
    expect(snap.enis[0]).toMatchObject({ mac: MAC0, subnetIpv4Cidr: '10.0.1.0/24', ipv4s: ['10.0.1.10'], ipv4Prefixes: ['10.0.1.32/28'] });
  });

  it('falls back to network-card-index, and to 0 when the instance serves neither for any ENI', async () => {
    sim.setInstance(instance(eni0(), eni1(), { ...eni2(), hide: ['network-card'] }));
    let snap = await readSnapshot(client());
    expect(snap.enis.find((e) => e.mac === MAC2)?.networkCard).toBe(1);
    expect(sim.stats().byPath[macPath(MAC2, 'network-card-index')]).toBe(1);

    const noCards = ['network-card', 'network-card-index'];
    sim.setInstance(instance({ ...eni0(), hide: noCards }, { ...eni1(), hide: noCards }));
    snap = await readSnapshot(client());
    expect(snap.enis.find((e) => e.mac === MAC1)?.networkCard).toBe(0);
    expect(snap.pending).toEqual([]);
    const one = await readEni(client(), MAC1, MAC0);
    expect(one.status === 'ready' && one.eni.networkCard).toBe(0);
  });

  it('holds back an ENI without network-card while the instance reports it for others: never a guessed card 0', async () => {
    const noCards = ['network-card', 'network-card-index'];
    sim.setInstance(instance(eni0(), eni1(), { ...eni2(), hide: noCards }));
    const snap = await readSnapshot(client());
    expect(snap.enis.map((e) => e.mac)).toEqual([MAC0, MAC1]);
    const reason = 'network-card absent while this instance reports it for other ENIs (IMDS not yet consistent)';
    expect(snap.pending).toEqual([{ mac: MAC2, reason }]);
    // The single-ENI retry asks the primary's entry whether the instance serves the key.
    sim.resetStats();
    expect(await readEni(client(), MAC2, MAC0)).toEqual({ mac: MAC2, status: 'pending', reason });
    expect(sim.stats().byPath[macPath(MAC0, 'network-card')]).toBe(1);
    // The primary itself is card 0 whatever IMDS says about the key.
    sim.setInstance(instance({ ...eni0(), hide: noCards }, eni1(), eni2()));
    expect((await readSnapshot(client())).enis.map((e) => e.mac)).toEqual([MAC0, MAC1, MAC2]);
    // Once IMDS serves it, the ENI is ready on its card.
    sim.setInstance(instance(eni0(), eni1(), eni2()));
    expect(await readEni(client(), MAC2, MAC0)).toMatchObject({ status: 'ready', eni: { networkCard: 1 } });
  });

  it('holds back a non-primary ENI whose device-number reads 0 on card 0', async () => {
    sim.setInstance(instance(eni0(), { ...eni1(), deviceNumber: 0 }, eni2()));
    const snap = await readSnapshot(client());
    expect(snap.pending).toEqual([{ mac: MAC1, reason: 'device-number reads 0 (IMDS not yet consistent)' }]);
    expect(snap.enis.map((e) => e.mac)).toEqual([MAC0, MAC2]);
  });

  it('accepts device-number 0 on a network card other than 0', async () => {
    sim.setInstance(instance(eni0(), { ...eni2(), deviceNumber: 0 }));
    const snap = await readSnapshot(client());
    expect(snap.pending).toEqual([]);
    expect(snap.enis.find((e) => e.mac === MAC2)).toMatchObject({ networkCard: 1, deviceNumber: 0 });
  });

  it('holds back ENIs whose required keys are absent, naming the keys', async () => {
    sim.setInstance(instance(eni0(), { ...eni1(), hide: ['interface-id'] }, { ...eni2(), hide: ['device-number', 'local-ipv4s'] }));
    const snap = await readSnapshot(client());
    expect(snap.enis.map((e) => e.mac)).toEqual([MAC0]);
    expect(snap.pending).toEqual([
      { mac: MAC1, reason: 'IMDS key absent: interface-id' },
      { mac: MAC2, reason: 'IMDS keys absent: device-number, local-ipv4s' },
    ]);
  });

  it('configures the IPv4 part of an ENI whose IPv6 addresses come before their subnet; IPv6 waits', async () => {
    sim.setInstance(instance(eni0(), { ...eni1(), ipv6s: ['2600:1f18:0:2::5'] }));
    const snap = await readSnapshot(client());
    expect(snap.pending).toEqual([]);
    expect(snap.enis.find((e) => e.mac === MAC1)).toMatchObject({ ipv4s: ['10.0.2.20'], ipv6s: [] });
    expect(snap.held).toEqual([{
      mac: MAC1, interfaceId: 'eni-0000000000000000a', part: 'ipv6', waiting: true,
      reason: 'IPv6 addresses listed but subnet-ipv6-cidr-blocks absent (IMDS not yet consistent)',
    }]);
  });

  it('holds back non-primary ENIs that claim the same card and device', async () => {
    sim.setInstance(instance(eni0(), eni1(), { ...eni2(), networkCard: 0, deviceNumber: 1 }));
    const snap = await readSnapshot(client());
    expect(snap.enis.map((e) => e.mac)).toEqual([MAC0]);
    expect(snap.pending.map((p) => p.mac)).toEqual([MAC1, MAC2]);
    expect(snap.pending[0]?.reason).toBe(`network-card 0 device-number 1 is also claimed by ${MAC2} (IMDS not yet consistent)`);
  });

  it('treats optional keys that are absent as empty lists', async () => {
    sim.setInstance(instance({ ...eni0(), ipv6s: [], subnetIpv6Cidrs: [] }));
    const snap = await readSnapshot(client());
    expect(snap.enis[0]).toMatchObject({ ipv4Prefixes: [], ipv6s: [], ipv6Prefixes: [], subnetIpv6Cidrs: [] });
  });

  it('fails when the primary MAC or the listing is absent, or the primary is not listed', async () => {
    sim.setInstance({ primaryMac: MAC0, enis: [eni1()] });
    await expect(readSnapshot(client())).rejects.toThrow(`the primary MAC ${MAC0} is not listed`);

    sim.setInstance(instance());
    sim.setFault({ mode: 'status', code: 404, pathRegex: '/macs/$' });
    await expect(readSnapshot(client())).rejects.toThrow(
      'IMDS GET /latest/meta-data/network/interfaces/macs/: the MAC listing is absent (HTTP 404)');
  });

  it('passes client errors through with their path', async () => {
    sim.setFault({ mode: 'status', code: 500, pathRegex: 'local-ipv4s$' });
    await expect(readSnapshot(client())).rejects.toThrow(
      new RegExp(`^IMDS GET ${macPath('[0-9a-f:]+', 'local-ipv4s')}: HTTP 500 after 2 attempts$`));
  });
});

describe('readSnapshot validation', () => {
  // The last column: what the bad value spoils. `read`: the whole read fails (the listing); `eni`: that ENI's
  // identity (the ENI keeps its last good state); `ipv4`/`ipv6`: that part of that ENI only.
  const hostile: Array<[string, () => SimEni[], string, string, 'read' | 'eni' | 'ipv4' | 'ipv6']> = [
    ['shell metacharacters in local-ipv4s', () => [{ ...eni0(), ipv4s: ['10.0.1.5; rm -rf /'] }],
      macPath(MAC0, 'local-ipv4s'), 'not an IPv4 address: "10.0.1.5; rm -rf /"', 'ipv4'],
    ['an iptables option as interface-id', () => [{ ...eni0(), interfaceId: '-j ACCEPT' }],
      macPath(MAC0, 'interface-id'), 'not an ENI id (eni-<hex>): "-j ACCEPT"', 'eni'],
    ['an iptables option as device-number', () => [eni0(), { ...eni1(), override: { 'device-number': '1 -j ACCEPT' } }],
      macPath(MAC1, 'device-number'), 'not an integer from 0 to 255: "1 -j ACCEPT"', 'eni'],
    ['a device-number out of range', () => [eni0(), { ...eni1(), deviceNumber: 256 }],
      macPath(MAC1, 'device-number'), 'not an integer from 0 to 255: "256"', 'eni'],
    ['a negative network-card', () => [eni0(), { ...eni1(), networkCard: -1 }],
      macPath(MAC1, 'network-card'), 'not an integer from 0 to 255: "-1"', 'eni'],
    ['an IPv4 address outside the subnet', () => [{ ...eni0(), ipv4s: ['10.0.1.10', '10.0.9.5'] }],
      macPath(MAC0, 'local-ipv4s'), 'address outside the subnet 10.0.1.0/24: "10.0.9.5"', 'ipv4'],
    ['an IPv4 prefix outside the subnet', () => [eni0(), { ...eni1(), ipv4Prefixes: ['10.0.9.0/28'] }],
      macPath(MAC1, 'ipv4-prefix'), 'prefix outside the subnet 10.0.2.0/24: "10.0.9.0/28"', 'ipv4'],
    ['an IPv4 prefix larger than the subnet', () => [eni0(), { ...eni1(), ipv4Prefixes: ['10.0.0.0/16'] }],
      macPath(MAC1, 'ipv4-prefix'), 'prefix outside the subnet 10.0.2.0/24: "10.0.0.0/16"', 'ipv4'],
    ['an IPv6 address outside the subnet', () => [{ ...eni0(), ipv6s: ['2600:1f18:0:9::1'] }],
      macPath(MAC0, 'ipv6s'), 'address outside the subnet 2600:1f18:0:1::/64: "2600:1f18:0:9::1"', 'ipv6'],
    ['an IPv6 zone id', () => [{ ...eni0(), ipv6s: ['fe80::1%eth0'] }],
      macPath(MAC0, 'ipv6s'), 'not an IPv6 address: "fe80::1%eth0"', 'ipv6'],
    ['an IPv6 address in the IPv4 list', () => [{ ...eni0(), ipv4s: ['2600:1f18:0:1::a'] }],
      macPath(MAC0, 'local-ipv4s'), 'not an IPv4 address: "2600:1f18:0:1::a"', 'ipv4'],
    ['a /0 subnet', () => [{ ...eni0(), subnetIpv4Cidr: '0.0.0.0/0' }],
      macPath(MAC0, 'subnet-ipv4-cidr-block'), 'subnet prefix length must be /16 to /28: "0.0.0.0/0"', 'ipv4'],
    ['a subnet with an iptables tail', () => [{ ...eni0(), subnetIpv4Cidr: '10.0.1.0/24 -j ACCEPT' }],
      macPath(MAC0, 'subnet-ipv4-cidr-block'), 'not an IPv4 CIDR: "10.0.1.0/24 -j ACCEPT"', 'ipv4'],
    ['a bare address as subnet', () => [{ ...eni0(), subnetIpv4Cidr: '10.0.1.0' }],
      macPath(MAC0, 'subnet-ipv4-cidr-block'), 'not an IPv4 CIDR: "10.0.1.0"', 'ipv4'],
    ['a newline forging a log line in interface-id', () => [{ ...eni0(), override: { 'interface-id': 'eni-1 \nlevel=info msg=ok' } }],
      macPath(MAC0, 'interface-id'), 'not an ENI id (eni-<hex>): "eni-1 \\nlevel=info msg=ok"', 'eni'],
    ['a bad MAC in the listing', () => [eni0(), { ...eni1(), mac: '0e:aa:00:00:00:zz' }],
      '/latest/meta-data/network/interfaces/macs/', 'not a MAC address: "0e:aa:00:00:00:zz"', 'read'],
    ['shell in a listed MAC', () => [eni0(), { ...eni1(), mac: '$(reboot)' }],
      '/latest/meta-data/network/interfaces/macs/', 'not a MAC address: "$(reboot)"', 'read'],
  ];

  it.each(hostile)('rejects %s, naming the path and the value', async (_name, enis, path, problem, scope) => {
    if (scope === 'read') {
      const err = await snapshotError(enis());
      expect(err).toBeInstanceOf(ImdsValidationError);
      expect(err.path).toBe(path);
      expect(err.message).toBe(`IMDS ${path}: ${problem}`);
      expect(err.message).not.toContain('\n');
      return;
    }
    sim.setInstance(instance(...enis()));
    const read = await readImds(client());
    const mac = path.split('/')[6] ?? '';
    const got = read.enis.find((e) => e.mac === mac);
    const reason = scope === 'eni' ? (got?.status === 'invalid' ? got.reason : undefined)
      : got?.status === 'ready' ? got.unsettled.find((u) => u.part === scope)?.reason : undefined;
    expect(reason).toBe(`IMDS ${path}: ${problem}`);
    expect(reason).not.toContain('\n');
    // Every other ENI reads as it is.
    expect(read.enis.filter((e) => e.mac !== mac).every((e) => e.status === 'ready' && e.unsettled.length === 0)).toBe(true);
  });

  it('rejects a bad primary MAC value', async () => {
    sim.setInstance({ primaryMac: 'aa:bb; ip link del eth0', enis: [eni0()] });
    await expect(readSnapshot(client())).rejects.toThrow('IMDS /latest/meta-data/mac: not a MAC address: "aa:bb; ip link del eth0"');
  });

  it('rejects a listing entry that is not a directory', async () => {
    sim.setInstance(instance(eni0()));
    sim.setFault({ mode: 'body', body: `${MAC0}/\n${MAC1}`, pathRegex: '/macs/$' });
    await expect(readSnapshot(client())).rejects.toThrow(`listing entry is not a directory (\`<mac>/\`): "${MAC1}"`);
  });

  it('rejects a 1 MB body with the client\'s size error', async () => {
    const err = await snapshotError([{ ...eni0(), override: { 'local-ipv4s': `10.0.1.10\n${'1'.repeat(1024 * 1024)}` } }]);
    expect(err.kind).toBe('too-large');
    expect(err.path).toBe(macPath(MAC0, 'local-ipv4s'));
    expect(err.message).toBe(`IMDS GET ${macPath(MAC0, 'local-ipv4s')}: body larger than 65536 bytes (not retried)`);
  });

  it('rejects a 100k-line list: over the body cap, and over the list cap when the body cap allows it', async () => {
    const lines = Array.from({ length: 100_000 }, (_, i) => `10.0.${Math.floor(i / 256) % 256}.${i % 256}`).join('\n');
    const enis = (): SimEni[] => [{ ...eni0(), subnetIpv4Cidr: '10.0.0.0/16', override: { 'local-ipv4s': lines } }];
    const capped = await snapshotError(enis());
    expect(capped.kind).toBe('too-large');
    expect(capped.path).toBe(macPath(MAC0, 'local-ipv4s'));

    sim.setInstance(instance(...enis()));
    const read = await readImds(client({ maxBodyBytes: 16 * 1024 * 1024 }));
    const listed = read.enis[0]?.status === 'ready' ? read.enis[0].unsettled : [];
    expect(listed).toEqual([{
      part: 'ipv4', reason: `IMDS ${macPath(MAC0, 'local-ipv4s')}: list has 100000 entries, more than 256: "10.0.0.0\\n10.0.0.1\\n10.0.0.2"`,
    }]);
  });

  it('rejects a MAC listing longer than the cap', async () => {
    const enis = Array.from({ length: 300 }, (_, i) => ({
      ...eni1(), mac: `0e:bb:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
    }));
    const err = await snapshotError([eni0(), ...enis]);
    expect(err.message).toMatch(/^IMDS \/latest\/meta-data\/network\/interfaces\/macs\/: list has 301 entries, more than 256/);
  });

  it('truncates long values in messages', () => {
    expect(describeValue('x'.repeat(100))).toBe(`"${'x'.repeat(64)}"... (100 characters)`);
    expect(describeValue('a"b')).toBe('"a\\"b"');
  });
});

describe('readSnapshot concurrency', () => {
  /** A fake reader over the simulator's data, counting requests in flight. */
  function counting(inner: ImdsReader): ImdsReader & { max: number; calls: number } {
    let active = 0;
    const reader = {
      max: 0,
      calls: 0,
      async get(path: string): Promise<string | undefined> {
        reader.calls++;
        active++;
        reader.max = Math.max(reader.max, active);
        try {
          await new Promise((resolve) => setTimeout(resolve, 2));
          return await inner.get(path);
        } finally {
          active--;
        }
      },
    };
    return reader;
  }

  it('keeps at most 8 requests in flight by default, or the configured number', async () => {
    const enis = [eni0(), ...Array.from({ length: 5 }, (_, i) => ({
      ...eni1(), mac: `0e:cc:00:00:00:0${i}`, deviceNumber: i + 1,
    }))];
    sim.setInstance(instance(...enis));
    const reader = counting(client());
    const snap = await readSnapshot(reader);
    expect(snap.enis).toHaveLength(6);
    expect(reader.max).toBe(8);

    const two = counting(client());
    await readSnapshot(two, { concurrency: 2 });
    expect(two.max).toBe(2);
  });

  it('sends no queued requests after the first failure', async () => {
    const enis = [eni0(), ...Array.from({ length: 5 }, (_, i) => ({ ...eni1(), mac: `0e:cc:00:00:00:0${i}`, deviceNumber: i + 1 }))];
    sim.setInstance(instance(...enis));
    const inner = client();
    const reader = counting({
      get: (path) => (path.endsWith(`${MAC0}/device-number`) ? Promise.reject(new Error('boom')) : inner.get(path)),
    });
    await expect(readSnapshot(reader, { concurrency: 1 })).rejects.toThrow('boom');
    // 2 top-level GETs, then MAC0's keys start with device-number: nothing after it.
    expect(reader.calls).toBe(3);
  });
});

describe('readEni', () => {
  it('reads one ENI, pending until IMDS catches up', async () => {
    sim.setInstance(instance(eni0(), { ...eni1(), hide: ['local-ipv4s'] }));
    const first = await readEni(client(), MAC1.toUpperCase(), MAC0);
    expect(first).toMatchObject({ mac: MAC1, status: 'ready', unsettled: [{ part: 'ipv4', reason: 'IMDS key absent: local-ipv4s' }] });

    sim.setInstance(instance(eni0(), eni1()));
    const second = await readEni(client(), MAC1, MAC0);
    expect(second.status).toBe('ready');
    expect(second.status === 'ready' ? second.eni.ipv4s : []).toEqual(['10.0.2.20']);
  });

  it('accepts device-number 0 for the primary MAC only', async () => {
    expect((await readEni(client(), MAC0, MAC0)).status).toBe('ready');
    expect((await readEni(client(), MAC0, MAC1)).status).toBe('pending');
  });

  it('rejects a MAC that is not one', async () => {
    await expect(readEni(client(), '../../x', MAC0)).rejects.toThrow(ImdsValidationError);
  });
});

describe('IPv6-only ENIs (docs/ipv6.md)', () => {
  const SUBNET = '2600:1f16:67f:f201::/64';
  /** An ENI of an IPv6-only subnet, as EC2 serves it: no local-ipv4s, no subnet-ipv4-cidr-block at all. */
  function only6(mac: string, deviceNumber: number, extra: Partial<SimEni> = {}): SimEni {
    return {
      mac, deviceNumber, networkCard: 0, interfaceId: `eni-00000000000000${deviceNumber}f6`,
      ipv4s: [], subnetIpv4Cidr: '', ipv6s: [`2600:1f16:67f:f201::${deviceNumber + 1}0`], subnetIpv6Cidrs: [SUBNET], ...extra,
    };
  }

  it('reads ENIs without IPv4 keys but with IPv6 as complete ENIs, the primary included', async () => {
    sim.setInstance(instance(only6(MAC0, 0), only6(MAC1, 1, { ipv6s: [], ipv6Prefixes: ['2600:1f16:67f:f201:aaaa::/80'] })));
    const snap = await readSnapshot(client());
    expect(snap.pending).toEqual([]);
    expect(snap.held).toEqual([]);
    expect(snap.enis).toEqual([
      {
        mac: MAC0, deviceNumber: 0, networkCard: 0, interfaceId: 'eni-000000000000000f6', ipv4s: [], ipv4Prefixes: [], subnetIpv4Cidr: '',
        ipv6s: ['2600:1f16:67f:f201::10'], ipv6Prefixes: [], subnetIpv6Cidrs: [SUBNET],
      },
      {
        mac: MAC1, deviceNumber: 1, networkCard: 0, interfaceId: 'eni-000000000000001f6', ipv4s: [], ipv4Prefixes: [], subnetIpv4Cidr: '',
        ipv6s: [], ipv6Prefixes: ['2600:1f16:67f:f201:aaaa::/80'], subnetIpv6Cidrs: [SUBNET],
      },
    ]);
  });

  it('reads every spelling of IPv6 addresses, prefixes and subnets IMDS may use in one canonical form', async () => {
    const spellings: Array<{ subnet: string; address: string; prefix: string }> = [
      { subnet: '2600:1f16:67f:f201:0:0:0:0/64', address: '2600:1f16:67f:f201:0:0:0:a1', prefix: '2600:1f16:67f:f201:1234:0:0:0/80' },
      { subnet: '2600:1F16:067F:F201:0000:0000:0000:0000/64', address: '2600:1F16:067F:F201:0000:0000:0000:00A1', prefix: '2600:1F16:67F:F201:1234::/80' },
      { subnet: '2600:1f16:67f:f201::/64', address: '2600:1f16:67f:f201::a1', prefix: '2600:1f16:67f:f201:1234::/80' },
      // Host bits in the subnet, a prefix written with an address inside it, whitespace around a list entry.
      { subnet: '2600:1f16:67f:f201::77/64', address: ' 2600:1f16:67f:f201:0::a1 ', prefix: '2600:1f16:67f:f201:1234::5/80' },
    ];
    for (const { subnet, address, prefix } of spellings) {
      sim.setInstance(instance(eni0(), only6(MAC1, 1, { subnetIpv6Cidrs: [subnet], ipv6s: [address], ipv6Prefixes: [prefix] })));
      const snap = await readSnapshot(client());
      expect(snap.enis.find((e) => e.mac === MAC1), JSON.stringify({ subnet, address, prefix })).toMatchObject({
        ipv4s: [], subnetIpv6Cidrs: [SUBNET], ipv6s: ['2600:1f16:67f:f201::a1'], ipv6Prefixes: ['2600:1f16:67f:f201:1234::/80'],
      });
    }
    // Two spellings of one address are one address.
    sim.setInstance(instance(eni0(), only6(MAC1, 1, { ipv6s: ['2600:1f16:67f:f201:0:0:0:a1', '2600:1f16:67f:f201::A1'] })));
    expect((await readSnapshot(client())).enis.find((e) => e.mac === MAC1)?.ipv6s).toEqual(['2600:1f16:67f:f201::a1']);
  });

  it('an ENI with neither family, or with half of the IPv4 keys, or with IPv6 before its subnet, is pending', async () => {
    sim.setInstance(instance(eni0(),
      only6(MAC1, 1, { ipv6s: [] }),
      only6(MAC2, 2, { hide: ['local-ipv4s'], subnetIpv4Cidr: '10.0.3.0/24' })));
    let snap = await readSnapshot(client());
    expect(snap.enis.map((e) => e.mac)).toEqual([MAC0]);
    expect(snap.pending).toEqual([
      { mac: MAC1, reason: 'IMDS keys absent: local-ipv4s, subnet-ipv4-cidr-block, and no IPv6 address or prefix' },
      { mac: MAC2, reason: 'IMDS key absent: local-ipv4s' },
    ]);
    sim.setInstance(instance(eni0(), only6(MAC1, 1, { subnetIpv6Cidrs: [] })));
    snap = await readSnapshot(client());
    expect(snap.pending).toEqual([{
      mac: MAC1,
      reason: 'IMDS keys absent: local-ipv4s, subnet-ipv4-cidr-block, and IPv6: IPv6 addresses listed but subnet-ipv6-cidr-blocks absent (IMDS not yet consistent)',
    }]);
  });

  it('a targeted read of an IPv6-only ENI is ready with no unsettled part', async () => {
    sim.setInstance(instance(eni0(), only6(MAC1, 1)));
    expect(await readEni(client(), MAC1, MAC0)).toMatchObject({ status: 'ready', unsettled: [], eni: { ipv4s: [], ipv6s: ['2600:1f16:67f:f201::20'] } });
  });
});
