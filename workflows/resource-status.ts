// How every resource workflow (EIP, FIP, DNAT, SNAT) shows where it is, one way: its phase in
// status and in the search attributes, the Ready condition with reason and message, the Web UI's
// current details, and the status published to its Kubernetes object.
import * as wf from '@temporalio/workflow';
import { searchAttributes } from '../domain/search-attributes.js';
import { setCondition, type Condition } from '../domain/status.js';
import type { ReadyCondition } from './failures.js';
import type { KubeSync } from './kube-sync.js';

interface PhasedStatus {
  phase: string;
  ready: boolean;
  conditions: Condition[];
  observedGeneration: number;
}

/** A `setPhase(phase, condition)` for this status: Ready is the one phase that is ready. */
export function phaseReporter<S extends PhasedStatus>(status: S, k8s: KubeSync, generation: () => number) {
  return (phase: S['phase'], condition: ReadyCondition) => {
    status.phase = phase;
    status.ready = phase === 'Ready';
    status.observedGeneration = generation();
    status.conditions = setCondition(status.conditions, { type: 'Ready', ...condition }, new Date(), generation());
    wf.upsertSearchAttributes(searchAttributes({ phase }));
    wf.setCurrentDetails(`**${phase}**: ${condition.message}`);
    k8s.publish({ ...status } as Record<string, unknown>);
  };
}

/** Re-check delay while waiting on something that also wakes us: doubling from `firstMs` up to `maxMs`. */
export const backoff = (attempt: number, firstMs: number, maxMs: number) => Math.min(firstMs * 2 ** attempt, maxMs);
