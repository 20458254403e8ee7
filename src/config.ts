// Configuration: defaults, the JSON config file, and validation with errors that name the setting.
import { readFileSync } from 'node:fs';

export interface Config {
  imds: {
    /** Base URL; default from AWS_EC2_METADATA_SERVICE_ENDPOINT(_MODE), else http://169.254.169.254. */
    endpoint: string;
    timeoutMs: number;
    tokenTtlSeconds: number;
    /** Attempts per request on network errors, 5xx and 429 (exponential backoff with full jitter). */
    attempts: number;
    backoffBaseMs: number;
    backoffMaxMs: number;
    maxBodyBytes: number;
    /** Periodic refresh: secondary-IP changes produce no kernel event. */
    refreshIntervalMs: number;
    /** Fraction of the interval added or removed at random, so a fleet does not poll in step. */
    refreshJitter: number;
  };
  /** Table of an ENI = tableBase + tablePerCard * network-card + device-number. */
  tableBase: number;
  tablePerCard: number;
  /** rtnetlink protocol stamped on every route and rule ec2netd creates: its ownership marker. */
  protocol: number;
  priorities: {
    /** `to <container bridge> lookup main`, ahead of the source rules. */
    toContainers: number;
    /** `from <ENI address or prefix> lookup T`. */
    fromAddress: number;
    /** `fwmark V/M lookup T` (connection marks for replies from containers). */
    fwmark: number;
  };
  /**
   * rtnetlink kinds of links that may be ENIs IMDS has not described yet (a new one makes ec2netd ask IMDS).
   * "physical" is a NIC with no kind (ena, ixgbevf: what EC2 attaches). Other kinds (veth, bridges, tunnels)
   * come and go with containers and are not worth an IMDS request; the simulated instance adds "veth".
   * ENIs IMDS does describe are matched by MAC whatever the link's kind.
   */
  eniLinkKinds: string[];
  /** Prefix length of secondary private IPv4s on an ENI: the subnet's, or 32. */
  secondaryAddressPrefix: 'subnet' | 'host';
  /**
   * Also put every address of each delegated IPv4 prefix (ipv4-prefix, /28) on its ENI as a /32. Off by default:
   * prefixes are normally handed to containers (CNI), whose addresses must not be the host's (docs/ipv6.md).
   */
  ipv4PrefixAddresses: boolean;
  /** Where ec2netd remembers which addresses it added (tmpfs: addresses do not survive a reboot either). */
  stateDir: string;
  sync: {
    /** Quiet time after an event before a sync starts: bursts of events become one sync. */
    debounceMs: number;
    /** Least time between the starts of two syncs: bounds the cost of long event storms. */
    minIntervalMs: number;
    /** Timeout of each kernel request. */
    requestTimeoutMs: number;
    /** Retry schedule for ENIs whose IMDS data is not complete yet. */
    pendingRetryBaseMs: number;
    pendingRetryMaxMs: number;
    /** systemd READY=1 is sent after the first converged sync, or after this long at the latest. */
    readyTimeoutMs: number;
    /** A full kernel re-read at least this often: finds what the kernel removes without a notification. */
    maxIntervalMs: number;
    /** Longest wait between two repairs of an object someone else keeps undoing (a fight). */
    fightCapMs: number;
  };
  /** Docker (and other container bridges): connection marks so replies leave through the ENI they came in on. */
  containers: {
    enabled: boolean;
    /** Bridge link names to treat as container networks; `*` matches any run of characters. */
    bridgePatterns: string[];
    /** Mark bits ec2netd may use (set, restore and match are all masked with it). */
    markMask: number;
    /** Manage net.ipv4.conf.all.src_valid_mark (needed under strict rp_filter). */
    manageSysctls: boolean;
  };
  iptables: {
    /** `auto` uses the backend Docker's chains live in (nft or legacy), else the system default. */
    backend: 'auto' | 'nft' | 'legacy';
    /** Name of ec2netd's own chain in the mangle table. */
    chain: string;
  };
  log: { level: 'trace' | 'debug' | 'info' | 'warn' | 'error' };
  /** Other managers of the same sources and tables (amazon-ec2-net-utils, cloud-init/netplan...): docs/coexistence.md. */
  coexistence: {
    /** refuse: leave their ENIs alone; adopt: take over their leftovers once they stopped; coexist: add alongside. */
    policy: 'refuse' | 'adopt' | 'coexist';
    /** Filesystem root under which their files and units are looked for (a host mounted at /host, tests). */
    root: string;
  };
}

export const DEFAULT_CONFIG_PATH = '/etc/ec2netd/config.json';

export function defaultImdsEndpoint(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env.AWS_EC2_METADATA_SERVICE_ENDPOINT;
  if (explicit !== undefined && explicit !== '') return explicit.replace(/\/+$/, '');
  return env.AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE?.toLowerCase() === 'ipv6'
    ? 'http://[fd00:ec2::254]'
    : 'http://169.254.169.254';
}

export function defaultConfig(env: NodeJS.ProcessEnv = process.env): Config {
  return {
    imds: {
      endpoint: defaultImdsEndpoint(env),
      timeoutMs: 2000,
      tokenTtlSeconds: 21600,
      attempts: 4,
      backoffBaseMs: 100,
      backoffMaxMs: 2000,
      maxBodyBytes: 64 * 1024,
      refreshIntervalMs: 60_000,
      refreshJitter: 0.1,
    },
    tableBase: 10000,
    tablePerCard: 100,
    protocol: 236,
    priorities: { toContainers: 10050, fromAddress: 10100, fwmark: 10200 },
    eniLinkKinds: ['physical'],
    secondaryAddressPrefix: 'subnet',
    ipv4PrefixAddresses: false,
    stateDir: '/run/ec2netd',
    sync: { debounceMs: 5, minIntervalMs: 100, requestTimeoutMs: 2000, pendingRetryBaseMs: 200, pendingRetryMaxMs: 10_000, readyTimeoutMs: 20_000, maxIntervalMs: 300_000, fightCapMs: 30_000 },
    containers: { enabled: true, bridgePatterns: ['docker0', 'br-*'], markMask: 0x1f7f, manageSysctls: true },
    iptables: { backend: 'auto', chain: 'EC2NETD' },
    log: { level: 'info' },
    coexistence: { policy: 'refuse', root: '/' },
  };
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Overlays `patch` on `base`, checking every key and type against the defaults. */
function overlay(base: Record<string, unknown>, patch: Record<string, unknown>, path: string): void {
  for (const [key, value] of Object.entries(patch)) {
    const where = path === '' ? key : `${path}.${key}`;
    if (!(key in base)) throw new ConfigError(`unknown setting "${where}"`);
    const current = base[key];
    if (isObject(current)) {
      if (!isObject(value)) throw new ConfigError(`setting "${where}" must be an object`);
      overlay(current, value, where);
    } else if (typeof current === 'number' && typeof value === 'string' && /^0x[0-9a-f]{1,8}$/i.test(value)) {
      // JSON has no hex literals; masks and marks read better as "0x1f00".
      base[key] = parseInt(value, 16);
    } else if (typeof current !== typeof value) {
      throw new ConfigError(`setting "${where}" must be a ${typeof current}, got ${JSON.stringify(value)}`);
    } else {
      base[key] = value;
    }
  }
}

function check(condition: boolean, message: string): void {
  if (!condition) throw new ConfigError(message);
}

const isInt = (n: number, min: number, max: number): boolean => Number.isInteger(n) && n >= min && n <= max;

export function validateConfig(c: Config): Config {
  check(/^https?:\/\/[^\s]+$/.test(c.imds.endpoint), `setting "imds.endpoint" must be an http(s) URL, got "${c.imds.endpoint}"`);
  check(isInt(c.imds.timeoutMs, 50, 60_000), 'setting "imds.timeoutMs" must be an integer from 50 to 60000');
  check(isInt(c.imds.tokenTtlSeconds, 60, 21600), 'setting "imds.tokenTtlSeconds" must be an integer from 60 to 21600');
  check(isInt(c.imds.attempts, 1, 20), 'setting "imds.attempts" must be an integer from 1 to 20');
  check(isInt(c.imds.backoffBaseMs, 1, 60_000), 'setting "imds.backoffBaseMs" must be an integer from 1 to 60000');
  check(isInt(c.imds.backoffMaxMs, c.imds.backoffBaseMs, 600_000), 'setting "imds.backoffMaxMs" must be at least imds.backoffBaseMs');
  check(isInt(c.imds.maxBodyBytes, 1024, 16 * 1024 * 1024), 'setting "imds.maxBodyBytes" must be from 1024 to 16 MiB');
  check(isInt(c.imds.refreshIntervalMs, 1000, 86_400_000), 'setting "imds.refreshIntervalMs" must be from 1000 to 86400000');
  check(c.imds.refreshJitter >= 0 && c.imds.refreshJitter <= 0.5, 'setting "imds.refreshJitter" must be from 0 to 0.5');
  check(isInt(c.tableBase, 1, 2 ** 31), 'setting "tableBase" must be a positive integer');
  check(isInt(c.tablePerCard, 1, 10_000), 'setting "tablePerCard" must be from 1 to 10000');
  check(![253, 254, 255].includes(c.tableBase), 'setting "tableBase" must not be a reserved table (253-255)');
  check(isInt(c.protocol, 5, 255) && ![186, 187, 188, 189, 192].includes(c.protocol),
    'setting "protocol" must be from 5 to 255 and not a routing daemon\'s number (it marks what ec2netd owns)');
  for (const [name, value] of Object.entries(c.priorities)) {
    check(isInt(value, 1, 32765), `setting "priorities.${name}" must be from 1 to 32765 (ahead of the main table's rule)`);
  }
  check(Array.isArray(c.eniLinkKinds) && c.eniLinkKinds.every((k) => typeof k === 'string' && /^[a-z0-9_-]{1,32}$/.test(k)),
    'setting "eniLinkKinds" must be a list of link kinds ("physical", "veth", ...)');
  check(['subnet', 'host'].includes(c.secondaryAddressPrefix), 'setting "secondaryAddressPrefix" must be "subnet" or "host"');
  check(typeof c.ipv4PrefixAddresses === 'boolean', 'setting "ipv4PrefixAddresses" must be true or false');
  check(c.stateDir.startsWith('/'), 'setting "stateDir" must be an absolute path');
  check(isInt(c.sync.debounceMs, 0, 10_000), 'setting "sync.debounceMs" must be from 0 to 10000');
  check(isInt(c.sync.minIntervalMs, 0, 60_000), 'setting "sync.minIntervalMs" must be from 0 to 60000');
  check(isInt(c.sync.requestTimeoutMs, 10, 60_000), 'setting "sync.requestTimeoutMs" must be from 10 to 60000');
  check(isInt(c.sync.pendingRetryBaseMs, 10, 60_000), 'setting "sync.pendingRetryBaseMs" must be from 10 to 60000');
  check(isInt(c.sync.pendingRetryMaxMs, c.sync.pendingRetryBaseMs, 3_600_000), 'setting "sync.pendingRetryMaxMs" must be at least sync.pendingRetryBaseMs');
  check(Array.isArray(c.containers.bridgePatterns) && c.containers.bridgePatterns.every((p) => typeof p === 'string' && /^[A-Za-z0-9_.*-]{1,15}$/.test(p)),
    'setting "containers.bridgePatterns" must be a list of interface-name patterns (letters, digits, _ . - and *)');
  check(isInt(c.containers.markMask, 1, 0xffffffff), 'setting "containers.markMask" must be a non-zero 32-bit integer');
  check(['auto', 'nft', 'legacy'].includes(c.iptables.backend), 'setting "iptables.backend" must be auto, nft or legacy');
  check(/^[A-Z][A-Z0-9_-]{0,27}$/.test(c.iptables.chain), 'setting "iptables.chain" must be an upper-case chain name of at most 28 characters');
  check(isInt(c.sync.readyTimeoutMs, 0, 600_000), 'setting "sync.readyTimeoutMs" must be from 0 to 600000');
  check(isInt(c.sync.maxIntervalMs, 1000, 86_400_000), 'setting "sync.maxIntervalMs" must be from 1000 to 86400000');
  check(isInt(c.sync.fightCapMs, 200, 3_600_000), 'setting "sync.fightCapMs" must be from 200 to 3600000');
  check(['trace', 'debug', 'info', 'warn', 'error'].includes(c.log.level), 'setting "log.level" must be trace, debug, info, warn or error');
  check(['refuse', 'adopt', 'coexist'].includes(c.coexistence.policy), 'setting "coexistence.policy" must be refuse, adopt or coexist');
  check(c.coexistence.root.startsWith('/'), 'setting "coexistence.root" must be an absolute path');
  return c;
}

/** Defaults overlaid with a parsed config document. */
export function configFrom(doc: unknown, env: NodeJS.ProcessEnv = process.env): Config {
  const config = defaultConfig(env);
  if (doc !== undefined) {
    if (!isObject(doc)) throw new ConfigError('the config file must hold a JSON object');
    overlay(config as unknown as Record<string, unknown>, doc, '');
  }
  return validateConfig(config);
}

/**
 * Loads the config file. A missing file at the default path means "all defaults";
 * a missing file named explicitly is an error.
 */
export function loadConfig(path: string | undefined, env: NodeJS.ProcessEnv = process.env): Config {
  const file = path ?? DEFAULT_CONFIG_PATH;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (path === undefined && (err as NodeJS.ErrnoException).code === 'ENOENT') return configFrom(undefined, env);
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  let doc: Json;
  try {
    doc = JSON.parse(text) as Json;
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}`);
  }
  try {
    return configFrom(doc, env);
  } catch (err) {
    throw new ConfigError(`config file ${file}: ${(err as Error).message}`);
  }
}
