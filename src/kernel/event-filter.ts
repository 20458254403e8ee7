// The classic BPF program the kernel runs on each notification before it queues it on the rtnetlink event socket
// (SO_ATTACH_FILTER, the patched `netlink` addon's attachFilter). Pure: builds the bytes, nothing is attached here.
//
// It drops, so that they never wake the daemon's thread:
// - the notifications of ec2netd's own writes: the kernel stamps a notification caused by a request with the
//   requesting socket's port id in nlmsg_pid (kernel-derived events carry 0, other processes their own port), so
//   a message whose nlmsg_pid is the request socket's port is the echo of something ec2netd wrote and already knows
//   the outcome of (the ACK). Except RTM_DELADDR: deleting an IPv4 address makes the kernel delete or promote the
//   subnet's secondary addresses (their messages carry the deleter's port too) and flush the routes whose `src` it
//   was (no message at all), so the deletion's own echo is what makes the daemon look again;
// - routes of the local table (255), whoever caused them: the kernel derives them from addresses, and
//   classifyRtnetlink ignores them anyway (src/kernel/events.ts).
//
// A netlink notification skb holds one message for rtnetlink notifications (rtnl_notify → nlmsg_notify). The filter
// sees only the datagram's first header, so a datagram that holds more than one message (whatever sent it: another
// process may multicast on these groups) is delivered whole, unfiltered: the classifier reads it message by message
// as before. So are datagrams too short for a header. Nothing is ever dropped that the classifier would act on,
// except the echoes above.
//
// Byte order: BPF_LD|BPF_ABS loads are big-endian (network order), while the netlink header and rtmsg are in host
// order (little-endian on the x86-64 and arm64 machines ec2netd runs on). So 32- and 16-bit constants are compared
// byte-swapped on a little-endian host, and nlmsg_len is assembled from its four bytes. The sock_filter entries
// themselves ({ u16 code; u8 jt; u8 jf; u32 k; }) are in host order.
import { endianness } from 'node:os';
import { NLMSG_HDRLEN, RTM_DELADDR, RTM_DELROUTE, RTM_NEWROUTE } from './rtnl-codec';

// linux/bpf_common.h, linux/filter.h
export const BPF_LD = 0x00;
export const BPF_LDX = 0x01;
export const BPF_ALU = 0x04;
export const BPF_JMP = 0x05;
export const BPF_RET = 0x06;
export const BPF_MISC = 0x07;
export const BPF_W = 0x00;
export const BPF_H = 0x08;
export const BPF_B = 0x10;
export const BPF_IMM = 0x00;
export const BPF_ABS = 0x20;
export const BPF_LEN = 0x80;
export const BPF_OR = 0x40;
export const BPF_LSH = 0x60;
export const BPF_JA = 0x00;
export const BPF_JEQ = 0x10;
export const BPF_JGT = 0x20;
export const BPF_JGE = 0x30;
export const BPF_K = 0x00;
export const BPF_X = 0x08;
export const BPF_A = 0x10;
export const BPF_TAX = 0x00;
export const BPF_TXA = 0x80;
/** sizeof(struct sock_filter). */
export const SOCK_FILTER_SIZE = 8;

/** Return values: the number of bytes of the datagram to keep (0: drop it). */
const ACCEPT = 0xffffffff;
const DROP = 0;

const NLMSG_TYPE = 4;
const NLMSG_PID = 12;
/** rtmsg.rtm_table: the fifth byte of the rtmsg after the header. */
const RTM_TABLE = NLMSG_HDRLEN + 4;
const RT_TABLE_LOCAL = 255;

export interface EventFilterOptions {
  /** The port id of the daemon's request socket: its echoes are dropped. Undefined: no echo is dropped. */
  ownPort?: number;
  /** Host byte order (default: this machine's). */
  littleEndian?: boolean;
}

/** One instruction, with its jumps by label (resolved to relative offsets by assemble()). */
interface Insn {
  code: number;
  k?: number;
  jt?: string;
  jf?: string;
  label?: string;
}

const swap16 = (v: number): number => ((v & 0xff) << 8) | ((v >> 8) & 0xff);
const swap32 = (v: number): number => (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | ((v >>> 24) & 0xff)) >>> 0;

/** The rtnetlink event socket's filter, as the bytes of a sock_filter array. */
export function rtnetlinkEventFilter(options: EventFilterOptions = {}): Buffer {
  const le = options.littleEndian ?? endianness() === 'LE';
  // What an ABS load of a host-order field reads, for a value v.
  const h16 = (v: number): number => (le ? swap16(v) : v);
  const h32 = (v: number): number => (le ? swap32(v) : v >>> 0);
  const ldb = (offset: number): Insn => ({ code: BPF_LD | BPF_B | BPF_ABS, k: offset });
  // nlmsg_len's bytes, most significant first.
  const lenBytes = le ? [3, 2, 1, 0] : [0, 1, 2, 3];
  const p: Insn[] = [
    // Shorter than a header: not for us to judge.
    { code: BPF_LD | BPF_W | BPF_LEN },
    { code: BPF_JMP | BPF_JGE | BPF_K, k: NLMSG_HDRLEN, jt: 'header', jf: 'accept' },
    // A = nlmsg_len (host order), built a byte at a time with X as scratch.
    { ...ldb(lenBytes[0] as number), label: 'header' },
    ...lenBytes.slice(1).flatMap((b) => [
      { code: BPF_ALU | BPF_LSH | BPF_K, k: 8 },
      { code: BPF_MISC | BPF_TAX },
      ldb(b),
      { code: BPF_ALU | BPF_OR | BPF_X },
    ]),
    // X = the datagram's length; the first message must span all of it (one message), else deliver it whole.
    { code: BPF_LDX | BPF_W | BPF_LEN },
    { code: BPF_JMP | BPF_JGE | BPF_X, jt: 'one', jf: 'accept' },
  ];
  if (options.ownPort !== undefined) {
    p.push(
      { code: BPF_LD | BPF_W | BPF_ABS, k: NLMSG_PID, label: 'one' },
      { code: BPF_JMP | BPF_JEQ | BPF_K, k: h32(options.ownPort), jt: 'own', jf: 'type' },
      // An echo of ec2netd's own write: dropped, unless an address deletion (see the top of the file).
      { code: BPF_LD | BPF_H | BPF_ABS, k: NLMSG_TYPE, label: 'own' },
      { code: BPF_JMP | BPF_JEQ | BPF_K, k: h16(RTM_DELADDR), jt: 'accept', jf: 'drop' },
    );
  }
  p.push(
    { code: BPF_LD | BPF_H | BPF_ABS, k: NLMSG_TYPE, label: options.ownPort === undefined ? 'one' : 'type' },
    { code: BPF_JMP | BPF_JEQ | BPF_K, k: h16(RTM_NEWROUTE), jt: 'route', jf: 'delroute' },
    { code: BPF_JMP | BPF_JEQ | BPF_K, k: h16(RTM_DELROUTE), jt: 'route', jf: 'accept', label: 'delroute' },
    // A route: X still holds the length; the table byte must be inside it (a load past the end would drop).
    { code: BPF_MISC | BPF_TXA, label: 'route' },
    { code: BPF_JMP | BPF_JGT | BPF_K, k: RTM_TABLE, jt: 'table', jf: 'accept' },
    { ...ldb(RTM_TABLE), label: 'table' },
    { code: BPF_JMP | BPF_JEQ | BPF_K, k: RT_TABLE_LOCAL, jt: 'drop', jf: 'accept' },
    { code: BPF_RET | BPF_K, k: ACCEPT, label: 'accept' },
    { code: BPF_RET | BPF_K, k: DROP, label: 'drop' },
  );
  return assemble(p, le);
}

/** Resolves labels to relative jumps (from the next instruction) and writes the sock_filter array in host order. */
function assemble(program: readonly Insn[], le: boolean): Buffer {
  const at = new Map<string, number>();
  program.forEach((insn, i) => { if (insn.label !== undefined) at.set(insn.label, i); });
  const out = Buffer.alloc(program.length * SOCK_FILTER_SIZE);
  program.forEach((insn, i) => {
    const jump = (label: string | undefined): number => {
      if (label === undefined) return 0;
      const to = at.get(label);
      if (to === undefined || to <= i || to - i - 1 > 255) throw new Error(`BPF: bad jump to ${label} from ${i}`);
      return to - i - 1;
    };
    const o = i * SOCK_FILTER_SIZE;
    if (le) out.writeUInt16LE(insn.code, o);
    else out.writeUInt16BE(insn.code, o);
    out[o + 2] = jump(insn.jt);
    out[o + 3] = jump(insn.jf);
    if (le) out.writeUInt32LE((insn.k ?? 0) >>> 0, o + 4);
    else out.writeUInt32BE((insn.k ?? 0) >>> 0, o + 4);
  });
  return out;
}
