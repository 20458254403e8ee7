// An IMDSv2 simulator with the real formats, for tests and the demo.
//
// Formats (docs/ec2-networking.md §3): text/plain, no trailing newline; lists newline-separated; directory
// listings sorted, sub-directories ending in `/`; a key with no value is absent (404), not empty. Tokens: PUT
// /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds 1..21600 (else 400); every GET needs a valid token
// (else 401, so IMDSv1 GETs fail too).
//
// Faults: one active fault at a time, optionally limited to paths matching `pathRegex` and to `count` requests
// (then back to ok). Faults are applied before the token check, to token PUTs too when the regex matches them.
//
// Library: startImdsServer({ host, port, instance }). Standalone:
//   node dist/sim/imds-server.js --listen HOST:PORT [--control /path/control.sock] [--instance file.json]
// prints `ready <url>` when listening, and serves a control API on the unix socket (reachable from any network
// namespace): PUT /instance, GET /instance, PUT /fault, POST /expire-tokens, GET /stats, POST /reset-stats.
import { randomBytes } from 'node:crypto';
import { lstatSync, readFileSync, unlinkSync, chmodSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** One ENI as the simulator serves it. Values are served as given (not validated), so tests can be hostile. */
export interface SimEni {
  mac: string;
  deviceNumber: number;
  networkCard: number;
  interfaceId: string;
  ipv4s: string[];
  ipv4Prefixes?: string[];
  ipv6s?: string[];
  ipv6Prefixes?: string[];
  subnetIpv4Cidr: string;
  subnetIpv6Cidrs?: string[];
  vpcIpv4Cidrs?: string[];
  subnetId?: string;
  vpcId?: string;
  /** Keys (e.g. `device-number`) that answer 404 while still listed in the MAC's directory. */
  hide?: string[];
  /** Keys that still answer while the MAC's directory listing no longer names them. */
  unlisted?: string[];
  /** Raw body per key, served instead of the derived value (malformed values, extra keys). */
  override?: Record<string, string>;
}

export interface SimInstance {
  primaryMac: string;
  enis: SimEni[];
}

export type SimFault = (
  | { mode: 'ok' }
  | { mode: 'status'; code: number }
  | { mode: 'hang' }
  | { mode: 'reset' }
  | { mode: 'slow'; delayMs: number }
  /** Answers 200 with this body (chunked, no content-length); `base64` for bytes that are not UTF-8. */
  | { mode: 'body'; body: string; encoding?: 'utf8' | 'base64' }
) & {
  /** Only requests whose path matches (JavaScript RegExp source); all requests when absent. */
  pathRegex?: string;
  /** Fault this many matching requests, then back to ok; forever when absent. */
  count?: number;
};

export interface ImdsLogEntry {
  method: string;
  path: string;
  /** HTTP status, or what a fault did instead of answering. */
  status: number | 'hang' | 'reset';
}

export interface ImdsServerStats {
  requests: number;
  /** Successful token PUTs. */
  tokenPuts: number;
  /** Requests per path (all methods). */
  byPath: Record<string, number>;
  /** GETs refused for lack of a valid token. */
  unauthorized: number;
  /** Requests a fault answered. */
  faults: number;
  /** The last 1000 requests, oldest first. */
  log: ImdsLogEntry[];
}

export interface ImdsServer {
  /** Base URL, e.g. http://127.0.0.1:41234. */
  url: string;
  close(): Promise<void>;
  setInstance(instance: SimInstance): void;
  getInstance(): SimInstance;
  setFault(fault: SimFault): void;
  /** Makes every issued token unknown: the next GET with one answers 401. */
  expireTokens(): void;
  stats(): ImdsServerStats;
  resetStats(): void;
}

export interface ImdsServerOptions {
  host: string;
  port: number;
  instance: SimInstance;
}

const TOKEN_PATH = '/latest/api/token';
const MAX_TOKENS = 10_000;
const LOG_LIMIT = 1000;

/** `unlisted`: served, but left out of its directory's listing. */
type Node = { kind: 'dir'; children: Map<string, Node> } | { kind: 'leaf'; body: string; unlisted?: boolean } | { kind: 'hidden' };

function dir(): { kind: 'dir'; children: Map<string, Node> } {
  return { kind: 'dir', children: new Map() };
}

/** Builds the served tree: /latest/meta-data/... */
function buildTree(instance: SimInstance): Node {
  const macs = dir();
  for (const eni of instance.enis) {
    const keys = new Map<string, string | undefined>([
      ['device-number', String(eni.deviceNumber)],
      ['network-card', String(eni.networkCard)],
      ['network-card-index', String(eni.networkCard)],
      ['interface-id', eni.interfaceId],
      ['mac', eni.mac],
      ['local-ipv4s', listBody(eni.ipv4s)],
      ['ipv4-prefix', listBody(eni.ipv4Prefixes)],
      ['ipv6s', listBody(eni.ipv6s)],
      ['ipv6-prefix', listBody(eni.ipv6Prefixes)],
      ['subnet-ipv4-cidr-block', eni.subnetIpv4Cidr],
      ['subnet-ipv6-cidr-blocks', listBody(eni.subnetIpv6Cidrs)],
      ['vpc-ipv4-cidr-block', eni.vpcIpv4Cidrs?.[0]],
      ['vpc-ipv4-cidr-blocks', listBody(eni.vpcIpv4Cidrs)],
      ['subnet-id', eni.subnetId],
      ['vpc-id', eni.vpcId],
    ]);
    const node = dir();
    for (const [key, body] of keys) if (body !== undefined && body !== '') node.children.set(key, { kind: 'leaf', body });
    for (const [key, body] of Object.entries(eni.override ?? {})) node.children.set(key, { kind: 'leaf', body });
    for (const key of eni.hide ?? []) node.children.set(key, { kind: 'hidden' });
    for (const key of eni.unlisted ?? []) {
      const leaf = node.children.get(key);
      if (leaf?.kind === 'leaf') leaf.unlisted = true;
    }
    macs.children.set(eni.mac, node);
  }
  const interfaces = dir();
  interfaces.children.set('macs', macs);
  const network = dir();
  network.children.set('interfaces', interfaces);
  const metaData = dir();
  metaData.children.set('mac', { kind: 'leaf', body: instance.primaryMac });
  const primary = instance.enis.find((eni) => eni.mac === instance.primaryMac);
  if (primary?.ipv4s[0] !== undefined) metaData.children.set('local-ipv4', { kind: 'leaf', body: primary.ipv4s[0] });
  metaData.children.set('network', network);
  const latest = dir();
  latest.children.set('meta-data', metaData);
  const root = dir();
  root.children.set('latest', latest);
  return root;
}

function listBody(values: string[] | undefined): string | undefined {
  return values === undefined || values.length === 0 ? undefined : values.join('\n');
}

/** The body for a GET path, or undefined for 404. Directories answer with their sorted listing. */
function lookup(root: Node, path: string): string | undefined {
  const trailing = path.endsWith('/');
  const parts = path.split('/').slice(1);
  if (trailing) parts.pop();
  let node: Node | undefined = root;
  for (const part of parts) {
    if (node?.kind !== 'dir' || part === '') return undefined;
    node = node.children.get(part);
  }
  if (node === undefined || node.kind === 'hidden') return undefined;
  if (node.kind === 'leaf') return trailing ? undefined : node.body;
  return [...node.children.entries()]
    .filter(([, child]) => child.kind !== 'leaf' || child.unlisted !== true)
    .map(([name, child]) => (child.kind === 'dir' ? `${name}/` : name))
    .sort()
    .join('\n');
}

export async function startImdsServer(options: ImdsServerOptions): Promise<ImdsServer> {
  let instance = validateInstance(options.instance);
  let tree = buildTree(instance);
  let fault: SimFault = { mode: 'ok' };
  let faultRegex: RegExp | undefined;
  const tokens = new Map<string, number>();
  let stats = emptyStats();
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();

  const record = (method: string, path: string, status: ImdsLogEntry['status']): void => {
    stats.log.push({ method, path, status });
    if (stats.log.length > LOG_LIMIT) stats.log.shift();
  };
  const send = (res: http.ServerResponse, method: string, path: string, status: number, body: string, headers: Record<string, string> = {}): void => {
    record(method, path, status);
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)), ...headers });
    res.end(body);
  };
  const delay = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        resolve();
      }, ms);
      timers.add(timer);
    });

  /** The fault for this request, consuming one of its count. */
  const takeFault = (path: string): SimFault | undefined => {
    if (fault.mode === 'ok' || (faultRegex !== undefined && !faultRegex.test(path))) return undefined;
    const current = fault;
    if (current.count !== undefined) {
      const left = current.count - 1;
      if (left <= 0) {
        fault = { mode: 'ok' };
        faultRegex = undefined;
      } else {
        fault = { ...current, count: left };
      }
    }
    stats.faults++;
    return current;
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    stats.requests++;
    stats.byPath[path] = (stats.byPath[path] ?? 0) + 1;

    const injected = takeFault(path);
    switch (injected?.mode) {
      case 'status':
        return send(res, method, path, injected.code, http.STATUS_CODES[injected.code] ?? 'Error');
      case 'hang':
        record(method, path, 'hang');
        return; // Never answers; close() destroys the socket.
      case 'reset':
        record(method, path, 'reset');
        req.socket.resetAndDestroy();
        return;
      case 'slow':
        await delay(injected.delayMs);
        if (res.destroyed || req.socket.destroyed) return;
        break;
      case 'body': {
        // Chunked, without content-length: the client has to count.
        record(method, path, 200);
        res.writeHead(200, { 'content-type': 'text/plain' });
        const body = Buffer.from(injected.body, injected.encoding ?? 'utf8');
        for (let at = 0; at < body.length; at += 16_384) res.write(body.subarray(at, at + 16_384));
        res.end();
        return;
      }
      default:
        break;
    }

    if (path === TOKEN_PATH) {
      if (method !== 'PUT') return send(res, method, path, 405, 'Method Not Allowed', { allow: 'PUT' });
      // Real IMDS refuses token requests that went through a proxy.
      if (req.headers['x-forwarded-for'] !== undefined) return send(res, method, path, 403, 'Forbidden');
      const ttlText = req.headers['x-aws-ec2-metadata-token-ttl-seconds'];
      const ttl = typeof ttlText === 'string' && /^\d{1,5}$/.test(ttlText) ? Number(ttlText) : NaN;
      if (!(ttl >= 1 && ttl <= 21600)) return send(res, method, path, 400, 'Bad Request');
      const token = randomBytes(42).toString('base64url');
      tokens.set(token, Date.now() + ttl * 1000);
      while (tokens.size > MAX_TOKENS) {
        const oldest = tokens.keys().next().value;
        if (oldest === undefined) break;
        tokens.delete(oldest);
      }
      stats.tokenPuts++;
      return send(res, method, path, 200, token, { 'x-aws-ec2-metadata-token-ttl-seconds': String(ttl) });
    }
    if (method !== 'GET' && method !== 'HEAD') return send(res, method, path, 405, 'Method Not Allowed');
    const token = req.headers['x-aws-ec2-metadata-token'];
    const expires = typeof token === 'string' ? tokens.get(token) : undefined;
    if (expires === undefined || expires <= Date.now()) {
      stats.unauthorized++;
      return send(res, method, path, 401, 'Unauthorized');
    }
    const body = lookup(tree, path);
    if (body === undefined) return send(res, method, path, 404, 'Not Found');
    return send(res, method, path, 200, body);
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`simulator error: ${err instanceof Error ? err.message : String(err)}`);
      }
    });
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  return {
    url: `http://${host}:${address.port}`,
    async close(): Promise<void> {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
    setInstance(next: SimInstance): void {
      instance = validateInstance(next);
      tree = buildTree(instance);
    },
    getInstance(): SimInstance {
      return structuredClone(instance);
    },
    setFault(next: SimFault): void {
      const checked = validateFault(next);
      faultRegex = checked.pathRegex === undefined ? undefined : new RegExp(checked.pathRegex);
      fault = checked;
    },
    expireTokens(): void {
      tokens.clear();
    },
    stats(): ImdsServerStats {
      return structuredClone(stats);
    },
    resetStats(): void {
      stats = emptyStats();
    },
  };
}

function emptyStats(): ImdsServerStats {
  return { requests: 0, tokenPuts: 0, byPath: {}, unauthorized: 0, faults: 0, log: [] };
}

// ---- shape checks (the control API takes JSON from outside) ----

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isStringList(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string');
}

function expect(condition: boolean, message: string): void {
  if (!condition) throw new Error(message);
}

/** Checks the shape of an instance (types only: values may be malformed on purpose). Returns a copy. */
export function validateInstance(value: unknown): SimInstance {
  expect(isRecord(value), 'instance must be an object');
  const doc = value as Record<string, unknown>;
  expect(typeof doc.primaryMac === 'string', 'instance.primaryMac must be a string');
  expect(Array.isArray(doc.enis), 'instance.enis must be an array');
  (doc.enis as unknown[]).forEach((eni, i) => {
    const at = `instance.enis[${i}]`;
    expect(isRecord(eni), `${at} must be an object`);
    const e = eni as Record<string, unknown>;
    for (const key of ['mac', 'interfaceId', 'subnetIpv4Cidr']) expect(typeof e[key] === 'string', `${at}.${key} must be a string`);
    for (const key of ['deviceNumber', 'networkCard']) expect(Number.isInteger(e[key]), `${at}.${key} must be an integer`);
    expect(isStringList(e.ipv4s), `${at}.ipv4s must be a list of strings`);
    for (const key of ['ipv4Prefixes', 'ipv6s', 'ipv6Prefixes', 'subnetIpv6Cidrs', 'vpcIpv4Cidrs', 'hide', 'unlisted']) {
      expect(e[key] === undefined || isStringList(e[key]), `${at}.${key} must be a list of strings`);
    }
    for (const key of ['subnetId', 'vpcId']) expect(e[key] === undefined || typeof e[key] === 'string', `${at}.${key} must be a string`);
    expect(
      e.override === undefined || (isRecord(e.override) && Object.values(e.override).every((v) => typeof v === 'string')),
      `${at}.override must map keys to strings`,
    );
  });
  return structuredClone(doc) as unknown as SimInstance;
}

export function validateFault(value: unknown): SimFault {
  expect(isRecord(value), 'fault must be an object');
  const f = value as Record<string, unknown>;
  expect(f.pathRegex === undefined || typeof f.pathRegex === 'string', 'fault.pathRegex must be a string');
  if (typeof f.pathRegex === 'string') new RegExp(f.pathRegex); // throws SyntaxError naming the problem
  expect(f.count === undefined || (Number.isInteger(f.count) && (f.count as number) >= 1), 'fault.count must be a positive integer');
  switch (f.mode) {
    case 'ok':
    case 'hang':
    case 'reset':
      break;
    case 'status':
      expect(Number.isInteger(f.code) && (f.code as number) >= 200 && (f.code as number) <= 599, 'fault.code must be an HTTP status');
      break;
    case 'slow':
      expect(Number.isInteger(f.delayMs) && (f.delayMs as number) >= 0, 'fault.delayMs must be a non-negative integer');
      break;
    case 'body':
      expect(typeof f.body === 'string', 'fault.body must be a string');
      expect(f.encoding === undefined || f.encoding === 'utf8' || f.encoding === 'base64', 'fault.encoding must be utf8 or base64');
      break;
    default:
      throw new Error('fault.mode must be ok, status, hang, reset, slow or body');
  }
  return structuredClone(f) as unknown as SimFault;
}

// ---- control API on a unix socket ----

const CONTROL_BODY_LIMIT = 32 * 1024 * 1024;

export interface ControlServer {
  close(): Promise<void>;
}

/** Serves the control API for `imds` on a unix socket (a stale socket file there is replaced). */
export async function startControlServer(imds: ImdsServer, socketPath: string): Promise<ControlServer> {
  const server = http.createServer((req, res) => {
    const reply = (status: number, body?: unknown): void => {
      const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
      res.writeHead(status, { 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json' });
      res.end(text);
    };
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > CONTROL_BODY_LIMIT) {
        reply(413, 'body too large');
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (res.headersSent) return;
      const route = `${req.method ?? 'GET'} ${(req.url ?? '/').split('?')[0] ?? '/'}`;
      try {
        const json = (): unknown => JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
        switch (route) {
          case 'PUT /instance': imds.setInstance(validateInstance(json())); return reply(204);
          case 'GET /instance': return reply(200, imds.getInstance());
          case 'PUT /fault': imds.setFault(validateFault(json())); return reply(204);
          case 'POST /expire-tokens': imds.expireTokens(); return reply(204);
          case 'GET /stats': return reply(200, imds.stats());
          case 'POST /reset-stats': imds.resetStats(); return reply(204);
          default: return reply(404, `no route ${route}`);
        }
      } catch (err) {
        return reply(400, err instanceof Error ? err.message : String(err));
      }
    });
  });
  removeStaleSocket(socketPath);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  chmodSync(socketPath, 0o600);
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

// ---- standalone process ----

/** One primary ENI in 10.0.1.0/24: the instance served when no --instance file is given. */
export function exampleInstance(): SimInstance {
  return {
    primaryMac: '0e:00:00:00:01:01',
    enis: [{
      mac: '0e:00:00:00:01:01',
      deviceNumber: 0,
      networkCard: 0,
      interfaceId: 'eni-0000000000000001',
      ipv4s: ['10.0.1.10'],
      subnetIpv4Cidr: '10.0.1.0/24',
      vpcIpv4Cidrs: ['10.0.0.0/16'],
      subnetId: 'subnet-0000000000000001',
      vpcId: 'vpc-0000000000000001',
    }],
  };
}

export function parseListen(value: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = Number(match?.[3]);
  const host = match?.[1] ?? match?.[2];
  if (host === undefined || !(port >= 0 && port <= 65535)) throw new Error(`--listen must be HOST:PORT or [V6]:PORT, got "${value}"`);
  return { host, port };
}

async function main(argv: string[]): Promise<void> {
  const args = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i] ?? '';
    const value = argv[i + 1];
    if (!['--listen', '--control', '--instance'].includes(name) || value === undefined) {
      throw new Error('usage: imds-server --listen HOST:PORT [--control SOCKET] [--instance FILE.json]');
    }
    args.set(name, value);
  }
  const listen = parseListen(args.get('--listen') ?? '');
  const file = args.get('--instance');
  const instance = file === undefined ? exampleInstance() : validateInstance(JSON.parse(readFileSync(file, 'utf8')) as unknown);
  const imds = await startImdsServer({ ...listen, instance });
  const controlPath = args.get('--control');
  const control = controlPath === undefined ? undefined : await startControlServer(imds, controlPath);
  const stop = (): void => {
    void Promise.all([control?.close(), imds.close()]).finally(() => {
      if (controlPath !== undefined) removeStaleSocket(controlPath);
      process.exit(0);
    });
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  process.stdout.write(`ready ${imds.url}\n`);
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`imds-server: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
