// Client of the IMDS simulator's control socket (see sim/imds-server.ts), for tests and the demo.
// Unix sockets live on the filesystem, so this works from any network namespace.
import http from 'node:http';
import type { ImdsServerStats, SimFault, SimInstance } from './imds-server';

export interface ImdsControl {
  setInstance(instance: SimInstance): Promise<void>;
  getInstance(): Promise<SimInstance>;
  setFault(fault: SimFault): Promise<void>;
  expireTokens(): Promise<void>;
  stats(): Promise<ImdsServerStats>;
  resetStats(): Promise<void>;
}

export function imdsControl(socketPath: string, options: { timeoutMs?: number } = {}): ImdsControl {
  const timeoutMs = options.timeoutMs ?? 5000;

  const call = (method: string, path: string, body?: unknown): Promise<string> =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(
        {
          socketPath,
          method,
          path,
          timeout: timeoutMs,
          headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            if (status >= 200 && status <= 299) resolve(text);
            else reject(new Error(`imds control ${method} ${path}: HTTP ${status}: ${text}`));
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`imds control ${method} ${path}: no answer within ${timeoutMs} ms`)));
      req.on('error', (err) => reject(err.message.startsWith('imds control') ? err : new Error(`imds control ${method} ${path} (${socketPath}): ${err.message}`)));
      req.end(payload);
    });

  return {
    async setInstance(instance) { await call('PUT', '/instance', instance); },
    async getInstance() { return JSON.parse(await call('GET', '/instance')) as SimInstance; },
    async setFault(fault) { await call('PUT', '/fault', fault); },
    async expireTokens() { await call('POST', '/expire-tokens'); },
    async stats() { return JSON.parse(await call('GET', '/stats')) as ImdsServerStats; },
    async resetStats() { await call('POST', '/reset-stats'); },
  };
}
