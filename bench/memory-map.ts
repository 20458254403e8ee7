// Where a process's resident memory is: each mapping's Rss from /proc/PID/smaps, and for the node binary which ELF
// sections its resident pages belong to (/proc/PID/pagemap: present bit per page, file offset → section).
// Usage: node dist/bench/memory-map.js PID   (root: pagemap hides page frames but not the present bit)
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';

const PAGE = 4096;

interface Section { name: string; off: number; size: number }

function sections(binary: string): Section[] {
  const out = execFileSync('readelf', ['-SW', binary], { encoding: 'utf8' });
  const list: Section[] = [];
  for (const line of out.split('\n')) {
    const m = /\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)/.exec(line);
    if (m !== null && m[1] !== undefined && m[2] !== undefined && m[3] !== undefined) list.push({ name: m[1], off: parseInt(m[2], 16), size: parseInt(m[3], 16) });
  }
  return list;
}

/** The file range of ICU's data (symbol icudtNN_dat), if the binary has symbols. */
function icuData(binary: string, secs: Section[]): { off: number; size: number } | undefined {
  const rodata = secs.find((s) => s.name === '.rodata');
  const vaddr = /\]\s+\.rodata\s+\S+\s+([0-9a-f]+)/.exec(execFileSync('readelf', ['-SW', binary], { encoding: 'utf8' }))?.[1];
  const sym = /^([0-9a-f]+) ([0-9a-f]+) R icudt\d+_dat$/m.exec(execFileSync('nm', ['-S', binary], { encoding: 'utf8', maxBuffer: 1 << 30 }));
  if (rodata === undefined || vaddr === undefined || sym === null) return undefined;
  return { off: parseInt(sym[1] ?? '0', 16) - parseInt(vaddr, 16) + rodata.off, size: parseInt(sym[2] ?? '0', 16) };
}

/** The resident pages of the process's own executable (node), in MB per ELF section (ICU's data apart). */
export function binaryPages(pid: number, maps = mappings(pid)): Map<string, number> {
  const exe = execFileSync('readlink', [`/proc/${pid}/exe`], { encoding: 'utf8' }).trim();
  const secs = sections(exe);
  const perSection = new Map<string, number>();
  const icu = icuData(exe, secs);
  const fd = openSync(`/proc/${pid}/pagemap`, 'r');
  const entry = Buffer.alloc(8);
  try {
    for (const m of maps.filter((x) => x.path === exe)) {
      for (let addr = m.start; addr < m.end; addr += PAGE) {
        readSync(fd, entry, 0, 8, (addr / PAGE) * 8);
        const present = (entry.readBigUInt64LE(0) >> 63n) === 1n;
        if (!present) continue;
        const off = m.off + (addr - m.start);
        const inIcu = icu !== undefined && off >= icu.off && off < icu.off + icu.size;
        const s = inIcu ? '.rodata: ICU data' : secs.find((x) => off >= x.off && off < x.off + x.size)?.name ?? '(other)';
        perSection.set(s, (perSection.get(s) ?? 0) + PAGE / 1048576);
      }
    }
  } finally {
    closeSync(fd);
  }
  return perSection;
}

interface Mapping { start: number; end: number; off: number; path: string }

function mappings(pid: number): Mapping[] {
  const maps: Mapping[] = [];
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s*(.*)$/.exec(line);
    if (m !== null) maps.push({ start: parseInt(m[1] ?? '0', 16), end: parseInt(m[2] ?? '0', 16), off: parseInt(m[3] ?? '0', 16), path: m[4] === '' || m[4] === undefined ? '[anon]' : m[4] });
  }
  return maps;
}

export function memoryMap(pid: number): string {
  const smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n');
  const byPath = new Map<string, { rss: number; anon: number }>();
  let current = '';
  for (const line of smaps) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s*(.*)$/.exec(line);
    if (head !== null) {
      current = head[4] === '' || head[4] === undefined ? '[anon]' : head[4];
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    const anon = /^Anonymous:\s+(\d+) kB/.exec(line);
    const entry = byPath.get(current) ?? { rss: 0, anon: 0 };
    if (rss !== null) entry.rss += Number(rss[1]);
    if (anon !== null) entry.anon += Number(anon[1]);
    byPath.set(current, entry);
  }
  const lines = [...byPath].sort((a, b) => b[1].rss - a[1].rss).filter(([, v]) => v.rss >= 256)
    .map(([p, v]) => `  ${(v.rss / 1024).toFixed(1).padStart(6)} MB (anon ${(v.anon / 1024).toFixed(1)})  ${p}`);

  const perSection = binaryPages(pid);
  const sec = [...perSection].sort((a, b) => b[1] - a[1]).map(([n, m]) => `  ${m.toFixed(1).padStart(6)} MB  ${n}`);
  return `mappings (Rss ≥ 256 kB):\n${lines.join('\n')}\nnode binary, resident pages per section:\n${sec.join('\n')}\n`;
}

if (require.main === module) process.stdout.write(memoryMap(Number(process.argv[2])));
