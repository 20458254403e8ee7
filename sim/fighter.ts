// Another tool fighting ec2netd (a misconfigured network manager): one `ip -force -batch -` process in the
// namespace that is told to delete the same object every `everyMs`, as fast as a loop would, without the
// cost of one `ip` process per attempt (which would measure fork, not ec2netd).
import { spawn } from 'node:child_process';

export interface Fighter {
  /** Stops deleting; resolves with the number of delete commands sent. */
  stop(): Promise<number>;
}

/** `command`: an `ip` batch line, e.g. "rule del from 10.0.1.20 lookup 10001 pref 10100". */
export function startFighter(ns: string, command: string, everyMs = 1): Fighter {
  const child = spawn('ip', ['-n', ns, '-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'ignore'] });
  child.stdin.on('error', () => undefined); // ip gone: nothing left to fight
  const exited = new Promise<void>((resolve) => { child.once('exit', () => resolve()); child.once('error', () => resolve()); });
  let sent = 0;
  const line = `${command}\n`;
  const timer = setInterval(() => {
    if (child.stdin.writable) { child.stdin.write(line); sent++; }
  }, everyMs);
  return {
    async stop() {
      clearInterval(timer);
      child.stdin.end();
      const killer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(killer);
      return sent;
    },
  };
}
