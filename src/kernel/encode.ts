// Hand-written encoders of the two messages a large sync is made of: FIB rules and addresses, byte for byte what
// the `netlink` package's generic formatter produces for the same fields (test/unit/encode.test.ts compares them).
// The generic formatter builds a list of small buffers per attribute; a 15 × 50 sync encodes ~1500 messages.
//
// Layout (include/uapi/linux/fib_rules.h, if_addr.h): a fixed header, then attributes of 4-byte length+type each
// padded to 4 bytes, except the last one (as the package does; the batch sender pads between messages).

export interface Attr {
  type: number;
  /** A u8 or u32 (native byte order), or raw bytes. */
  value: number | Buffer;
  u8?: boolean;
}

function attrLength(a: Attr): number {
  return 4 + (typeof a.value === 'number' ? (a.u8 === true ? 1 : 4) : a.value.length);
}

/** `header` followed by `attrs`, in one buffer. */
export function encodeMessage(header: Buffer, attrs: readonly Attr[]): Buffer {
  let length = header.length;
  for (let i = 0; i < attrs.length; i++) {
    length = (length + 3) & ~3;
    length += attrLength(attrs[i] as Attr);
  }
  const out = Buffer.alloc(length);
  header.copy(out, 0);
  let pos = header.length;
  for (const a of attrs) {
    pos = (pos + 3) & ~3;
    const len = attrLength(a);
    out.writeUInt16LE(len, pos);
    out.writeUInt16LE(a.type, pos + 2);
    if (typeof a.value !== 'number') a.value.copy(out, pos + 4);
    else if (a.u8 === true) out[pos + 4] = a.value;
    else out.writeUInt32LE(a.value >>> 0, pos + 4);
    pos += len;
  }
  return out;
}
