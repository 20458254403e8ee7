// Parsing `iptables-save -t mangle`: ec2netd's chain, its rules and every rule that jumps to it.
// Pure; drift detection compares against the canonical rendering (render.ts).
import type { MangleSpec } from '../core/containers';
import { renderChainRules } from './render';

export interface MangleState {
  /** The chain is declared in the mangle table. */
  chainExists: boolean;
  /** The chain's rules, in order, as iptables-save printed them (`-A CHAIN ...`). */
  chainRules: string[];
  /** 1-based positions in PREROUTING of rules that are exactly `-j CHAIN`. */
  jumpPositions: number[];
  /** Number of rules in PREROUTING. */
  preroutingRules: number;
  /** Every rule of another chain that jumps or goes to the chain (`-A X ... -j|-g CHAIN`), as printed. */
  references: string[];
}

export function emptyMangleState(): MangleState {
  return { chainExists: false, chainRules: [], jumpPositions: [], preroutingRules: 0, references: [] };
}

/** Splits a save line into words, honouring the double quotes iptables-save puts around comments. */
function words(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(line)) !== null) out.push(m[1] ?? m[2] ?? '');
  return out;
}

/** Parses the mangle section of an iptables-save dump (other tables are ignored). */
export function parseMangle(saveText: string, chain: string): MangleState {
  const state = emptyMangleState();
  let inMangle = false;
  for (const raw of saveText.split('\n')) {
    const line = raw.trimEnd();
    if (line.startsWith('*')) {
      inMangle = line === '*mangle';
      continue;
    }
    if (!inMangle || line === '' || line.startsWith('#')) continue;
    if (line === 'COMMIT') {
      inMangle = false;
      continue;
    }
    if (line.startsWith(':')) {
      if (line.split(' ')[0] === `:${chain}`) state.chainExists = true;
      continue;
    }
    if (!line.startsWith('-A ')) continue;
    const w = words(line);
    const owner = w[1];
    if (owner === chain) {
      state.chainRules.push(line);
      continue;
    }
    if (owner === 'PREROUTING') state.preroutingRules++;
    const target = w.findIndex((word, i) => (word === '-j' || word === '-g') && w[i + 1] === chain);
    if (target < 0) continue;
    state.references.push(line);
    if (owner === 'PREROUTING' && w.length === 4 && w[2] === '-j') state.jumpPositions.push(state.preroutingRules);
  }
  return state;
}

export interface Drift {
  inSync: boolean;
  /** Human-readable reasons, empty when in sync. */
  reasons: string[];
}

/**
 * Drift: the chain's content differs from the canonical rendering, or the jump is missing, not the first
 * rule of PREROUTING, or duplicated, or some other rule refers to the chain. For an empty spec (nothing
 * wanted), any trace of the chain is drift.
 */
export function detectDrift(spec: MangleSpec, state: MangleState): Drift {
  const reasons: string[] = [];
  if (spec.rules.length === 0) {
    if (state.chainExists) reasons.push(`chain ${spec.chain} exists but nothing is wanted`);
    if (state.references.length > 0) reasons.push(`${state.references.length} rule(s) still jump to ${spec.chain}`);
    return { inSync: reasons.length === 0, reasons };
  }
  if (!state.chainExists) reasons.push(`chain ${spec.chain} is missing`);
  const want = renderChainRules(spec);
  if (state.chainExists && (want.length !== state.chainRules.length || want.some((line, i) => line !== state.chainRules[i]))) {
    reasons.push(`chain ${spec.chain} holds ${state.chainRules.length} rule(s) that differ from the ${want.length} wanted`);
  }
  if (state.jumpPositions.length === 0) reasons.push(`no jump to ${spec.chain} in PREROUTING`);
  else if (state.jumpPositions.length > 1) reasons.push(`${state.jumpPositions.length} jumps to ${spec.chain} in PREROUTING`);
  else if (state.jumpPositions[0] !== 1) reasons.push(`the jump to ${spec.chain} is rule ${state.jumpPositions[0]} of PREROUTING, not the first`);
  const others = state.references.length - state.jumpPositions.length;
  if (others > 0) reasons.push(`${others} other rule(s) refer to ${spec.chain}`);
  return { inSync: reasons.length === 0, reasons };
}
