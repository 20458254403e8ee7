// net.ipv4.conf.all.src_valid_mark: under strict rp_filter the reverse-path check of a DNATed packet
// must use its (restored) mark to find the ENI table. Writes go to /proc/sys, which reflects the network
// namespace of the writing process.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface SysctlOptions {
  /** Root of the sysctl tree; default /proc/sys (tests point it at a folder). */
  root?: string;
}

/** `net.ipv4.conf.all.src_valid_mark` → `<root>/net/ipv4/conf/all/src_valid_mark`. Rejects odd keys. */
export function sysctlPath(key: string, opts: SysctlOptions = {}): string {
  if (!/^[a-z0-9_]+(\.[A-Za-z0-9_@-]+)+$/.test(key) || key.split('.').some((p) => p === '..' || p === '.')) {
    throw new Error(`sysctl: refusing key ${JSON.stringify(key)}`);
  }
  return join(opts.root ?? '/proc/sys', ...key.split('.'));
}

export async function readSysctl(key: string, opts: SysctlOptions = {}): Promise<string> {
  return (await readFile(sysctlPath(key, opts), 'utf8')).trim();
}

/** Writes `value` unless the key already holds it. Returns whether it changed and the value before. */
export async function ensureSysctl(key: string, value: string, opts: SysctlOptions = {}): Promise<{ changed: boolean; previous: string }> {
  const previous = await readSysctl(key, opts);
  if (previous === value) return { changed: false, previous };
  await writeFile(sysctlPath(key, opts), `${value}\n`);
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
