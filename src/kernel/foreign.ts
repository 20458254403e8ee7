// Detection adapter: what the filesystem says about other managers of policy routing (amazon-ec2-net-utils,
// cloud-init/netplan) and about systemd-networkd (which deletes foreign rules and routes unless told not
// to). Reads only. Every path is looked up under a root (config coexistence.root) so that tests, and an
// ec2netd in a container with the host mounted elsewhere, can point it at another tree.
import { readdirSync, readFileSync, statSync, lstatSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { ManagerPresence } from '../core/coexistence';

function under(root: string, path: string): string {
  return join(root, path);
}

function exists(root: string, path: string): boolean {
  try {
    lstatSync(under(root, path));
    return true;
  } catch {
    return false;
  }
}

function list(root: string, dir: string): string[] {
  try {
    return readdirSync(under(root, dir)).sort();
  } catch {
    return [];
  }
}

function read(root: string, path: string, max = 256 * 1024): string | undefined {
  try {
    const full = under(root, path);
    if (!statSync(full).isFile() || statSync(full).size > max) return undefined;
    return readFileSync(full, 'utf8');
  } catch {
    return undefined;
  }
}

const UNIT_DIRS = ['usr/lib/systemd/system', 'lib/systemd/system', 'etc/systemd/system'];
const WANTS_PARENTS = ['etc/systemd/system', 'run/systemd/system'];

/** Paths of `name` in the unit directories. */
function unitFiles(root: string, name: string): string[] {
  return UNIT_DIRS.map((d) => `${d}/${name}`).filter((p) => exists(root, p));
}

/** Units matching `re` that are enabled (symlinks in a *.wants directory) or active (systemd's invocation links). */
function liveUnits(root: string, re: RegExp): string[] {
  const found: string[] = [];
  for (const parent of WANTS_PARENTS) {
    for (const dir of list(root, parent).filter((d) => d.endsWith('.wants'))) {
      for (const unit of list(root, `${parent}/${dir}`)) if (re.test(unit)) found.push(`/${parent}/${dir}/${unit}`);
    }
  }
  // systemd keeps /run/systemd/units/invocation:<unit> while a unit is active.
  for (const entry of list(root, 'run/systemd/units')) {
    if (entry.startsWith('invocation:') && re.test(entry.slice('invocation:'.length))) found.push(`/run/systemd/units/${entry}`);
  }
  return found;
}

const EC2_NET_UTILS_UNITS = /^(refresh-)?policy-routes@.*\.(service|timer)$/;

export function detectEc2NetUtils(root: string): ManagerPresence {
  const installed = [
    ...unitFiles(root, 'policy-routes@.service'), ...unitFiles(root, 'refresh-policy-routes@.service'), ...unitFiles(root, 'refresh-policy-routes@.timer'),
    ...[
      'usr/bin/setup-policy-routes', 'usr/sbin/setup-policy-routes', 'usr/lib/udev/rules.d/99-vpc-policy-routes.rules', 'etc/udev/rules.d/99-vpc-policy-routes.rules',
      // v1 (Amazon Linux 2) and its Ubuntu fork (ubuntu-ec2net): udev rules, hotplug script, shared functions.
      'usr/lib/udev/rules.d/53-ec2-network-interfaces.rules', 'etc/udev/rules.d/53-ec2-network-interfaces.rules',
      'etc/sysconfig/network-scripts/ec2net-functions', 'etc/sysconfig/network-scripts/ec2net.hotplug',
      'etc/network/ec2net-functions', 'etc/network/ec2net.hotplug',
    ].filter((p) => exists(root, p)),
    ...['usr/lib/systemd/network', 'lib/systemd/network'].flatMap((d) => list(root, d).filter((f) => f.includes('ec2')).map((f) => `${d}/${f}`)),
  ].map((p) => `/${p}`);
  // setup-policy-routes writes /run/systemd/network/70-<iface>.network (and .d drop-ins) for every ENI it manages.
  const runtime = list(root, 'run/systemd/network').filter((f) => /^70-.+\.network(\.d)?$/.test(f)).map((f) => `/run/systemd/network/${f}`);
  const live = [...runtime, ...liveUnits(root, EC2_NET_UTILS_UNITS)];
  return { id: 'amazon-ec2-net-utils', installed: installed.length > 0 || live.length > 0, active: live.length > 0, evidence: [...live, ...installed] };
}

export function detectNetplan(root: string): ManagerPresence {
  const evidence: string[] = [];
  for (const dir of ['etc/netplan', 'run/netplan', 'lib/netplan']) {
    for (const f of list(root, dir).filter((x) => x.endsWith('.yaml'))) {
      if (/^\s*routing-policy\s*:/m.test(read(root, `${dir}/${f}`) ?? '')) evidence.push(`/${dir}/${f} (routing-policy)`);
    }
  }
  for (const f of list(root, 'run/systemd/network').filter((x) => x.startsWith('10-netplan') && x.endsWith('.network'))) {
    if (/^\[RoutingPolicyRule\]/m.test(read(root, `run/systemd/network/${f}`) ?? '')) evidence.push(`/run/systemd/network/${f} ([RoutingPolicyRule])`);
  }
  // netplan's configuration is applied by systemd-networkd at every boot: configured means active.
  return { id: 'cloud-init/netplan', installed: evidence.length > 0, active: evidence.length > 0, evidence };
}

/** Both known managers, as the coexistence policy sees them. */
export function detectManagers(root: string): ManagerPresence[] {
  return [detectEc2NetUtils(root), detectNetplan(root)];
}

const cache = new Map<string, { at: number; value: ManagerPresence[] }>();

/** detectManagers, re-read at most every `maxAgeMs` (the reconciler asks on every sync). */
export function cachedManagers(root: string, maxAgeMs = 5000, now = Date.now()): ManagerPresence[] {
  const hit = cache.get(root);
  if (hit !== undefined && now - hit.at < maxAgeMs) return hit.value;
  const value = detectManagers(root);
  cache.set(root, { at: now, value });
  return value;
}

export type UnitState = 'active' | 'enabled' | 'installed' | 'absent';

export interface NetworkdFacts {
  state: UnitState;
  /** Config files read, in the order systemd reads them (main file, then drop-ins by name). */
  files: string[];
  /** Last value set in those files; undefined when none sets it (systemd's default: yes). */
  manageForeignRoutingPolicyRules?: boolean;
  manageForeignRoutes?: boolean;
  evidence: string[];
}

function parseBool(value: string): boolean | undefined {
  const v = value.trim().toLowerCase();
  if (['1', 'yes', 'y', 'true', 't', 'on'].includes(v)) return true;
  if (['0', 'no', 'n', 'false', 'f', 'off'].includes(v)) return false;
  return undefined;
}

/** The [Network] settings of one networkd.conf-style text: later assignments win. */
export function parseNetworkdConf(text: string): { manageForeignRoutingPolicyRules?: boolean; manageForeignRoutes?: boolean } {
  const out: { manageForeignRoutingPolicyRules?: boolean; manageForeignRoutes?: boolean } = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header?.[1] !== undefined) { section = header[1]; continue; }
    if (section !== 'Network') continue;
    const m = /^([A-Za-z]+)\s*=\s*(.*)$/.exec(line);
    if (m?.[1] === undefined || m[2] === undefined) continue;
    const value = parseBool(m[2]);
    if (value === undefined) continue;
    if (m[1] === 'ManageForeignRoutingPolicyRules') out.manageForeignRoutingPolicyRules = value;
    if (m[1] === 'ManageForeignRoutes') out.manageForeignRoutes = value;
  }
  return out;
}

const DROPIN_DIRS = ['etc/systemd/networkd.conf.d', 'run/systemd/networkd.conf.d', 'usr/local/lib/systemd/networkd.conf.d', 'usr/lib/systemd/networkd.conf.d', 'lib/systemd/networkd.conf.d'];

/** systemd-networkd: whether it runs, and its ManageForeign* settings (systemd's config-file order). */
export function detectNetworkd(root: string): NetworkdFacts {
  const files: string[] = [];
  const main = ['etc/systemd/networkd.conf', 'run/systemd/networkd.conf', 'usr/local/lib/systemd/networkd.conf', 'usr/lib/systemd/networkd.conf']
    .find((p) => read(root, p) !== undefined);
  if (main !== undefined) files.push(main);
  // Drop-ins: sorted by file name over all directories; a name in an earlier directory masks the later ones.
  const byName = new Map<string, string>();
  for (const dir of DROPIN_DIRS) {
    for (const f of list(root, dir).filter((x) => x.endsWith('.conf'))) if (!byName.has(f)) byName.set(f, `${dir}/${f}`);
  }
  files.push(...[...byName.keys()].sort().map((k) => byName.get(k) as string));
  const facts: NetworkdFacts = { state: 'absent', files: files.map((f) => `/${f}`), evidence: [] };
  for (const f of files) {
    const parsed = parseNetworkdConf(read(root, f) ?? '');
    if (parsed.manageForeignRoutingPolicyRules !== undefined) facts.manageForeignRoutingPolicyRules = parsed.manageForeignRoutingPolicyRules;
    if (parsed.manageForeignRoutes !== undefined) facts.manageForeignRoutes = parsed.manageForeignRoutes;
  }
  const active = list(root, 'run/systemd/units').filter((e) => e === 'invocation:systemd-networkd.service').map((e) => `/run/systemd/units/${e}`);
  const enabled = [
    ...WANTS_PARENTS.flatMap((p) => list(root, p).filter((d) => d.endsWith('.wants'))
      .flatMap((d) => list(root, `${p}/${d}`).filter((u) => u === 'systemd-networkd.service').map((u) => `/${p}/${d}/${u}`))),
    ...['etc/systemd/system/dbus-org.freedesktop.network1.service'].filter((p) => exists(root, p)).map((p) => `/${p}`),
  ];
  const installed = [...unitFiles(root, 'systemd-networkd.service'), ...['usr/lib/systemd/systemd-networkd', 'lib/systemd/systemd-networkd'].filter((p) => exists(root, p))]
    .map((p) => `/${p}`);
  facts.state = active.length > 0 ? 'active' : enabled.length > 0 ? 'enabled' : installed.length > 0 || main !== undefined ? 'installed' : 'absent';
  facts.evidence = [...active, ...enabled, ...installed];
  return facts;
}

/**
 * Whether an ec2netd daemon runs in this network namespace: it listens on the abstract unix socket
 * `\0ec2netd.instance` (src/daemon/daemon.ts). Connecting is harmless: the daemon never reads from it.
 */
export function ec2netdRunning(timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect('\0ec2netd.instance');
    const done = (value: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(value);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}
