import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, configFrom, defaultConfig, defaultImdsEndpoint, loadConfig } from '../../src/config';

const dir = mkdtempSync(path.join(tmpdir(), 'ec2netd-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
}

describe('config', () => {
  it('overlays a partial file on the defaults, with hex strings for numbers', () => {
    const c = configFrom({ priorities: { fromAddress: 900 }, containers: { markMask: '0x3e' } }, {});
    expect(c.priorities).toEqual({ toContainers: 10050, fromAddress: 900, fwmark: 10200 });
    expect(c.containers.markMask).toBe(0x3e);
    expect(c.tableBase).toBe(10000);
  });

  it('refuses unknown keys, wrong types and out-of-range values, naming the setting', () => {
    expect(() => configFrom({ tabelBase: 1 }, {})).toThrow('unknown setting "tabelBase"');
    expect(() => configFrom({ imds: { timeoutMs: '5' } }, {})).toThrow('setting "imds.timeoutMs" must be a number');
    expect(() => configFrom({ priorities: { fwmark: 40000 } }, {})).toThrow('priorities.fwmark');
    expect(() => configFrom({ protocol: 186 }, {})).toThrow('setting "protocol"');
    expect(() => configFrom({ containers: { bridgePatterns: ['docker0;rm'] } }, {})).toThrow('containers.bridgePatterns');
    expect(() => configFrom({ containers: { markMask: 0 } }, {})).toThrow(ConfigError);
    expect(() => configFrom([], {})).toThrow('JSON object');
    expect(() => configFrom({ sync: { maxIntervalMs: 10 } }, {})).toThrow('setting "sync.maxIntervalMs" must be from 1000');
    expect(() => configFrom({ sync: { fightCapMs: 0 } }, {})).toThrow('setting "sync.fightCapMs" must be from 200');
    expect(configFrom({ sync: { fightCapMs: 2000 } }, {}).sync).toMatchObject({ fightCapMs: 2000, maxIntervalMs: 300_000 });
  });

  it('takes the IMDS endpoint from the SDK variables', () => {
    expect(defaultImdsEndpoint({})).toBe('http://169.254.169.254');
    expect(defaultImdsEndpoint({ AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE: 'IPv6' })).toBe('http://[fd00:ec2::254]');
    expect(defaultImdsEndpoint({ AWS_EC2_METADATA_SERVICE_ENDPOINT: 'http://127.0.0.1:1338/' })).toBe('http://127.0.0.1:1338');
  });

  it('loads files: default path missing = defaults, named file missing or broken = error', () => {
    expect(loadConfig(file('ok.json', '{"log":{"level":"debug"}}'), {}).log.level).toBe('debug');
    expect(() => loadConfig(path.join(dir, 'nope.json'), {})).toThrow('cannot read config file');
    expect(() => loadConfig(file('bad.json', '{"log":'), {})).toThrow('is not valid JSON');
    expect(() => loadConfig(file('range.json', '{"sync":{"debounceMs":-1}}'), {})).toThrow(/range.json: setting "sync.debounceMs"/);
    expect(defaultConfig({}).stateDir).toBe('/run/ec2netd');
  });
});
