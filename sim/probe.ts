// Packet-level checks between the simulator's namespaces: a TCP server that answers a fixed string,
// and a client probe with a bounded timeout. IPv4 (socat TCP4) and IPv6 (TCP6, addresses in brackets).
import { canonicalAddress } from '../src/core/ip';
import { familyOf } from '../src/core/ip';
import { CommandError, nsArgv, run, startProcess } from './exec';
import type { ManagedProcess } from './exec';

export interface TcpServer {
  readonly ns: string;
  readonly ip: string;
  readonly port: number;
  /** What every connection receives (followed by a newline). */
  readonly answer: string;
  readonly process: ManagedProcess;
  stop(): Promise<void>;
}

export interface StartTcpServerOptions {
  /** Default `ok-<ip>`. Letters, digits, `.`, `_`, `-` only. */
  answer?: string;
  /** How long to wait for the socket to listen. Default 3000 ms. */
  readyTimeoutMs?: number;
}

/** `a.b.c.d:p` or `[x::y]:p`. */
function hostPort(ip: string, port: number): string {
  return familyOf(ip) === 6 ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad port ${port}`);
}

/**
 * socat in `ns`, listening on ip:port, answering each connection with `answer\n` and closing.
 * Resolves once the socket listens (checked with `ss -N ns`); rejects with socat's stderr if it exits first.
 */
export async function startTcpServer(ns: string, ip: string, port: number, opts: StartTcpServerOptions = {}): Promise<TcpServer> {
  const family = familyOf(ip);
  if (family === undefined) throw new Error(`startTcpServer: not an address: ${ip}`);
  checkPort(port);
  const answer = opts.answer ?? `ok-${family === 6 ? canonicalAddress(ip).replace(/:/g, '.') : ip}`;
  // EXEC: splits on spaces, runs no shell; the answer is restricted so socat's address syntax cannot bite.
  if (!/^[A-Za-z0-9._-]+$/.test(answer)) throw new Error(`answer ${JSON.stringify(answer)}: use [A-Za-z0-9._-]`);
  const listen = family === 6 ? `TCP6-LISTEN:${port},bind=[${ip}],ipv6only=1,fork,reuseaddr` : `TCP4-LISTEN:${port},bind=${ip},fork,reuseaddr`;
  const proc = startProcess(nsArgv(ns, ['socat', listen, `EXEC:/bin/echo ${answer}`]));
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 3000);
  for (;;) {
    if (proc.hasExited()) {
      throw new Error(`socat server ${ip}:${port} in ${ns} exited: ${proc.output().stderr.trim()}`);
    }
    const { stdout } = await run(['ss', '-N', ns, '-H', '-l', '-t', '-n', `src ${hostPort(ip, port)}`]);
    if (stdout.trim() !== '') break;
    if (Date.now() > deadline) {
      await proc.stop();
      throw new Error(`socat server ${ip}:${port} in ${ns} not listening after ${opts.readyTimeoutMs ?? 3000} ms`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return { ns, ip, port, answer, process: proc, stop: () => proc.stop(500) };
}

export interface TcpProbeOptions {
  /** Whole-probe bound (connect + answer). Default 2000 ms. */
  timeoutMs?: number;
  /**
   * Fixed client source port. Use the same one for all attempts of one flow: a failed attempt leaves the
   * server retransmitting SYN-ACKs for seconds, and a new port per attempt would multiply them.
   */
  srcPort?: number;
  /** Client source address (default: chosen by the client's routing). */
  srcIp?: string;
}

export interface TcpProbeResult {
  /** Connected and received a non-empty answer. */
  ok: boolean;
  answer?: string;
  /** Why it failed (socat's message, or timeout). */
  error?: string;
  elapsedMs: number;
}

/** One TCP connection attempt from `clientNs` to dstIp:port; never throws for network failures. */
export async function tcpProbe(clientNs: string, dstIp: string, port: number, opts: TcpProbeOptions = {}): Promise<TcpProbeResult> {
  const family = familyOf(dstIp);
  if (family === undefined) throw new Error(`tcpProbe: not an address: ${dstIp}`);
  checkPort(port);
  const timeoutMs = opts.timeoutMs ?? 2000;
  const seconds = (timeoutMs / 1000).toFixed(3);
  const addrOpts = [`connect-timeout=${seconds}`];
  if (opts.srcPort !== undefined) {
    checkPort(opts.srcPort);
    addrOpts.push(`sourceport=${opts.srcPort}`, 'reuseaddr');
  }
  if (opts.srcIp !== undefined) {
    if (familyOf(opts.srcIp) !== family) throw new Error(`bad srcIp ${opts.srcIp} for ${dstIp}`);
    addrOpts.push(family === 6 ? `bind=[${opts.srcIp}]` : `bind=${opts.srcIp}`);
  }
  const target = family === 6 ? `TCP6:[${dstIp}]:${port}` : `TCP4:${dstIp}:${port}`;
  const argv = nsArgv(clientNs, ['socat', '-T', seconds, '-u', `${target},${addrOpts.join(',')}`, 'STDOUT']);
  const started = Date.now();
  try {
    // The outer bound leaves socat room to report its own timeout first.
    const { stdout } = await run(argv, { timeoutMs: timeoutMs + 1000 });
    const answer = stdout.trim();
    const elapsedMs = Date.now() - started;
    return answer === '' ? { ok: false, answer, error: 'connected, empty answer', elapsedMs } : { ok: true, answer, elapsedMs };
  } catch (err) {
    const elapsedMs = Date.now() - started;
    if (err instanceof CommandError) {
      return { ok: false, error: err.timedOut ? 'timeout' : err.stderr.trim() || err.message, elapsedMs };
    }
    throw err;
  }
}

/** Retries tcpProbe on the same flow (same source port) until it succeeds or `deadlineMs` passes. */
export async function waitForTcp(
  clientNs: string,
  dstIp: string,
  port: number,
  opts: { deadlineMs?: number; attemptTimeoutMs?: number; srcPort: number; srcIp?: string },
): Promise<TcpProbeResult> {
  const deadline = Date.now() + (opts.deadlineMs ?? 10_000);
  let last: TcpProbeResult;
  do {
    const probeOpts: TcpProbeOptions = { timeoutMs: opts.attemptTimeoutMs ?? 1500, srcPort: opts.srcPort };
    if (opts.srcIp !== undefined) probeOpts.srcIp = opts.srcIp;
    last = await tcpProbe(clientNs, dstIp, port, probeOpts);
    if (last.ok) return last;
    if (last.elapsedMs < 200) await new Promise((r) => setTimeout(r, 200));
  } while (Date.now() < deadline);
  return last;
}
