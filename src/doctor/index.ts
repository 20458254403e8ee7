// `ec2netd doctor`: collect facts (read only), run every check, print one line per finding.
import type { Config } from '../config';
import { exitCode, renderText, runChecks, worst } from './checks';
import { collectFacts, type CollectOptions } from './collect';
import type { Finding, Severity } from './types';

export type { Finding, Severity } from './types';

export interface DoctorReport {
  findings: Finding[];
  worst: Severity;
  /** 0: ok/info only; 1: the worst finding is a warning; 2: an error. */
  exitCode: number;
}

export async function runDoctor(config: Config, opts: CollectOptions = {}): Promise<DoctorReport> {
  const findings = runChecks(await collectFacts(config, opts));
  return { findings, worst: worst(findings), exitCode: exitCode(findings) };
}

export function renderReport(report: DoctorReport, json: boolean): string {
  return json ? JSON.stringify({ worst: report.worst, findings: report.findings }, null, 2) : renderText(report.findings);
}
