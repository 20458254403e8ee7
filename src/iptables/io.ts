// The two commands ec2netd runs: iptables-save and iptables-restore -w --noflush (argv only, see exec.ts), or their
// ip6tables twins for family 6 (the same chain, the same rules, for IPv6 container networks).
import type { Family } from '../core/types';
import type { Backend } from './backend';
import { execArgv } from './exec';
import { parseMangle } from './read';
import type { MangleState } from './read';

export interface IptablesOptions {
  /** Prefix for every command, e.g. ['ip', 'netns', 'exec', 'ns1'] (tests); none in production. */
  wrapper?: readonly string[];
  /** Timeout of each iptables command. Default 10 s. */
  timeoutMs?: number;
  /** Seconds iptables-restore waits for the xtables lock (legacy backend). Default 5. */
  lockWaitSeconds?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * `iptables-save -t TABLE` of the backend; without a table, the dump of the tables that exist (the
 * legacy variant instantiates a table that `-t` names, so a flush of every variant dumps without it).
 */
export function saveTable(backend: Backend, table: string | undefined, opts: IptablesOptions = {}, family: Family = 4): Promise<string> {
  const args = table === undefined ? [] : ['-t', table];
  const save = family === 6 ? backend.save6 : backend.save;
  return execArgv([...(opts.wrapper ?? []), save, ...args], { timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS });
}

/** `iptables-restore -w N --noflush` with the transaction on stdin. All or nothing. */
export async function restore(backend: Backend, text: string, opts: IptablesOptions = {}, family: Family = 4): Promise<void> {
  const argv = [...(opts.wrapper ?? []), family === 6 ? backend.restore6 : backend.restore, '-w', String(opts.lockWaitSeconds ?? 5), '--noflush'];
  await execArgv(argv, { input: text, timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS });
}

export async function readMangle(
  backend: Backend, chain: string, opts: IptablesOptions = {}, onlyIfExists = false, family: Family = 4,
): Promise<MangleState> {
  return parseMangle(await saveTable(backend, onlyIfExists ? undefined : 'mangle', opts, family), chain);
}
