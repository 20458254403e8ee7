// The planner alone at 15 ENIs × 50 IPs, as a hot attach runs it: 14 ENIs in place, the 15th's link just appeared.
// `node dist/bench/plan.js [N]` times N plans (desired state, coexistence, diff: the reconciler's planFor without
// the file lookups) and prints the median and the plan's size; run it with --cpu-prof to see where the time goes.
// PLAN_FOREIGN=N adds N foreign `from` rules of another tool (proto static, another table, sources outside the
// ENIs'): what coexistence checks against every ENI's sources in every plan.
import { defaultConfig } from '../src/config';
import { resolveCoexistence, withAdoption } from '../src/core/coexistence';
import { buildDesired } from '../src/core/desired';
import { diff } from '../src/core/diff';
import type { EniInfo, ImdsSnapshot, KernelLink, KernelState } from '../src/core/types';

const ENIS = 15;
const IPS = 50;
const config = defaultConfig({});
const mac = (k: number): string => `02:00:00:00:00:${(16 + k).toString(16)}`;
const eni = (k: number): EniInfo => ({
  mac: mac(k), deviceNumber: k, networkCard: 0, interfaceId: `eni-${(0xa00 + k).toString(16)}`,
  ipv4s: Array.from({ length: IPS }, (_, i) => `10.0.${k}.${10 + i}`), ipv4Prefixes: [], ipv6s: [], ipv6Prefixes: [],
  subnetIpv4Cidr: '10.0.0.0/16', subnetIpv6Cidrs: [],
});
const links: KernelLink[] = [{ index: 1, name: 'lo', mac: '00:00:00:00:00:00', up: true, kind: 'loopback' },
  ...Array.from({ length: ENIS }, (_, k) => ({ index: k + 2, name: `eth${k}`, mac: mac(k), up: true }))];
const snapshot: ImdsSnapshot = { primaryMac: mac(0), enis: Array.from({ length: ENIS }, (_, k) => eni(k)), pending: [] };

// The kernel with the first 14 ENIs configured: what they want, as the kernel would list it.
const before = buildDesired({ ...snapshot, enis: snapshot.enis.slice(0, ENIS - 1) }, { links, addresses: [] }, config);
const kernel: KernelState = {
  links,
  addresses: [
    ...snapshot.enis.map((e, k) => ({ ifindex: k + 2, family: 4 as const, address: e.ipv4s[0] ?? '', prefixLen: 16 })),
    ...before.addresses.map(({ ifindex, family, address, prefixLen, noPrefixRoute }) => ({ ifindex, family, address, prefixLen, noPrefixRoute })),
  ],
  routes: [
    { family: 4, table: 254, dst: '0.0.0.0/0', gateway: '10.0.0.1', ifindex: 2, protocol: 16, scope: 0, type: 1 },
    { family: 4, table: 254, dst: '10.0.0.0/16', ifindex: 2, prefsrc: '10.0.0.10', protocol: 2, scope: 253, type: 1 },
    ...before.routes,
  ],
  rules: [
    ...before.rules,
    ...Array.from({ length: Number(process.env.PLAN_FOREIGN ?? 0) }, (_, i) => ({
      family: 4 as const, priority: 500, table: 300, protocol: 4, action: 1, src: `192.168.${i >> 8}.${i & 255}/32`,
    })),
  ],
};

function plan(): number {
  const coexist = resolveCoexistence({ snapshot, kernel, config, managers: [], build: (s) => buildDesired(s, kernel, config) });
  const { plan: p } = diff({ desired: coexist.desired, observed: coexist.observed, protocol: config.protocol, ownedAddresses: new Set() });
  return withAdoption(p, coexist).length;
}

const n = Number(process.argv[2] ?? 50);
const times: number[] = [];
let size = 0;
for (let i = 0; i < n; i++) {
  const t = performance.now();
  size = plan();
  times.push(performance.now() - t);
}
const first = times[0] ?? NaN;
times.sort((a, b) => a - b);
const at = (q: number): number => Math.round((times[Math.floor(q * (times.length - 1))] ?? NaN) * 100) / 100;
process.stdout.write(`${JSON.stringify({ changes: size, firstMs: Math.round(first * 100) / 100, minMs: at(0), medianMs: at(0.5), p90Ms: at(0.9) })}\n`);
