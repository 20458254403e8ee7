// Which iptables backend to use. iptables-nft and iptables-legacy rules both run, but neither sees the
// other's, so ec2netd's chain goes where Docker's chains are (config iptables.backend = auto).
import type { Config } from '../config';
import { execArgv, IptablesError } from './exec';

export type BackendName = 'nft' | 'legacy' | 'default';

export interface Backend {
  name: BackendName;
  save: string;
  restore: string;
  /** The ip6tables commands of the same variant (IPv6 container networks). */
  save6: string;
  restore6: string;
  /** Why this backend was chosen (for logs). */
  reason: string;
  /** True when auto detection saw Docker's chains (a later run need not detect again). */
  dockerSeen: boolean;
}

export const BACKEND_COMMANDS: Record<BackendName, { save: string; restore: string; save6: string; restore6: string }> = {
  nft: { save: 'iptables-nft-save', restore: 'iptables-nft-restore', save6: 'ip6tables-nft-save', restore6: 'ip6tables-nft-restore' },
  legacy: { save: 'iptables-legacy-save', restore: 'iptables-legacy-restore', save6: 'ip6tables-legacy-save', restore6: 'ip6tables-legacy-restore' },
  default: { save: 'iptables-save', restore: 'iptables-restore', save6: 'ip6tables-save', restore6: 'ip6tables-restore' },
};

export function backendFor(name: BackendName, reason: string, dockerSeen = false): Backend {
  return { name, ...BACKEND_COMMANDS[name], reason, dockerSeen };
}

/** Docker's chains: DOCKER (nat and filter), DOCKER-USER (filter, 17+), DOCKER-FORWARD (filter, 28+). */
const DOCKER_CHAIN_RE = /^:(DOCKER|DOCKER-USER|DOCKER-FORWARD) /m;

/** True when an iptables-save dump holds one of Docker's chains. */
export function hasDockerChains(saveText: string): boolean {
  return DOCKER_CHAIN_RE.test(saveText);
}

/** Pure decision, from the two dumps (undefined = that variant is not installed or failed). */
export function chooseBackend(setting: Config['iptables']['backend'], nftDump: string | undefined, legacyDump: string | undefined): Backend {
  if (setting === 'nft') return backendFor('nft', 'iptables.backend is "nft"');
  if (setting === 'legacy') return backendFor('legacy', 'iptables.backend is "legacy"');
  const inNft = nftDump !== undefined && hasDockerChains(nftDump);
  const inLegacy = legacyDump !== undefined && hasDockerChains(legacyDump);
  if (inNft && !inLegacy) return backendFor('nft', "Docker's chains are in iptables-nft", true);
  if (inLegacy && !inNft) return backendFor('legacy', "Docker's chains are in iptables-legacy", true);
  if (inNft && inLegacy) return backendFor('default', "Docker's chains are in both iptables-nft and iptables-legacy: using the system default iptables", true);
  return backendFor('default', "no Docker chains found: using the system default iptables (the one Docker will use)");
}

export interface DetectOptions {
  /** Prefix for every command, e.g. ['ip', 'netns', 'exec', 'ns1'] in tests. */
  wrapper?: readonly string[];
  timeoutMs?: number;
}

async function dump(command: string, opts: DetectOptions): Promise<string | undefined> {
  try {
    return await execArgv([...(opts.wrapper ?? []), command], { timeoutMs: opts.timeoutMs ?? 5000 });
  } catch (err) {
    if (err instanceof IptablesError) return undefined;
    throw err;
  }
}

/** Detects the backend (config iptables.backend; auto reads both variants' dumps). */
export async function detectBackend(setting: Config['iptables']['backend'], opts: DetectOptions = {}): Promise<Backend> {
  if (setting !== 'auto') return chooseBackend(setting, undefined, undefined);
  const [nft, legacy] = await Promise.all([dump(BACKEND_COMMANDS.nft.save, opts), dump(BACKEND_COMMANDS.legacy.save, opts)]);
  return chooseBackend(setting, nft, legacy);
}
