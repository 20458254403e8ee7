// `ec2netd flush` for iptables: remove the jump(s) to ec2netd's chain and the chain itself, nothing else.
import type { Family } from '../core/types';
import type { Backend } from './backend';
import { readMangle, restore } from './io';
import type { IptablesOptions } from './io';
import { renderFlush } from './render';

/** Removes the jump(s) and the chain; nothing else. Returns whether anything was removed. */
export async function flushMangle(backend: Backend, chain: string, opts: IptablesOptions = {}, family: Family = 4): Promise<boolean> {
  const state = await readMangle(backend, chain, opts, true, family);
  const text = renderFlush(chain, state);
  if (text === '') return false;
  await restore(backend, text, opts, family);
  return true;
}
