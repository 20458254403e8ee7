import { describe, expect, it } from 'vitest';
import { socketInodes } from '../../src/daemon/instance-lock';

describe('socketInodes', () => {
  it('finds the abstract name however many NUL bytes pad it, and nothing else', () => {
    const text = [
      'Num       RefCount Protocol Flags    Type St Inode Path',
      '00000000378de468: 00000002 00000000 00010000 0001 01 39106 @ec2netd.instance@@@@@@@@',
      '00000000378de469: 00000002 00000000 00010000 0001 01 39107 @ec2netd.instance2',
      '00000000378de46a: 00000003 00000000 00000000 0001 03 39108',
      '00000000378de46b: 00000002 00000000 00010000 0001 01 39109 /run/ec2netd.instance',
    ].join('\n');
    expect([...socketInodes(text, 'ec2netd.instance')]).toEqual(['39106']);
  });
});
