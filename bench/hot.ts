// The hot attach alone, for working on it: 15 ENIs × 50 IPs in place, then HOT_RUNS (default 10) hot attaches as
// bench/scale.ts measures them (link appear → last rule, each after the daemon's reclaim), with the daemon's sync
// lines of each attach. Root. `node dist/bench/hot.js`; HOT_LOG=FILE keeps the daemon's debug log;
// EC2NETD_NODE_FLAGS as for `npm run bench` (e.g. with --cpu-prof --cpu-prof-dir=DIR).
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { startSimulatedEc2 } from '../sim/ec2';
import { ipBatch, runMain, until } from './helpers';
import { median } from './inspect';
import { hotAttach } from './scale';

const ENIS = 15;
const IPS = 50;
const eniIps = (k: number, n: number): string[] => Array.from({ length: n }, (_, i) => `10.0.${k}.${10 + i}`);

async function main(): Promise<void> {
  const runs = Number(process.env.HOT_RUNS ?? 10);
  const sim = await startSimulatedEc2({
    prefix: `hot-${process.pid}`, subnet: '10.0.0.0/16',
    enis: [{ name: 'eth0', ipv4s: eniIps(0, IPS), deviceNumber: 0 }],
    config: { sync: { pendingRetryBaseMs: 50 } },
  });
  const stopAll = (): void => { void sim.destroy().finally(() => process.exit(130)); };
  process.once('SIGINT', stopAll);
  process.once('SIGTERM', stopAll);
  try {
    for (let k = 1; k < ENIS; k++) await sim.attachEni({ name: `eth${k}`, ipv4s: eniIps(k, IPS), deviceNumber: k }, { imdsFirst: true });
    await ipBatch(sim.net.ns.host, Array.from({ length: ENIS }, (_, k) => `link set eth${k} up`));
    const daemon = sim.startDaemon(['--log-level', 'debug']);
    await until('ec2netd plan exits 0', async () => (await sim.ec2netd(['plan'])).code === 0, 60_000);
    const from = daemon.output().stdout.length;
    const load = os.loadavg()[0]?.toFixed(2);
    const f = await hotAttach(sim, runs, ENIS, IPS, daemon);
    const syncs = daemon.output().stdout.slice(from).split('\n').filter((l) => l.includes('"planned":103'));
    for (const [i, l] of syncs.entries()) {
      const o = JSON.parse(l) as Record<string, unknown>;
      process.stdout.write(`attach ${i}: ${f.daemonMs[i]?.toFixed(1)} ms; ${['observeMs', 'imdsWaitMs', 'planMs', 'applyMs', 'containersMs'].map((k) => `${k} ${String(o[k] ?? '-')}`).join(', ')}\n`);
    }
    process.stdout.write(`hot attach median ${median(f.daemonMs).toFixed(1)} ms [${f.daemonMs.map((v) => v.toFixed(1)).join(' ')}]; ip -batch ${median(f.floorMs).toFixed(1)} ms; load ${load} → ${os.loadavg()[0]?.toFixed(2)}\n`);
    if (process.env.HOT_LOG !== undefined) writeFileSync(process.env.HOT_LOG, daemon.output().stdout);
    await daemon.stop(5000);
  } finally {
    await sim.destroy();
  }
}

runMain(main);
