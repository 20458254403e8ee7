// What ec2netd takes IMDS to say, and how it got there: reads (whole or targeted), folded into the last good state
// per ENI (src/core/last-good.ts), with the journal told once per cause which ENI is held and why.
import { mergeRead } from '../core/last-good';
import type { HeldEni, ImdsSnapshot, KernelLink } from '../core/types';
import { splitList, type ImdsReader } from '../imds/client';
import { MACS_PATH, readEni, readImds } from '../imds/snapshot';
import type { Logger } from '../log';

export class ImdsState {
  snapshot: ImdsSnapshot | undefined;
  lastError: string | undefined;
  /** Held causes already in the journal: `mac|part|reason`. */
  private told = new Set<string>();

  /**
   * `previous`: what the previous daemon in this namespace configured (src/daemon/status-file.ts). Not acted on
   * by itself (nothing is planned before the first read); the first reads are merged into it, so an ENI read
   * incompletely just after a restart keeps its routing.
   */
  constructor(private readonly imds: ImdsReader, private readonly log: Logger, private readonly previous?: ImdsSnapshot) {}

  /** Reads the whole of IMDS. On failure every ENI keeps its last good state. */
  async refresh(links: readonly KernelLink[]): Promise<boolean> {
    try {
      const last = this.snapshot ?? this.previous;
      this.accept(mergeRead(last, await readImds(this.imds, { previous: last }), links));
      return true;
    } catch (err) {
      this.failed(err);
      return false;
    }
  }

  /**
   * Re-reads only the given MACs (a new link, an ENI waiting for IMDS, an address event), at a fraction of a whole
   * read. A MAC IMDS does not list (yet) is left as it was. Falls back to a whole read before the first one.
   */
  async refreshMacs(macs: readonly string[], links: readonly KernelLink[], opts: { expectListed?: boolean } = {}): Promise<boolean> {
    const current = this.snapshot;
    if (current === undefined) return this.refresh(links);
    // `expectListed` (an ENI the snapshot describes, re-read for an address event; a link the kernel just announced):
    // its keys are read alongside the listing, all at once, and dropped if it is not listed after all: one round trip
    // instead of two or three.
    const early = opts.expectListed === true ? new Map([...new Set(macs)].map((mac) => {
      const read = readEni(this.imds, mac, current.primaryMac, { concurrency: 16, previous: current });
      read.catch(() => undefined); // handled now: it may fail before it is awaited (after the listing), or never be
      return [mac, read] as const;
    })) : undefined;
    try {
      const listed = new Set(splitList((await this.imds.get(MACS_PATH)) ?? '').map((m) => m.replace(/\/$/, '').toLowerCase()));
      const wanted = [...new Set(macs)].filter((m) => listed.has(m));
      // All of an ENI's keys at once (9 or 10 requests): one round trip, not two at the whole read's concurrency of 8.
      const enis = await Promise.all(wanted.map((mac) => early?.get(mac) ?? readEni(this.imds, mac, current.primaryMac, { concurrency: 16, previous: current })));
      this.accept(mergeRead(current, { primaryMac: current.primaryMac, macs: wanted, enis, partial: true }, links));
      return true;
    } catch (err) {
      this.failed(err);
      return false;
    }
  }

  private accept(next: ImdsSnapshot): void {
    const now = new Set<string>();
    for (const h of next.held ?? []) {
      const key = `${h.mac}|${h.part}|${h.reason}`;
      now.add(key);
      if (!this.told.has(key)) this.log.warn({ eni: h.interfaceId, action: 'hold' }, describeHeld(h));
    }
    for (const key of this.told) {
      const [mac, part] = key.split('|');
      if (!(next.held ?? []).some((h) => h.mac === mac && h.part === part)) {
        const eni = this.snapshot?.enis.find((e) => e.mac === mac)?.interfaceId ?? mac ?? '';
        this.log.info({ eni, action: 'hold' }, `${eni}: IMDS is consistent again${part === 'all' ? '' : ` for its ${part === 'ipv4' ? 'IPv4' : 'IPv6'} keys`}`);
      }
    }
    this.told = now;
    if (this.lastError !== undefined) this.log.info('IMDS answers again');
    this.snapshot = next;
    this.lastError = undefined;
  }

  private failed(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    if (message !== this.lastError) this.log.warn({ err: message }, `IMDS read failed, keeping the last good state: ${message}`);
    this.lastError = message;
  }
}

/** One line for the journal and `status`. */
export function describeHeld(h: HeldEni): string {
  const what = h.part === 'all' ? '' : ` ${h.part === 'ipv4' ? 'IPv4' : 'IPv6'}`;
  return h.waiting === true
    ? `${h.interfaceId}:${what} not configured until IMDS is consistent: ${h.reason}`
    : `${h.interfaceId}:${what} configuration held on its last good IMDS read: ${h.reason}`;
}
