// Running the audit: by hand (the CLI waits for the audit workflow's report) and every few
// minutes (a Temporal Schedule, so the last runs and their reports are in the Web UI).
import { randomUUID } from 'node:crypto';
import { ScheduleAlreadyRunning, ScheduleOverlapPolicy } from '@temporalio/client';
import type { AuditReport } from '../domain/audit.js';
import { CONTROL_TASK_QUEUE, entityTaskQueue } from '../domain/names.js';
import type { AuditInput } from '../domain/workflow-api.js';
import { auditWorkflow } from '../workflows/audit.js';
import type { Resources } from './resources.js';

export const AUDIT_SCHEDULE_ID = 'natflow-audit';

/** Exit codes of `natflow audit`: clean, findings, something could not be checked (and nothing found). */
export const AUDIT_EXIT = { clean: 0, findings: 1, unchecked: 2 } as const;

export function auditExitCode(report: Pick<AuditReport, 'findings' | 'unchecked'>): number {
  if (report.findings.length > 0) return AUDIT_EXIT.findings;
  return report.unchecked.length > 0 ? AUDIT_EXIT.unchecked : AUDIT_EXIT.clean;
}

/** One audit, run by the control worker (the entity queue); resolves with its report, or fails once `timeoutMs` has passed. */
export async function runAudit(r: Resources, input: AuditInput = {}, timeoutMs = 10 * 60_000): Promise<AuditReport & { workflowId: string }> {
  const workflowId = `natflow/audit/manual-${new Date().toISOString()}-${randomUUID().slice(0, 8)}`;
  const report = await r.client.workflow.execute(auditWorkflow, {
    taskQueue: entityTaskQueue(r.taskQueue ?? CONTROL_TASK_QUEUE),
    workflowId,
    args: [input],
    workflowExecutionTimeout: timeoutMs,
    staticSummary: `audit${input.fix ? ' --fix' : ''} (by hand)`,
  });
  return { ...report, workflowId };
}

/** Creates the audit's Schedule, or sets its interval when it exists; `everyMs` 0 pauses it. */
export async function ensureAuditSchedule(r: Resources, everyMs: number): Promise<void> {
  const spec = { intervals: [{ every: Math.max(everyMs, 60_000) }] };
  try {
    await r.client.schedule.create({
      scheduleId: AUDIT_SCHEDULE_ID,
      spec,
      // One at a time: an audit that outlasts the interval is not doubled; and after natflow was down,
      // one audit, not one for every interval missed.
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1m' },
      state: { paused: everyMs === 0, note: everyMs === 0 ? 'paused: natflow was started with --audit-every 0' : undefined },
      action: {
        type: 'startWorkflow',
        workflowType: auditWorkflow,
        workflowId: 'natflow/audit/scheduled',
        taskQueue: entityTaskQueue(r.taskQueue ?? CONTROL_TASK_QUEUE),
        args: [{}],
        // A run that cannot finish (no control worker) must not skip the next ones for ever.
        workflowExecutionTimeout: Math.max(everyMs, 60_000),
        staticSummary: 'audit (scheduled)',
      },
    });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    const handle = r.client.schedule.getHandle(AUDIT_SCHEDULE_ID);
    await handle.update((schedule) => ({ ...schedule, spec, action: { ...schedule.action, workflowExecutionTimeout: Math.max(everyMs, 60_000) }, state: { ...schedule.state, paused: everyMs === 0 } }));
  }
}
