// One ec2netd per network namespace: the daemon listens on the abstract unix socket `@ec2netd.instance`. An
// abstract socket is scoped to the network namespace and released by the kernel when its holder dies (even by
// SIGKILL), so there is no stale lock file to clean up. `flush` takes the same lock for its duration, so a
// daemon cannot start in the middle of it, and names the daemon that holds it.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:net';

export const INSTANCE_SOCKET = 'ec2netd.instance';

export class InstanceLockHeld extends Error {
  override name = 'InstanceLockHeld';
  constructor(readonly pid: number | undefined) {
    super(`another ec2netd is already running in this network namespace${pid === undefined ? '' : ` (pid ${pid})`}`);
  }
}

/** Takes the lock; rejects with InstanceLockHeld (naming the holder when /proc shows it) when it is taken. */
export function acquireInstanceLock(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EADDRINUSE') {
        reject(err);
        return;
      }
      void instanceLockHolder().then((pid) => reject(new InstanceLockHeld(pid)), () => reject(new InstanceLockHeld(undefined)));
    });
    server.listen(`\0${INSTANCE_SOCKET}`, () => {
      server.unref();
      resolve(server);
    });
  });
}

/**
 * Inodes of the sockets bound to `@name` in /proc/net/unix (which shows the reader's network namespace):
 * `Num RefCount Protocol Flags Type St Inode Path`. Node binds abstract names with the whole sun_path, so the
 * name is followed by NUL bytes, which the kernel shows as '@'.
 */
export function socketInodes(procNetUnix: string, name: string): Set<string> {
  const out = new Set<string>();
  for (const line of procNetUnix.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[6] !== undefined && fields[7] !== undefined && fields[7].replace(/@+$/, '') === `@${name}`) out.add(fields[6]);
  }
  return out;
}

/**
 * The pid holding the lock: its socket inode in /proc/net/unix, then the process whose fd points at it. Synchronous:
 * it runs only when the lock is taken, before anything else, and node:fs/promises would cost 1 MB resident.
 */
export async function instanceLockHolder(proc = '/proc'): Promise<number | undefined> {
  const inodes = socketInodes(readFileSync(`${proc}/net/unix`, 'utf8'), INSTANCE_SOCKET);
  if (inodes.size === 0) return undefined;
  const targets = new Set([...inodes].map((i) => `socket:[${i}]`));
  for (const entry of readdirSync(proc)) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let fds: string[];
    try {
      fds = readdirSync(`${proc}/${entry}/fd`);
    } catch {
      continue; // gone, or not ours to read
    }
    for (const fd of fds) {
      let target = '';
      try {
        target = readlinkSync(`${proc}/${entry}/fd/${fd}`);
      } catch {
        // closed meanwhile
      }
      if (targets.has(target)) return Number(entry);
    }
  }
  return undefined;
}
