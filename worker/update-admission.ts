// Admission control for updates: at most a few in flight from one client to one workflow, the
// others wait here, in order.
//
// Why: the server admits 10 updates in flight per workflow (history.maxInFlightUpdates). Past
// that, the workflow's update registry keeps being cleared (server debug log: "update aborted
// reason=RegistryCleared"): the updates already admitted are aborted ("workflow update was
// aborted") and the speculative workflow task carrying them is lost (the worker logs "Task not
// found when completing"). Every caller retries and it happens again: 200 allocations sent to
// one IPAM at once took from 15 s to over 2 minutes, where 10 at a time take 5 s — and with the
// server's limit raised to 300 the same 200 take 1.3 s. Waiting in the client costs nothing.
import type { ClientOptions, WorkflowClientInterceptor } from '@temporalio/client';

/** Per client and workflow: two control workers together stay within the server's 10. */
export const UPDATES_IN_FLIGHT_PER_WORKFLOW = 5;

const ADMISSION = Symbol('natflow.update-admission');

function updateAdmission(limit: number): WorkflowClientInterceptor & { [ADMISSION]: true } {
  const gates = new Map<string, { inFlight: number; waiting: (() => void)[] }>();
  return {
    [ADMISSION]: true,
    async startUpdate(input, next) {
      const id = input.workflowExecution.workflowId;
      const gate = gates.get(id) ?? { inFlight: 0, waiting: [] };
      gates.set(id, gate);
      if (gate.inFlight >= limit) await new Promise<void>((admit) => gate.waiting.push(admit));
      else gate.inFlight++;
      try {
        return await next(input);
      } finally {
        const admit = gate.waiting.shift();
        if (admit) admit(); // the slot passes on as it is
        else if (--gate.inFlight === 0) gates.delete(id);
      }
    },
  };
}

/** The client options with update admission added once (a plugin may be applied twice). */
export function withUpdateAdmission<T extends Pick<ClientOptions, 'interceptors'>>(options: T, limit = UPDATES_IN_FLIGHT_PER_WORKFLOW): T {
  const workflow = options.interceptors?.workflow;
  if (workflow !== undefined && !Array.isArray(workflow)) throw new Error('natflow clients take workflow interceptors as an array');
  if (workflow?.some((i) => ADMISSION in i)) return options;
  return { ...options, interceptors: { ...options.interceptors, workflow: [...(workflow ?? []), updateAdmission(limit)] } };
}
