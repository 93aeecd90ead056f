// Finding resource workflows by what they are (kind, name, gateway) through their search
// attributes: how the CLI and the workflow calls find a resource by name. Visibility is
// eventually consistent: callers that must find a workflow just started retry for a moment.
import type { Client, WorkflowExecutionInfo } from '@temporalio/client';
import { validateName, type ResourceKind } from '../domain/names.js';

export interface ResourceRecord {
  kind: ResourceKind;
  name: string;
  workflowId: string;
}

/** Running resource workflows of a kind, found through their search attributes. */
export async function findRunning(r: { client: Client }, kind: ResourceKind, filter: { name?: string; gateway?: string } = {}): Promise<ResourceRecord[]> {
  const clauses = [`NatflowKind = "${kind}"`, 'ExecutionStatus = "Running"'];
  if (filter.name) clauses.push(`NatflowName = ${JSON.stringify(validateName(filter.name, 'name'))}`);
  if (filter.gateway) clauses.push(`NatflowGateway = ${JSON.stringify(validateName(filter.gateway, 'gateway'))}`);
  const found: ResourceRecord[] = [];
  for await (const execution of r.client.workflow.list({ query: clauses.join(' AND ') })) {
    found.push({ kind, name: nameOf(execution), workflowId: execution.workflowId });
  }
  return found;
}

function nameOf(execution: WorkflowExecutionInfo): string {
  const value = execution.searchAttributes?.NatflowName;
  return Array.isArray(value) ? String(value[0]) : execution.workflowId.split('/')[2] ?? execution.workflowId;
}


/** A just-started workflow may take a moment to become visible: look again for this long. */
const VISIBILITY_GRACE_MS = 5_000;

/** The running workflow of the resource of that kind and name, or null once the grace period is over. */
export async function findOneRunning(r: { client: Client }, kind: ResourceKind, name: string): Promise<ResourceRecord | null> {
  const deadline = Date.now() + VISIBILITY_GRACE_MS;
  for (;;) {
    const [found] = await findRunning(r, kind, { name });
    if (found || Date.now() > deadline) return found ?? null;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
