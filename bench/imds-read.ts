// One whole IMDS read as the daemon makes it (src/imds/snapshot.ts readImds, a fresh client: cold connections),
// alone in its own process: `node dist/bench/imds-read.js CONFIG [N]` prints, per read, its wall and CPU time and
// request count as JSON lines. bench/start.ts runs it beside each daemon start (the daemon's read is compared with it).
import { loadConfig } from '../src/config';
import { ImdsClient } from '../src/imds/client';
import { readImds } from '../src/imds/snapshot';

async function main(): Promise<void> {
  const config = loadConfig(process.argv[2]);
  const n = Number(process.argv[3] ?? 1);
  const client = new ImdsClient(config.imds);
  for (let i = 0; i < n; i++) {
    const cpu = process.cpuUsage();
    const t = performance.now();
    const read = await readImds(client);
    const used = process.cpuUsage(cpu);
    process.stdout.write(`${JSON.stringify({ ms: Math.round(performance.now() - t), cpuMs: Math.round((used.user + used.system) / 1000), enis: read.enis.length, requests: client.stats().requests })}\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
