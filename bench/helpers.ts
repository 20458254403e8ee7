// Small helpers the benchmark scenarios share: bounded waits, `ip -batch`, and the objects of one ENI as
// `ip -batch` lines (the floor each ec2netd figure is compared with).
import { run } from '../sim/exec';

/** Runs a bench script's main: an error is printed (with its stack) and the process exits 1. */
export function runMain(main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  });
}

export const sleep = (t: number): Promise<void> => new Promise((r) => setTimeout(r, t));

/** Polls `check` every 5 ms until it holds; throws naming `what` after `timeoutMs`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`bench: not reached within ${timeoutMs} ms: ${what}`);
    await sleep(5);
  }
}

/** `ip -n <ns> -batch -`: many kernel writes for one process start. */
export function ipBatch(ns: string, lines: string[]): Promise<unknown> {
  return run(['ip', '-n', ns, '-batch', '-'], { input: `${lines.join('\n')}\n`, timeoutMs: 60_000 });
}

/**
 * The objects ec2netd creates for a secondary ENI, as `ip -batch` lines. Protocol 237, not ec2netd's 236: the
 * daemon runs meanwhile and would remove objects marked as its own that it does not want.
 */
export function eniObjects(dev: string, ips: string[], table: number): string[] {
  return [
    `link set ${dev} up`,
    ...ips.map((ip) => `address add ${ip}/16 dev ${dev} noprefixroute`),
    `route add 10.0.0.0/16 dev ${dev} src ${ips[0] ?? ''} table ${table} proto 237 scope link`,
    `route add default via 10.0.0.1 dev ${dev} table ${table} proto 237`,
    ...ips.map((ip) => `rule add from ${ip} lookup ${table} pref 10100 proto 237`),
  ];
}
