// Start → 700 rules in place at 15 ENIs × 50 IPs, A/B: the daemon started from empty by each launcher of
// BENCH_START_BINS (comma-separated, default bin/ec2netd; `launcher?NAME=VALUE&...` adds to its environment) in turn, BENCH_START_RUNS rounds (default 5), on one
// simulated instance, so every variant meets the same load. Per start: process start → first and last write
// (an `ip monitor` of ours, as bench/run.ts measures it) and the daemon's own `startup` steps.
// Run: `node dist/bench/start.js` (root). BENCH_START_PROFILE=DIR adds --cpu-prof into DIR (the first variant).
import { performance } from 'node:perf_hooks';
import os from 'node:os';
import path from 'node:path';
import { startSimulatedEc2, EC2NETD_BIN } from '../sim/ec2';
import { nsArgv, run, startProcess } from '../sim/exec';
import { ipBatch, runMain, until } from './helpers';
import { median, startMonitor, waitQuiet, type MonitorLine } from './inspect';

const IMDS_READ = path.join(__dirname, 'imds-read.js');
const ENIS = 15;
const IPS = 50;
const eniIps = (k: number, n: number): string[] => Array.from({ length: n }, (_, i) => `10.0.${k}.${10 + i}`);

function isDaemonWrite(l: MonitorLine): boolean {
  if (l.text.includes('Deleted')) return false;
  return (/^\[(ROUTE|RULE)\]/.test(l.text) && /\bproto 236\b/.test(l.text)) || /^\[ADDR\].* inet 10\.0\./.test(l.text);
}

const load = (): string => os.loadavg().map((l) => l.toFixed(2)).join(' ');

/** `launcher?NAME=VALUE&NAME=VALUE`: the environment a variant's daemon runs with (CACHE_DIRECTORY, EC2NETD_NODE_FLAGS). */
function variantEnv(variant: string): Record<string, string> {
  const query = variant.split('?')[1] ?? '';
  return Object.fromEntries(query.split('&').filter((kv) => kv.includes('=')).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}

interface Sample { first: number; last: number; node: number; imdsAlone: number; imdsAloneCpu: number; imdsWarm: number; steps: Record<string, number> }

async function main(): Promise<void> {
  const bins = (process.env.BENCH_START_BINS ?? EC2NETD_BIN).split(',');
  const rounds = Number(process.env.BENCH_START_RUNS ?? 5);
  const profileDir = process.env.BENCH_START_PROFILE;
  process.stdout.write(`load before: ${load()}\n`);
  const sim = await startSimulatedEc2({
    prefix: `bst-${process.pid}`, subnet: '10.0.0.0/16',
    enis: [{ name: 'eth0', ipv4s: eniIps(0, IPS), deviceNumber: 0 }],
  });
  const host = sim.net.ns.host;
  const stopAll = (): void => { void sim.destroy().finally(() => process.exit(130)); };
  process.once('SIGINT', stopAll);
  process.once('SIGTERM', stopAll);
  try {
    for (let k = 1; k < ENIS; k++) await sim.attachEni({ name: `eth${k}`, ipv4s: eniIps(k, IPS), deviceNumber: k }, { imdsFirst: true });
    await ipBatch(host, Array.from({ length: ENIS }, (_, k) => `link set eth${k} up`));
    // What the daemon writes from empty: every IP but eth0's primary, a rule per secondary IP, two routes per table.
    const expected = (IPS - 1) + (ENIS - 1) * (IPS + 2 + IPS);
    // BENCH_START_EXEC="sh command": run it once with NS and CONFIG set (profiling by hand), then stop.
    if (process.env.BENCH_START_EXEC !== undefined) {
      const r = await run(['sh', '-c', process.env.BENCH_START_EXEC], { env: { ...process.env, NS: host, CONFIG: sim.configPath }, timeoutMs: 600_000 });
      process.stdout.write(r.stdout + r.stderr);
      return;
    }
    const samples = new Map<string, Sample[]>(bins.map((b) => [b, []]));
    for (let r = 0; r < rounds; r++) {
      for (const [i, variant] of bins.entries()) {
        const bin = variant.split('?')[0] ?? variant;
        await run(nsArgv(host, [bin, 'flush', '--config', sim.configPath]), { timeoutMs: 30_000 });
        await new Promise((res) => setTimeout(res, 300));
        const nodeT = performance.now();
        await run(nsArgv(host, [process.execPath, '-e', '0']));
        const node = performance.now() - nodeT;
        // The same IMDS read alone (its own process, cold, then warm), just before the start.
        const alone = (await run(nsArgv(host, [process.execPath, IMDS_READ, sim.configPath, '2']))).stdout.trim().split('\n')
          .map((l) => JSON.parse(l) as { ms: number; cpuMs: number });
        const mon = await startMonitor(host);
        const env = { ...process.env, ...variantEnv(variant) };
        if (profileDir !== undefined && i === 0) env.EC2NETD_NODE_FLAGS = `--max-semi-space-size=1 --max-old-space-size=64 --cpu-prof --cpu-prof-dir=${profileDir}`;
        const t0 = Date.now();
        const d = startProcess(nsArgv(host, [bin, 'run', '--config', sim.configPath, '--log-level', 'debug']), { env });
        try {
          await until('every object written', () => mon.lines().filter(isDaemonWrite).length >= expected, 30_000);
          await waitQuiet(mon, 200, 3000);
          await until('startup line', () => d.output().stdout.includes('"action":"startup"'), 10_000);
        } finally {
          await d.stop(5000);
          await mon.stop();
        }
        const writes = mon.lines().filter(isDaemonWrite);
        const line = d.output().stdout.split('\n').find((l) => l.includes('"action":"startup"')) ?? '{}';
        const { action: _a, level: _l, time: _t, msg: _m, pid: _p, hostname: _h, ...steps } = JSON.parse(line) as Record<string, number>;
        const s: Sample = {
          first: (writes[0]?.t ?? NaN) - t0, last: (writes.at(-1)?.t ?? NaN) - t0, node, steps,
          imdsAlone: alone[0]?.ms ?? NaN, imdsAloneCpu: alone[0]?.cpuMs ?? NaN, imdsWarm: alone[1]?.ms ?? NaN,
        };
        samples.get(variant)?.push(s);
        // BENCH_START_VERBOSE=1: the daemon's lines up to its startup line, as ms since the spawn.
        if (process.env.BENCH_START_VERBOSE === '1') {
          for (const l of d.output().stdout.split('\n')) {
            if (!l.startsWith('{')) continue;
            const j = JSON.parse(l) as Record<string, unknown>;
            const { level: _l, time, pid: _p, hostname: _h, msg, ...rest } = j;
            process.stdout.write(`  ${(Date.parse(String(time)) - t0).toString().padStart(5)} ${String(msg).slice(0, 80)} ${JSON.stringify(rest).slice(0, 200)}\n`);
            if (j.action === 'startup') break;
          }
        }
        process.stdout.write(`round ${r} ${variant}: node ${node.toFixed(0)}, IMDS alone ${s.imdsAlone} (cpu ${s.imdsAloneCpu}, warm ${s.imdsWarm}), first write ${s.first.toFixed(0)}, last write ${s.last.toFixed(0)} (${writes.length} writes); ${Object.entries(steps).map(([k, v]) => `${k} ${v}`).join(', ')}; load ${load()}\n`);
      }
    }
    for (const [bin, list] of samples) {
      const med = (f: (s: Sample) => number): string => median(list.map(f)).toFixed(0);
      const keys = Object.keys(list[0]?.steps ?? {});
      process.stdout.write(`median ${bin}: node ${med((s) => s.node)}, IMDS alone ${med((s) => s.imdsAlone)} (cpu ${med((s) => s.imdsAloneCpu)}, warm ${med((s) => s.imdsWarm)}), first write ${med((s) => s.first)}, last write ${med((s) => s.last)}; ${keys.map((k) => `${k} ${med((s) => s.steps[k] ?? NaN)}`).join(', ')}\n`);
    }
    process.stdout.write(`load after: ${load()}\n`);
  } finally {
    await sim.destroy();
  }
}

runMain(main);
