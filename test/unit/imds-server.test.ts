import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { imdsControl } from '../../sim/imds-control';
import {
  exampleInstance, parseListen, startControlServer, startImdsServer, validateFault, validateInstance,
  type ImdsServer, type SimInstance,
} from '../../sim/imds-server';

const MAC0 = '0e:aa:00:00:00:01';
const MAC1 = '0e:aa:00:00:00:02';
const MACS = '/latest/meta-data/network/interfaces/macs/';

function fixture(): SimInstance {
  return {
    primaryMac: MAC0,
    enis: [
      {
        mac: MAC0, deviceNumber: 0, networkCard: 0, interfaceId: 'eni-01', ipv4s: ['10.0.1.10', '10.0.1.11'],
        subnetIpv4Cidr: '10.0.1.0/24', vpcIpv4Cidrs: ['10.0.0.0/16', '10.1.0.0/16'], subnetId: 'subnet-1', vpcId: 'vpc-1',
      },
      {
        mac: MAC1, deviceNumber: 1, networkCard: 2, interfaceId: 'eni-02', ipv4s: ['10.0.2.20'], subnetIpv4Cidr: '10.0.2.0/24',
        ipv6s: ['2600::1', '2600::2'], subnetIpv6Cidrs: ['2600::/64'], hide: ['interface-id'], override: { 'ipv4-prefix': 'raw;value\n' },
      },
    ],
  };
}

let sim: ImdsServer;
let dir: string;
beforeEach(async () => {
  sim = await startImdsServer({ host: '127.0.0.1', port: 0, instance: fixture() });
  dir = mkdtempSync(join(tmpdir(), 'imds-sim-'));
});
afterEach(async () => {
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
});

async function put(headers: Record<string, string> = { 'X-aws-ec2-metadata-token-ttl-seconds': '60' }, base = sim.url): Promise<Response> {
  return fetch(`${base}/latest/api/token`, { method: 'PUT', headers });
}
async function token(base = sim.url): Promise<string> {
  const res = await put(undefined, base);
  expect(res.status).toBe(200);
  return res.text();
}
async function get(path: string, tok?: string, base = sim.url): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(`${base}${path}`, { headers: tok === undefined ? {} : { 'X-aws-ec2-metadata-token': tok } });
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') };
}

describe('IMDS simulator: tokens', () => {
  it.each([[undefined], ['0'], ['21601'], ['abc'], ['-1'], ['']])('answers 400 to a token PUT with TTL header %s', async (ttl) => {
    const res = await put(ttl === undefined ? {} : { 'X-aws-ec2-metadata-token-ttl-seconds': ttl });
    expect(res.status).toBe(400);
  });

  it('issues tokens for TTLs 1..21600 and echoes the TTL', async () => {
    for (const ttl of ['1', '21600']) {
      const res = await put({ 'X-aws-ec2-metadata-token-ttl-seconds': ttl });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-aws-ec2-metadata-token-ttl-seconds')).toBe(ttl);
      expect((await res.text()).length).toBeGreaterThan(20);
    }
    expect(sim.stats().tokenPuts).toBe(2);
  });

  it('refuses a token GET and a proxied token PUT', async () => {
    expect((await get('/latest/api/token')).status).toBe(405);
    expect((await put({ 'X-aws-ec2-metadata-token-ttl-seconds': '60', 'X-Forwarded-For': '1.2.3.4' })).status).toBe(403);
  });

  it('answers 401 without a token (IMDSv1), with an unknown one, and after expiry', async () => {
    expect((await get('/latest/meta-data/mac')).status).toBe(401);
    expect((await get('/latest/meta-data/mac', 'made-up')).status).toBe(401);
    const tok = await token();
    expect((await get('/latest/meta-data/mac', tok)).status).toBe(200);
    sim.expireTokens();
    expect((await get('/latest/meta-data/mac', tok)).status).toBe(401);
    expect(sim.stats().unauthorized).toBe(3);
  });

  it('lets a token expire after its TTL', async () => {
    const res = await put({ 'X-aws-ec2-metadata-token-ttl-seconds': '1' });
    const tok = await res.text();
    expect((await get('/latest/meta-data/mac', tok)).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect((await get('/latest/meta-data/mac', tok)).status).toBe(401);
  });
});

describe('IMDS simulator: formats', () => {
  let tok: string;
  beforeEach(async () => {
    tok = await token();
  });

  it('serves scalars as text/plain without a trailing newline', async () => {
    expect(await get('/latest/meta-data/mac', tok)).toEqual({ status: 200, body: MAC0, type: 'text/plain' });
    expect((await get('/latest/meta-data/local-ipv4', tok)).body).toBe('10.0.1.10');
  });

  it('serves sorted directory listings with sub-directories ending in /', async () => {
    expect((await get('/latest/meta-data/', tok)).body).toBe('local-ipv4\nmac\nnetwork/');
    expect((await get('/latest/meta-data/network', tok)).body).toBe('interfaces/');
    expect((await get(MACS, tok)).body).toBe(`${MAC0}/\n${MAC1}/`);
    expect((await get(`${MACS}${MAC0}/`, tok)).body).toBe([
      'device-number', 'interface-id', 'local-ipv4s', 'mac', 'network-card', 'network-card-index', 'subnet-id',
      'subnet-ipv4-cidr-block', 'vpc-id', 'vpc-ipv4-cidr-block', 'vpc-ipv4-cidr-blocks',
    ].join('\n'));
  });

  it('serves per-ENI keys, both network-card spellings, and newline-separated lists', async () => {
    const key = async (mac: string, name: string): Promise<{ status: number; body: string }> => {
      const { status, body } = await get(`${MACS}${mac}/${name}`, tok);
      return { status, body };
    };
    expect(await key(MAC0, 'local-ipv4s')).toEqual({ status: 200, body: '10.0.1.10\n10.0.1.11' });
    expect(await key(MAC0, 'vpc-ipv4-cidr-block')).toEqual({ status: 200, body: '10.0.0.0/16' });
    expect(await key(MAC0, 'vpc-ipv4-cidr-blocks')).toEqual({ status: 200, body: '10.0.0.0/16\n10.1.0.0/16' });
    expect(await key(MAC1, 'network-card')).toEqual({ status: 200, body: '2' });
    expect(await key(MAC1, 'network-card-index')).toEqual({ status: 200, body: '2' });
    expect(await key(MAC1, 'device-number')).toEqual({ status: 200, body: '1' });
    expect(await key(MAC1, 'ipv6s')).toEqual({ status: 200, body: '2600::1\n2600::2' });
    expect(await key(MAC1, 'subnet-ipv6-cidr-blocks')).toEqual({ status: 200, body: '2600::/64' });
  });

  it('answers 404 for absent keys, hidden keys (still listed), and leaves asked as directories', async () => {
    expect((await get(`${MACS}${MAC0}/ipv6s`, tok)).status).toBe(404);
    expect((await get(`${MACS}${MAC0}/ipv4-prefix`, tok)).status).toBe(404);
    expect((await get(`${MACS}${MAC1}/interface-id`, tok)).status).toBe(404);
    expect((await get(`${MACS}${MAC1}/`, tok)).body.split('\n')).toContain('interface-id');
    expect((await get('/latest/meta-data/mac/', tok)).status).toBe(404);
    expect((await get('/latest/meta-data//mac', tok)).status).toBe(404);
    expect((await get('/latest/user-data', tok)).status).toBe(404);
  });

  it('serves override bodies raw', async () => {
    expect((await get(`${MACS}${MAC1}/ipv4-prefix`, tok)).body).toBe('raw;value\n');
  });

  it('serves a new instance after setInstance', async () => {
    sim.setInstance({ ...fixture(), primaryMac: MAC1 });
    expect((await get('/latest/meta-data/mac', tok)).body).toBe(MAC1);
    expect(sim.getInstance().primaryMac).toBe(MAC1);
  });
});

describe('IMDS simulator: faults and stats', () => {
  it('applies a fault to matching paths only, count times, then answers normally', async () => {
    const tok = await token();
    sim.setFault({ mode: 'status', code: 503, pathRegex: '/mac$', count: 2 });
    expect((await get('/latest/meta-data/local-ipv4', tok)).status).toBe(200);
    expect((await get('/latest/meta-data/mac', tok)).status).toBe(503);
    expect((await get('/latest/meta-data/mac', tok)).status).toBe(503);
    expect((await get('/latest/meta-data/mac', tok)).status).toBe(200);
    expect(sim.stats().faults).toBe(2);
  });

  it('applies a fault without a regex to every request, token PUTs included', async () => {
    sim.setFault({ mode: 'status', code: 500 });
    expect((await put()).status).toBe(500);
    sim.setFault({ mode: 'ok' });
    expect((await put()).status).toBe(200);
  });

  it('resets connections', async () => {
    sim.setFault({ mode: 'reset', count: 1 });
    await expect(put()).rejects.toThrow('fetch failed');
    expect(sim.stats().log.at(-1)).toEqual({ method: 'PUT', path: '/latest/api/token', status: 'reset' });
  });

  it('hangs until the client gives up', async () => {
    sim.setFault({ mode: 'hang', count: 1 });
    await expect(fetch(`${sim.url}/latest/api/token`, { method: 'PUT', signal: AbortSignal.timeout(100) })).rejects.toThrow();
    expect(sim.stats().log.at(-1)?.status).toBe('hang');
  });

  it('delays answers', async () => {
    sim.setFault({ mode: 'slow', delayMs: 150 });
    const started = Date.now();
    expect((await put()).status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });

  it('serves a raw body, chunked, without content-length', async () => {
    sim.setFault({ mode: 'body', body: 'y'.repeat(100_000), pathRegex: '/mac$' });
    const res = await fetch(`${sim.url}/latest/meta-data/mac`);
    expect(res.headers.get('content-length')).toBeNull();
    expect((await res.text()).length).toBe(100_000);
  });

  it('counts requests per path and token PUTs, and keeps a log', async () => {
    const tok = await token();
    await get('/latest/meta-data/mac', tok);
    await get('/latest/meta-data/mac', tok);
    await get('/latest/meta-data/nothing', tok);
    const stats = sim.stats();
    expect(stats.tokenPuts).toBe(1);
    expect(stats.requests).toBe(4);
    expect(stats.byPath).toEqual({ '/latest/api/token': 1, '/latest/meta-data/mac': 2, '/latest/meta-data/nothing': 1 });
    expect(stats.log.map((entry) => entry.status)).toEqual([200, 200, 200, 404]);
    sim.resetStats();
    expect(sim.stats().requests).toBe(0);
  });
});

describe('IMDS simulator: shape checks', () => {
  it('rejects malformed instances and faults with a message naming the field', () => {
    expect(() => validateInstance({ primaryMac: 1, enis: [] })).toThrow('instance.primaryMac must be a string');
    expect(() => validateInstance({ ...fixture(), enis: [{ ...fixture().enis[0], deviceNumber: '1' }] }))
      .toThrow('instance.enis[0].deviceNumber must be an integer');
    expect(() => validateInstance({ ...fixture(), enis: [{ ...fixture().enis[0], override: { a: 1 } }] }))
      .toThrow('instance.enis[0].override must map keys to strings');
    expect(() => validateFault({ mode: 'explode' })).toThrow('fault.mode must be');
    expect(() => validateFault({ mode: 'status', code: 42 })).toThrow('fault.code must be an HTTP status');
    expect(() => validateFault({ mode: 'ok', pathRegex: '(' })).toThrow(SyntaxError);
    expect(() => validateFault({ mode: 'hang', count: 0 })).toThrow('fault.count must be a positive integer');
    expect(validateInstance(exampleInstance())).toEqual(exampleInstance());
  });

  it('parses --listen', () => {
    expect(parseListen('169.254.169.254:80')).toEqual({ host: '169.254.169.254', port: 80 });
    expect(parseListen('[fd00:ec2::254]:80')).toEqual({ host: 'fd00:ec2::254', port: 80 });
    expect(() => parseListen('localhost')).toThrow('--listen must be HOST:PORT');
    expect(() => parseListen('1.2.3.4:99999')).toThrow('--listen must be HOST:PORT');
  });
});

describe('IMDS simulator: control socket', () => {
  it('drives the simulator through the unix socket', async () => {
    const socket = join(dir, 'control.sock');
    const control = await startControlServer(sim, socket);
    try {
      const ctl = imdsControl(socket);
      expect((await ctl.getInstance()).primaryMac).toBe(MAC0);
      await ctl.setInstance({ ...fixture(), primaryMac: MAC1 });
      const tok = await token();
      expect((await get('/latest/meta-data/mac', tok)).body).toBe(MAC1);
      await ctl.expireTokens();
      expect((await get('/latest/meta-data/mac', tok)).status).toBe(401);
      await ctl.setFault({ mode: 'status', code: 502, count: 1 });
      expect((await put()).status).toBe(502);
      const stats = await ctl.stats();
      expect(stats.tokenPuts).toBe(1);
      expect(stats.faults).toBe(1);
      await ctl.resetStats();
      expect((await ctl.stats()).requests).toBe(0);
      await expect(ctl.setFault({ mode: 'nope' } as never)).rejects.toThrow('HTTP 400: fault.mode must be');
    } finally {
      await control.close();
    }
  });

  it('reports a socket that is not there', async () => {
    await expect(imdsControl(join(dir, 'missing.sock')).stats()).rejects.toThrow(/imds control GET \/stats .*ENOENT/);
  });

  it('runs standalone: prints ready, serves the instance file, exits 0 on SIGTERM', async () => {
    const socket = join(dir, 'standalone.sock');
    const file = join(dir, 'instance.json');
    writeFileSync(file, JSON.stringify(fixture()));
    const child = spawn(process.execPath, [
      '--import', 'tsx', join(__dirname, '../../sim/imds-server.ts'),
      '--listen', '127.0.0.1:0', '--control', socket, '--instance', file,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          const match = /^ready (http:\/\/\S+)\n/.exec(out);
          if (match?.[1] !== undefined) resolve(match[1]);
        });
        void exited.then((code) => reject(new Error(`exited ${code}: ${stderr}`)));
      });
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const tok = await token(url);
      expect((await get('/latest/meta-data/mac', tok, url)).body).toBe(MAC0);
      await imdsControl(socket).setFault({ mode: 'status', code: 500, count: 1 });
      expect((await put(undefined, url)).status).toBe(500);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(existsSync(socket)).toBe(false);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('standalone: fails clearly on bad arguments', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, '../../sim/imds-server.ts'), '--listen', 'nowhere'],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(code).toBe(1);
    expect(stderr).toContain('--listen must be HOST:PORT');
  });
});
