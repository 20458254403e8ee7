// FIB rules: dump IPv4 and IPv6, add (CREATE|EXCL), delete exactly the rule asked for.
//
// Two kernel behaviours shape this module (net/core/fib_rules.c):
// - A selector left out of a request is a wildcard, both when the kernel checks NLM_F_EXCL (rule_exists) and
//   when it picks the rule to delete (rule_find): `from all lookup T pref P` is "EEXIST" when
//   `from 10.0.1.5 lookup T pref P` exists, and a delete of it may remove that other rule. So an EEXIST is
//   re-checked against a dump, and a delete first checks that the rule the kernel will pick is exactly ours.
// - Without NLM_F_EXCL an identical rule is added twice.
import type { Family, KernelRule } from '../core/types';
import {
  AF_INET,
  AF_INET6,
  KernelError,
  NLM_F_CREATE_EXCL,
  afOf,
  familyOfAf,
  prefixText,
  prefixToBuffer,
  sendOne,
  type Netlink,
  type NetlinkRequest,
} from './netlink';
import { forEachAttribute, RTM_DELRULE, RTM_GETRULE, RTM_NEWRULE, dumpRequest, encodeMessage, type Attr } from './rtnl-codec';

const FR_ACT_TO_TBL = 1;
const FIB_RULE_INVERT = 0x2;
const SUPPRESS_NONE = 0xffffffff;
const FIB_RULE_HDR_LEN = 12;

const FRA_DST = 1;
const FRA_SRC = 2;
const FRA_IIFNAME = 3;
const FRA_GOTO = 4;
const FRA_PRIORITY = 6;
const FRA_FWMARK = 10;
const FRA_FLOW = 11;
const FRA_TUN_ID = 12;
const FRA_SUPPRESS_IFGROUP = 13;
const FRA_SUPPRESS_PREFIXLEN = 14;
const FRA_TABLE = 15;
const FRA_FWMASK = 16;
const FRA_OIFNAME = 17;
const FRA_L3MDEV = 19;
const FRA_UID_RANGE = 20;
const FRA_PROTOCOL = 21;
const FRA_IP_PROTO = 22;
const FRA_SPORT_RANGE = 23;
const FRA_DPORT_RANGE = 24;

/** A FIB rule as a dump lists it: the fields rules.ts compares, and whether it has anything KernelRule cannot say. */
export interface RuleMessage {
  family: number;
  srcLen: number;
  dstLen: number;
  /** FRA_TABLE when present (tables > 255 are only there), else the 8-bit header field. */
  table: number;
  action: number;
  priority: number;
  protocol: number;
  src?: Buffer;
  dst?: Buffer;
  fwmark?: number;
  fwmask?: number;
  /** iif or oif: the kernel's rule_find compares them (as strings) even when a delete request leaves them out. */
  hasInterface: boolean;
  /**
   * Selectors and actions KernelRule cannot express (iif, oif, tos, invert, uid range, ip proto, ports, goto,
   * tunnel id, realms, l3mdev, suppress_*). A rule with any of them is never one ec2netd made; listing it as its
   * look-alike would make the diff believe that a wanted rule exists, or try to delete it.
   */
  otherSelectors: boolean;
}

function u32At(data: Buffer, value: number, end: number): number | undefined {
  return end - value >= 4 ? data.readUInt32LE(value) : undefined;
}

/**
 * Reads an RTM_NEWRULE message: fib_rule_hdr (family, dst_len, src_len, tos, table, res1, res2, action, flags)
 * and its attributes. Attributes the `netlink` package did not know either (newer kernels' FRA_DSCP, FRA_FLOWLABEL)
 * are skipped, as the package's parser did.
 */
export function parseRuleMessage(type: number, data: Buffer): RuleMessage | undefined {
  if (type !== RTM_NEWRULE || data.length < FIB_RULE_HDR_LEN) return undefined;
  const rule: RuleMessage = {
    family: data[0] ?? 0, dstLen: data[1] ?? 0, srcLen: data[2] ?? 0, table: data[4] ?? 0, action: data[7] ?? 0,
    priority: 0, protocol: 0, hasInterface: false,
    otherSelectors: (data[3] ?? 0) !== 0 || (data.readUInt32LE(8) & FIB_RULE_INVERT) !== 0,
  };
  forEachAttribute(data, FIB_RULE_HDR_LEN, data.length, (type, value, end) => {
    switch (type) {
      case FRA_DST: rule.dst = data.subarray(value, end); break;
      case FRA_SRC: rule.src = data.subarray(value, end); break;
      case FRA_PRIORITY: rule.priority = u32At(data, value, end) ?? 0; break;
      case FRA_TABLE: rule.table = u32At(data, value, end) ?? rule.table; break;
      case FRA_PROTOCOL: if (end > value) rule.protocol = data[value] ?? 0; break;
      case FRA_FWMARK: rule.fwmark = u32At(data, value, end); break;
      case FRA_FWMASK: rule.fwmask = u32At(data, value, end); break;
      case FRA_IIFNAME: case FRA_OIFNAME: rule.hasInterface = true; rule.otherSelectors = true; break;
      case FRA_GOTO: case FRA_UID_RANGE: case FRA_IP_PROTO: case FRA_SPORT_RANGE: case FRA_DPORT_RANGE:
      case FRA_TUN_ID: case FRA_SUPPRESS_IFGROUP: case FRA_FLOW:
        rule.otherSelectors = true;
        break;
      case FRA_L3MDEV: if (end > value && data[value] !== 0) rule.otherSelectors = true; break;
      // The kernel always sends it; all-ones (reads the same in either byte order) is "not set".
      case FRA_SUPPRESS_PREFIXLEN: {
        const suppress = u32At(data, value, end);
        if (suppress !== undefined && suppress !== SUPPRESS_NONE) rule.otherSelectors = true;
        break;
      }
    }
  });
  return rule;
}

export function ruleFromMessage(msg: RuleMessage): KernelRule | undefined {
  const family = familyOfAf(msg.family);
  if (family === undefined || msg.otherSelectors) return undefined;
  const rule: KernelRule = { family, priority: msg.priority, table: msg.table, protocol: msg.protocol, action: msg.action };
  if (msg.srcLen > 0) rule.src = prefixText(family, msg.src, msg.srcLen);
  if (msg.dstLen > 0) rule.dst = prefixText(family, msg.dst, msg.dstLen);
  // The kernel sends FRA_FWMARK only when the mark is non-zero and FRA_FWMASK when mark or mask is: `fwmark 0/0xff`
  // arrives as a mask alone. A mark without a mask option is reported with mask 0xffffffff.
  if (msg.fwmask !== undefined || msg.fwmark !== undefined) {
    rule.fwmark = msg.fwmark ?? 0;
    if (msg.fwmask !== undefined) rule.fwmask = msg.fwmask;
  }
  return rule;
}

export async function dumpRuleMessages(nl: Netlink, af: number): Promise<RuleMessage[]> {
  return nl.dumpWith(`dump ${af === AF_INET ? 'IPv4' : 'IPv6'} rules`, RTM_GETRULE, [dumpRequest('rule', af)], parseRuleMessage);
}

/** IPv4 and IPv6 rules, in kernel order (by priority, then age). */
export async function dumpRules(nl: Netlink, family?: Family): Promise<KernelRule[]> {
  const rules: KernelRule[] = [];
  for (const af of family === undefined ? [AF_INET, AF_INET6] : [afOf(family)]) {
    for (const msg of await dumpRuleMessages(nl, af)) {
      const rule = ruleFromMessage(msg);
      if (rule !== undefined) rules.push(rule);
    }
  }
  return rules;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

function selector(cidr: string): string {
  return cidr.endsWith('/32') || cidr.endsWith('/128') ? cidr.slice(0, cidr.lastIndexOf('/')) : cidr;
}

/** `ip rule` syntax: `from 10.0.1.20 lookup 10001 pref 10100 proto 236`. */
export function describeRule(r: KernelRule): string {
  const parts: string[] = [];
  if (r.family === 6) parts.push('-6');
  parts.push(`from ${r.src === undefined ? 'all' : selector(r.src)}`);
  if (r.dst !== undefined) parts.push(`to ${selector(r.dst)}`);
  if (r.fwmark !== undefined) parts.push(`fwmark ${hex(r.fwmark)}${r.fwmask === undefined ? '' : `/${hex(r.fwmask)}`}`);
  parts.push(r.action === FR_ACT_TO_TBL ? `lookup ${r.table}` : `action ${r.action}`);
  parts.push(`pref ${r.priority}`, `proto ${r.protocol}`);
  return parts.join(' ');
}

/** Equal in every field, the protocol included. */
export function sameRule(a: KernelRule, b: KernelRule): boolean {
  return a.family === b.family && a.priority === b.priority && a.table === b.table && a.protocol === b.protocol &&
    a.src === b.src && a.dst === b.dst && a.fwmark === b.fwmark && a.fwmask === b.fwmask && a.action === b.action;
}

/**
 * `ip rule add` with CREATE|EXCL, so an identical rule is EEXIST and never a duplicate. The kernel's EEXIST
 * ignores the selectors a rule leaves out (and, before Linux 6.x, the protocol), so it is re-checked: EEXIST
 * stands when a rule with the same selectors, table and priority is there (of any protocol: traffic goes the
 * same way), otherwise it becomes ECONFLICT naming the rule in the way.
 */
export async function addRule(nl: Netlink, r: KernelRule): Promise<void> {
  try {
    await sendOne(nl, `add rule ${describeRule(r)}`, ruleRequest(r, 'add'));
  } catch (err) {
    if (!(err instanceof KernelError) || err.code !== 'EEXIST') throw err;
    throw ruleExistsError(await dumpRules(nl, r.family), r, err);
  }
}

/** What an EEXIST on adding `r` means, given the rules present: EEXIST (an equal rule is there) or ECONFLICT. */
export function ruleExistsError(present: readonly KernelRule[], r: KernelRule, eexist = new KernelError('EEXIST', `add rule ${describeRule(r)}`)): KernelError {
  if (present.some((p) => sameRule({ ...p, protocol: r.protocol }, r))) return eexist;
  const holder = present.find((p) => p.priority === r.priority && p.table === r.table);
  return new KernelError('ECONFLICT', `add rule ${describeRule(r)}`, `EEXIST: the kernel took it for ${holder === undefined ? 'another rule' : describeRule(holder)}`);
}

/** The netlink message of `ip rule add` (CREATE|EXCL) or `ip rule del` of `r`, for Netlink.sendAll. */
export function ruleRequest(r: KernelRule, op: 'add' | 'del'): NetlinkRequest {
  // fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action, flags (u32); then the attributes in
  // the order rules.ts gave them to the package's formatter, so the bytes are the same as before.
  const header = Buffer.alloc(FIB_RULE_HDR_LEN);
  header[0] = afOf(r.family);
  header[4] = r.table > 255 ? 0 : r.table;
  header[7] = r.action;
  const attrs: Attr[] = [{ type: FRA_PRIORITY, value: r.priority }, { type: FRA_TABLE, value: r.table }, { type: FRA_PROTOCOL, value: r.protocol, u8: true }];
  if (r.src !== undefined) {
    const { addr, len } = prefixToBuffer(r.src);
    header[2] = len;
    attrs.push({ type: FRA_SRC, value: addr });
  }
  if (r.dst !== undefined) {
    const { addr, len } = prefixToBuffer(r.dst);
    header[1] = len;
    attrs.push({ type: FRA_DST, value: addr });
  }
  if (r.fwmark !== undefined) attrs.push({ type: FRA_FWMARK, value: r.fwmark });
  if (r.fwmask !== undefined) attrs.push({ type: FRA_FWMASK, value: r.fwmask });
  return {
    type: op === 'add' ? RTM_NEWRULE : RTM_DELRULE,
    flags: op === 'add' ? NLM_F_CREATE_EXCL : 0,
    body: [encodeMessage(header, attrs)],
  };
}

/** What the kernel's rule_find would match for a delete request made of `r`: absent selectors are wildcards. */
function kernelWouldPick(msg: RuleMessage, r: KernelRule): boolean {
  if (msg.hasInterface) return false; // compared as (empty) strings
  if (r.action !== 0 && msg.action !== r.action) return false;
  if (r.table !== 0 && msg.table !== r.table) return false;
  if (r.priority !== 0 && msg.priority !== r.priority) return false;
  if ((r.fwmark ?? 0) !== 0 && (msg.fwmark ?? 0) !== r.fwmark) return false;
  if ((r.fwmask ?? 0) !== 0 && (msg.fwmask ?? 0) !== r.fwmask) return false;
  if (r.protocol !== 0 && msg.protocol !== r.protocol) return false;
  const fam = r.family;
  if (r.src !== undefined && prefixText(fam, msg.src, msg.srcLen) !== r.src) return false;
  if (r.dst !== undefined && prefixText(fam, msg.dst, msg.dstLen) !== r.dst) return false;
  return true;
}

/**
 * `ip rule del` with every field: priority, table, protocol, selectors. A foreign rule with the same selectors but
 * another protocol never matches. Because left-out selectors are wildcards, the rule the kernel would pick (the
 * first match in kernel order) is looked up first. When `r` is not there, nothing is sent (ENOENT, as the
 * kernel would say); when another rule would be removed in its place, nothing is sent either (ECONFLICT).
 * A rule added between that dump and the delete could still be picked; the next sync would put it back.
 */
export async function deleteRule(nl: Netlink, r: KernelRule): Promise<void> {
  const what = `delete rule ${describeRule(r)}`;
  const blocked = ruleDeleteBlocker(await dumpRuleMessages(nl, afOf(r.family)), r);
  if (blocked !== undefined) throw blocked;
  await sendOne(nl, what, ruleRequest(r, 'del'));
}

/**
 * Why a delete request for `r` must not be sent, given the rules of its family in kernel order: ENOENT (`r` is
 * not there) or ECONFLICT (the kernel would remove another rule). Undefined: send it; `msgs` then loses the rule
 * the kernel will remove, so that a list checked delete after delete follows the kernel.
 */
export function ruleDeleteBlocker(msgs: RuleMessage[], r: KernelRule): KernelError | undefined {
  const what = `delete rule ${describeRule(r)}`;
  if (!msgs.some((m) => { const p = ruleFromMessage(m); return p !== undefined && sameRule(p, r); })) {
    return new KernelError('ENOENT', what);
  }
  const index = msgs.findIndex((m) => kernelWouldPick(m, r));
  const first = msgs[index];
  const picked = first === undefined ? undefined : ruleFromMessage(first);
  if (picked === undefined || !sameRule(picked, r)) {
    return new KernelError('ECONFLICT', what, `the kernel would delete ${picked === undefined ? 'a rule with other selectors' : describeRule(picked)}`);
  }
  msgs.splice(index, 1);
  return undefined;
}
