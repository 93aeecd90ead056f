// Update admission on its own: a client keeps at most UPDATES_IN_FLIGHT_PER_WORKFLOW updates in
// flight to one workflow, in order, and workflows do not wait for each other. (With the server,
// see the 200 concurrent allocations in ipam-workflow.test.ts.)
import { describe, expect, it } from 'vitest';
import type { ClientOptions, WorkflowClientInterceptor, WorkflowStartUpdateInput, WorkflowStartUpdateOutput } from '@temporalio/client';
import { UPDATES_IN_FLIGHT_PER_WORKFLOW, withUpdateAdmission } from '../worker/update-admission.js';

describe('update admission', () => {
  it('lets a few updates per workflow through at a time, the others in order, each workflow on its own', async () => {
    const { interceptors } = withUpdateAdmission(withUpdateAdmission<Pick<ClientOptions, 'interceptors'>>({})); // applied twice: one gate
    const chain = interceptors!.workflow as WorkflowClientInterceptor[];
    expect(chain).toHaveLength(1);
    const inFlight = new Map<string, number>();
    const most = new Map<string, number>();
    const order: number[] = [];
    const server = async (input: WorkflowStartUpdateInput): Promise<WorkflowStartUpdateOutput> => {
      const id = input.workflowExecution.workflowId;
      inFlight.set(id, (inFlight.get(id) ?? 0) + 1);
      most.set(id, Math.max(most.get(id) ?? 0, inFlight.get(id)!));
      if (id === 'ipam') order.push(input.args[0] as number);
      await new Promise((r) => setTimeout(r, 5));
      inFlight.set(id, inFlight.get(id)! - 1);
      return { updateId: String(input.args[0]), workflowRunId: 'run' };
    };
    const send = (workflowId: string, n: number) =>
      chain[0]!.startUpdate!({ updateName: 'allocate', args: [n], workflowExecution: { workflowId }, headers: {}, options: {} } as WorkflowStartUpdateInput, server);
    const results = await Promise.all([...Array.from({ length: 40 }, (_, n) => send('ipam', n)), ...Array.from({ length: 10 }, (_, n) => send('gateway', n))]);

    expect(results).toHaveLength(50);
    expect(most.get('ipam')).toBe(UPDATES_IN_FLIGHT_PER_WORKFLOW);
    expect(most.get('gateway')).toBe(UPDATES_IN_FLIGHT_PER_WORKFLOW);
    expect(order).toEqual(Array.from({ length: 40 }, (_, n) => n));
  });
});
