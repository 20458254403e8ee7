// `npm run demo`: ec2netd on the simulated instance, before and after, with real packets.
// Needs root (network namespaces). Leaves nothing behind unless --keep is given. --dual-stack: the ENIs also have
// IPv6 (the VPC router learned from its simulated advertisement, the source check for IPv6 too).
import { run } from './exec';
import { startSimulatedEc2, type SimulatedEc2 } from './ec2';
import { startTcpServer, tcpProbe, type TcpServer } from './probe';
import { listNamespaces } from './topology';

const PREFIX = 'ec2demo';
const PORT = 8080;
const keep = process.argv.includes('--keep');
const dualStack = process.argv.includes('--dual-stack');
const SUBNET6 = '2600:1f18:aaaa:bb01::/64';
const V6 = (host: string): string => `2600:1f18:aaaa:bb01::${host}`;

const say = (text: string): void => { process.stdout.write(`${text}\n`); };
const heading = (text: string): void => say(`\n\x1b[1m== ${text}\x1b[0m`);

async function probe(sim: SimulatedEc2, ip: string, srcPort: number): Promise<boolean> {
  const v6 = ip.includes(':');
  const drops = async (): Promise<number> => { const c = await sim.net.dropCounters(); return v6 ? c.ipv6 : c.ipv4; };
  const before = await drops();
  const r = await tcpProbe(sim.net.ns.client, ip, PORT, { timeoutMs: 1500, srcPort });
  const dropped = (await drops()) - before;
  say(`  client ${v6 ? sim.net.clientIp6 ?? '' : sim.net.clientIp} -> ${v6 ? `[${ip}]` : ip}:${PORT}  ${r.ok ? `\x1b[32manswered "${r.answer}"\x1b[0m` : `\x1b[31mno answer (${r.error})\x1b[0m`}` +
    (dropped > 0 ? `  [source/destination check dropped ${dropped} reply packets]` : ''));
  return r.ok;
}

async function show(sim: SimulatedEc2, argv: string[]): Promise<void> {
  const { stdout } = await sim.net.exec('host', argv);
  say(`  $ ${argv.join(' ')}`);
  for (const line of stdout.trimEnd().split('\n')) say(`    ${line}`);
}

async function waitFor(what: () => Promise<boolean>, ms: number): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < ms) {
    if (await what()) return Date.now() - start;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out after ${ms} ms`);
}

async function hasRule(sim: SimulatedEc2, ip: string): Promise<boolean> {
  const { stdout } = await sim.net.exec('host', ['ip', 'rule', 'show', 'from', ip]);
  return stdout.includes('lookup');
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo needs root (it creates network namespaces)');
  for (const ns of await listNamespaces()) if (ns.startsWith(`${PREFIX}-`)) await run(['ip', 'netns', 'del', ns]);

  heading(`A simulated EC2 instance: eth0 and eth1 in the same subnet 10.0.1.0/24${dualStack ? ` and ${SUBNET6}` : ''}`);
  const sim = await startSimulatedEc2({
    prefix: PREFIX,
    hostSysctls: { 'net.ipv4.ip_nonlocal_bind': '1', 'net.ipv6.ip_nonlocal_bind': '1' },
    ...(dualStack ? { subnet6: SUBNET6 } : {}),
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], ...(dualStack ? { ipv6s: [V6('10')] } : {}), deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20', '10.0.1.21'], ...(dualStack ? { ipv6s: [V6('20')] } : {}), deviceNumber: 1 },
    ],
  });
  const v6s = dualStack ? [V6('10'), V6('20')] : [];
  const servers: TcpServer[] = [];
  try {
    say(`  namespaces: ${Object.values(sim.net.ns).join(', ')}; IMDSv2 simulator on ${sim.net.imdsIp} in ${sim.net.ns.vpc}`);
    say('  the VPC drops any frame whose source address is not assigned to the ENI it leaves (source/destination check)');
    // eth1 configured the way a plain DHCP client would: address, connected route, no policy routing.
    await sim.net.exec('host', ['ip', 'link', 'set', 'eth1', 'up']);
    await sim.net.exec('host', ['ip', 'address', 'add', '10.0.1.20/24', 'dev', 'eth1', 'metric', '200']);
    // ... and its IPv6 the way DHCPv6 would (a /128); the router advertisement put eth1's routes in main.
    if (dualStack) await sim.net.exec('host', ['ip', '-6', 'address', 'add', `${V6('20')}/128`, 'dev', 'eth1', 'noprefixroute', 'nodad']);
    for (const ip of ['10.0.1.10', '10.0.1.20', '10.0.1.21', ...v6s]) servers.push(await startTcpServer(sim.net.ns.host, ip, PORT));

    heading('Before ec2netd: replies to eth1 leave through eth0 and are dropped');
    await probe(sim, '10.0.1.10', 40001);
    await probe(sim, '10.0.1.20', 40002);
    for (const [i, ip] of v6s.entries()) await probe(sim, ip, 40101 + i);

    heading('Start ec2netd run (reads IMDS, subscribes to rtnetlink, reconciles)');
    const daemon = sim.startDaemon(['--log-level', 'info']);
    const ms = await waitFor(async () => daemon.output().stdout.includes('"action":"ready"') || daemon.hasExited(), 15_000);
    if (daemon.hasExited()) throw new Error(`ec2netd exited: ${daemon.output().stderr}${daemon.output().stdout}`);
    say(`  ready ${ms} ms after start (node's own start-up included); what it logged:`);
    for (const line of daemon.output().stdout.trim().split('\n')) {
      try { say(`    ${(JSON.parse(line) as { msg: string }).msg}`); } catch { say(`    ${line}`); }
    }
    await show(sim, ['ip', 'rule', 'show']);
    await show(sim, ['ip', 'route', 'show', 'table', '10001']);
    if (dualStack) {
      await show(sim, ['ip', '-6', 'rule', 'show']);
      await show(sim, ['ip', '-6', 'route', 'show', 'table', '10001']);
    }

    heading(`After: every private IPv4${dualStack ? ' and IPv6' : ''} of every ENI answers`);
    await probe(sim, '10.0.1.10', 40003);
    await probe(sim, '10.0.1.20', 40004);
    await probe(sim, '10.0.1.21', 40005);
    for (const [i, ip] of v6s.entries()) await probe(sim, ip, 40111 + i);

    heading('Hot-attach eth2 (device-number 2) with 10.0.1.30');
    servers.push(await startTcpServer(sim.net.ns.host, '10.0.1.30', PORT));
    const attached = Date.now();
    await sim.attachEni({ name: 'eth2', ipv4s: ['10.0.1.30'], deviceNumber: 2 });
    await waitFor(() => hasRule(sim, '10.0.1.30'), 10_000);
    say(`  eth2 configured ${Date.now() - attached} ms after the attach (table 10002): the link appears first, IMDS lists`);
    say('  the ENI a little later, as on EC2, and ec2netd asks again with backoff until it does');
    await probe(sim, '10.0.1.30', 40006);

    heading('ec2netd status');
    const status = await sim.ec2netd(['status']);
    for (const line of status.stdout.trimEnd().split('\n')) say(`  ${line}`);

    heading('Stop the daemon: the routing stays in place');
    await daemon.stop(3000);
    await probe(sim, '10.0.1.20', 40007);
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    if (keep) {
      say(`\n--keep: namespaces left for you: ${Object.values(sim.net.ns).join(', ')} (ip netns del ... to remove)`);
    } else {
      await sim.destroy();
      say('\nCleaned up: namespaces deleted.');
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
