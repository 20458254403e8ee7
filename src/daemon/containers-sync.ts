// Container marks: ec2netd's mangle chain and the sysctl it needs, rebuilt only when they drifted.
import type { Config } from '../config';
import type { MangleSpec } from '../core/containers';
import type { IptablesAdapter } from '../iptables/apply';
import { ensureContainerSysctls } from '../iptables/sysctl';
import type { Logger } from '../log';

export interface ContainerSyncResult {
  changed: boolean;
  error?: string;
}

export class ContainerSync {
  private lastSpec = '';

  constructor(private readonly config: Config, private readonly iptables: IptablesAdapter, private readonly log: Logger) {}

  /**
   * `check`: compare the chains with iptables-save / ip6tables-save even if the wanted chains did not change (the
   * daemon asks on nftables events, IMDS refreshes and full resyncs). A changed wanted chain is always compared.
   * `mangle6`: the same chain for ip6tables (no rules without an IPv6 container network). The families are synced
   * one after the other; one failing does not keep the other from its sync.
   */
  async sync(mangle: MangleSpec, check: boolean, mangle6?: MangleSpec): Promise<ContainerSyncResult> {
    const spec = JSON.stringify([mangle, mangle6]);
    if (!check && spec === this.lastSpec) return { changed: false };
    let changed = false;
    const errors: string[] = [];
    try {
      if (mangle.rules.length > 0) {
        const sysctl = await ensureContainerSysctls(this.config.containers, { stateDir: this.config.stateDir });
        if (sysctl.changed) this.log.info({ action: 'sysctl' }, `net.ipv4.conf.all.src_valid_mark set to 1 (was ${sysctl.previous}; ec2netd flush restores it)`);
      }
    } catch (err) {
      errors.push(`container marks (sysctl): ${(err as Error).message}`);
    }
    for (const [family, wanted] of [[4, mangle], [6, mangle6]] as const) {
      if (wanted === undefined) continue;
      const tool = family === 6 ? 'ip6tables' : 'iptables';
      try {
        const result = await this.iptables.sync(wanted, family);
        if (result.changed) {
          this.log.info({ action: 'iptables', backend: result.backend.name },
            `${tool} mangle chain ${wanted.chain} rebuilt (${result.backend.name}): ${result.reasons.join('; ')}`);
        }
        changed ||= result.changed;
      } catch (err) {
        errors.push(`container marks (${tool}): ${(err as Error).message}`);
      }
    }
    if (errors.length > 0) return { changed, error: errors.join('; ') };
    this.lastSpec = spec;
    return { changed };
  }
}
