// Model-based chaos against the real daemon on the simulated instance. A seeded random sequence of IMDS states
// (whole, partial, inconsistent, hostile, failing, IPs moving between ENIs) and kernel perturbations (foreign
// deletions, link flaps that silently drop routes, short fights) is played; after every step:
//   - every address IMDS has consistently assigned answers a client, through its own ENI (the VPC's
//     source/destination check drops a reply from any other);
//   - nothing ec2netd does not own changed (foreign rule, route and address planted at the start);
//   - never two `from` rules for one source.
// The model is the truth the VPC holds; IMDS shows it whole or spoiled. CHAOS_SEED=<n> replays a run,
// CHAOS_STEPS=<n> makes it longer; the seed is in the test's name and in every failure.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { startTcpServer, waitForTcp, type TcpServer } from '../../sim/probe';
import { logMark, waitConverged, waitForLog } from '../helpers/daemon-watch';
import { eventually, flowPort, ownedRules, rules, useSimulatedEc2 } from '../helpers/sim';
import { seededRandom } from '../helpers/random';

const PORT = 8080;
const SEED = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const STEPS = Number(process.env.CHAOS_STEPS ?? 14);
const ENIS = ['eth1', 'eth2'] as const;
type Eni = (typeof ENIS)[number];

describe(`chaos (seed ${SEED}, ${STEPS} steps; replay with CHAOS_SEED=${SEED})`, () => {
  const sim = useSimulatedEc2('chaos', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20', '10.0.1.40'], deviceNumber: 1 },
      { name: 'eth2', ipv4s: ['10.0.1.30', '10.0.1.41'], deviceNumber: 2 },
    ],
    config: {
      imds: { refreshIntervalMs: 600_000, timeoutMs: 500, attempts: 1 },
      // A short fight cap: the rule comes back within the invariant check's wait once a fight step ends.
      sync: { pendingRetryBaseMs: 50, pendingRetryMaxMs: 400, fightCapMs: 2000 },
    },
  });
  const random = seededRandom(SEED);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
  // The model: the secondary IPs the VPC (and a consistent IMDS) assigns to each secondary ENI.
  const truth: Record<Eni, string[]> = { eth1: ['10.0.1.40'], eth2: ['10.0.1.41'] };
  const primaryOf: Record<Eni, string> = { eth1: '10.0.1.20', eth2: '10.0.1.30' };
  let nextIp = 42;
  let daemon: ManagedProcess;
  let server: TcpServer;
  const history: string[] = [];
  let foreign = '';

  const fail = (what: string): never => {
    throw new Error(`${what}\nseed ${SEED}; steps so far:\n  ${history.join('\n  ')}`);
  };
  const imdsWhole = async (eni: Eni): Promise<void> => {
    await sim().patchImdsEni(eni, { ipv4s: [primaryOf[eni], ...truth[eni]], hide: [], override: {} });
  };
  /** SIGHUP, then wait for `line` after `mark` (taken before the change: the daemon may see it before the SIGHUP). */
  const reloadAndWait = async (line?: string, mark = logMark(daemon)): Promise<void> => {
    daemon.child.kill('SIGHUP');
    if (line !== undefined) await waitForLog(daemon, mark, (l) => l.msg.includes(line), line, 10_000);
  };
  const foreignState = async (): Promise<string> => {
    const r = (await rules(sim())).filter((x) => x.priority === 500).map((x) => JSON.stringify(x));
    const { stdout: route } = await sim().net.exec('host', ['ip', 'route', 'show', 'table', '300']);
    const { stdout: addr } = await sim().net.exec('host', ['ip', '-4', '-o', 'address', 'show', 'dev', 'eth2', 'to', '10.0.1.99']);
    return `${r.join()}|${route.trim()}|${addr.trim().replace(/valid_lft.*$/, '')}`;
  };

  /** The invariants, after the daemon has seen the step. */
  const check = async (step: string): Promise<void> => {
    history.push(step);
    try {
      await waitConverged(sim(), 15_000);
    } catch (err) {
      fail(`after "${step}": ${(err as Error).message}`);
    }
    for (const eni of ENIS) {
      for (const ip of [primaryOf[eni], ...truth[eni]]) {
        const r = await waitForTcp(sim().net.ns.client, ip, PORT, { srcPort: flowPort(), deadlineMs: 6000, attemptTimeoutMs: 800 });
        if (!r.ok) fail(`after "${step}": ${ip} (assigned to ${eni}) does not answer through ${eni}`);
      }
    }
    const sources = (await ownedRules(sim())).filter((r) => r.includes(' from 10.'));
    const bySource = sources.map((r) => r.split(' lookup ')[0]);
    if (new Set(bySource).size !== bySource.length) fail(`after "${step}": two rules for one source: ${sources.join('; ')}`);
    const now = await foreignState();
    if (now !== foreign) fail(`after "${step}": a foreign object changed:\n  before ${foreign}\n  after  ${now}`);
  };

  beforeAll(async () => {
    await sim().net.exec('host', ['sysctl', '-q', '-w', 'net.ipv4.ip_nonlocal_bind=1']);
    server = await startTcpServer(sim().net.ns.host, '0.0.0.0', PORT, { answer: 'ok' });
    // Objects ec2netd does not own, that must never change.
    await sim().net.exec('host', ['ip', 'rule', 'add', 'from', '10.0.1.99', 'lookup', '300', 'pref', '500']);
    await sim().net.exec('host', ['ip', 'link', 'set', 'eth2', 'up']);
    await sim().net.exec('host', ['ip', 'route', 'add', '192.0.2.0/24', 'dev', 'eth0', 'table', '300']);
    await sim().net.exec('host', ['ip', 'address', 'add', '10.0.1.99/32', 'dev', 'eth2']);
    foreign = await foreignState();
    daemon = sim().startDaemon();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('keeps every consistently assigned address answering through its own ENI, and touches nothing foreign', async () => {
    await check('start');
    const steps: Array<[string, () => Promise<string>]> = [
      ['assign', async () => {
        const eni = pick(ENIS);
        const ip = `10.0.1.${nextIp++}`;
        truth[eni].push(ip);
        await sim().net.assignIp(eni, ip);
        await imdsWhole(eni);
        await reloadAndWait();
        return `assign ${ip} to ${eni}`;
      }],
      ['unassign', async () => {
        const eni = pick(ENIS.filter((e) => truth[e].length > 0));
        const ip = pick(truth[eni]);
        truth[eni] = truth[eni].filter((x) => x !== ip);
        await imdsWhole(eni);
        await sim().net.unassignIp(eni, ip);
        await reloadAndWait();
        return `unassign ${ip} from ${eni}`;
      }],
      ['move', async () => {
        const from = pick(ENIS.filter((e) => truth[e].length > 0));
        const to = ENIS.find((e) => e !== from) as Eni;
        const ip = pick(truth[from]);
        // Mid-move IMDS lists it on both, while the VPC still sends it to `from`: it must keep answering there.
        const mark = logMark(daemon);
        await sim().patchImdsEni(to, { ipv4s: [primaryOf[to], ...truth[to], ip] });
        await reloadAndWait('is listed by IMDS on both', mark);
        await check(`move ${ip} ${from}→${to}: listed on both`);
        truth[from] = truth[from].filter((x) => x !== ip);
        truth[to].push(ip);
        await sim().net.unassignIp(from, ip);
        await sim().net.assignIp(to, ip);
        await imdsWhole(from);
        await imdsWhole(to);
        await reloadAndWait();
        return `move ${ip} ${from}→${to}: settled`;
      }],
      ['partial', async () => {
        const eni = pick(ENIS);
        const key = pick(['subnet-ipv4-cidr-block', 'local-ipv4s', 'interface-id', 'device-number']);
        const mark = logMark(daemon);
        await sim().patchImdsEni(eni, { hide: [key] });
        await reloadAndWait('held on its last good IMDS read', mark);
        await check(`${eni}: ${key} answers 404`);
        await imdsWhole(eni);
        await reloadAndWait();
        return `${eni}: ${key} back`;
      }],
      ['hostile', async () => {
        const eni = pick(ENIS);
        const [key, value] = pick([['interface-id', 'eni-1; ip rule flush'], ['local-ipv4s', '10.0.1.20\n$(reboot)'], ['device-number', '1 table main']]);
        const mark = logMark(daemon);
        await sim().patchImdsEni(eni, { override: { [key]: value } });
        await reloadAndWait('held on its last good IMDS read', mark);
        await check(`${eni}: hostile ${key}`);
        await imdsWhole(eni);
        await reloadAndWait();
        return `${eni}: ${key} sane again`;
      }],
      ['imds-down', async () => {
        const mark = logMark(daemon);
        await sim().imds.setFault({ mode: 'status', code: 500 });
        await reloadAndWait('IMDS read failed', mark);
        await check('IMDS answers 500');
        await sim().imds.setFault({ mode: 'ok' });
        await reloadAndWait();
        return 'IMDS back';
      }],
      ['foreign-delete', async () => {
        const eni = pick(ENIS);
        const table = eni === 'eth1' ? '10001' : '10002';
        const what = pick(['rules', 'table', 'address']);
        if (what === 'rules') await sim().net.exec('host', ['ip', 'rule', 'del', 'from', primaryOf[eni], 'lookup', table]);
        if (what === 'table') await sim().net.exec('host', ['ip', 'route', 'flush', 'table', table]);
        if (what === 'address' && truth[eni].length > 0) await sim().net.exec('host', ['ip', 'address', 'del', `${pick(truth[eni])}/24`, 'dev', eni]);
        return `someone deletes ${eni}'s ${what}`;
      }],
      ['link-flap', async () => {
        // A link going down drops its IPv4 routes with no notification.
        const eni = pick(ENIS);
        await sim().net.exec('host', ['ip', 'link', 'set', eni, 'down']);
        await new Promise((r) => setTimeout(r, 100));
        await sim().net.exec('host', ['ip', 'link', 'set', eni, 'up']);
        return `${eni} flaps`;
      }],
      ['fight', async () => {
        const eni = pick(ENIS);
        const table = eni === 'eth1' ? '10001' : '10002';
        const until = Date.now() + 1000;
        while (Date.now() < until) {
          await sim().net.exec('host', ['ip', 'rule', 'del', 'from', primaryOf[eni], 'lookup', table]).catch(() => undefined);
        }
        return `fight over ${eni}'s rule for 1 s`;
      }],
    ];
    for (let i = 0; i < STEPS; i++) {
      let [name, step] = pick(steps);
      // Nothing to unassign or move yet: assign instead, so the seed's sequence stays meaningful.
      if ((name === 'unassign' || name === 'move') && ENIS.every((e) => truth[e].length === 0)) [name, step] = steps[0];
      await check(`${i + 1}: ${await step()}`);
    }
    await eventually('still converged at the end', async () => (await sim().ec2netd(['plan'])).code === 0);
    expect(history.length).toBeGreaterThan(STEPS);
  }, 30_000 + STEPS * 10_000); // a budget per step (each waits at most ~20 s for convergence and answers)
});
