// The combined calls: a resource's consecutive steps, each its own workflow call, chained in one
// activity so that a burst costs a workflow task and an activity task fewer per step. The steps
// run in the same order, under the attempt's one fence (each sends it), and each is idempotent,
// so a retry of the whole chain is safe; a refusal is an answer that says whether something may
// still be held. The workflow tests chain their fakes of the steps here too.
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { Reason } from '../domain/errors.js';
import type { Allocation } from '../domain/ipam.js';
import type { ClaimedEip, Refused, WorkflowCallActivities } from '../domain/workflow-api.js';

export type CombinedCalls = Pick<WorkflowCallActivities, 'takeAddress' | 'claimAndApply'>;
type Steps = Pick<WorkflowCallActivities, 'gatewayReadiness' | 'allocateAddress' | 'bindAddress' | 'notifyEipWaiters' | 'claimEip' | 'setGatewayRule'>;

/** A refusal (a non-retryable failure, typed by its reason) as an answer; anything else is thrown on. */
function refusedAs(err: unknown): Refused {
  if (err instanceof ApplicationFailure && err.nonRetryable) return { reason: err.type ?? 'Error', message: err.message };
  throw err;
}

/** This is not the call's first attempt: an earlier one, which timed out, may have taken what this one is refused. */
function retried(): boolean {
  try {
    return Context.current().info.attempt > 1;
  } catch {
    return false; // called outside an activity (the workflow tests' fakes)
  }
}

export function combinedCalls(steps: Steps): CombinedCalls {
  return {
    async takeAddress({ gateway, subnet, owner, requested, wake }) {
      const readiness = await steps.gatewayReadiness(gateway);
      if (!readiness.ready) return { refused: { reason: readiness.exists ? Reason.GatewayNotReady : Reason.GatewayNotFound, message: readiness.reason }, step: 'gateway', mayHold: retried() };
      let allocation: Allocation;
      try {
        allocation = await steps.allocateAddress({ subnet, owner, requested });
      } catch (err) {
        return { refused: refusedAs(err), step: 'allocate', mayHold: retried() };
      }
      try {
        await steps.bindAddress({ gateway, owner, address: allocation.address, prefixLength: allocation.prefixLength });
      } catch (err) {
        return { refused: refusedAs(err), step: 'bind', mayHold: true };
      }
      // A shortcut, not a step: a rule woken before the EIP shows Ready asks it to wake it once it does.
      if (wake) await steps.notifyEipWaiters(wake.eip, wake.woken).catch(() => undefined);
      return { bound: allocation };
    },

    async claimAndApply({ gateway, rule, ...claim }) {
      let target: ClaimedEip;
      try {
        target = await steps.claimEip(claim);
      } catch (err) {
        return { claimRefused: refusedAs(err), mayHold: retried() };
      }
      if (target.gateway !== gateway) return { claimed: target, notApplied: { reason: Reason.GatewayNotFound, message: `EIP ${claim.eipWorkflowId} is on ${target.gateway}, not on ${gateway}` } };
      try {
        await steps.setGatewayRule({ gateway, rule: { ...rule, eip: target.address } });
        return { applied: target };
      } catch (err) {
        return { claimed: target, notApplied: refusedAs(err) };
      }
    },
  };
}
