// The kernel adapter, driven from the command line INSIDE a network namespace (a netlink socket belongs to the
// namespace of the process that opens it):
//
//   ip netns exec NS node --import tsx test/helpers/kernel-tool.ts dump            KernelState JSON
//   ip netns exec NS node --import tsx test/helpers/kernel-tool.ts apply           Plan JSON on stdin → result JSON
//   ip netns exec NS node --import tsx test/helpers/kernel-tool.ts apply-existed   the same, with `existed` (plan indexes)
//   ip netns exec NS node --import tsx test/helpers/kernel-tool.ts events MS [BYTES]      rtnetlink events as JSON lines for
//                                                                                     MS ms (BYTES: receive buffer)
//   ip netns exec NS node --import tsx test/helpers/kernel-tool.ts nft-events MS       nftables (mangle) events, the same way
//   ip netns exec NS node --import tsx test/helpers/kernel-tool.ts time-dump N     dump timings (JSON)
//   ip netns exec NS node --import tsx test/helpers/kernel-tool.ts latency N       event latency of N rule writes
//   ip netns exec NS node --import tsx test/helpers/kernel-tool.ts echo-probe     steps JSON on stdin → what a filtered
//                                                                                 and an unfiltered event socket received
//
// Host-side fixtures for the kernel tests (namespace creation and cleanup) live here too, so the test files
// share them: createKernelNs().
import { execFileSync } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import * as path from 'node:path';
import type { Plan } from '../../src/core/types';
import { applyPlan } from '../../src/kernel/apply';
import { NetfilterEvents } from '../../src/iptables/monitor';
import { KernelEvents } from '../../src/kernel/events';
import { type EventSocket, type NetlinkEvents } from '../../src/kernel/netlink-events';
import { RawNetlinkSocket } from '../../src/kernel/netlink-package';
import { openNetlink } from '../../src/kernel/netlink';
import { readKernelState } from '../../src/kernel/observe';
import { addRule, deleteRule } from '../../src/kernel/rules';

export const KERNEL_TOOL = path.join(__dirname, 'kernel-tool.ts');

// ---- commands (inside the namespace) ------------------------------------------------------------------

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function dump(): Promise<void> {
  const nl = openNetlink();
  try {
    process.stdout.write(`${JSON.stringify(await readKernelState(nl))}\n`);
  } finally {
    nl.close();
  }
}

/** `withExisted`: the output also lists the indexes (in the plan) of the adds answered EEXIST. */
async function apply(withExisted = false): Promise<void> {
  const plan = JSON.parse(await readStdin()) as Plan;
  const nl = openNetlink();
  try {
    const result = await applyPlan(nl, plan);
    const failed = result.failed.map((f) => ({ change: f.change, code: f.error.code, message: f.error.message }));
    const existed = withExisted ? { existed: result.existed.map((c) => plan.indexOf(c)) } : {};
    process.stdout.write(`${JSON.stringify({ applied: result.applied, failed, ...existed })}\n`);
  } finally {
    nl.close();
  }
}

/** Prints the events of `ev` for `ms` ms; 'ready' says this process's pid (the tests freeze it to stop reading). */
async function events(ev: NetlinkEvents<string>, ms: number): Promise<void> {
  const t0 = performance.now();
  const line = (o: Record<string, unknown>): void => {
    process.stdout.write(`${JSON.stringify({ t: Math.round(performance.now() - t0), ...o })}\n`);
  };
  ev.on('ready', (port) => line({ event: 'ready', pid: process.pid, port }));
  ev.on('change', (kinds) => line({ event: 'change', kinds: [...kinds].sort() }));
  ev.on('lost', (reason) => line({ event: 'lost', reason }));
  if (ev instanceof KernelEvents) ev.on('link', (link) => line({ event: 'link', name: link.name, mac: link.mac, kind: link.kind }));
  await ev.start();
  await new Promise((r) => setTimeout(r, ms));
  await ev.stop();
  line({ event: 'stopped' });
}

async function timeDump(n: number): Promise<void> {
  const nl = openNetlink();
  try {
    const ms: number[] = [];
    let sizes = {};
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      const s = await readKernelState(nl);
      ms.push(performance.now() - t);
      sizes = { links: s.links.length, addresses: s.addresses.length, routes: s.routes.length, rules: s.rules.length };
    }
    ms.sort((a, b) => a - b);
    process.stdout.write(`${JSON.stringify({ sizes, medianMs: ms[Math.floor(n / 2)], maxMs: ms[n - 1] })}\n`);
  } finally {
    nl.close();
  }
}

/** Kernel write (ack received) → 'change' emitted, for N rule adds and N deletes. */
async function latency(n: number): Promise<void> {
  const nl = openNetlink();
  const ev = new KernelEvents();
  const samples: number[] = [];
  try {
    await ev.start();
    for (let i = 0; i < 2 * n; i++) {
      const rule = { family: 4 as const, priority: 30000, table: 10001, protocol: 236, src: '10.99.0.1/32', action: 1 };
      const seen = new Promise<number>((resolve) => {
        const on = (kinds: Set<string>): void => {
          if (!kinds.has('rule')) return;
          ev.off('change', on);
          resolve(performance.now());
        };
        ev.on('change', on);
      });
      const t = performance.now();
      await (i % 2 === 0 ? addRule(nl, rule) : deleteRule(nl, rule));
      samples.push((await seen) - t);
    }
  } finally {
    await ev.stop();
    nl.close();
  }
  samples.sort((a, b) => a - b);
  const at = (q: number): number => Number((samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? NaN).toFixed(3));
  process.stdout.write(`${JSON.stringify({ n: samples.length, p50Ms: at(0.5), p90Ms: at(0.9), maxMs: at(1) })}\n`);
}

/** One step of echo-probe: a write through the request socket, a write by `ip`, or a socket failing. */
export type ProbeStep =
  | { name: string; own: Plan }
  | { name: string; ip: string[] }
  | { name: string; fail: 'request' | 'events' };

/** One datagram as the socket received it: its first message's type, nlmsg_pid, table byte (routes), message count. */
export interface Received { type: number; pid: number; table?: number; messages: number }

export interface ProbeResult {
  name: string;
  /** The request socket's port after the step. */
  port: number | undefined;
  filtered: Received[];
  unfiltered: Received[];
  /** applyPlan's failures, if any (a probe step is expected to succeed). */
  failed: string[];
}

/** A KernelEvents that records every datagram the socket delivers, before any classification. */
class RecordingEvents extends KernelEvents {
  readonly received: Buffer[] = [];
  protected override onMessage(buf: Buffer): void {
    this.received.push(Buffer.from(buf));
    super.onMessage(buf);
  }
}

/**
 * The daemon's wiring (src/daemon/daemon.ts: the request socket's port filters the event socket) against the real
 * kernel: each step, then a marker (`ip link set lo alias mk<n>`, another process) that ends the step once both
 * sockets have read it (a notification is queued before the writer's ACK or exit, so nothing of the step comes after
 * it). Next to the filtered socket, an unfiltered one shows what the kernel sent.
 */
async function echoProbe(): Promise<void> {
  const steps = JSON.parse(await readStdin()) as ProbeStep[];
  const nl = openNetlink();
  const eventSockets: EventSocket[] = [];
  const filtered = new RecordingEvents({
    backoffBaseMs: 10,
    openSocket: (protocol) => {
      const s = new RawNetlinkSocket(protocol, { recvBufferSize: 0, sendBufferSize: 0 });
      eventSockets.push(s);
      return s;
    },
  });
  const unfiltered = new RecordingEvents({ kernelFilter: false });
  const problems: string[] = [];
  filtered.on('unfiltered', (why) => problems.push(why));
  let port: number | undefined;
  nl.onPort = (p) => {
    port = p;
    filtered.ignoreOwnWrites(p);
  };
  const parse = (buf: Buffer): Received => {
    let messages = 0;
    for (let off = 0; off + 16 <= buf.length; off += (buf.readUInt32LE(off) + 3) & ~3) {
      messages++;
      if (buf.readUInt32LE(off) < 16) break;
    }
    const type = buf.readUInt16LE(4);
    return { type, pid: buf.readUInt32LE(12), ...(type === 24 || type === 25 ? { table: buf[20] } : {}), messages };
  };
  const out: ProbeResult[] = [];
  try {
    await filtered.start();
    await unfiltered.start();
    for (const [n, step] of steps.entries()) {
      const from = [filtered.received.length, unfiltered.received.length] as const;
      const failed: string[] = [];
      if ('own' in step) {
        for (const f of (await applyPlan(nl, step.own)).failed) failed.push(f.error.message);
      } else if ('ip' in step) {
        execFileSync('ip', step.ip);
      } else if (step.fail === 'request') {
        // What a socket error does (Netlink drops the socket; the next request opens one with a new port).
        (nl.socket.socket as unknown as EventEmitter).emit('error', new Error('probe: request socket failure'));
      } else {
        const reopened = new Promise<void>((resolve) => filtered.on('lost', (why) => { if (/reopened/.test(why)) resolve(); }));
        (eventSockets[eventSockets.length - 1] as unknown as EventEmitter).emit('error', Object.assign(new Error('probe: event socket failure'), { code: 'EIO' }));
        await reopened;
      }
      const marker = `mk${n}`;
      execFileSync('ip', ['link', 'set', 'dev', 'lo', 'alias', marker]); // lo: always up (a link that is down sends no alias change)
      const isMarker = (b: Buffer): boolean => b.readUInt16LE(4) === 16 && b.includes(`${marker}\0`);
      const deadline = Date.now() + 10_000;
      while (!filtered.received.slice(from[0]).some(isMarker) || !unfiltered.received.slice(from[1]).some(isMarker)) {
        if (Date.now() > deadline) throw new Error(`echo-probe: marker ${marker} not received`);
        await new Promise((r) => setTimeout(r, 5));
      }
      const upTo = (all: Buffer[], start: number): Received[] => {
        const mine = all.slice(start);
        return mine.slice(0, mine.findIndex(isMarker)).map(parse);
      };
      out.push({ name: step.name, port, filtered: upTo(filtered.received, from[0]), unfiltered: upTo(unfiltered.received, from[1]), failed });
    }
  } finally {
    await filtered.stop();
    await unfiltered.stop();
    nl.close();
  }
  process.stdout.write(`${JSON.stringify({ steps: out, problems, eventSockets: eventSockets.length })}\n`);
}

async function main(argv: string[]): Promise<void> {
  const [cmd, arg] = argv;
  switch (cmd) {
    case 'dump': return dump();
    case 'apply': return apply();
    case 'apply-existed': return apply(true);
    case 'events': return events(new KernelEvents({ backoffBaseMs: 50, receiveBufferBytes: argv[2] === undefined ? undefined : Number(argv[2]) }), Number(arg ?? 1000));
    case 'nft-events': return events(new NetfilterEvents(), Number(arg ?? 1000));
    case 'time-dump': return timeDump(Number(arg ?? 20));
    case 'latency': return latency(Number(arg ?? 50));
    case 'echo-probe': return echoProbe();
    default:
      process.stderr.write('usage: kernel-tool.ts dump | apply < plan.json | events MS [BYTES] | nft-events MS | time-dump N | latency N | echo-probe < steps.json\n');
      process.exitCode = 2;
  }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === KERNEL_TOOL) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}

// ---- host-side fixture: one namespace per test file ---------------------------------------------------------

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Kills what runs in `ns` (by pid) and deletes it; silent when it is gone already. */
function destroyNs(ns: string): void {
  try {
    for (const pid of ip(['netns', 'pids', ns]).split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number)) {
      if (pid !== process.pid) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
  } catch {
    // namespace gone
  }
  try {
    ip(['netns', 'del', ns]);
  } catch {
    // gone
  }
}

const live = new Set<string>();
let exitHook = false;

export interface KernelNs {
  ns: string;
  /** `ip -n NS args...`, stdout. */
  ip(args: string[]): string;
  destroy(): void;
}

/**
 * Creates namespace `${base}-${pid}` with lo up and veth pairs v0/v0p (02:00:00:00:00:10 / :11) and v1/v1p
 * (:20 / :21), all up. Stale namespaces `${base}-<dead pid>` of crashed runs are deleted first. Cleanup on
 * destroy(), and on process exit as a safety net.
 */
export function createKernelNs(base: string): KernelNs {
  if (!/^[a-z]{1,6}$/.test(base)) throw new Error(`bad namespace base ${base}`);
  const stale = new RegExp(`^${base}-(\\d+)$`);
  for (const line of ip(['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = stale.exec(name);
    if (m?.[1] !== undefined && !pidAlive(Number(m[1]))) destroyNs(name);
  }
  const ns = `${base}-${process.pid}`;
  destroyNs(ns);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => { for (const n of live) destroyNs(n); });
  }
  live.add(ns);
  ip(['netns', 'add', ns]);
  const nsIp = (args: string[]): string => ip(['-n', ns, ...args]);
  try {
    nsIp(['link', 'set', 'lo', 'up']);
    for (const [i, dev] of ['v0', 'v1'].entries()) {
      nsIp(['link', 'add', dev, 'address', `02:00:00:00:00:${i + 1}0`, 'type', 'veth', 'peer', 'name', `${dev}p`, 'address', `02:00:00:00:00:${i + 1}1`]);
      nsIp(['link', 'set', dev, 'up']);
      nsIp(['link', 'set', `${dev}p`, 'up']);
    }
  } catch (err) {
    destroyNs(ns);
    live.delete(ns);
    throw err;
  }
  return {
    ns,
    ip: nsIp,
    destroy: () => {
      destroyNs(ns);
      live.delete(ns);
    },
  };
}
