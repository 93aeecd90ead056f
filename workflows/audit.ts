// The audit as a workflow, started by hand (`natflow audit`) or by its Schedule: each run's
// observations, findings and repairs are in its history, its report is its result, one click away
// in the Web UI. It looks twice, `graceMs` apart, and reports only what both looks found: a
// resource being created or deleted between them is a change under way, not a leak.
import * as wf from '@temporalio/workflow';
import { auditObservation, persistent, ruleAddress, summarize, type AuditReport, type Finding, type Observation } from '../domain/audit.js';
import type { AuditInput } from '../domain/workflow-api.js';
import { auditControl, gatewayAgent } from './activity-proxies.js';

const DEFAULT_GRACE_MS = 5_000;
/** After repairs, what they started (a gateway's restore, a cleanup) gets this long before the re-audit. */
const SETTLE_MS = 5_000;

export async function auditWorkflow(input: AuditInput = {}): Promise<AuditReport> {
  const startedAt = new Date().toISOString();
  const graceMs = input.graceMs ?? DEFAULT_GRACE_MS;
  wf.setCurrentDetails('looking');
  const found = await confirmedFindings(graceMs);
  if (!input.fix || found.findings.length === 0) return done(startedAt, found);
  wf.setCurrentDetails(`repairing ${found.findings.length} finding(s)`);
  const repairs = await repairAll(found.findings);
  await wf.sleep(SETTLE_MS);
  return done(startedAt, await confirmedFindings(graceMs), repairs);
}

async function confirmedFindings(graceMs: number): Promise<Pick<AuditReport, 'findings' | 'unchecked'>> {
  const first = auditObservation(await observe());
  if (first.findings.length === 0) return first;
  await wf.sleep(graceMs);
  const second = auditObservation(await observe());
  return { findings: persistent(first.findings, second.findings), unchecked: second.unchecked };
}

/** What the workflows hold, then what each gateway's agent reads from its gateway (null when it does not answer). */
async function observe(): Promise<Observation> {
  const control = await auditControl.observeControl();
  const gateways = await Promise.all(
    control.gateways.map(async (g) => {
      try {
        return { ...g, reading: await gatewayAgent(g.name).readGateway() };
      } catch (err) {
        return { ...g, reading: null, why: `its agent did not answer: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}` };
      }
    }),
  );
  return { ...control, gateways };
}

type RepairRecord = NonNullable<AuditReport['repairs']>[number];

/**
 * Every finding's repair, in turn. What no workflow holds (untagged rules, conntrack entries) goes
 * to the gateway's agent, the untagged rules of a gateway in one batch, each after asking again
 * whether an EIP holds that address now (an address released between the looks may be taken again).
 */
async function repairAll(findings: Finding[]): Promise<RepairRecord[]> {
  const records: RepairRecord[] = [];
  const restored = new Set<string>();
  const foreign = new Map<string, Finding[]>();
  for (const f of findings) {
    const repair = f.repair;
    const finding = `${f.kind} ${f.resource}`;
    if (!repair) {
      records.push({ finding, result: 'skipped', detail: f.repairText });
      continue;
    }
    try {
      if ('removeForeignRules' in repair) foreign.set(repair.removeForeignRules.gateway, [...(foreign.get(repair.removeForeignRules.gateway) ?? []), f]);
      else if ('flushConntrack' in repair) {
        const { gateway, address } = repair.flushConntrack;
        if ((await auditControl.addressInUse({ gateway, address })).held) records.push({ finding, result: 'skipped', detail: `an EIP holds ${address} now` });
        else {
          const flushed = await gatewayAgent(gateway).flushConntrack([{ eip: address }]);
          records.push({ finding, result: 'applied', detail: `${flushed} entr${flushed === 1 ? 'y' : 'ies'} flushed` });
        }
      } else if ('restoreGateway' in repair && restored.has(repair.restoreGateway.gateway)) {
        records.push({ finding, result: 'applied', detail: 'with the restore asked for above' });
      } else {
        if ('restoreGateway' in repair) restored.add(repair.restoreGateway.gateway);
        records.push({ finding, ...(await auditControl.repair(repair)) });
      }
    } catch (err) {
      records.push({ finding, result: 'failed', detail: (err as Error).message });
    }
  }
  for (const [gateway, found] of foreign) {
    const rules: { chain: string; spec: string[] }[] = [];
    for (const f of found) {
      const [rule] = 'removeForeignRules' in f.repair! ? f.repair.removeForeignRules.rules : [];
      const address = rule && ruleAddress(rule.spec);
      const use = address ? await auditControl.addressInUse({ gateway, address }) : { held: false, forwarded: false };
      if (use.held && !use.forwarded) records.push({ finding: `${f.kind} ${f.resource}`, result: 'skipped', detail: `an EIP holds ${address} now and natflow does not forward it yet` });
      else if (rule) rules.push(rule);
    }
    try {
      const removed = rules.length > 0 ? await gatewayAgent(gateway).removeUntaggedRules(rules) : 0;
      records.push({ finding: `foreign-rule gateway ${gateway}`, result: 'applied', detail: `${removed} of ${rules.length} untagged rule(s) deleted (the others were gone already)` });
    } catch (err) {
      records.push({ finding: `foreign-rule gateway ${gateway}`, result: 'failed', detail: (err as Error).message });
    }
  }
  return records;
}

function done(startedAt: string, found: Pick<AuditReport, 'findings' | 'unchecked'>, repairs?: RepairRecord[]): AuditReport {
  const { findings, unchecked } = found;
  wf.setCurrentDetails(findings.length === 0 ? (unchecked.length === 0 ? 'clean' : `clean where checked; ${unchecked.length} not checked`) : `${findings.length} finding(s)`);
  return { startedAt, finishedAt: new Date().toISOString(), ...summarize(findings), unchecked, ...(repairs && { repairs }) };
}
