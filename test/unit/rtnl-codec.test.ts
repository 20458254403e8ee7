// ec2netd's own rtnetlink codec (src/kernel/rtnl-codec.ts and the object modules) against the `netlink` package's
// generated formatter and parser, which ec2netd used before and no longer loads: every write encodes byte for byte
// as the package encoded it, the dump requests are the package's, and a rule dump reads as the package read it.
import fc from 'fast-check';
import { AttrStream } from 'netlink/dist/structs';
import * as rt from 'netlink/dist/rt/structs';
import { describe, expect, it } from 'vitest';
import type { DesiredAddress, KernelRoute, KernelRule } from '../../src/core/types';
import { addressRequest } from '../../src/kernel/addresses';
import { linkUpRequest } from '../../src/kernel/links';
import { RT_TABLE_COMPAT, afOf, ipToBuffer, prefixToBuffer } from '../../src/kernel/netlink';
import { routeRequest } from '../../src/kernel/routes';
import { parseRuleMessage, ruleRequest, type RuleMessage } from '../../src/kernel/rules';
import { RTM_GETADDR, RTM_GETLINK, RTM_GETROUTE, RTM_GETRULE, dumpRequest } from '../../src/kernel/rtnl-codec';

function packageBytes(format: (out: AttrStream) => void): Buffer {
  const out = new AttrStream();
  format(out);
  return Buffer.concat(out.bufs);
}

/** The package's encoding of a rule, from the same fields rules.ts gave it before the hand-written encoder. */
function packageRule(r: KernelRule): Buffer {
  const data: rt.Rule = { family: afOf(r.family), srcLen: 0, dstLen: 0, table: r.table > 255 ? 0 : r.table, action: r.action };
  const attrs: rt.RuleAttrs = { priority: r.priority, table: r.table, protocol: r.protocol };
  if (r.src !== undefined) { const p = prefixToBuffer(r.src); data.srcLen = p.len; attrs.src = p.addr; }
  if (r.dst !== undefined) { const p = prefixToBuffer(r.dst); data.dstLen = p.len; attrs.dst = p.addr; }
  if (r.fwmark !== undefined) attrs.fwmark = r.fwmark;
  if (r.fwmask !== undefined) attrs.fwmask = r.fwmask;
  return packageBytes((out) => rt.formatRuleMessage({ kind: 'rule', data, attrs }, out));
}

function packageAddress(a: DesiredAddress, op: 'add' | 'del'): Buffer {
  const bytes = ipToBuffer(a.address);
  const attrs: rt.AddressAttrs = { local: bytes, address: bytes };
  if (op === 'add' && (a.noPrefixRoute === true || a.noDad === true)) {
    attrs.flags = {};
    if (a.noPrefixRoute === true) attrs.flags.noprefixroute = true;
    if (a.noDad === true) attrs.flags.nodad = true;
  }
  return packageBytes((out) => rt.formatAddressMessage({ kind: 'address', data: { family: afOf(a.family), prefixlen: a.prefixLen, index: a.ifindex, scope: 0 }, attrs }, out));
}

/** The package's encoding of a route, from the same fields routes.ts gave it before the hand-written encoder. */
function packageRoute(r: KernelRoute): Buffer {
  const { addr, len } = prefixToBuffer(r.dst);
  const data: rt.Route = {
    family: afOf(r.family), dstLen: len, table: r.table > 255 ? RT_TABLE_COMPAT : r.table, protocol: r.protocol, scope: r.scope,
    type: r.type === 0 ? 1 : r.type,
  };
  const attrs: rt.RouteAttrs = { table: r.table };
  if (len > 0) attrs.dst = addr;
  if (r.gateway !== undefined) attrs.gateway = ipToBuffer(r.gateway);
  if (r.ifindex !== undefined) attrs.oif = r.ifindex;
  if (r.prefsrc !== undefined) attrs.prefsrc = ipToBuffer(r.prefsrc);
  if (r.metric !== undefined) attrs.priority = r.metric;
  return packageBytes((out) => rt.formatRouteMessage({ kind: 'route', data, attrs }, out));
}

const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((b) => b.join('.'));
const v6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((w) => w.map((x) => x.toString(16)).join(':'));
const family = fc.constantFrom<4 | 6>(4, 6);
const prefix = (f: 4 | 6): fc.Arbitrary<string> => fc.tuple(f === 4 ? v4 : v6, fc.nat(f === 4 ? 32 : 128)).map(([a, l]) => `${a}/${l}`);
const u32 = fc.nat(0xffffffff);
const table = fc.oneof(fc.nat(255), u32);

const ruleArb: fc.Arbitrary<KernelRule> = family.chain((f) => fc.record({
  family: fc.constant(f), priority: u32, table, protocol: fc.nat(255),
  action: fc.constantFrom(1, 2, 6), src: fc.option(prefix(f), { nil: undefined }), dst: fc.option(prefix(f), { nil: undefined }),
  fwmark: fc.option(u32, { nil: undefined }), fwmask: fc.option(u32, { nil: undefined }),
}, { requiredKeys: ['family', 'priority', 'table', 'protocol', 'action'] }));

const addressArb: fc.Arbitrary<DesiredAddress> = family.chain((f) => fc.record({
  family: fc.constant(f), ifindex: fc.integer({ min: 1, max: 0x7fffffff }), address: f === 4 ? v4 : v6, prefixLen: fc.nat(f === 4 ? 32 : 128),
  noPrefixRoute: fc.boolean(), noDad: fc.option(fc.boolean(), { nil: undefined }),
}, { requiredKeys: ['family', 'ifindex', 'address', 'prefixLen', 'noPrefixRoute'] }));

const routeArb: fc.Arbitrary<KernelRoute> = family.chain((f) => fc.record({
  family: fc.constant(f), table, dst: prefix(f), protocol: fc.nat(255), scope: fc.constantFrom(0, 200, 253, 254, 255),
  type: fc.constantFrom(0, 1, 2, 3, 6, 7), gateway: fc.option(f === 4 ? v4 : v6, { nil: undefined }),
  ifindex: fc.option(fc.integer({ min: 1, max: 0x7fffffff }), { nil: undefined }), prefsrc: fc.option(f === 4 ? v4 : v6, { nil: undefined }),
  metric: fc.option(u32, { nil: undefined }),
}, { requiredKeys: ['family', 'table', 'dst', 'protocol', 'scope', 'type'] }));

describe('hand-written netlink encoders', () => {
  it('a rule (any family, selectors, marks, tables above 255) encodes as the package encodes it', () => {
    fc.assert(fc.property(ruleArb, fc.constantFrom<'add' | 'del'>('add', 'del'), (r, op) => {
      expect(Buffer.concat(ruleRequest(r, op).body)).toEqual(packageRule(r));
    }), { numRuns: 500 });
  });

  it('an address (flags on adds only) encodes as the package encodes it', () => {
    fc.assert(fc.property(addressArb, fc.constantFrom<'add' | 'del'>('add', 'del'), (a, op) => {
      expect(Buffer.concat(addressRequest(a, op).body)).toEqual(packageAddress(a, op));
    }), { numRuns: 500 });
  });

  it('a route (any family, table above 255 via RTA_TABLE, gateway, oif, prefsrc, metric, type, scope) encodes as the package encodes it', () => {
    fc.assert(fc.property(routeArb, fc.constantFrom<'add' | 'replace' | 'del'>('add', 'replace', 'del'), (r, op) => {
      const req = routeRequest(r, op);
      expect(Buffer.concat(req.body)).toEqual(packageRoute(r));
      expect(req.type).toBe(op === 'del' ? rt.MessageType.DELROUTE : rt.MessageType.NEWROUTE);
    }), { numRuns: 500 });
  });

  it('`ip link set up` encodes as the package encodes it', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 0x7fffffff }), (index) => {
      const req = linkUpRequest({ index });
      expect(req.type).toBe(rt.MessageType.SETLINK);
      expect(Buffer.concat(req.body)).toEqual(packageBytes((out) =>
        rt.formatLinkMessage({ kind: 'link', data: { index, flags: { up: true }, change: { up: true } }, attrs: {} }, out)));
    }));
  });

  it('the four dump requests are the package\'s', () => {
    expect([RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE, RTM_GETRULE]).toEqual([rt.MessageType.GETLINK, rt.MessageType.GETADDR, rt.MessageType.GETROUTE, rt.MessageType.GETRULE]);
    expect(dumpRequest('link')).toEqual(packageBytes((out) => rt.formatLinkMessage({ kind: 'link', data: {}, attrs: {} }, out)));
    expect(dumpRequest('address')).toEqual(packageBytes((out) => rt.formatAddressMessage({ kind: 'address', data: {}, attrs: {} }, out)));
    for (const af of [2, 10]) {
      expect(dumpRequest('route', af)).toEqual(packageBytes((out) => rt.formatRouteMessage({ kind: 'route', data: { family: af }, attrs: {} }, out)));
      expect(dumpRequest('rule', af)).toEqual(packageBytes((out) => rt.formatRuleMessage({ kind: 'rule', data: { family: af }, attrs: {} }, out)));
    }
  });
});

/** What rules.ts read from the package's parsed rule before, as a RuleMessage (its hasOtherSelectors, kernelWouldPick). */
function fromPackage(msg: rt.RuleMessage): RuleMessage {
  const a = msg.attrs;
  const action = msg.data.action;
  const suppress = a.suppressPrefixlen;
  const out: RuleMessage = {
    family: msg.data.family ?? 0, srcLen: msg.data.srcLen ?? 0, dstLen: msg.data.dstLen ?? 0,
    table: a.table ?? msg.data.table ?? 0,
    action: typeof action === 'number' ? action : action === undefined ? 0 : rt.RuleAction[action],
    priority: a.priority ?? 0, protocol: a.protocol ?? 0,
    hasInterface: a.iifname !== undefined || a.oifname !== undefined,
    otherSelectors: a.iifname !== undefined || a.oifname !== undefined || a.goto !== undefined || a.uidRange !== undefined ||
      a.ipProto !== undefined || a.sportRange !== undefined || a.dportRange !== undefined || a.tunId !== undefined ||
      a.suppressIfgroup !== undefined || (a.l3Mdev ?? 0) !== 0 || a.flow !== undefined ||
      (suppress !== undefined && suppress.length >= 4 && suppress.readUInt32LE(0) !== 0xffffffff) ||
      (msg.data.tos ?? 0) !== 0 || msg.data.flags?.invert === true,
  };
  if (a.src !== undefined) out.src = a.src;
  if (a.dst !== undefined) out.dst = a.dst;
  if (a.fwmark !== undefined) out.fwmark = a.fwmark;
  if (a.fwmask !== undefined) out.fwmask = a.fwmask;
  return out;
}

const opt = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.option(arb, { nil: undefined });
/** Mostly absent, so that a fair share of rules has none of the selectors ec2netd never makes. */
const rare = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.oneof({ arbitrary: fc.constant(undefined), weight: 15 }, { arbitrary: arb, weight: 1 });
const u32Buf = u32.map((n) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; });
const range = fc.record({ start: fc.nat(0xffff), end: fc.nat(0xffff) });

/** A rule as the kernel may list it: every field and attribute the package knows, most of them absent. */
const dumpedRuleArb: fc.Arbitrary<{ data: rt.Rule; attrs: rt.RuleAttrs }> = fc.constantFrom(2, 10).chain((af) => fc.record({
  data: fc.record({
    family: fc.constant(af), dstLen: fc.nat(af === 2 ? 32 : 128), srcLen: fc.nat(af === 2 ? 32 : 128), tos: fc.oneof({ arbitrary: fc.constant(0), weight: 6 }, { arbitrary: fc.nat(255), weight: 1 }),
    table: fc.nat(255), action: fc.constantFrom(0, 1, 2, 3, 4, 6, 7, 8), flags: fc.record({ invert: rare(fc.constant<true>(true)), permanent: fc.constantFrom<true | undefined>(true, undefined) }),
  }),
  attrs: fc.record({
    src: opt(fc.uint8Array({ minLength: af === 2 ? 4 : 16, maxLength: af === 2 ? 4 : 16 }).map((u) => Buffer.from(u))),
    dst: opt(fc.uint8Array({ minLength: af === 2 ? 4 : 16, maxLength: af === 2 ? 4 : 16 }).map((u) => Buffer.from(u))),
    priority: opt(u32), table: opt(u32), protocol: opt(fc.nat(255)), fwmark: opt(u32), fwmask: opt(u32),
    iifname: rare(fc.constantFrom('eth0', 'lo')), oifname: rare(fc.constantFrom('eth1', 'vrf0')), goto: rare(u32), flow: rare(u32),
    tunId: rare(fc.uint8Array({ minLength: 8, maxLength: 8 }).map((u) => Buffer.from(u))), suppressIfgroup: rare(u32Buf),
    // The kernel always sends it, all-ones when unset.
    suppressPrefixlen: opt(fc.oneof({ arbitrary: fc.constant(Buffer.from([0xff, 0xff, 0xff, 0xff])), weight: 6 }, { arbitrary: u32Buf, weight: 1 })),
    l3Mdev: rare(fc.nat(1)), uidRange: rare(fc.record({ start: u32, end: u32 })), ipProto: rare(fc.nat(255)), sportRange: rare(range), dportRange: rare(range),
  }, { requiredKeys: [] }),
}));

describe('hand-written rule parser', () => {
  it('a rule message (any selectors and actions) reads as the package parsed it', () => {
    let plain = 0;
    fc.assert(fc.property(dumpedRuleArb, ({ data, attrs }) => {
      const bytes = packageBytes((out) => rt.formatRuleMessage({ kind: 'rule', data, attrs }, out));
      const parsed = rt.parseMessage(rt.MessageType.NEWRULE, bytes);
      if (parsed.kind !== 'rule') throw new Error('not a rule');
      const ours = parseRuleMessage(rt.MessageType.NEWRULE, bytes);
      expect(ours).toEqual(fromPackage(parsed));
      plain += ours?.otherSelectors === false ? 1 : 0;
    }), { numRuns: 1000 });
    // Not vacuous: many of the rules had none of the other selectors.
    expect(plain).toBeGreaterThan(100);
  });

  it('other message types and short messages are skipped', () => {
    expect(parseRuleMessage(rt.MessageType.NEWROUTE, Buffer.alloc(12))).toBeUndefined();
    expect(parseRuleMessage(rt.MessageType.NEWRULE, Buffer.alloc(11))).toBeUndefined();
  });
});
