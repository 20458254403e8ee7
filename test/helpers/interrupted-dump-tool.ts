// Runs INSIDE the simulated instance's namespace: one Reconciler sync (real IMDS simulator, real kernel) through a
// netlink socket whose link dumps always come back flagged NLM_F_DUMP_INTR and without one link, as a dump
// racing a changing link list can. Prints {"error": code} or {"applied": n} as JSON.
//
//   ip netns exec NS node --import tsx test/helpers/interrupted-dump-tool.ts CONFIG IFINDEX
import { createRtNetlink, rt, type RtNetlinkSocket } from 'netlink';
import { loadConfig } from '../../src/config';
import { ALL_KINDS, Reconciler } from '../../src/daemon/reconciler';
import { AddressLedger } from '../../src/daemon/ledger';
import { ImdsClient } from '../../src/imds/client';
import { IptablesAdapter } from '../../src/iptables/apply';
import { KernelError, Netlink } from '../../src/kernel/netlink';
import { silentLogger } from '../../src/log';

const NLM_F_DUMP_INTR = 0x10;

type Request = (type: number, data: Uint8Array | Uint8Array[], options?: { flags?: number }) => Promise<[Array<{ type: number; flags: number; data: Buffer }>, unknown]>;

/** A real socket whose link dumps lose link `hide` and are flagged interrupted. */
function interruptedLinks(hide: number): RtNetlinkSocket {
  const sock = createRtNetlink();
  const raw = sock.socket as unknown as { request: Request };
  const request = raw.request.bind(raw);
  raw.request = async (type, data, options) => {
    const [msgs, info] = await request(type, data, options);
    if (type !== rt.MessageType.GETLINK) return [msgs, info];
    // ifinfomsg: family (1), pad (1), type (2), index (4).
    const kept = msgs.filter((m) => m.type !== rt.MessageType.NEWLINK || m.data.readInt32LE(4) !== hide);
    return [kept.map((m) => Object.assign(m, { flags: m.flags | NLM_F_DUMP_INTR })), info];
  };
  return sock;
}

async function main(): Promise<void> {
  const [configPath, ifindex] = process.argv.slice(2);
  const config = loadConfig(configPath);
  const ledger = new AddressLedger(config.stateDir);
  ledger.load();
  const nl = new Netlink({ createSocket: () => interruptedLinks(Number(ifindex)) });
  const log = silentLogger();
  const reconciler = new Reconciler({ config, log, nl, ledger, imds: new ImdsClient(config.imds), iptables: new IptablesAdapter(config) });
  try {
    if (!(await reconciler.refreshImds())) throw new Error(`IMDS: ${reconciler.lastImdsError}`);
    const report = await reconciler.sync(ALL_KINDS);
    process.stdout.write(`${JSON.stringify({ applied: report.applied })}\n`);
  } catch (err) {
    if (!(err instanceof KernelError)) throw err;
    process.stdout.write(`${JSON.stringify({ error: err.code, message: err.message })}\n`);
  } finally {
    nl.close();
  }
}

void main();
