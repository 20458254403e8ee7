// The hand-written rule and address encoders (src/kernel/encode.ts) produce, byte for byte, what the `netlink`
// package's generic formatter produces for the same request: the kernel sees the same messages as before.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { DesiredAddress, KernelRule } from '../../src/core/types';
import { addressRequest } from '../../src/kernel/addresses';
import { AttrStream, rt } from '../../src/kernel/netlink-package';
import { afOf, ipToBuffer, prefixToBuffer } from '../../src/kernel/netlink';
import { ruleRequest } from '../../src/kernel/rules';

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

const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((b) => b.join('.'));
const v6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((w) => w.map((x) => x.toString(16)).join(':'));
const family = fc.constantFrom<4 | 6>(4, 6);
const prefix = (f: 4 | 6): fc.Arbitrary<string> => fc.tuple(f === 4 ? v4 : v6, fc.nat(f === 4 ? 32 : 128)).map(([a, l]) => `${a}/${l}`);

const ruleArb: fc.Arbitrary<KernelRule> = family.chain((f) => fc.record({
  family: fc.constant(f), priority: fc.nat(0xffffffff), table: fc.oneof(fc.nat(255), fc.nat(0xffffffff)), protocol: fc.nat(255),
  action: fc.constantFrom(1, 2, 6), src: fc.option(prefix(f), { nil: undefined }), dst: fc.option(prefix(f), { nil: undefined }),
  fwmark: fc.option(fc.nat(0xffffffff), { nil: undefined }), fwmask: fc.option(fc.nat(0xffffffff), { nil: undefined }),
}, { requiredKeys: ['family', 'priority', 'table', 'protocol', 'action'] }));

const addressArb: fc.Arbitrary<DesiredAddress> = family.chain((f) => fc.record({
  family: fc.constant(f), ifindex: fc.integer({ min: 1, max: 0x7fffffff }), address: f === 4 ? v4 : v6, prefixLen: fc.nat(f === 4 ? 32 : 128),
  noPrefixRoute: fc.boolean(), noDad: fc.option(fc.boolean(), { nil: undefined }),
}, { requiredKeys: ['family', 'ifindex', 'address', 'prefixLen', 'noPrefixRoute'] }));

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
});
