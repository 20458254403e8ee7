// Runs ONE sync of the real Reconciler inside a namespace with an address added by someone else between the
// kernel read and the writes: the race a DHCP client wins when it configures an address ec2netd was about to add.
//
//   ip netns exec NS node --import tsx test/helpers/race-tool.ts CONFIG DEV ADDRESS/LEN   → JSON on stdout
import { execFileSync } from 'node:child_process';
import { loadConfig } from '../../src/config';
import { AddressLedger } from '../../src/daemon/ledger';
import { ALL_KINDS, Reconciler } from '../../src/daemon/reconciler';
import { ImdsClient } from '../../src/imds/client';
import { IptablesAdapter } from '../../src/iptables/apply';
import { openNetlink } from '../../src/kernel/netlink';
import { silentLogger } from '../../src/log';

async function main(): Promise<void> {
  const [configPath, dev, address] = process.argv.slice(2);
  if (configPath === undefined || dev === undefined || address === undefined) throw new Error('usage: race-tool CONFIG DEV ADDRESS/LEN');
  const config = loadConfig(configPath);
  const ledger = new AddressLedger(config.stateDir);
  ledger.load();
  const nl = openNetlink();
  try {
    const reconciler = new Reconciler({ config, log: silentLogger(), nl, ledger, imds: new ImdsClient(config.imds), iptables: new IptablesAdapter(config) });
    await reconciler.observe(ALL_KINDS);
    if (!(await reconciler.refreshImds())) throw new Error(`IMDS: ${reconciler.lastImdsError}`);
    // Someone else gets there first; no event reaches this process, so the plan is made from the earlier read.
    execFileSync('ip', ['address', 'add', address, 'dev', dev]);
    const report = await reconciler.sync(new Set());
    process.stdout.write(`${JSON.stringify({ planned: report.planned, applied: report.applied, errors: report.errors, owned: [...ledger.owned] })}\n`);
  } finally {
    nl.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
