// Types for the parts of unix-dgram 2.0.7 that src/systemd uses (the package ships none).
// `sendto` with a callback reports errors synchronously: the callback runs before `send` returns.
declare module 'unix-dgram' {
  import { EventEmitter } from 'node:events';

  export interface UnixDgramError extends Error {
    /** Negative errno, e.g. -2 (ENOENT), -111 (ECONNREFUSED), -11 (EAGAIN), -90 (EMSGSIZE). */
    errno: number;
    code: number;
    syscall?: string;
  }

  export class UnixDgramSocket extends EventEmitter {
    fd: number;
    bind(path: string): void;
    connect(path: string): void;
    send(buf: Buffer, offset: number, length: number, path: string, callback: (err?: UnixDgramError) => void): void;
    close(): void;
  }

  export function createSocket(type: 'unix_dgram', listener?: (msg: Buffer) => void): UnixDgramSocket;
}
