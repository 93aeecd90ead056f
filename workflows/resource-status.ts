// How every resource workflow (EIP, FIP, DNAT, SNAT) shows where it is, one way: its phase in
// status and in the search attributes, the Ready condition with reason and message, the Web UI's
// current details, and the status published to its Kubernetes object.
import * as wf from '@temporalio/workflow';
import { Reason } from '../domain/errors.js';
import { searchAttributes, type NatflowAttributes } from '../domain/search-attributes.js';
import { readySince, withPhase, type PhasedStatus } from '../domain/status.js';
import type { ReadyCondition } from './failures.js';
import type { WaitFor } from './history-budget.js';
import type { KubeSync } from './kube-sync.js';
import type { Patched } from './patches.js';

/**
 * How a resource shows where it is. `setPhase(phase, condition)`: Ready is the one phase that is
 * ready. A lean run (see patches.ts) writes its search attributes only for the phases it rests in:
 * `{ passing: true }` marks a step it only passes through (an activity under way: Allocating,
 * Applying...), shown in the status and the Web UI's details but not written to visibility, and
 * `attributes()` waits for the next phase that is written. Every visibility write costs the
 * server as much as an activity; a resource passes through a step in milliseconds.
 */
export function phaseReporter<S extends PhasedStatus>(status: S, k8s: KubeSync, generation: () => number, lean: boolean) {
  let pending: NatflowAttributes = {};
  return {
    /**
     * `written`: the status a call wrote for this phase (a V6 first call's Ready), shown as written
     * (its time too, the call's clock) and, when it is the same, not written again.
     */
    setPhase(phase: S['phase'], condition: ReadyCondition, opts: { passing?: boolean; written?: PhasedStatus } = {}) {
      Object.assign(status, withPhase(status, phase, condition, (opts.written && readySince(opts.written)) ?? new Date(), generation()));
      if (!lean || !opts.passing) {
        wf.upsertSearchAttributes(searchAttributes({ ...pending, phase }));
        pending = {};
      }
      wf.setCurrentDetails(`**${phase}**: ${condition.message}`);
      k8s.publish({ ...status } as Record<string, unknown>, { passing: opts.passing, written: opts.written });
    },
    /** The status `setPhase(phase, condition)` would leave, with `changes` made first; nothing set or shown. */
    preview(phase: S['phase'], condition: ReadyCondition, changes: Partial<S> = {}): S {
      return withPhase({ ...status, ...changes }, phase, condition, new Date(), generation());
    },
    attributes(attrs: NatflowAttributes) {
      if (!lean) wf.upsertSearchAttributes(searchAttributes(attrs));
      else pending = { ...pending, ...attrs };
    },
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
 * Whether the last answer was applied (an older history's run may let go without it).
 */
export async function removeUntilApplied(remove: () => Promise<{ applied: boolean }>, waitForGateway: (attempt: number) => Promise<void>, patched: Patched): Promise<boolean> {
  for (let attempt = 0; !(await remove()).applied; attempt++) {
    if (!patched('release-waits-until-applied')) return false; // older histories let go at once
    await waitForGateway(attempt);
  }
  return true;
}

/** Between two tries of `removeUntilApplied`: the gateway wakes us; this is only the fallback. */
export const REMOVAL_RECHECK_MAX_MS = 10 * 60_000;

/**
 * Between two tries of `removeUntilApplied`: shows that `gateway` (not ready) has yet to take
 * `what` off, in phase Deleting during a delete and WaitingForGateway otherwise, then waits until
 * the gateway wakes the resource (`woken`: its `gatewayChanged`); the timer is only the fallback.
 */
export async function waitForGatewayToRemove(
  show: (phase: 'Deleting' | 'WaitingForGateway', condition: ReadyCondition) => void,
  waitFor: WaitFor,
  woken: () => boolean,
  { gateway, what, deleting, attempt }: { gateway: string; what: string; deleting: boolean; attempt: number },
): Promise<void> {
  show(deleting ? 'Deleting' : 'WaitingForGateway', { status: 'False', reason: Reason.GatewayNotReady, message: `waiting for ${gateway} to take ${what} off: it is not ready` });
  await waitFor(woken, backoff(attempt, 2000, REMOVAL_RECHECK_MAX_MS));
}

/** A refusal (an allocation, a legacy rule's spec) is tried again this often (at most), or at once on a spec change. */
export const RETRY_FAILED_AFTER_MS = 5 * 60_000;
/** A resource's waits are woken by what it waits on (its gateway, its EIP); this is only the fallback. */
export const RECHECK_MAX_MS = 60 * 60_000;
