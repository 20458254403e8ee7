// A client connecting all along: a new TCP connection to ip:port every `everyMs`, each from a fresh source port and
// abandoned after `timeoutMs` (shorter than the 1 s SYN retransmission, so a late answer to an early attempt never
// counts), each reported as one JSON line: {"start":ms,"end":ms,"answer":"..."|null} (Date.now() clock).
// Used by the failover test and benchmark to see, to `everyMs`, when an address stops and starts being answered.
//
// The other end, startAnswerServer: a node server answering `answer\n` at once (socat forking /bin/echo per
// connection drops connections at 50 a second on a busy machine).
//
// Library: startConnectLoop(ns, ip, port) runs it in a namespace. Standalone:
//   node dist/sim/connect-loop.js IP PORT EVERY_MS TIMEOUT_MS
//   node dist/sim/connect-loop.js --serve IP PORT ANSWER      (prints `ready` when listening)
import { existsSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import path from 'node:path';
import { nsArgv, startProcess, type ManagedProcess } from './exec';

export interface Attempt {
  start: number;
  end: number;
  /** The server's answer (trimmed), null when the attempt got none within the timeout. */
  answer: string | null;
}

export interface ConnectLoop {
  readonly process: ManagedProcess;
  /** Attempts finished so far, in order of their end. */
  attempts(): Attempt[];
  stop(): Promise<void>;
}

/** The built copy under dist/ (run `npm run build` first), from sim/ (tests) or dist/sim/ (the built bench). */
function builtScript(): string {
  const root = [path.resolve(__dirname, '..'), path.resolve(__dirname, '..', '..')].find((d) => existsSync(path.join(d, 'package.json'))) ?? '.';
  return path.join(root, 'dist', 'sim', 'connect-loop.js');
}

/** Runs the loop in namespace `ns`. */
export function startConnectLoop(ns: string, ip: string, port: number, opts: { everyMs?: number; timeoutMs?: number } = {}): ConnectLoop {
  const proc = startProcess(nsArgv(ns, [process.execPath, builtScript(), ip, String(port), String(opts.everyMs ?? 20), String(opts.timeoutMs ?? 150)]));
  return {
    process: proc,
    attempts: () => proc.output().stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Attempt),
    stop: () => proc.stop(500),
  };
}

/** A server in namespace `ns` answering every connection to ip:port with `answer`; resolves once it listens. */
export async function startAnswerServer(ns: string, ip: string, port: number, answer: string): Promise<ManagedProcess> {
  const proc = startProcess(nsArgv(ns, [process.execPath, builtScript(), '--serve', ip, String(port), answer]));
  const deadline = Date.now() + 10_000;
  while (!proc.output().stdout.includes('ready')) {
    if (proc.hasExited() || Date.now() > deadline) {
      await proc.stop(200);
      throw new Error(`answer server ${ip}:${port} in ${ns} did not start: ${proc.output().stderr}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return proc;
}

/** The first attempt answered `answer` that started at or after `from`. */
export function firstAnswered(attempts: readonly Attempt[], answer: string, from: number): Attempt | undefined {
  return attempts.filter((a) => a.answer === answer && a.start >= from).sort((x, y) => x.start - y.start)[0];
}

function attempt(ip: string, port: number, timeoutMs: number): void {
  const start = Date.now();
  let data = '';
  let done = false;
  const finish = (answer: string | null): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    socket.destroy();
    process.stdout.write(`${JSON.stringify({ start, end: Date.now(), answer })}\n`);
  };
  const socket = connect({ host: ip, port });
  const timer = setTimeout(() => finish(null), timeoutMs);
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => { data += chunk; });
  socket.on('end', () => finish(data.trim() === '' ? null : data.trim()));
  socket.on('error', () => finish(null));
}

function serve(ip: string, port: number, answer: string): void {
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.end(`${answer}\n`);
  });
  server.listen({ host: ip, port, backlog: 1024 }, () => process.stdout.write('ready\n'));
  const stop = (): void => { server.close(); process.exit(0); };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

function main(argv: string[]): void {
  if (argv[0] === '--serve') {
    serve(argv[1] ?? '0.0.0.0', Number(argv[2]), argv[3] ?? 'ok');
    return;
  }
  const [ip, port, every, timeout] = argv;
  if (ip === undefined || port === undefined) throw new Error('usage: connect-loop IP PORT [EVERY_MS] [TIMEOUT_MS]');
  const timer = setInterval(() => attempt(ip, Number(port), Number(timeout ?? 150)), Number(every ?? 20));
  const stop = (): void => { clearInterval(timer); setTimeout(() => process.exit(0), Number(timeout ?? 150) + 50); };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (require.main === module) main(process.argv.slice(2));
