// The event watchers (netlink sockets of the process, subscribed to rtnetlink and nftables groups) against a real
// kernel, in a throwaway namespace: each kind of change is reported, local-table routes and other nftables tables
// are not, an overrun of the receive buffer is a 'lost' (the process goes on, on the same socket), storms are
// coalesced, and nothing is left behind.
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { KERNEL_TOOL, createKernelNs, type KernelNs } from '../helpers/kernel-tool';
import { startInNs } from '../helpers/netns';

interface EventLine {
  t: number;
  event: 'ready' | 'change' | 'lost' | 'stopped' | 'link';
  name?: string;
  mac?: string;
  kinds?: string[];
  reason?: string;
  pid?: number;
  port?: number;
}

let k: KernelNs;
const tools: ManagedProcess[] = [];

function lines(p: ManagedProcess): EventLine[] {
  return p.output().stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as EventLine);
}

/** Waits until an event line after index `from` satisfies `pred`; fails with the output so far. */
async function waitFor(p: ManagedProcess, from: number, pred: (e: EventLine) => boolean, ms = 5000): Promise<EventLine> {
  const deadline = Date.now() + ms;
  for (;;) {
    const hit = lines(p).slice(from).find(pred);
    if (hit !== undefined) return hit;
    if (Date.now() > deadline || p.hasExited()) {
      throw new Error(`no matching event; output:\n${p.output().stdout}\nstderr:\n${p.output().stderr}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

function startTool(args: string[]): ManagedProcess {
  const p = startInNs(k.ns, KERNEL_TOOL, args);
  tools.push(p);
  return p;
}
const startEvents = (ms: number, receiveBufferBytes?: number): ManagedProcess =>
  startTool(['events', String(ms), ...(receiveBufferBytes === undefined ? [] : [String(receiveBufferBytes)])]);

/** Runs `during` while the tool process is frozen (SIGSTOP): its socket is not read, as in a long busy sync. */
function frozen(pid: number, during: () => void): void {
  process.kill(pid, 'SIGSTOP');
  try {
    during();
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

const batch = (lines: string[]): void => {
  execFileSync('ip', ['-n', k.ns, '-batch', '-'], { input: `${lines.join('\n')}\n` });
};

const changeOf = (kind: string) => (e: EventLine): boolean => e.event === 'change' && (e.kinds ?? []).includes(kind);

describe('kernel event watcher (subscribed rtnetlink socket)', () => {
  beforeAll(() => {
    k = createKernelNs('ke');
  });

  afterAll(async () => {
    for (const p of tools) await p.stop();
    k?.destroy();
  });

  it('reports link, address, route and rule changes, each as its kind', async () => {
    const p = startEvents(20_000);
    await waitFor(p, 0, (e) => e.event === 'ready');
    const steps: [string, string[]][] = [
      ['link', ['link', 'set', 'v1', 'down']],
      ['address', ['addr', 'add', '10.0.1.10/24', 'dev', 'v0']],
      ['route', ['route', 'add', '10.9.0.0/16', 'via', '10.0.1.1', 'dev', 'v0', 'table', '10001', 'proto', '236']],
      ['rule', ['rule', 'add', 'from', '10.0.1.10', 'lookup', '10001', 'pref', '10100', 'proto', '236']],
      ['rule', ['rule', 'del', 'from', '10.0.1.10', 'lookup', '10001', 'pref', '10100', 'proto', '236']],
      ['route', ['route', 'del', '10.9.0.0/16', 'table', '10001']],
      ['address', ['addr', 'del', '10.0.1.10/24', 'dev', 'v0']],
      ['link', ['link', 'set', 'v1', 'up']],
      ['address', ['addr', 'add', 'fd00:1::10/64', 'dev', 'v0', 'nodad']],
      ['route', ['route', 'add', 'fd00:9::/64', 'dev', 'v0', 'table', '10001', 'proto', '236']],
      ['rule', ['-6', 'rule', 'add', 'from', 'fd00:1::10', 'lookup', '10001', 'pref', '10100', 'proto', '236']],
    ];
    for (const [kind, args] of steps) {
      const from = lines(p).length;
      k.ip(args);
      const e = await waitFor(p, from, changeOf(kind));
      expect(e.kinds).toContain(kind);
    }
    // A rule change alone is reported as exactly that kind.
    const from = lines(p).length;
    k.ip(['rule', 'add', 'fwmark', '0x80/0xff', 'lookup', '10001', 'pref', '10200', 'proto', '236']);
    expect((await waitFor(p, from, changeOf('rule'))).kinds).toEqual(['rule']);
    expect(lines(p).some((e) => e.event === 'lost')).toBe(false);
    await p.stop();
  });

  it('announces a new link with its name, MAC and kind before the change that asks for a sync', async () => {
    const p = startEvents(20_000);
    await waitFor(p, 0, (e) => e.event === 'ready');
    const from = lines(p).length;
    k.ip(['link', 'add', 'nl0', 'address', '02:00:5e:10:00:07', 'type', 'veth', 'peer', 'name', 'nl0p']);
    try {
      const announced = await waitFor(p, from, (e) => e.event === 'link' && e.name === 'nl0');
      expect(announced).toMatchObject({ mac: '02:00:5e:10:00:07', kind: 'veth' });
      // The 'change' that makes the daemon sync comes after the announcement (the peer, nl0p, has its own pair).
      const at = lines(p).slice(from).findIndex((e) => e.event === 'link' && e.name === 'nl0');
      await waitFor(p, from + at + 1, changeOf('link'));
    } finally {
      k.ip(['link', 'del', 'nl0']);
    }
    await p.stop();
  });

  it('ignores routes of the local table (the kernel derives them from addresses)', async () => {
    const p = startEvents(20_000);
    const ready = await waitFor(p, 0, (e) => e.event === 'ready');
    const from = lines(p).length;
    // Both written while the tool is frozen, so that it reads them in one go; the link change marks the end.
    frozen(ready.pid ?? 0, () => batch([
      'route add local 10.44.0.1 dev v0 table local',
      'route del local 10.44.0.1 dev v0 table local',
      'link set v1 alias marker', // a link message and nothing else (a link going down also drops its routes)
    ]));
    await waitFor(p, from, changeOf('link'));
    const changes = lines(p).slice(from).filter((e) => e.event === 'change');
    // Not exactly ['link']: an IPv6 address of an earlier test may finish its duplicate address detection meanwhile.
    expect(changes.flatMap((e) => e.kinds ?? [])).not.toContain('route');
    await p.stop();
  });

  it("an overrun of the receive buffer is a 'lost': no crash, the same socket goes on reporting", async () => {
    // A 64 KB buffer (the kernel doubles it) and 3000 route changes while the tool is frozen: ~2.5 MB of events.
    const p = startEvents(30_000, 65_536);
    const ready = await waitFor(p, 0, (e) => e.event === 'ready');
    frozen(ready.pid ?? 0, () => batch(Array.from({ length: 3000 }, (_, i) => `route add 10.77.${i >> 8}.${i & 255}/32 dev v0 table 10005 proto 236`)));
    const lost = await waitFor(p, 0, (e) => e.event === 'lost');
    expect(lost.reason).toContain('receive buffer overrun (ENOBUFS)');
    // The process is alive, on the socket it opened first (no reopen), and later changes are reported.
    const from = lines(p).length;
    k.ip(['route', 'flush', 'table', '10005']);
    await waitFor(p, from, changeOf('route'));
    expect(p.hasExited()).toBe(false);
    expect(lines(p).filter((e) => e.event === 'ready')).toEqual([ready]);
    expect(lines(p).filter((e) => e.event === 'lost').every((e) => /ENOBUFS/.test(e.reason ?? ''))).toBe(true);
    await p.stop();
  });

  it('a storm of changes is coalesced into few change events', async () => {
    const p = startEvents(30_000);
    const ready = await waitFor(p, 0, (e) => e.event === 'ready');
    const from = lines(p).length;
    // Frozen while 300 rules are added (well within its buffer), so that on thaw it reads them back to back, as
    // in a real storm.
    frozen(ready.pid ?? 0, () => {
      batch(Array.from({ length: 300 }, (_, i) => `rule add from 10.88.${i >> 8}.${i & 255} lookup 10001 pref 20000 proto 236`));
      k.ip(['link', 'set', 'v0', 'down']); // a marker after the storm
    });
    await waitFor(p, from, changeOf('link'));
    const changes = lines(p).slice(from).filter((e) => e.event === 'change');
    expect(changes.length).toBeGreaterThan(0);
    expect(changes.length).toBeLessThan(30); // 301 messages
    expect(lines(p).some((e) => e.event === 'lost')).toBe(false);
    k.ip(['link', 'set', 'v0', 'up']);
    await p.stop();
  });

  it('stops cleanly: the tool exits and no process is left in the namespace', async () => {
    for (const t of tools) await t.stop(); // the tools of earlier tests (a failed test may not have stopped its own)
    const p = startEvents(300);
    await waitFor(p, 0, (e) => e.event === 'stopped', 10_000);
    expect(await p.exited).toBe(0);
    expect(execFileSync('ip', ['netns', 'pids', k.ns], { encoding: 'utf8' }).trim()).toBe('');
  });
});

describe('nftables event watcher (subscribed NETLINK_NETFILTER socket)', () => {
  beforeAll(() => {
    k = createKernelNs('kn');
  });

  afterAll(async () => {
    for (const p of tools) await p.stop();
    k?.destroy();
  });

  const nft = (script: string): void => {
    execFileSync('ip', ['netns', 'exec', k.ns, 'nft', '-f', '-'], { input: `${script}\n` });
  };

  it('reports changes to the ip and ip6 mangle tables, and not to other tables', async () => {
    const p = startTool(['nft-events', '20000']);
    await waitFor(p, 0, (e) => e.event === 'ready');
    let from = lines(p).length;
    nft('add table ip filter\nadd chain ip filter FORWARD\nadd rule ip filter FORWARD counter\nadd table ip6 nat\nadd table inet mangle');
    nft('add table ip mangle'); // a marker: the only change that counts
    await waitFor(p, from, changeOf('mangle'));
    expect(lines(p).slice(from).filter((e) => e.event === 'change')).toHaveLength(1);

    for (const script of [
      'add chain ip mangle EC2NETD',
      'add rule ip mangle EC2NETD meta mark set 0x100',
      'flush chain ip mangle EC2NETD',
      'delete chain ip mangle EC2NETD',
      'add table ip6 mangle',
      'add chain ip6 mangle EC2NETD',
      'delete table ip6 mangle',
      'delete table ip mangle',
    ]) {
      from = lines(p).length;
      nft(script);
      await waitFor(p, from, changeOf('mangle'));
    }
    // Other tables again, then a marker: nothing in between.
    from = lines(p).length;
    nft('delete table ip filter\ndelete table ip6 nat\ndelete table inet mangle');
    nft('add table ip mangle');
    await waitFor(p, from, changeOf('mangle'));
    expect(lines(p).slice(from).filter((e) => e.event === 'change')).toHaveLength(1);
    expect(lines(p).some((e) => e.event === 'lost')).toBe(false);
    nft('delete table ip mangle');
    await p.stop();
  });
});
