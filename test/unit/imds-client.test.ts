import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defaultImdsEndpoint } from '../../src/config';
import { ImdsClient, imdsPath, splitList, type ImdsConfig } from '../../src/imds/client';
import { ImdsError } from '../../src/imds/errors';
import { exampleInstance, startImdsServer, type ImdsServer } from '../../sim/imds-server';

const MAC_PATH = '/latest/meta-data/mac';
const PRIMARY = exampleInstance().primaryMac;

let sim: ImdsServer;
let sleeps: number[];

beforeEach(async () => {
  sim = await startImdsServer({ host: '127.0.0.1', port: 0, instance: exampleInstance() });
  sleeps = [];
});
afterEach(async () => {
  await sim.close();
});

function config(over: Partial<ImdsConfig> = {}): ImdsConfig {
  return {
    endpoint: sim.url, timeoutMs: 3000, tokenTtlSeconds: 60, attempts: 4,
    backoffBaseMs: 10, backoffMaxMs: 40, maxBodyBytes: 64 * 1024, ...over,
  };
}

function client(over: Partial<ImdsConfig> = {}, now?: () => number): ImdsClient {
  return new ImdsClient(config(over), {
    sleep: async (ms) => { sleeps.push(ms); },
    random: () => 0.5,
    ...(now === undefined ? {} : { now }),
  });
}

async function failure(promise: Promise<unknown>): Promise<ImdsError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(ImdsError);
    return err as ImdsError;
  }
  throw new Error('expected the request to fail');
}

describe('ImdsClient tokens', () => {
  it('fetches one token for many GETs, sequential and concurrent', async () => {
    const c = client();
    expect(await c.get('meta-data/mac')).toBe(PRIMARY);
    const answers = await Promise.all(Array.from({ length: 10 }, () => c.get('/latest/meta-data/mac')));
    expect(answers).toEqual(Array(10).fill(PRIMARY));
    for (let i = 0; i < 5; i++) await c.get('meta-data/local-ipv4');
    expect(sim.stats().tokenPuts).toBe(1);
    expect(c.stats().tokenFetches).toBe(1);
    expect(sim.stats().byPath[MAC_PATH]).toBe(11);
  });

  it('shares one token PUT between concurrent first requests', async () => {
    const c = client();
    await Promise.all(Array.from({ length: 8 }, () => c.get('meta-data/mac')));
    expect(sim.stats().tokenPuts).toBe(1);
  });

  it('refreshes the token after 90 % of its TTL, not before', async () => {
    let now = 1_000;
    const c = client({ tokenTtlSeconds: 60 }, () => now);
    await c.get('meta-data/mac');
    now += 53_999;
    await c.get('meta-data/mac');
    expect(sim.stats().tokenPuts).toBe(1);
    now += 2;
    await c.get('meta-data/mac');
    expect(sim.stats().tokenPuts).toBe(2);
    await c.get('meta-data/mac');
    expect(sim.stats().tokenPuts).toBe(2);
  });

  it('asks for the configured TTL', async () => {
    await client({ tokenTtlSeconds: 21600 }).get('meta-data/mac');
    await expect(client({ tokenTtlSeconds: 21601 }).get('meta-data/mac')).rejects.toThrow('HTTP 400');
  });

  it('fetches a new token once when a GET answers 401', async () => {
    const c = client();
    await c.get('meta-data/mac');
    sim.expireTokens();
    expect(await c.get('meta-data/mac')).toBe(PRIMARY);
    const stats = sim.stats();
    expect(stats.tokenPuts).toBe(2);
    expect(stats.unauthorized).toBe(1);
    expect(sleeps).toEqual([]);
  });

  it('refetches only one token when many concurrent GETs see 401', async () => {
    const c = client();
    await c.get('meta-data/mac');
    sim.expireTokens();
    await Promise.all(Array.from({ length: 6 }, () => c.get('meta-data/mac')));
    expect(sim.stats().tokenPuts).toBe(2);
  });

  it('gives up when a fresh token is refused too', async () => {
    const c = client();
    sim.setFault({ mode: 'status', code: 401, pathRegex: '/mac$' });
    const err = await failure(c.get('meta-data/mac'));
    expect(err.message).toBe(`IMDS GET ${MAC_PATH}: HTTP 401 even with a fresh token`);
    expect(err.status).toBe(401);
    expect(sim.stats().byPath[MAC_PATH]).toBe(2);
    expect(sim.stats().tokenPuts).toBe(2);
  });

  it('never falls back to IMDSv1 when the token PUT is refused or absent', async () => {
    for (const code of [403, 404, 405]) {
      sim.resetStats();
      sim.setFault({ mode: 'status', code, pathRegex: '^/latest/api/token$' });
      const err = await failure(client().get('meta-data/mac'));
      expect(err.message.startsWith(`IMDS PUT /latest/api/token: HTTP ${code}`)).toBe(true);
      expect(err.path).toBe('/latest/api/token');
      expect(sim.stats().byPath[MAC_PATH]).toBeUndefined();
    }
  });

  it('retries the token PUT like any request', async () => {
    sim.setFault({ mode: 'status', code: 503, pathRegex: 'token', count: 2 });
    expect(await client().get('meta-data/mac')).toBe(PRIMARY);
    expect(sim.stats().byPath['/latest/api/token']).toBe(3);
    expect(sleeps).toEqual([5, 10]);
  });
});

describe('ImdsClient answers', () => {
  it('returns undefined for 404 and splits lists', async () => {
    const c = client();
    expect(await c.get('meta-data/no-such-key')).toBeUndefined();
    expect(await c.list('meta-data/no-such-dir/')).toBeUndefined();
    expect(await c.list('meta-data/network/interfaces/macs/')).toEqual([`${PRIMARY}/`]);
    expect(sleeps).toEqual([]);
  });

  it('splitList drops empty lines and carriage returns', () => {
    expect(splitList('a\nb')).toEqual(['a', 'b']);
    expect(splitList('a\r\n\n\nb\n')).toEqual(['a', 'b']);
    expect(splitList('')).toEqual([]);
  });

  it('rejects paths that are not IMDS paths', () => {
    expect(imdsPath('meta-data/mac')).toBe(MAC_PATH);
    expect(() => imdsPath('meta-data/../../etc/passwd')).toThrow(ImdsError);
    expect(() => imdsPath('meta-data/mac?x=1')).toThrow('not an IMDS path');
    expect(() => imdsPath('/other/path')).toThrow(ImdsError);
  });

  it('accepts an endpoint with a trailing slash', async () => {
    expect(await client({ endpoint: `${sim.url}/` }).get('meta-data/mac')).toBe(PRIMARY);
  });
});

describe('ImdsClient retries', () => {
  it.each([500, 503, 429])('retries HTTP %i with exponential backoff and full jitter', async (code) => {
    sim.setFault({ mode: 'status', code, pathRegex: '/mac$', count: 3 });
    expect(await client().get('meta-data/mac')).toBe(PRIMARY);
    // random() = 0.5 of min(40, 10 * 2^(n-1)).
    expect(sleeps).toEqual([5, 10, 20]);
    expect(sim.stats().byPath[MAC_PATH]).toBe(4);
  });

  it('gives up after `attempts` with a message naming the path', async () => {
    sim.setFault({ mode: 'status', code: 500, pathRegex: '/mac$' });
    const err = await failure(client().get('meta-data/mac'));
    expect(err.message).toBe(`IMDS GET ${MAC_PATH}: HTTP 500 after 4 attempts`);
    expect(err.path).toBe(MAC_PATH);
    expect(err.kind).toBe('http');
    expect(err.attempts).toBe(4);
    expect(sim.stats().byPath[MAC_PATH]).toBe(4);
  });

  it('caps the backoff at backoffMaxMs', async () => {
    sim.setFault({ mode: 'status', code: 500, pathRegex: '/mac$' });
    await failure(client({ attempts: 6 }).get('meta-data/mac'));
    expect(sleeps).toEqual([5, 10, 20, 20, 20]);
  });

  it('draws the jitter from the whole [0, cap) range', async () => {
    const c = new ImdsClient(config(), { sleep: async (ms) => { sleeps.push(ms); }, random: () => 0.999 });
    sim.setFault({ mode: 'status', code: 500, pathRegex: '/mac$', count: 3 });
    await c.get('meta-data/mac');
    expect(sleeps).toEqual([9, 19, 39]);
  });

  it.each([400, 403, 405])('does not retry HTTP %i', async (code) => {
    sim.setFault({ mode: 'status', code, pathRegex: '/mac$' });
    const err = await failure(client().get('meta-data/mac'));
    expect(err.message).toBe(`IMDS GET ${MAC_PATH}: HTTP ${code} (not retried)`);
    expect(sim.stats().byPath[MAC_PATH]).toBe(1);
    expect(sleeps).toEqual([]);
  });

  it('retries a connection reset', async () => {
    sim.setFault({ mode: 'reset', pathRegex: '/mac$', count: 2 });
    expect(await client().get('meta-data/mac')).toBe(PRIMARY);
    expect(sim.stats().byPath[MAC_PATH]).toBe(3);
    expect(sleeps).toHaveLength(2);
  });

  it('reports resets that never stop', async () => {
    sim.setFault({ mode: 'reset', pathRegex: '/mac$' });
    const err = await failure(client({ attempts: 3 }).get('meta-data/mac'));
    expect(err.kind).toBe('network');
    expect(err.message).toMatch(new RegExp(`^IMDS GET ${MAC_PATH}: .*after 3 attempts$`));
  });

  it('retries a request that hangs past the timeout', async () => {
    sim.setFault({ mode: 'hang', pathRegex: '/mac$', count: 1 });
    const started = Date.now();
    // Long enough that the second attempt answers in time on a loaded machine.
    expect(await client({ timeoutMs: 500 }).get('meta-data/mac')).toBe(PRIMARY);
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
    expect(sim.stats().byPath[MAC_PATH]).toBe(2);
  });

  it('reports timeouts that never stop', async () => {
    sim.setFault({ mode: 'slow', delayMs: 1000, pathRegex: '/mac$' });
    const err = await failure(client({ timeoutMs: 100, attempts: 2 }).get('meta-data/mac'));
    expect(err.kind).toBe('timeout');
    expect(err.message).toBe(`IMDS GET ${MAC_PATH}: no answer within 100 ms after 2 attempts`);
  });

  it('reports a refused connection', async () => {
    const url = sim.url;
    await sim.close();
    sim = await startImdsServer({ host: '127.0.0.1', port: 0, instance: exampleInstance() });
    const err = await failure(client({ endpoint: url, attempts: 2 }).get('meta-data/mac'));
    expect(err.kind).toBe('network');
    expect(err.message).toBe('IMDS PUT /latest/api/token: connection failed (ECONNREFUSED) after 2 attempts');
  });
});

describe('ImdsClient body cap', () => {
  it('stops reading a body larger than maxBodyBytes and does not retry', async () => {
    sim.setFault({ mode: 'body', body: 'x'.repeat(1024 * 1024), pathRegex: '/mac$' });
    const err = await failure(client().get('meta-data/mac'));
    expect(err.kind).toBe('too-large');
    expect(err.message).toBe(`IMDS GET ${MAC_PATH}: body larger than 65536 bytes (not retried)`);
    expect(sim.stats().byPath[MAC_PATH]).toBe(1);
  });

  it('accepts a body of exactly maxBodyBytes and refuses one byte more', async () => {
    sim.setFault({ mode: 'body', body: 'a'.repeat(1024), pathRegex: '/mac$', count: 1 });
    expect(await client({ maxBodyBytes: 1024 }).get('meta-data/mac')).toHaveLength(1024);
    sim.setFault({ mode: 'body', body: 'a'.repeat(1025), pathRegex: '/mac$', count: 1 });
    await expect(client({ maxBodyBytes: 1024 }).get('meta-data/mac')).rejects.toThrow('body larger than 1024 bytes');
  });

  it('refuses a body that is not UTF-8', async () => {
    sim.setFault({ mode: 'body', body: Buffer.from([0x31, 0xff, 0x32]).toString('base64'), encoding: 'base64', pathRegex: '/mac$' });
    const err = await failure(client().get('meta-data/mac'));
    expect(err.kind).toBe('encoding');
    expect(err.message).toBe(`IMDS GET ${MAC_PATH}: body is not UTF-8 text (not retried)`);
  });
});

describe('defaultImdsEndpoint', () => {
  it('uses the IPv4 endpoint by default', () => {
    expect(defaultImdsEndpoint({})).toBe('http://169.254.169.254');
    expect(defaultImdsEndpoint({ AWS_EC2_METADATA_SERVICE_ENDPOINT: '' })).toBe('http://169.254.169.254');
    expect(defaultImdsEndpoint({ AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE: 'IPv4' })).toBe('http://169.254.169.254');
  });

  it('uses the IPv6 endpoint in IPv6 mode, case-insensitively', () => {
    expect(defaultImdsEndpoint({ AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE: 'IPv6' })).toBe('http://[fd00:ec2::254]');
    expect(defaultImdsEndpoint({ AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE: 'ipv6' })).toBe('http://[fd00:ec2::254]');
  });

  it('prefers an explicit endpoint and strips trailing slashes', () => {
    expect(defaultImdsEndpoint({
      AWS_EC2_METADATA_SERVICE_ENDPOINT: 'http://127.0.0.1:8080//',
      AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE: 'IPv6',
    })).toBe('http://127.0.0.1:8080');
  });
});

describe('ImdsClient connections', () => {
  it('reuses connections within a burst of reads, and survives a server that closes idle ones at once', async () => {
    const http = await import('node:http');
    let connections = 0;
    const server = http.createServer((req, res) => {
      if (req.method === 'PUT') res.end('token');
      else res.end(PRIMARY);
    });
    server.on('connection', () => { connections++; });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as { port: number }).port;
      const c = new ImdsClient(config({ endpoint: `http://127.0.0.1:${port}` }));
      await Promise.all(Array.from({ length: 40 }, () => c.get('meta-data/mac')));
      for (let i = 0; i < 40; i++) await c.get('meta-data/mac');
      // 81 requests (a PUT and 80 GETs), at most 16 at once: not a connection each.
      expect(connections).toBeLessThanOrEqual(17);
      // A server that drops every idle connection after 1 ms: requests spaced around that still all answer.
      server.keepAliveTimeout = 1;
      for (let i = 0; i < 20; i++) {
        expect(await c.get('meta-data/mac')).toBe(PRIMARY);
        await new Promise((r) => setTimeout(r, i % 3));
      }
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
