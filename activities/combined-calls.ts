// The combined calls: a resource's consecutive steps, each its own workflow call, chained in one
// activity so that a burst costs a workflow task and an activity task fewer per step. The steps
// run in the same order, under the attempt's one fence (each sends it), and each is idempotent,
// so a retry of the whole chain is safe. The workflow tests chain their fakes of the steps here too.
import { ApplicationFailure } from '@temporalio/common';
import { Reason } from '../domain/errors.js';
import type { Refused, WorkflowCallActivities } from '../domain/workflow-api.js';

export type CombinedCalls = Pick<WorkflowCallActivities, 'takeAddress' | 'claimAndApply'>;
type Steps = Pick<WorkflowCallActivities, 'gatewayReadiness' | 'allocateAddress' | 'bindAddress' | 'claimEip' | 'setGatewayRule'>;

/** A refusal (a non-retryable failure, typed by its reason) as an answer; anything else is thrown on. */
function refusedAs(err: unknown): Refused {
  if (err instanceof ApplicationFailure && err.nonRetryable) return { reason: err.type ?? 'Error', message: err.message };
  throw err;
}

export function combinedCalls(steps: Steps): CombinedCalls {
  return {
    async takeAddress({ gateway, subnet, owner, requested }) {
      const readiness = await steps.gatewayReadiness(gateway);
      if (!readiness.ready) return { gatewayNotReady: readiness };
      const allocation = await steps.allocateAddress({ subnet, owner, requested });
      try {
        await steps.bindAddress({ gateway, owner, address: allocation.address, prefixLength: allocation.prefixLength });
        return { bound: allocation };
      } catch (err) {
        return { allocated: allocation, bindRefused: refusedAs(err) };
      }
    },

    async claimAndApply({ gateway, rule, ...claim }) {
      const target = await steps.claimEip(claim);
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
