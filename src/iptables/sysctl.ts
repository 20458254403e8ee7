// net.ipv4.conf.all.src_valid_mark: under strict rp_filter the reverse-path check of a DNATed packet
// must use its (restored) mark to find the ENI table. Writes go to /proc/sys, which reflects the network
// namespace of the writing process.
// Synchronous calls on purpose: a few bytes in /proc/sys and the state dir, and node:fs/promises would be the only
// reason the daemon loads that module (1 MB resident; docs/performance.md).
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface SysctlOptions {
  /** Root of the sysctl tree; default /proc/sys (tests point it at a folder). */
  root?: string;
  /**
   * Where the value a key had before ec2netd first changed it is kept (`<stateDir>/sysctls.json`), so that
   * `ec2netd flush` can give it back. Without it nothing is recorded.
   */
  stateDir?: string;
}

export const SYSCTL_RECORD = 'sysctls.json';

/** The values keys had before ec2netd changed them: `{ "net.ipv4.conf.all.src_valid_mark": "0" }`. */
export async function readSysctlRecord(stateDir: string): Promise<Record<string, string>> {
  let text: string;
  try {
    text = readFileSync(join(stateDir, SYSCTL_RECORD), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw err;
  }
  const doc = JSON.parse(text) as unknown;
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Error(`${join(stateDir, SYSCTL_RECORD)}: not a JSON object`);
  return Object.fromEntries(Object.entries(doc).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

/**
 * Records `original` for `key` unless a value is recorded already: the first change's "before" is the
 * admin's value; later ones would be ec2netd's own (after a restart, or someone resetting it in between).
 * Atomic (temp file + rename), and done before the write, so a crash between the two loses nothing.
 */
async function recordOriginal(stateDir: string, key: string, original: string): Promise<void> {
  const record = await readSysctlRecord(stateDir);
  if (record[key] !== undefined) return;
  record[key] = original;
  mkdirSync(stateDir, { recursive: true, mode: 0o755 });
  const file = join(stateDir, SYSCTL_RECORD);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o644 });
  renameSync(tmp, file);
}

/** `ec2netd flush`: writes back every recorded value, then deletes the record. Returns what it restored. */
export async function restoreSysctls(stateDir: string, opts: Omit<SysctlOptions, 'stateDir'> = {}): Promise<Array<{ key: string; value: string }>> {
  const record = await readSysctlRecord(stateDir);
  const restored: Array<{ key: string; value: string }> = [];
  for (const [key, value] of Object.entries(record)) {
    if ((await readSysctl(key, opts)) !== value) {
      writeFileSync(sysctlPath(key, opts), `${value}\n`);
      restored.push({ key, value });
    }
  }
  rmSync(join(stateDir, SYSCTL_RECORD), { force: true });
  return restored;
}

/** `net.ipv4.conf.all.src_valid_mark` → `<root>/net/ipv4/conf/all/src_valid_mark`. Rejects odd keys. */
export function sysctlPath(key: string, opts: SysctlOptions = {}): string {
  if (!/^[a-z0-9_]+(\.[A-Za-z0-9_@-]+)+$/.test(key) || key.split('.').some((p) => p === '..' || p === '.')) {
    throw new Error(`sysctl: refusing key ${JSON.stringify(key)}`);
  }
  return join(opts.root ?? '/proc/sys', ...key.split('.'));
}

export async function readSysctl(key: string, opts: SysctlOptions = {}): Promise<string> {
  return readFileSync(sysctlPath(key, opts), 'utf8').trim();
}

/** Writes `value` unless the key already holds it. Returns whether it changed and the value before. */
export async function ensureSysctl(key: string, value: string, opts: SysctlOptions = {}): Promise<{ changed: boolean; previous: string }> {
  const previous = await readSysctl(key, opts);
  if (previous === value) return { changed: false, previous };
  if (opts.stateDir !== undefined) await recordOriginal(opts.stateDir, key, previous);
  writeFileSync(sysctlPath(key, opts), `${value}\n`);
  return { changed: true, previous };
}

export const SRC_VALID_MARK = 'net.ipv4.conf.all.src_valid_mark';

/** src_valid_mark = 1 when containers are enabled and ec2netd manages sysctls; otherwise nothing. */
export async function ensureContainerSysctls(
  containers: { enabled: boolean; manageSysctls: boolean },
  opts: SysctlOptions = {},
): Promise<{ changed: boolean; previous?: string }> {
  if (!containers.enabled || !containers.manageSysctls) return { changed: false };
  return ensureSysctl(SRC_VALID_MARK, '1', opts);
}
