// deploy/config.json is the default configuration the .deb installs: it must stay equal to
// defaultConfig(). imds.endpoint is left out on purpose: its default depends on the environment
// (AWS_EC2_METADATA_SERVICE_ENDPOINT(_MODE)) and a value in the file would override that.
// Regenerate with: EC2NETD_WRITE_DEPLOY_CONFIG=1 npx vitest run test/unit/systemd-deploy.test.ts
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configFrom, defaultConfig } from '../../src/config';

const root = join(__dirname, '..', '..');

function deployDefaults(): unknown {
  const config = defaultConfig({});
  const { endpoint: _endpoint, ...imds } = config.imds;
  return { ...config, imds };
}

describe('deploy/', () => {
  it('config.json holds every default except the environment-dependent imds.endpoint', () => {
    const file = join(root, 'deploy', 'config.json');
    const expected = `${JSON.stringify(deployDefaults(), null, 2)}\n`;
    if (process.env.EC2NETD_WRITE_DEPLOY_CONFIG === '1') writeFileSync(file, expected);
    const text = readFileSync(file, 'utf8');
    expect(text).toBe(expected);
    expect(configFrom(JSON.parse(text), {})).toEqual(defaultConfig({}));
    expect(configFrom(JSON.parse(text), { AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE: 'IPv6' }).imds.endpoint).toBe('http://[fd00:ec2::254]');
  });

  it('the unit is a notify service started as node itself, with the watchdog and bounded privileges', () => {
    const unit = readFileSync(join(root, 'deploy', 'ec2netd.service'), 'utf8');
    for (const line of ['Type=notify', 'NotifyAccess=main', 'ExecStart=/usr/bin/ec2netd run', 'ExecReload=/bin/kill -HUP $MAINPID',
      'WatchdogSec=30s', 'Restart=on-failure', 'Before=network-online.target', 'CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW',
      'ProtectSystem=strict', 'RuntimeDirectory=ec2netd']) {
      expect(unit.split('\n')).toContain(line);
    }
    // V8 sizing: the flags are the bin/ec2netd launcher's (which ExecStart, the tests and the bench run), in one place;
    // NODE_OPTIONS in the unit would refuse --single-threaded and stop node from starting.
    const flags = /^flags=\$\{EC2NETD_NODE_FLAGS-(.*)\}$/m.exec(readFileSync(join(root, 'bin', 'ec2netd'), 'utf8'))?.[1];
    expect(flags).toMatch(/^--max-semi-space-size=\d+ --max-old-space-size=\d+ --single-threaded --max-opt=2 --expose-gc$/);
    expect(unit).not.toMatch(/^Environment=.*NODE_OPTIONS/m);
    const networkd = readFileSync(join(root, 'deploy', 'networkd-ec2netd.conf'), 'utf8');
    expect(networkd).toMatch(/^ManageForeignRoutingPolicyRules=no$/m);
    expect(networkd).toMatch(/^ManageForeignRoutes=no$/m);
  });
});
