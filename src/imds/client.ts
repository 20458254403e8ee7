// A small IMDSv2 client on node:http. Why not @aws-sdk: see docs/dependencies.md — the SDK
// clients fetch a token per request, have no default timeout, and fall back to IMDSv1 unless told not to.
//
// Behaviour:
// - IMDSv2 only: a token from PUT /latest/api/token is cached and reused until 90 % of its TTL has passed, and
//   fetched again once when a GET answers 401 (tokens expire early when IMDS restarts). Never falls back to v1.
// - Every request has its own timeout, covering headers and body (a timer that destroys the request).
// - Network errors, timeouts, 5xx and 429 are retried with exponential backoff and full jitter; other 4xx are not.
// - 404 means "absent key": get() returns undefined.
// - Bodies are read as a stream and abandoned as soon as they pass maxBodyBytes (content-length is not trusted).
import http from 'node:http';
import { urlToHttpOptions } from 'node:url';
import type { Config } from '../config';
import { ImdsError, ImdsValidationError, type ImdsErrorKind } from './errors';

export type ImdsConfig = Pick<
  Config['imds'],
  'endpoint' | 'timeoutMs' | 'tokenTtlSeconds' | 'attempts' | 'backoffBaseMs' | 'backoffMaxMs' | 'maxBodyBytes'
>;

/** Injectable for tests: time, randomness and the sleep between attempts. */
export interface ImdsClientDeps {
  sleep?: (ms: number) => Promise<void>;
  /** Uniform in [0, 1): the jitter. */
  random?: () => number;
  /** Milliseconds, monotonic enough for token expiry. */
  now?: () => number;
}

/** What the snapshot reader needs: tests can hand it a fake. */
export interface ImdsReader {
  /** The body of a key, or undefined when IMDS answers 404 (absent key). */
  get(path: string): Promise<string | undefined>;
}

export interface ImdsClientStats {
  /** Token PUTs that succeeded. */
  tokenFetches: number;
  /** HTTP requests sent (token PUTs, GETs, retries). */
  requests: number;
  /** Attempts that were retried after a failure. */
  retries: number;
}

/** A token is refreshed after this fraction of its TTL, so it never expires while in use. */
export const TOKEN_REFRESH_FRACTION = 0.9;

const TOKEN_PATH = '/latest/api/token';
const TTL_HEADER = 'X-aws-ec2-metadata-token-ttl-seconds';
const TOKEN_HEADER = 'X-aws-ec2-metadata-token';
const USER_AGENT = 'ec2netd';
// Characters IMDS paths are made of (MACs bring the colons); no `..`, no query, no fragment.
const PATH_RE = /^\/latest\/[A-Za-z0-9._:/-]*$/;
const DOTDOT_RE = /\/\.\.(?:\/|$)/;
/** Stateless when not streaming: one for every body. */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

type Method = 'GET' | 'PUT';

/** One answer that ends a request: a body, or a status the caller handles (404 absent, 401 token refused). */
type Answer = { status: 200; body: string } | { status: 401 | 404 };

/** One attempt that failed; `retriable` says whether another attempt may succeed. */
interface Failure {
  retriable: boolean;
  kind: ImdsErrorKind;
  reason: string;
  status?: number;
  cause?: unknown;
}

type Attempt = { ok: true; answer: Answer } | { ok: false; failure: Failure };

/** Splits an IMDS list (newline-separated, no trailing newline) into entries; empty lines are dropped. */
export function splitList(body: string): string[] {
  return body.split('\n').map((line) => (line.endsWith('\r') ? line.slice(0, -1) : line)).filter((line) => line !== '');
}

/** `meta-data/mac` and `/latest/meta-data/mac` both name /latest/meta-data/mac. */
export function imdsPath(path: string): string {
  const full = path.startsWith('/') ? path : `/latest/${path}`;
  if (!PATH_RE.test(full) || DOTDOT_RE.test(full)) {
    throw new ImdsValidationError(full, 'not an IMDS path', path);
  }
  return full;
}

const realSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class ImdsClient implements ImdsReader {
  private readonly config: ImdsConfig;
  private readonly target: http.RequestOptions;
  /** The endpoint's own path, if it has one (before /latest/...). */
  private readonly prefix: string;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly random: () => number;
  private readonly now: () => number;
  private token: { value: string; refreshAt: number } | undefined;
  private tokenInFlight: Promise<string> | undefined;
  private readonly counters: ImdsClientStats = { tokenFetches: 0, requests: 0, retries: 0 };
  /**
   * Kept-alive connections within a burst of reads (a whole read is ~10 requests per ENI): a cold 15-ENI read
   * took 176-180 ms with a connection per request and 108-164 ms with reuse, a warm one 70-100 ms against 30-50
   * (docs/performance.md). A free connection is closed after 1 s idle, long before IMDS closes it, so a stale
   * socket is rare; when it happens, the request fails as a network error and is retried like any other.
   */
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 16, timeout: 1000 });

  constructor(config: ImdsConfig, deps: ImdsClientDeps = {}) {
    this.config = config;
    // Parsed once: a URL string per request cost node:http a URL parse each time.
    const url = new URL(config.endpoint);
    const { protocol, hostname, port } = urlToHttpOptions(url);
    this.target = { protocol, hostname, port };
    this.prefix = url.pathname.replace(/\/+$/, '');
    this.sleep = deps.sleep ?? realSleep;
    this.random = deps.random ?? Math.random;
    this.now = deps.now ?? (() => performance.now());
  }

  /** The body of an IMDS key (`meta-data/mac` or `/latest/meta-data/mac`); undefined when IMDS answers 404. */
  async get(path: string): Promise<string | undefined> {
    const full = imdsPath(path);
    let token = await this.getToken();
    let answer = await this.request('GET', full, { [TOKEN_HEADER]: token, 'user-agent': USER_AGENT });
    if (answer.status === 401) {
      // Expired or unknown token (IMDS restarted, clock jump): fetch a new one, once.
      this.dropToken(token);
      token = await this.getToken();
      answer = await this.request('GET', full, { [TOKEN_HEADER]: token, 'user-agent': USER_AGENT });
      if (answer.status === 401) {
        throw new ImdsError(full, `IMDS GET ${full}: HTTP 401 even with a fresh token`, {
          kind: 'http', method: 'GET', status: 401,
        });
      }
    }
    if (answer.status !== 200) return undefined;
    return answer.body;
  }

  /** A newline-separated list key as entries (empty lines dropped); undefined when absent. */
  async list(path: string): Promise<string[] | undefined> {
    const body = await this.get(path);
    return body === undefined ? undefined : splitList(body);
  }

  stats(): ImdsClientStats {
    return { ...this.counters };
  }

  private async getToken(): Promise<string> {
    if (this.token !== undefined && this.now() < this.token.refreshAt) return this.token.value;
    // Concurrent callers share one PUT.
    this.tokenInFlight ??= this.fetchToken().finally(() => {
      this.tokenInFlight = undefined;
    });
    return this.tokenInFlight;
  }

  /** Forgets `token` unless another caller already replaced it. */
  private dropToken(token: string): void {
    if (this.token?.value === token) this.token = undefined;
  }

  private async fetchToken(): Promise<string> {
    const started = this.now();
    const ttl = this.config.tokenTtlSeconds;
    const answer = await this.request('PUT', TOKEN_PATH, { [TTL_HEADER]: String(ttl), 'user-agent': USER_AGENT });
    if (answer.status !== 200) {
      // No IMDSv1 fallback: a token endpoint that is absent or refuses is an error.
      throw new ImdsError(TOKEN_PATH, `IMDS PUT ${TOKEN_PATH}: HTTP ${answer.status} (IMDSv2 token refused; no IMDSv1 fallback)`, {
        kind: 'http', method: 'PUT', status: answer.status,
      });
    }
    const value = answer.body.trim();
    if (!/^[\x21-\x7e]{1,1024}$/.test(value)) {
      throw new ImdsValidationError(TOKEN_PATH, 'the token is not 1 to 1024 printable characters', answer.body);
    }
    this.token = { value, refreshAt: started + ttl * 1000 * TOKEN_REFRESH_FRACTION };
    this.counters.tokenFetches++;
    return value;
  }

  /** Sends one request with retries; throws ImdsError when every attempt failed or one failed for good. */
  private async request(method: Method, path: string, headers: Record<string, string>): Promise<Answer> {
    const attempts = Math.max(1, this.config.attempts);
    for (let attempt = 1; ; attempt++) {
      const result = await this.attempt(method, path, headers);
      if (result.ok) return result.answer;
      const { failure } = result;
      if (!failure.retriable || attempt >= attempts) {
        const tail = attempt > 1 ? ` after ${attempt} attempts` : failure.retriable ? '' : ' (not retried)';
        throw new ImdsError(path, `IMDS ${method} ${path}: ${failure.reason}${tail}`, {
          kind: failure.kind, method, status: failure.status, attempts: attempt, cause: failure.cause,
        });
      }
      this.counters.retries++;
      await this.sleep(this.backoff(attempt));
    }
  }

  /** Full jitter: uniform in [0, min(max, base * 2^(n-1))). */
  private backoff(retry: number): number {
    const cap = Math.min(this.config.backoffMaxMs, this.config.backoffBaseMs * 2 ** (retry - 1));
    return Math.floor(this.random() * cap);
  }

  private async attempt(method: Method, path: string, headers: Record<string, string>): Promise<Attempt> {
    this.counters.requests++;
    let response: HttpAnswer;
    try {
      response = await httpRequest(this.target, this.prefix + path, method, headers, this.config.timeoutMs, this.config.maxBodyBytes, this.agent);
    } catch (err) {
      if (err instanceof RequestTimeout) {
        return { ok: false, failure: { retriable: true, kind: 'timeout', reason: `no answer within ${this.config.timeoutMs} ms` } };
      }
      const stage = (err as { stage?: string }).stage === 'body' ? 'body cut short' : 'connection failed';
      return { ok: false, failure: { retriable: true, kind: 'network', reason: `${stage} (${networkReason(err)})`, cause: err } };
    }
    const { status } = response;
    if (status < 200 || status > 299) {
      if (status === 401 || status === 404) return { ok: true, answer: { status } };
      const retriable = status >= 500 || status === 429;
      return { ok: false, failure: { retriable, kind: 'http', reason: `HTTP ${status}`, status } };
    }
    if (response.body === undefined) {
      return { ok: false, failure: { retriable: false, kind: 'too-large', reason: `body larger than ${this.config.maxBodyBytes} bytes` } };
    }
    let text: string;
    try {
      text = UTF8.decode(response.body);
    } catch {
      return { ok: false, failure: { retriable: false, kind: 'encoding', reason: 'body is not UTF-8 text' } };
    }
    return { ok: true, answer: { status: 200, body: text } };
  }
}

interface HttpAnswer {
  status: number;
  /** The body of a 2xx answer; undefined when it grew past the cap (the connection is then dropped). */
  body?: Buffer;
}

/** The per-request timeout fired (headers or body not there in time). */
class RequestTimeout extends Error {}

/**
 * One HTTP request with node:http. Not the global fetch: undici costs ~13 MB of resident memory for a daemon
 * that makes a few hundred small requests a minute (docs/performance.md). Non-2xx bodies are drained unread;
 * a 2xx body is read up to `maxBytes` and never buffered past it (content-length is not trusted).
 * The timeout is a plain timer that destroys the request: an AbortSignal per attempt cost a signal, its timer and
 * the abort listeners node:http hangs on it (docs/performance.md, "The IMDS read's CPU").
 */
function httpRequest(
  target: http.RequestOptions, path: string, method: Method, headers: Record<string, string>, timeoutMs: number, maxBytes: number, agent: http.Agent,
): Promise<HttpAnswer> {
  return new Promise((done, fail) => {
    let settled = false;
    const resolve = (answer: HttpAnswer): void => {
      settled = true;
      clearTimeout(timer);
      done(answer);
    };
    const reject = (err: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fail(err);
    };
    const req = http.request({ ...target, path, method, headers, agent }, (res) => {
      const status = res.statusCode ?? 0;
      if (status < 200 || status > 299) {
        res.resume();
        res.on('end', () => resolve({ status }));
        res.on('error', () => resolve({ status }));
        return;
      }
      const chunks: Buffer[] = [];
      let total = 0;
      res.on('data', (chunk: Buffer) => {
        total += chunk.length;
        if (total > maxBytes) {
          resolve({ status }); // first: destroying emits 'aborted', which must not count as a network error
          res.destroy();
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => resolve({ status, body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks) }));
      res.on('error', (err) => reject(Object.assign(err, { stage: 'body' })));
      res.on('aborted', () => reject(Object.assign(new Error('aborted'), { code: 'ECONNRESET', stage: 'body' })));
    });
    const timer = setTimeout(() => {
      const err = new RequestTimeout(`no answer within ${timeoutMs} ms`);
      reject(err);
      req.destroy(err);
    }, timeoutMs);
    req.on('error', reject);
    req.end();
  });
}

/** `ECONNRESET`, `ECONNREFUSED`, ... from the error (or its causes), else its message. */
function networkReason(err: unknown): string {
  let current: unknown = err;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code !== '') return code;
    current = current.cause;
  }
  return err instanceof Error ? err.message : String(err);
}
