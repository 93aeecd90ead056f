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

/**
 * Takes something off a gateway (an address, a rule) and asks again until the gateway has applied
 * it. The gateway records a removal at once but applies it only while its agent is ready; until
 * then it may still be on the gateway, forwarding, so the resource keeps its object (and its
 * address) and waits: `waitForGateway(attempt)` is woken by the gateway's `gatewayChanged`. A
 * gateway that is gone, or being deleted (it takes everything off itself), answers applied.
 */
export async function removeUntilApplied(remove: () => Promise<{ applied: boolean }>, waitForGateway: (attempt: number) => Promise<void>): Promise<void> {
  for (let attempt = 0; !(await remove()).applied; attempt++) {
    if (!wf.patched('release-waits-until-applied')) return; // older histories let go at once
    await waitForGateway(attempt);
  }
}

/** Between two tries of `removeUntilApplied`: the gateway wakes us; this is only the fallback. */
export const REMOVAL_RECHECK_MAX_MS = 10 * 60_000;
