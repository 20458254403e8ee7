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
   * `check`: compare the chain with iptables-save even if the wanted chain did not change (the daemon asks on
   * nftables events, IMDS refreshes and full resyncs). A changed wanted chain is always compared.
   */
  async sync(mangle: MangleSpec, check: boolean): Promise<ContainerSyncResult> {
    const spec = JSON.stringify(mangle);
    if (!check && spec === this.lastSpec) return { changed: false };
    try {
      if (mangle.rules.length > 0) {
        const sysctl = await ensureContainerSysctls(this.config.containers, { stateDir: this.config.stateDir });
        if (sysctl.changed) this.log.info({ action: 'sysctl' }, `net.ipv4.conf.all.src_valid_mark set to 1 (was ${sysctl.previous}; ec2netd flush restores it)`);
      }
      const result = await this.iptables.sync(mangle);
      if (result.changed) {
        this.log.info({ action: 'iptables', backend: result.backend.name },
          `iptables mangle chain ${mangle.chain} rebuilt (${result.backend.name}): ${result.reasons.join('; ')}`);
      }
      this.lastSpec = spec;
      return { changed: result.changed };
    } catch (err) {
      return { changed: false, error: `container marks (iptables): ${(err as Error).message}` };
    }
  }
}
