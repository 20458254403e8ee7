// The iptables adapter against the real kernel and a real dockerd in the instance namespace: ec2netd's
// chain is built, kept first in mangle PREROUTING, rebuilt on drift, removed by flush, and nothing of
// Docker's (nat, filter) or of another tool (a 0x4000 mark rule in mangle) is ever changed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config';
import { buildContainerObjects } from '../../src/core/containers';
import type { MangleSpec } from '../../src/core/containers';
import { IptablesAdapter } from '../../src/iptables/apply';
import { backendFor } from '../../src/iptables/backend';
import { flushMangle } from '../../src/iptables/flush';
import { readMangle, restore } from '../../src/iptables/io';
import { renderChainRules } from '../../src/iptables/render';
import { ipJson, nsArgv, nsRun } from '../../sim/exec';
import { simMac } from '../../sim/topology';
import { startDocker } from '../helpers/docker';
import type { DockerDaemon } from '../helpers/docker';
import { useInstance } from '../helpers/netns';

const config = defaultConfig({});
const FOREIGN = '-A PREROUTING -j MARK --set-xmark 0x4000/0x4000';

/** A dump without comments and counters, for before/after comparisons. */
function clean(text: string): string {
  return text.split('\n').filter((l) => !l.startsWith('#')).map((l) => l.replace(/ \[\d+:\d+\]$/, '')).join('\n');
}

describe('iptables adapter with real Docker', () => {
  const get = useInstance('iptd', {
    enis: [
      { name: 'eth0', mac: simMac(0), ipv4s: ['10.0.1.10'] },
      { name: 'eth1', mac: simMac(1), ipv4s: ['10.0.1.20'] },
      { name: 'eth2', mac: simMac(2), ipv4s: ['10.0.1.30'] },
    ],
  });
  let dockerd: DockerDaemon;
  let spec: MangleSpec;
  let ns = '';
  const save = async (cmd: string, table: string): Promise<string> => clean((await nsRun(ns, [cmd, '-t', table])).stdout);
  const mangleRules = async (cmd = 'iptables-nft-save'): Promise<string[]> =>
    (await save(cmd, 'mangle')).split('\n').filter((l) => l.startsWith('-A '));
  let natBefore = '';
  let filterBefore = '';

  beforeAll(async () => {
    ns = get().ns.host;
    dockerd = await startDocker(ns);
    await dockerd.runContainer({ name: 'web', publish: ['8080:80'], restart: 'always' });
    const addrs = await ipJson<Array<{ ifindex: number; addr_info: Array<{ family: string; local: string; prefixlen: number }> }>>(ns, ['addr', 'show', 'dev', 'docker0']);
    const docker0 = addrs[0];
    if (docker0 === undefined) throw new Error('no docker0');
    const subnets = docker0.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
    spec = buildContainerObjects(
      [
        { mac: simMac(1), deviceNumber: 1, networkCard: 0, linkName: 'eth1', table: 10001 },
        { mac: simMac(2), deviceNumber: 2, networkCard: 0, linkName: 'eth2', table: 10002 },
      ],
      [{ name: 'docker0', ifindex: docker0.ifindex, subnets }],
      config,
    ).mangle;
    await nsRun(ns, ['iptables', '-t', 'mangle', ...FOREIGN.split(' ')]);
    natBefore = await save('iptables-nft-save', 'nat');
    filterBefore = await save('iptables-nft-save', 'filter');
  }, 120_000);

  afterAll(async () => {
    await dockerd?.stop();
  });

  it('Docker really is there: DNAT for the published port', () => {
    expect(natBefore).toMatch(/-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172\.17\.0\.2:80/);
    expect(filterBefore).toMatch(/:DOCKER-USER/);
  });

  it('detects the nft backend Docker uses', async () => {
    const adapter = new IptablesAdapter(config, { wrapper: nsArgv(ns, []) });
    expect(await adapter.currentBackend()).toMatchObject({ name: 'nft', dockerSeen: true });
  });

  it('builds the chain with the jump first, once; re-applying changes nothing', async () => {
    const adapter = new IptablesAdapter(config, { wrapper: nsArgv(ns, []) });
    const first = await adapter.sync(spec);
    expect(first.changed).toBe(true);
    expect(first.reasons).toContain('no jump to EC2NETD in PREROUTING');
    expect(await mangleRules()).toEqual(['-A PREROUTING -j EC2NETD', FOREIGN, ...renderChainRules(spec)]);
    const started = Date.now();
    const second = await adapter.sync(spec);
    const checkMs = Date.now() - started;
    expect(second).toMatchObject({ changed: false, reasons: [] });
    expect(checkMs).toBeLessThan(1000);
    expect(await mangleRules()).toEqual(['-A PREROUTING -j EC2NETD', FOREIGN, ...renderChainRules(spec)]);
    expect(await save('iptables-nft-save', 'nat')).toBe(natBefore);
    expect(await save('iptables-nft-save', 'filter')).toBe(filterBefore);
  });

  it('repairs drift: edited chain, jump pushed down by another tool, duplicated jump, deleted jump', async () => {
    const adapter = new IptablesAdapter(config, { wrapper: nsArgv(ns, []) });
    const want = ['-A PREROUTING -j EC2NETD', FOREIGN, ...renderChainRules(spec)];

    await nsRun(ns, ['iptables', '-t', 'mangle', '-A', 'EC2NETD', '-i', 'eth9', '-j', 'MARK', '--set-mark', '0x1f00/0x1f00']);
    expect((await adapter.sync(spec)).reasons[0]).toMatch(/differ/);
    expect(await mangleRules()).toEqual(want);

    // Another tool inserts at the top (its early ACCEPT would skip everything after it).
    await nsRun(ns, ['iptables', '-t', 'mangle', '-I', 'PREROUTING', '1', '-i', 'lo', '-j', 'ACCEPT']);
    expect((await adapter.sync(spec)).reasons).toEqual(['the jump to EC2NETD is rule 2 of PREROUTING, not the first']);
    expect(await mangleRules()).toEqual(['-A PREROUTING -j EC2NETD', '-A PREROUTING -i lo -j ACCEPT', FOREIGN, ...renderChainRules(spec)]);
    await nsRun(ns, ['iptables', '-t', 'mangle', '-D', 'PREROUTING', '-i', 'lo', '-j', 'ACCEPT']);

    await nsRun(ns, ['iptables', '-t', 'mangle', '-A', 'PREROUTING', '-j', 'EC2NETD']);
    expect((await adapter.sync(spec)).reasons).toEqual(['2 jumps to EC2NETD in PREROUTING']);
    expect(await mangleRules()).toEqual(want);

    await nsRun(ns, ['iptables', '-t', 'mangle', '-D', 'PREROUTING', '-j', 'EC2NETD']);
    expect((await adapter.sync(spec)).changed).toBe(true);
    expect(await mangleRules()).toEqual(want);

    expect(await save('iptables-nft-save', 'nat')).toBe(natBefore);
    expect(await save('iptables-nft-save', 'filter')).toBe(filterBefore);
  });

  it('survives a Docker restart untouched (Docker rebuilds only its nat/filter chains)', async () => {
    const restartMs = await dockerd.restart();
    const adapter = new IptablesAdapter(config, { wrapper: nsArgv(ns, []) });
    expect(await adapter.sync(spec)).toMatchObject({ changed: false });
    expect(restartMs).toBeLessThan(30_000);
  }, 60_000);

  it('a changed ENI set rebuilds the chain in one transaction, without touching the jump', async () => {
    const adapter = new IptablesAdapter(config, { wrapper: nsArgv(ns, []) });
    const fewer: MangleSpec = { ...spec, rules: spec.rules.filter((r) => r.inIface !== 'eth2') };
    const res = await adapter.sync(fewer);
    expect(res.changed).toBe(true);
    expect(res.transaction).not.toMatch(/PREROUTING/);
    expect(await mangleRules()).toEqual(['-A PREROUTING -j EC2NETD', FOREIGN, ...renderChainRules(fewer)]);
    await adapter.sync(spec);
  });

  it('an empty spec and flush remove only ec2netd\'s chain and jump', async () => {
    const adapter = new IptablesAdapter(config, { wrapper: nsArgv(ns, []) });
    const res = await adapter.sync({ ...spec, rules: [] });
    expect(res.changed).toBe(true);
    expect(await mangleRules()).toEqual([FOREIGN]);
    expect(await save('iptables-nft-save', 'mangle')).not.toMatch(/EC2NETD/);
    await adapter.sync(spec);
    expect(await adapter.flush(spec.chain)).toBe(true);
    expect(await adapter.flush(spec.chain)).toBe(false);
    expect(await mangleRules()).toEqual([FOREIGN]);
    // Docker rebuilt nat/filter on restart in the same shape.
    expect(await save('iptables-nft-save', 'nat')).toBe(natBefore);
    expect(await save('iptables-nft-save', 'filter')).toBe(filterBefore);
  });

  it('works the same with the legacy backend (and flush of every variant cleans it)', async () => {
    const legacy = backendFor('legacy', 'test');
    const opts = { wrapper: nsArgv(ns, []) };
    await restore(legacy, `*mangle\n${FOREIGN}\nCOMMIT\n`, opts);
    const adapter = new IptablesAdapter({ iptables: { backend: 'legacy', chain: 'EC2NETD' } }, opts);
    expect((await adapter.sync(spec)).changed).toBe(true);
    expect((await adapter.sync(spec)).changed).toBe(false);
    expect(await mangleRules('iptables-legacy-save')).toEqual(['-A PREROUTING -j EC2NETD', FOREIGN, ...renderChainRules(spec)]);
    // nft untouched by the legacy run.
    expect(await mangleRules()).toEqual([FOREIGN]);
    expect((await readMangle(legacy, 'EC2NETD', opts)).jumpPositions).toEqual([1]);
    expect(await new IptablesAdapter(config, opts).flush('EC2NETD')).toBe(true);
    expect(await mangleRules('iptables-legacy-save')).toEqual([FOREIGN]);
    expect(await flushMangle(legacy, 'EC2NETD', opts)).toBe(false);
  });
});
