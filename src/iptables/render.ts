// MangleSpec → the text iptables-restore --noflush reads. Rules are rendered in the canonical form
// iptables-save prints them in (`--set-xmark V/M`, hex values), so a dump compares line by line.
import { hex, isSafeIfname } from '../core/containers';
import type { MangleRule, MangleSpec } from '../core/containers';
import type { MangleState } from './read';

const CHAIN_RE = /^[A-Z][A-Z0-9_-]{0,27}$/;

export function checkChain(chain: string): void {
  if (!CHAIN_RE.test(chain) || ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'].includes(chain)) {
    throw new Error(`iptables: refusing chain name ${JSON.stringify(chain)}`);
  }
}

function checkIface(name: string): void {
  if (!isSafeIfname(name)) throw new Error(`iptables: refusing interface name ${JSON.stringify(name)} (allowed: [A-Za-z0-9_.@-]{1,15})`);
}

function checkMark(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new Error(`iptables: ${what} ${value} is not a 32-bit value`);
}

/** One rule as iptables-save prints it. */
export function renderRule(chain: string, rule: MangleRule): string {
  checkChain(chain);
  checkIface(rule.inIface);
  checkMark(rule.mask, 'mask');
  if (rule.kind === 'set-mark') {
    checkMark(rule.value, 'mark');
    if ((rule.value & ~rule.mask) !== 0) throw new Error(`iptables: mark ${hex(rule.value)} has bits outside mask ${hex(rule.mask)}`);
    return `-A ${chain} -i ${rule.inIface} -m conntrack --ctstate NEW -j CONNMARK --set-xmark ${hex(rule.value)}/${hex(rule.mask)}`;
  }
  return `-A ${chain} -i ${rule.inIface} -j CONNMARK --restore-mark --nfmask ${hex(rule.mask)} --ctmask ${hex(rule.mask)}`;
}

/** The chain's rules, in order, canonical. */
export function renderChainRules(spec: MangleSpec): string[] {
  return spec.rules.map((rule) => renderRule(spec.chain, rule));
}

/** The jump as iptables-save prints it. */
export function jumpRule(chain: string): string {
  return `-A PREROUTING -j ${chain}`;
}

/** True when the jump is exactly once in PREROUTING, as its first rule, and nothing else refers to the chain. */
export function jumpIsFirstAndOnly(state: MangleState): boolean {
  return state.jumpPositions.length === 1 && state.jumpPositions[0] === 1 && state.references.length === 1;
}

/**
 * The transaction that (re)builds the chain: the declaration flushes an existing chain in the same
 * transaction (both backends), the rules follow, and the jump is (re)inserted at the top of PREROUTING
 * only when it is not already there exactly once (misplaced or duplicated jumps, and any other rule that
 * refers to the chain, are deleted first: only ec2netd makes that chain, so they are ec2netd's leftovers).
 * An empty spec renders the removal (see renderFlush).
 */
export function renderSync(spec: MangleSpec, state: MangleState): string {
  if (spec.rules.length === 0) return renderFlush(spec.chain, state);
  checkChain(spec.chain);
  const lines = ['*mangle', `:${spec.chain} - [0:0]`, ...renderChainRules(spec)];
  if (!jumpIsFirstAndOnly(state)) {
    for (const ref of state.references) lines.push(ref.replace(/^-A /, '-D '));
    lines.push(`-I PREROUTING 1 -j ${spec.chain}`);
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * Removes every reference to the chain (jumps from any mangle chain, as dumped) and the chain itself.
 * Empty text when there is nothing of ec2netd's. Other tools' rules are never named.
 */
export function renderFlush(chain: string, state: MangleState): string {
  checkChain(chain);
  if (!state.chainExists && state.references.length === 0) return '';
  const lines = ['*mangle'];
  for (const ref of state.references) lines.push(ref.replace(/^-A /, '-D '));
  if (state.chainExists) lines.push(`:${chain} - [0:0]`, `-X ${chain}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}
