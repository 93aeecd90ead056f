// The combined calls: a resource's consecutive steps, each its own workflow call, chained in one
// activity so that a burst costs a workflow task and an activity task fewer per step. The steps
// run in the same order, under the attempt's one fence (each sends it), and each is idempotent,
// so a retry of the whole chain is safe; a refusal is an answer that says whether something may
// still be held. The workflow tests chain their fakes of the steps here too.
//
// A NAT rule's first call also finds its EIP, and its claim waits a moment for an EIP that is
// taking its address (the rule created right after its EIP, as `kubectl apply` of both does): no
// lookup call, watch, wake-up signal and workflow tasks of each side to wait for it.
//
// A first call from the newest types also adopts its Kubernetes object before its first step
// (`adoptAnd…`; Kube-OVN's fix, in order: the object is there and its finalizer on before any side
// effect), where the older ones made that a call of its own; and a cleanup's last call releases
// the object (its finalizer off) once everything before it is applied and given back; and a first
// call writes its resource's Ready status once it has made it Ready.
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { Reason } from '../domain/errors.js';
import type { Allocation } from '../domain/ipam.js';
import type { KubeRef } from '../domain/kube.js';
import type { ClaimedAndApplied, ClaimedEip, ClaimWait, FindClaimAndApplyRequest, FoundClaimedAndApplied, KubeActivities, KubeRelease, NotAdopted, ReadyWritten, Refused, Removed, TakeAddressRequest, TakenAddress, WorkflowCallActivities, WritesReady } from '../domain/workflow-api.js';
import { eipReady, natRuleReady, readyStatus, type ReadyChange } from '../domain/status.js';
import type { EipClaim } from '../domain/nat-resources.js';
import type { NatRule } from '../domain/nat-rules.js';

export type CombinedCalls = Pick<WorkflowCallActivities, 'takeAddress' | 'adoptAndTakeAddress' | 'claimAndApply' | 'findClaimAndApply' | 'adoptAndFindClaimAndApply' | 'giveBackByIdentity' | 'removeRuleAndUnclaim' | 'unbindAndRelease'>;
/** The steps; `kubeAdopt` on a worker with a Kubernetes client. */
type Steps = Pick<WorkflowCallActivities, 'gatewayReadiness' | 'allocateAddress' | 'bindAddress' | 'unbindAddress' | 'releaseAddress' | 'notifyEipWaiters' | 'eipForRule' | 'claimEip' | 'setGatewayRule' | 'removeGatewayRule' | 'removeGatewayRuleEverywhere' | 'unclaimEip'> & Partial<Pick<KubeActivities, 'kubeAdopt' | 'kubePublishStatus' | 'kubeWriteNat' | 'kubeRelease'>>;

/** How long a rule's first claim waits for an EIP taking its address: well within the call's start-to-close timeout. */
export const CLAIM_WAIT_MS = 10_000;
/** Claim refusals that send a rule's first call back to the lookup (and its watch). */
const NOT_THERE_YET: string[] = [Reason.EipNotReady, Reason.EipNotFound];

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
  /** Adopts `ref`: null once adopted, else why not (nothing else is to be done). */
  async function notAdopted(ref: KubeRef): Promise<NotAdopted | null> {
    if (!steps.kubeAdopt) throw new Error(`${ref.kind} ${ref.name} comes from Kubernetes, and this worker has no Kubernetes client to adopt it with`);
    const { exists, deleting } = await steps.kubeAdopt(ref);
    return exists && !deleting ? null : { notAdopted: exists ? 'deleting' : 'gone', mayHold: retried() };
  }

  /**
   * A first call's last step, once its resource is Ready: its Ready status written, when asked and
   * this worker can. A write that fails is not the call's failure: the run writes the status itself.
   */
  async function readyWritten(writeReady: WritesReady['writeReady'], change: ReadyChange): Promise<ReadyWritten> {
    if (!writeReady || !steps.kubePublishStatus) return {};
    const status = readyStatus(writeReady.status, change, new Date(), writeReady.generation);
    try {
      await steps.kubePublishStatus({ ...writeReady.object, status: { ...status } });
      return { readyWritten: status };
    } catch {
      return {};
    }
  }

  /** A cleanup's last step, once the removal before it was applied: its object released, when asked and this worker can. */
  async function released(removed: { applied: boolean }, releaseObject: KubeRelease | undefined): Promise<Removed> {
    if (!removed.applied || !releaseObject || !steps.kubeRelease) return { applied: removed.applied };
    await steps.kubeRelease(releaseObject);
    return { applied: true, objectReleased: true };
  }

  /**
   * Claim, then set the rule on the claimed EIP's gateway; not applied when that is not `gateway`
   * (when one is expected). A worker with a Kubernetes client offers to write the EIP's `status.nat`
   * (as Kube-OVN's rules do): what the EIP hands over is written beside the apply. A write that
   * fails fails the call, whose retry claims again, and the EIP then writes its status itself.
   */
  async function claimAndApply({ gateway, rule, wait, ...claim }: { eipWorkflowId: string; gateway?: string; rule: NatRule; wait?: ClaimWait } & EipClaim, writeReady?: WritesReady['writeReady']): Promise<ClaimedAndApplied> {
    let answer: ClaimedEip;
    try {
      answer = await steps.claimEip({ ...claim, ...(wait && { wait }), ...(steps.kubeWriteNat && { writesNat: true as const }) });
    } catch (err) {
      return { claimRefused: refusedAs(err), mayHold: retried() };
    }
    const { writeNat, ...target } = answer;
    const [taken] = await Promise.all([applyClaimed(target, gateway, { eipWorkflowId: claim.eipWorkflowId, rule }, writeReady), writeNat && steps.kubeWriteNat!(writeNat)]);
    return taken;
  }

  async function applyClaimed(target: ClaimedEip, gateway: string | undefined, { eipWorkflowId, rule }: { eipWorkflowId: string; rule: NatRule }, writeReady?: WritesReady['writeReady']): Promise<ClaimedAndApplied> {
    if (gateway !== undefined && target.gateway !== gateway) return { claimed: target, notApplied: { reason: Reason.GatewayNotFound, message: `EIP ${eipWorkflowId} is on ${target.gateway}, not on ${gateway}` } };
    try {
      await steps.setGatewayRule({ gateway: target.gateway, rule: { ...rule, eip: target.address } });
    } catch (err) {
      return { claimed: target, notApplied: refusedAs(err) };
    }
    return { applied: target, ...(await readyWritten(writeReady, natRuleReady(target))) };
  }

  async function takeAddress({ gateway, subnet, owner, requested, wake, writeReady }: TakeAddressRequest): Promise<TakenAddress> {
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
    const written = await readyWritten(writeReady, eipReady(allocation.address, gateway));
    // A shortcut, not a step: a rule woken before the EIP shows Ready asks it to wake it once it does.
    if (wake) await steps.notifyEipWaiters(wake.eip, wake.woken).catch(() => undefined);
    return { bound: allocation, ...written };
  }

  async function findClaimAndApply({ eip: eipName, watch, writeReady, ...claim }: FindClaimAndApplyRequest): Promise<FoundClaimedAndApplied> {
    const found = await steps.eipForRule(eipName);
    if (!found) return { eip: null, mayHold: retried() };
    const taken = await claimAndApply({ eipWorkflowId: found.workflowId, ...claim, wait: { forMs: CLAIM_WAIT_MS } }, writeReady);
    if (!('claimRefused' in taken && NOT_THERE_YET.includes(taken.claimRefused.reason) && !taken.mayHold)) return { eip: found, taken };
    // Not ready in time (or gone meanwhile): what a lookup says now, the EIP asked to wake the rule.
    return { eip: await steps.eipForRule(eipName, watch), mayHold: retried() };
  }

  return {
    takeAddress,
    async adoptAndTakeAddress({ adopt, ...req }) {
      return (await notAdopted(adopt)) ?? takeAddress(req);
    },
    claimAndApply: (req) => claimAndApply(req),
    findClaimAndApply,
    async adoptAndFindClaimAndApply({ adopt, ...req }) {
      return (await notAdopted(adopt)) ?? findClaimAndApply(req);
    },

    async giveBackByIdentity({ eip, owner, ruleOwner, eipWorkflowId }) {
      await steps.removeGatewayRuleEverywhere({ owner: ruleOwner }); // the rule first, then the claim
      const claimed = eipWorkflowId ?? (await steps.eipForRule(eip))?.workflowId;
      if (claimed) await steps.unclaimEip({ eipWorkflowId: claimed, owner });
    },

    async removeRuleAndUnclaim({ gateway, owner, eipWorkflowId, claimOwner, releaseObject }) {
      const removed = await steps.removeGatewayRule({ gateway, owner });
      // The claim only once the rule is off: until then the EIP's address may still forward to it.
      if (removed.applied) await steps.unclaimEip({ eipWorkflowId, owner: claimOwner });
      return released(removed, releaseObject);
    },

    async unbindAndRelease({ gateway, subnet, owner, releaseObject }) {
      const unbound = await steps.unbindAddress({ gateway, owner });
      // Released only once it is off: an address still on one gateway must not be given to another EIP.
      if (unbound.applied) await steps.releaseAddress({ subnet, owner });
      return released(unbound, releaseObject);
    },
  };
}
