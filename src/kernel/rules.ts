// FIB rules: dump IPv4 and IPv6, add (CREATE|EXCL), delete exactly the rule asked for.
//
// Two kernel behaviours shape this module (net/core/fib_rules.c):
// - A selector left out of a request is a wildcard, both when the kernel checks NLM_F_EXCL (rule_exists) and
//   when it picks the rule to delete (rule_find): `from all lookup T pref P` is "EEXIST" when
//   `from 10.0.1.5 lookup T pref P` exists, and a delete of it may remove that other rule. So an EEXIST is
//   re-checked against a dump, and a delete first checks that the rule the kernel will pick is exactly ours.
// - Without NLM_F_EXCL an identical rule is added twice.
import { rt } from './netlink-package';
import type { Family, KernelRule } from '../core/types';
import {
  AF_INET,
  AF_INET6,
  KernelError,
  NLM_F_CREATE_EXCL,
  afOf,
  body,
  enumNumber,
  familyOfAf,
  prefixText,
  prefixToBuffer,
  type Netlink,
  type NetlinkRequest,
} from './netlink';
import { encodeMessage, type Attr } from './encode';

const FR_ACT_TO_TBL = 1;
const SUPPRESS_NONE = 0xffffffff;

/**
 * Selectors and actions KernelRule cannot express (iif, oif, tos, uid range, ip proto, ports, goto, ...). A rule
 * with any of them is never one ec2netd made; listing it as its look-alike would make the diff believe that a
 * wanted rule exists, or try to delete it.
 */
function hasOtherSelectors(msg: rt.RuleMessage): boolean {
  const a = msg.attrs;
  const suppress = a.suppressPrefixlen;
  return a.iifname !== undefined || a.oifname !== undefined || a.goto !== undefined || a.uidRange !== undefined ||
    a.ipProto !== undefined || a.sportRange !== undefined || a.dportRange !== undefined || a.tunId !== undefined ||
    a.suppressIfgroup !== undefined || (a.l3Mdev ?? 0) !== 0 || a.flow !== undefined ||
    // (all-ones reads the same in either byte order)
    (suppress !== undefined && suppress.length >= 4 && suppress.readUInt32LE(0) !== SUPPRESS_NONE) ||
    (msg.data.tos ?? 0) !== 0 || msg.data.flags?.invert === true;
}

export function ruleFromMessage(msg: rt.RuleMessage): KernelRule | undefined {
  const family = familyOfAf(msg.data.family);
  if (family === undefined || hasOtherSelectors(msg)) return undefined;
  const rule: KernelRule = {
    family,
    priority: msg.attrs.priority ?? 0,
    table: msg.attrs.table ?? msg.data.table ?? 0,
    protocol: msg.attrs.protocol ?? 0,
    action: enumNumber(rt.RuleAction, msg.data.action),
  };
  if ((msg.data.srcLen ?? 0) > 0) rule.src = prefixText(family, msg.attrs.src, msg.data.srcLen ?? 0);
  if ((msg.data.dstLen ?? 0) > 0) rule.dst = prefixText(family, msg.attrs.dst, msg.data.dstLen ?? 0);
  // The kernel sends FRA_FWMARK only when the mark is non-zero and FRA_FWMASK when mark or mask is: `fwmark 0/0xff`
  // arrives as a mask alone. A mark without a mask option is reported with mask 0xffffffff.
  if (msg.attrs.fwmask !== undefined || msg.attrs.fwmark !== undefined) {
    rule.fwmark = msg.attrs.fwmark ?? 0;
    if (msg.attrs.fwmask !== undefined) rule.fwmask = msg.attrs.fwmask;
  }
  return rule;
}

export async function dumpRuleMessages(nl: Netlink, af: number): Promise<rt.RuleMessage[]> {
  const msgs = await nl.dump(`dump ${af === AF_INET ? 'IPv4' : 'IPv6'} rules`, rt.MessageType.GETRULE, body((out) =>
    rt.formatRuleMessage({ kind: 'rule', data: { family: af }, attrs: {} }, out)));
  return msgs.filter((m): m is rt.RuleMessage => m.kind === 'rule');
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

function request(r: KernelRule): { data: rt.Rule; attrs: rt.RuleAttrs } {
  const data: rt.Rule = {
    family: afOf(r.family),
    srcLen: 0,
    dstLen: 0,
    // Like iproute2: the 8-bit field holds tables up to 255, and 0 (unspec) when FRA_TABLE carries a bigger one.
    table: r.table > 255 ? 0 : r.table,
    action: r.action,
  };
  const attrs: rt.RuleAttrs = { priority: r.priority, table: r.table, protocol: r.protocol };
  if (r.src !== undefined) {
    const { addr, len } = prefixToBuffer(r.src);
    data.srcLen = len;
    attrs.src = addr;
  }
  if (r.dst !== undefined) {
    const { addr, len } = prefixToBuffer(r.dst);
    data.dstLen = len;
    attrs.dst = addr;
  }
  if (r.fwmark !== undefined) attrs.fwmark = r.fwmark;
  if (r.fwmask !== undefined) attrs.fwmask = r.fwmask;
  return { data, attrs };
}

/**
 * `ip rule add` with CREATE|EXCL, so an identical rule is EEXIST and never a duplicate. The kernel's EEXIST
 * ignores the selectors a rule leaves out (and, before Linux 6.x, the protocol), so it is re-checked: EEXIST
 * stands when a rule with the same selectors, table and priority is there (of any protocol: traffic goes the
 * same way), otherwise it becomes ECONFLICT naming the rule in the way.
 */
export async function addRule(nl: Netlink, r: KernelRule): Promise<void> {
  const what = `add rule ${describeRule(r)}`;
  const { data, attrs } = request(r);
  try {
    await nl.call(what, (o) => nl.socket.newRule(data, attrs, o), NLM_F_CREATE_EXCL);
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
  // the order request() gives them to the package's formatter.
  const header = Buffer.alloc(12);
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
    type: op === 'add' ? rt.MessageType.NEWRULE : rt.MessageType.DELRULE,
    flags: op === 'add' ? NLM_F_CREATE_EXCL : 0,
    body: [encodeMessage(header, attrs)],
  };
}

const FRA_DST = 1;
const FRA_SRC = 2;
const FRA_PRIORITY = 6;
const FRA_FWMARK = 10;
const FRA_TABLE = 15;
const FRA_FWMASK = 16;
const FRA_PROTOCOL = 21;

/** What the kernel's rule_find would match for a delete request made of `r`: absent selectors are wildcards. */
function kernelWouldPick(msg: rt.RuleMessage, r: KernelRule): boolean {
  const a = msg.attrs;
  if (a.iifname !== undefined || a.oifname !== undefined) return false; // compared as (empty) strings
  if (r.action !== 0 && enumNumber(rt.RuleAction, msg.data.action) !== r.action) return false;
  if (r.table !== 0 && (a.table ?? msg.data.table ?? 0) !== r.table) return false;
  if (r.priority !== 0 && (a.priority ?? 0) !== r.priority) return false;
  if ((r.fwmark ?? 0) !== 0 && (a.fwmark ?? 0) !== r.fwmark) return false;
  if ((r.fwmask ?? 0) !== 0 && (a.fwmask ?? 0) !== r.fwmask) return false;
  if (r.protocol !== 0 && (a.protocol ?? 0) !== r.protocol) return false;
  const fam = r.family;
  if (r.src !== undefined && prefixText(fam, a.src, msg.data.srcLen ?? 0) !== r.src) return false;
  if (r.dst !== undefined && prefixText(fam, a.dst, msg.data.dstLen ?? 0) !== r.dst) return false;
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
  const { data, attrs } = request(r);
  await nl.call(what, (o) => nl.socket.delRule(data, attrs, o));
}

/**
 * Why a delete request for `r` must not be sent, given the rules of its family in kernel order: ENOENT (`r` is
 * not there) or ECONFLICT (the kernel would remove another rule). Undefined: send it; `msgs` then loses the rule
 * the kernel will remove, so that a list checked delete after delete follows the kernel.
 */
export function ruleDeleteBlocker(msgs: rt.RuleMessage[], r: KernelRule): KernelError | undefined {
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
