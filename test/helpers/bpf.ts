// A classic BPF interpreter, as the kernel runs a socket filter (net/core/filter.c's semantics for the instructions
// it knows): A and X start at 0, BPF_ABS loads are big-endian, a load past the end of the packet ends the program
// with 0 (drop), jumps are relative to the next instruction. Unknown instructions throw: the tests then know the
// program uses something this does not model. For the unit tests of src/kernel/event-filter.ts.
import {
  BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_H, BPF_IMM, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP, BPF_K, BPF_LD, BPF_LDX, BPF_LEN,
  BPF_LSH, BPF_MISC, BPF_OR, BPF_RET, BPF_TAX, BPF_TXA, BPF_W, BPF_X, SOCK_FILTER_SIZE,
} from '../../src/kernel/event-filter';

const BPF_JSET = 0x40;
const BPF_AND = 0x50;
const BPF_RSH = 0x70;
const BPF_ADD = 0x00;

/** Runs `program` (sock_filter entries in host order) on `packet`; returns the filter's value (0: dropped). */
export function runBpf(program: Buffer, packet: Buffer, littleEndian = true): number {
  if (program.length === 0 || program.length % SOCK_FILTER_SIZE !== 0) throw new Error('bad program length');
  const n = program.length / SOCK_FILTER_SIZE;
  let a = 0;
  let x = 0;
  for (let pc = 0, steps = 0; pc < n; pc++, steps++) {
    if (steps > 4096) throw new Error('BPF: no end');
    const o = pc * SOCK_FILTER_SIZE;
    const code = littleEndian ? program.readUInt16LE(o) : program.readUInt16BE(o);
    const jt = program[o + 2] as number;
    const jf = program[o + 3] as number;
    const k = littleEndian ? program.readUInt32LE(o + 4) : program.readUInt32BE(o + 4);
    const cls = code & 0x07;
    switch (cls) {
      case BPF_LD:
      case BPF_LDX: {
        const mode = code & 0xe0;
        const size = code & 0x18;
        let v: number;
        if (mode === BPF_LEN && size === BPF_W) v = packet.length;
        else if (mode === BPF_IMM && size === BPF_W) v = k;
        else if (mode === BPF_ABS && cls === BPF_LD) {
          const bytes = size === BPF_W ? 4 : size === BPF_H ? 2 : size === BPF_B ? 1 : 0;
          if (bytes === 0) throw new Error(`BPF: unknown load 0x${code.toString(16)}`);
          if (k + bytes > packet.length) return 0; // out of bounds: the kernel's program returns 0
          v = bytes === 4 ? packet.readUInt32BE(k) : bytes === 2 ? packet.readUInt16BE(k) : packet[k] as number;
        } else throw new Error(`BPF: unknown load 0x${code.toString(16)}`);
        if (cls === BPF_LD) a = v >>> 0;
        else x = v >>> 0;
        break;
      }
      case BPF_ALU: {
        const src = (code & BPF_X) !== 0 ? x : k;
        switch (code & 0xf0) {
          case BPF_ADD: a = (a + src) >>> 0; break;
          case BPF_OR: a = (a | src) >>> 0; break;
          case BPF_AND: a = (a & src) >>> 0; break;
          case BPF_LSH: a = src >= 32 ? 0 : (a << src) >>> 0; break;
          case BPF_RSH: a = src >= 32 ? 0 : a >>> src; break;
          default: throw new Error(`BPF: unknown ALU 0x${code.toString(16)}`);
        }
        break;
      }
      case BPF_JMP: {
        const op = code & 0xf0;
        if (op === BPF_JA) {
          pc += k;
          break;
        }
        const src = (code & BPF_X) !== 0 ? x : k;
        const taken = op === BPF_JEQ ? a === src : op === BPF_JGT ? a > src : op === BPF_JGE ? a >= src
          : op === BPF_JSET ? (a & src) !== 0 : undefined;
        if (taken === undefined) throw new Error(`BPF: unknown jump 0x${code.toString(16)}`);
        pc += taken ? jt : jf;
        break;
      }
      case BPF_RET:
        return ((code & 0x18) === BPF_A ? a : (code & 0x18) === BPF_K ? k : x) >>> 0;
      case BPF_MISC:
        if ((code & 0xf8) === BPF_TAX) x = a;
        else if ((code & 0xf8) === BPF_TXA) a = x;
        else throw new Error(`BPF: unknown misc 0x${code.toString(16)}`);
        break;
      default:
        throw new Error(`BPF: unknown class 0x${code.toString(16)}`);
    }
  }
  throw new Error('BPF: fell off the end');
}
