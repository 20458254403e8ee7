// The rtnetlink event socket's BPF program (src/kernel/event-filter.ts), run in a small interpreter of classic BPF
// (test/helpers/bpf.ts) on messages laid out as the kernel sends them. The same program on a real socket:
// test/integration/echo-filter.test.ts.
import { describe, expect, it } from 'vitest';
import { rtnetlinkEventFilter, SOCK_FILTER_SIZE } from '../../src/kernel/event-filter';
import {
  NLMSG_HDRLEN, RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE, RTM_DELRULE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE, RTM_NEWRULE,
} from '../../src/kernel/rtnl-codec';
import { classifyRtnetlink } from '../../src/kernel/events';
import { runBpf } from '../helpers/bpf';

/** One notification: nlmsghdr, a 12-byte fixed header (rtmsg: table at its byte 4), `extra` attribute bytes. */
function message(type: number, pid: number, opts: { table?: number; extra?: number; le?: boolean } = {}): Buffer {
  const le = opts.le ?? true;
  const buf = Buffer.alloc(NLMSG_HDRLEN + 12 + (opts.extra ?? 8));
  const u32 = (v: number, o: number): void => { if (le) buf.writeUInt32LE(v >>> 0, o); else buf.writeUInt32BE(v >>> 0, o); };
  u32(buf.length, 0);
  if (le) buf.writeUInt16LE(type, 4);
  else buf.writeUInt16BE(type, 4);
  u32(0, 8); // seq
  u32(pid, 12);
  buf[NLMSG_HDRLEN] = 2; // family
  buf[NLMSG_HDRLEN + 4] = opts.table ?? 254;
  return buf;
}

const PORTS = [0x1234, 0x8000_0000 | 4321, (1023 << 22 | 0x3fffff) >>> 0, 0xffff_efff, 1];
const OWN_TYPES = [RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWRULE, RTM_DELRULE];
const ALL_TYPES = [...OWN_TYPES, RTM_DELADDR];
const kept = (program: Buffer, packet: Buffer, le = true): boolean => runBpf(program, packet, le) !== 0;

describe('rtnetlink event filter (classic BPF)', () => {
  it('is a whole number of sock_filter entries, well under the kernel limit', () => {
    const p = rtnetlinkEventFilter({ ownPort: 77 });
    expect(p.length % SOCK_FILTER_SIZE).toBe(0);
    expect(p.length / SOCK_FILTER_SIZE).toBeLessThan(64);
  });

  for (const le of [true, false]) {
    describe(le ? 'little-endian host' : 'big-endian host', () => {
      it("drops the echoes of the request socket's own writes, but not its address deletions", () => {
        for (const port of PORTS) {
          const program = rtnetlinkEventFilter({ ownPort: port, littleEndian: le });
          for (const type of OWN_TYPES) expect(kept(program, message(type, port, { le }), le), `type ${type} port ${port}`).toBe(false);
          expect(kept(program, message(RTM_DELADDR, port, { le }), le)).toBe(true);
        }
      });

      it('keeps what other processes and the kernel itself did', () => {
        for (const port of PORTS) {
          const program = rtnetlinkEventFilter({ ownPort: port, littleEndian: le });
          for (const type of ALL_TYPES) {
            for (const other of [0, port + 1, port - 1, port ^ 0x100, port ^ 0x1_0000, port ^ 0x100_0000]) {
              expect(kept(program, message(type, other >>> 0, { le }), le), `type ${type} pid ${other}`).toBe(true);
            }
          }
        }
      });

      it('drops routes of the local table, whoever made them, and no other table', () => {
        for (const program of [rtnetlinkEventFilter({ littleEndian: le }), rtnetlinkEventFilter({ ownPort: 99, littleEndian: le })]) {
          for (const type of [RTM_NEWROUTE, RTM_DELROUTE]) {
            expect(kept(program, message(type, 0, { table: 255, le }), le)).toBe(false);
            expect(kept(program, message(type, 1234, { table: 255, le }), le)).toBe(false);
            // main, default, the compat marker of tables above 255 (the real one in RTA_TABLE), an ENI's low byte
            for (const table of [254, 253, 252, 0, 100, 16]) expect(kept(program, message(type, 0, { table, le }), le)).toBe(true);
          }
          // Byte 20 is 255 in a message of another type: not a route, kept.
          for (const type of [RTM_NEWADDR, RTM_NEWRULE, RTM_NEWLINK]) expect(kept(program, message(type, 0, { table: 255, le }), le)).toBe(true);
        }
      });

      it('without a port, drops no echo', () => {
        const program = rtnetlinkEventFilter({ littleEndian: le });
        for (const type of ALL_TYPES) expect(kept(program, message(type, 0x1234, { le }), le)).toBe(true);
      });

      it('delivers whole a datagram that holds more than one message, or is too short to judge', () => {
        const program = rtnetlinkEventFilter({ ownPort: 4321, littleEndian: le });
        const own = message(RTM_NEWRULE, 4321, { le });
        const local = message(RTM_NEWROUTE, 0, { table: 255, le });
        const foreign = message(RTM_DELRULE, 999, { le });
        expect(kept(program, Buffer.concat([own, foreign]), le)).toBe(true);
        expect(kept(program, Buffer.concat([local, foreign]), le)).toBe(true);
        expect(kept(program, Buffer.concat([own, own]), le)).toBe(true);
        for (const n of [0, 1, 4, 15]) expect(kept(program, own.subarray(0, n), le)).toBe(true);
        // A header that claims more than the datagram holds: one (truncated) message, judged by its header.
        const longer = Buffer.from(own);
        if (le) longer.writeUInt32LE(own.length + 100, 0);
        else longer.writeUInt32BE(own.length + 100, 0);
        expect(kept(program, longer, le)).toBe(false);
        // A route message cut before its table byte: kept (a load past the end would have dropped it).
        expect(kept(program, message(RTM_NEWROUTE, 0, { table: 255, le }).subarray(0, NLMSG_HDRLEN + 4), le)).toBe(true);
      });
    });
  }

  it('drops nothing the classifier would act on, other than own echoes (random messages)', () => {
    const program = rtnetlinkEventFilter({ ownPort: 0x4000_1234 });
    let seed = 12345;
    const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
    for (let i = 0; i < 5000; i++) {
      const type = rnd(40);
      const pid = [0, 0x4000_1234, rnd(1 << 30)][rnd(3)] as number;
      const msg = message(type, pid, { table: [255, 254, 252, rnd(256)][rnd(4)] as number, extra: rnd(64) });
      const ownEcho = pid === 0x4000_1234 && type !== RTM_DELADDR;
      const dropped = !kept(program, msg);
      if (dropped && !ownEcho) expect(classifyRtnetlink(msg, 0, msg.length), `type ${type} table ${msg[20]}`).toBe(0);
      if (ownEcho) expect(dropped).toBe(true);
    }
  });
});
