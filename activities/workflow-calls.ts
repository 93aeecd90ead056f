// Calls from one workflow to another, as activities run by the control worker: the resource
// workflows' way to the entity workflows they depend on (a subnet's IPAM, a gateway, an EIP).
// Updates are sent from activities because a workflow cannot send one itself; refusals come back
// as non-retryable failures named by reason.
import { ApplicationFailure, WorkflowNotFoundError, type SignalDefinition } from '@temporalio/common';
import { Context } from '@temporalio/activity';
import { ServiceError, WorkflowUpdateFailedError, type Client, type WorkflowExecutionInfo } from '@temporalio/client';
import { status as grpcStatus } from '@grpc/grpc-js';
import type { Allocation } from '../domain/ipam.js';
import { Reason } from '../domain/errors.js';
import { workflowIds } from '../domain/names.js';
import {
  claimEipUpdate,
  eipChangedSignal,
  gatewayChangedSignal,
  gatewayStateQuery,
  unclaimEipUpdate,
  gatewayRequestsUpdate,
  ipamRequestsUpdate,
  watchEipSignal,
  type ClaimWait,
  type Fence,
  type GatewayRequest,
  type IpamRequest,
  type KubeActivities,
  type NatWriter,
  type WorkflowCallActivities,
} from '../domain/workflow-api.js';
import type { EipClaim } from '../domain/nat-resources.js';
import { attributeOf, findOneRunning, findRunning, phaseOf } from '../starter/find-resources.js';
import { combinedCalls, type CombinedCalls } from './combined-calls.js';
import { withHeartbeats } from './heartbeats.js';
import { UpdateBatcher, type BatchLimits } from './update-batches.js';

/**
 * Answers that mean "send it again": the server's limit on updates in flight per workflow (10 by
 * default) answers RESOURCE_EXHAUSTED, and an update admitted just as its workflow continued as
 * new is aborted with UNAVAILABLE (the new run takes it when sent again).
 */
const isTransient = (err: unknown) => {
  const code = err instanceof ServiceError ? (err.cause as { code?: number } | undefined)?.code : undefined;
  return code === grpcStatus.RESOURCE_EXHAUSTED || code === grpcStatus.UNAVAILABLE;
};
const TRANSIENT_TRIES = 100;
/** The server's message for an update it admitted that no worker processed. */
const UNPROCESSED_UPDATE = /wasn't processed by worker/;

/**
 * Sends an update. Its own failure (typed by the domain reason) is re-raised as non-retryable;
 * backpressure and aborts on a busy entity workflow are waited out here, with jitter, rather
 * than failing the attempt (and being retried much later by the activity's retry policy). Every
 * update natflow sends is idempotent, so sending one again is always safe.
 */
export async function viaUpdate<T>(fn: () => Promise<T>, notFound: () => T | Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return notFound();
      // A refusal comes as the update's failure, or (one request of a batch) as the batcher's own.
      const failure = err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure ? err.cause : err instanceof ApplicationFailure ? err : undefined;
      // The server's own failure of an update it admitted and no worker processed (its workflow task
      // was lost) is no refusal: sent again (the 5,000-operation soak failed an EIP workflow on it).
      const unprocessed = failure !== undefined && UNPROCESSED_UPDATE.test(failure.message);
      const refusal = unprocessed ? undefined : failure;
      const draining = refusal?.type === Reason.Draining;
      // A stale attempt is the attempt's problem, not the request's: the next attempt has a new deadline.
      if (refusal?.type === Reason.StaleRequest) throw ApplicationFailure.retryable(refusal.message, Reason.StaleRequest);
      if (refusal && !draining) throw ApplicationFailure.nonRetryable(refusal.message, refusal.type ?? Reason.InvalidSpec);
      if ((!isTransient(err) && !draining && !unprocessed) || attempt >= TRANSIENT_TRIES) throw err;
      // A draining workflow is not sent the batch again at once: each refusal is a workflow task of
      // its own, taken from the work that ends its drain (resent every 50 ms, a burst of 5,000 pairs
      // took twice as long to become Ready).
      await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 80 * Math.min(attempt, 10)));
    }
  }
}

/** A local attempt's end when its worker stops: a retry delay above the local retry threshold ends its workflow task on a server timer, and the next worker makes the call again. */
const workerStopping = () => ApplicationFailure.create({ message: 'the control worker is stopping: the next one makes this call again', type: Reason.WorkerStopping, nextRetryDelay: '10s' });

/** When each running activity attempt started here (its start-to-close timeout runs from its start). */
const attemptStarts = new WeakMap<Context, number>();
/** Less than the time between the server starting an attempt's timer and the attempt starting here. */
const FENCE_MARGIN_MS = 5_000;

/**
 * This attempt's deadline, sent with every update that takes something (see Fence): its start here
 * plus its start-to-close timeout, less a margin. Not its scheduled time: under load an attempt
 * waits in the queue, and would be refused as stale before it could time out.
 */
function fence(): Fence | undefined {
  try {
    const context = Context.current();
    const startedAt = attemptStarts.get(context) ?? context.info.currentAttemptScheduledTimestampMs;
    return { notAfter: startedAt + context.info.startToCloseTimeoutMs - FENCE_MARGIN_MS };
  } catch {
    return undefined; // called outside an activity (a script or a test): nothing to fence
  }
}

/**
 * Every activity: its attempt's start noted (for its fence), and it ends at once when its worker
 * shuts down. The workflows that would answer its updates and queries run on this worker and stop
 * too; its retry on the next worker sends the same idempotent call again. Any other cancellation
 * still waits for the answer: a workflow's cleanup must not race a call in flight.
 *
 * The attempt's requests run under a signal of its own, aborted with it, so that none outlives the
 * worker and its connection (a request left retrying after its connection closed throws where
 * nothing catches it). A remote attempt hears of the shutdown as a WORKER_SHUTDOWN cancellation; a
 * local one hears nothing from its context, and its worker waits for it (its workflow task holds
 * the worker), so `stopping`, aborted when that worker starts to stop, tells it. The attempt's
 * listener on `stopping`, a signal that lives for months, goes with the attempt.
 */
function asActivity<A extends unknown[], R>(activity: (...args: A) => Promise<R>, client: Client, stopping?: AbortSignal): (...args: A) => Promise<R> {
  return (...args) => {
    let context: Context;
    try {
      context = Context.current();
    } catch {
      return activity(...args); // called outside an activity (a script or a test)
    }
    attemptStarts.set(context, Date.now());
    const attempt = new AbortController();
    const stopped = new Promise<never>((_, reject) => attempt.signal.addEventListener('abort', () => reject(attempt.signal.reason), { once: true }));
    context.cancelled.catch((err: unknown) => (err as Error)?.message === 'WORKER_SHUTDOWN' && attempt.abort(err));
    const stop = () => attempt.abort(workerStopping());
    const local = context.info.isLocal ? stopping : undefined;
    if (local?.aborted) stop();
    else local?.addEventListener('abort', stop, { once: true });
    const call = client.withAbortSignal(attempt.signal, () => activity(...args));
    return Promise.race([call, stopped]).finally(() => local?.removeEventListener('abort', stop));
  };
}

/**
 * Signals a wake sends at once: a gateway's readiness change wakes every EIP and rule on it, and
 * one round trip after another took 20 s and more for two thousand of them under a burst.
 */
const WAKE_CONCURRENCY = 16;

function fail(reason: Reason, message: string): never {
  throw ApplicationFailure.nonRetryable(message, reason);
}

/**
 * `stopping`: aborted when the worker running these as local activities starts to shut down.
 * `kube`: a worker's Kubernetes calls, with which a first call adopts its object (combined-calls.ts).
 */
export function createWorkflowCallActivities(client: Client, batchLimits?: BatchLimits, stopping?: AbortSignal, kube?: Pick<KubeActivities, 'kubeAdopt' | 'kubePublishStatus' | 'kubeWriteNat' | 'kubeRelease'>): WorkflowCallActivities {
  // Requests to the IPAM and gateway workflows go in batches (see update-batches.ts).
  const ipam = new UpdateBatcher<IpamRequest, Allocation | string | null>((id, requests) => client.workflow.getHandle(id).executeUpdate(ipamRequestsUpdate, { args: [requests] }), batchLimits);
  const gateways = new UpdateBatcher<GatewayRequest, { applied: boolean } | null>((id, requests) => client.workflow.getHandle(id).executeUpdate(gatewayRequestsUpdate, { args: [requests] }), batchLimits);
  const release = (subnetWorkflowId: string, owner: string) => ipam.request(subnetWorkflowId, { release: { owner } }) as Promise<string | null>;
  const toGateway = <T>(gatewayWorkflowId: string, request: GatewayRequest) => gateways.request(gatewayWorkflowId, request) as Promise<T>;

  /** Signals every running workflow the visibility query finds that `matches`, `WAKE_CONCURRENCY` at a time. */
  const wake = async (query: string, signal: SignalDefinition<[]>, matches: (execution: WorkflowExecutionInfo) => boolean = () => true): Promise<number> => {
    const context = Context.current();
    let woken = 0;
    const failures: unknown[] = [];
    const sending = new Set<Promise<void>>();
    const send = async (workflowId: string) => {
      try {
        await client.workflow.getHandle(workflowId).signal(signal);
        woken++;
        if (!context.info.isLocal) context.heartbeat(woken); // a local activity has no heartbeat: its workflow task's own keeps it
      } catch (err) {
        if (!(err instanceof WorkflowNotFoundError)) failures.push(err);
      }
    };
    for await (const execution of client.workflow.list({ query })) {
      if (failures.length > 0) break;
      if (execution.status.name !== 'RUNNING' || !matches(execution)) continue;
      const sent = send(execution.workflowId).finally(() => sending.delete(sent));
      sending.add(sent);
      if (sending.size >= WAKE_CONCURRENCY) await Promise.race(sending);
    }
    await Promise.all(sending);
    if (failures.length > 0) throw failures[0];
    return woken;
  };

  const activities: Omit<WorkflowCallActivities, keyof CombinedCalls> = {
    async allocateAddress(req) {
      return viaUpdate(
        () => ipam.request(workflowIds.ipam(req.subnet), { allocate: { owner: req.owner, requested: req.requested }, fence: fence() }) as Promise<Allocation>,
        () => fail(Reason.SubnetNotFound, `external subnet ${req.subnet} does not exist`),
      );
    },

    async releaseAddress(req) {
      // A subnet that is gone holds nothing.
      return viaUpdate(
        () => release(workflowIds.ipam(req.subnet), req.owner),
        () => null,
      );
    },

    async gatewayReadiness(gateway) {
      const handle = client.workflow.getHandle(workflowIds.gateway(gateway));
      const description = await handle.describe().catch((err) => {
        if (err instanceof WorkflowNotFoundError) return null;
        throw err;
      });
      if (description?.status.name !== 'RUNNING') return { exists: false, ready: false, reason: `NAT gateway ${gateway} does not exist` };
      // Its phase comes with the description, without a workflow task (a query needs one, and a
      // busy gateway answers late); the reason is asked only when it is not ready.
      if (phaseOf(description) === 'Ready') return { exists: true, ready: true, reason: '' };
      const state = await handle.query(gatewayStateQuery);
      return { exists: true, ready: state.ready && !state.deleting, reason: state.reason };
    },

    async bindAddress(req) {
      await viaUpdate(
        () => toGateway<null>(workflowIds.gateway(req.gateway), { bind: { owner: req.owner, address: req.address, prefixLength: req.prefixLength }, fence: fence() }),
        () => fail(Reason.GatewayNotFound, `NAT gateway ${req.gateway} does not exist`),
      );
    },

    async unbindAddress(req) {
      // A gateway that is gone has already taken its addresses off.
      return viaUpdate(
        () => toGateway<{ applied: boolean }>(workflowIds.gateway(req.gateway), { unbind: { owner: req.owner } }),
        () => ({ applied: true }),
      );
    },

    // From its visibility record alone (its phase is kept there): a query would cost the EIP a
    // workflow task, and the claim that follows is what decides. The watch is sent from here
    // rather than by the rule, which saves the rule a workflow task.
    async eipForRule(eip, watch) {
      const found = await findOneRunning({ client }, 'eip', eip);
      if (!found) return null;
      const ready = found.phase === 'Ready';
      if (!ready && watch) {
        try {
          await client.workflow.getHandle(found.workflowId).signal(watchEipSignal, watch);
        } catch (err) {
          // Ended since visibility listed it: for the rule it does not exist (it looks again soon), never
          // a not-ready EIP that will not wake it (the rule would wait for its hour-long re-check).
          if (err instanceof WorkflowNotFoundError) return null;
          throw err;
        }
      }
      return { workflowId: found.workflowId, ready, reason: found.phase || 'Pending', ...(found.gateway ? { gateway: found.gateway } : {}) };
    },

    async claimEip(req) {
      return viaUpdate(
        () => {
          const claim = { owner: req.owner, kind: req.kind, name: req.name };
          // The arguments an older worker's calls sent, and so its replays see, when there is no wait or writer.
          const args: [EipClaim, Fence?, ClaimWait?, NatWriter?] = req.writesNat ? [claim, fence(), req.wait, { writesNat: true }] : req.wait ? [claim, fence(), req.wait] : [claim, fence()];
          return client.workflow.getHandle(req.eipWorkflowId).executeUpdate(claimEipUpdate, { args });
        },
        () => fail(Reason.EipNotFound, `EIP ${req.eipWorkflowId} does not exist any more`),
      );
    },

    async unclaimEip(req) {
      await viaUpdate(
        () => client.workflow.getHandle(req.eipWorkflowId).executeUpdate(unclaimEipUpdate, { args: [{ owner: req.owner }] }),
        () => undefined, // an EIP that is gone holds no claims
      );
    },

    async setGatewayRule(req) {
      await viaUpdate(
        () => toGateway<null>(workflowIds.gateway(req.gateway), { setRule: req.rule, fence: fence() }),
        () => fail(Reason.GatewayNotFound, `NAT gateway ${req.gateway} does not exist`),
      );
    },

    async removeGatewayRule(req) {
      return viaUpdate(
        () => toGateway<{ applied: boolean }>(workflowIds.gateway(req.gateway), { removeRule: { owner: req.owner } }),
        () => ({ applied: true }), // a gateway that is gone took its rules with it
      );
    },

    async releaseEverywhere(req) {
      for await (const entity of client.workflow.list({ query: 'NatflowKind IN ("gateway", "subnet") AND ExecutionStatus = "Running"' })) {
        // Order does not matter here: nothing is serving any more.
        if (entity.workflowId.startsWith(workflowIds.gateway(''))) await viaUpdate(() => toGateway(entity.workflowId, { unbind: { owner: req.owner } }), () => null);
        else await viaUpdate(() => release(entity.workflowId, req.owner), () => null);
      }
    },

    async removeGatewayRuleEverywhere(req) {
      for await (const gateway of client.workflow.list({ query: 'NatflowKind = "gateway" AND ExecutionStatus = "Running"' })) {
        await viaUpdate(
          () => toGateway(gateway.workflowId, { removeRule: { owner: req.owner } }),
          () => ({ applied: true }),
        );
      }
    },

    async notifyGatewayWaiters(gateway) {
      return wake(`NatflowGateway = ${JSON.stringify(gateway)} AND NatflowKind IN ("eip", "fip", "dnat", "snat") AND ExecutionStatus = "Running"`, gatewayChangedSignal);
    },

    async gatewayUsers(gateway) {
      return (await findRunning({ client }, 'eip', { gateway })).map((eip) => `eip ${eip.name}`);
    },

    // Asked by the EIP's name alone, so that the name's index answers (see findRunning); rules
    // started before NatflowEip existed are not found, and find their EIP on their own re-check.
    // (An EIP of the earliest release names none: every waiting rule is woken, and checks.)
    async notifyEipWaiters(eip, woken = []) {
      if (eip === undefined) return wake('NatflowKind IN ("fip", "dnat", "snat") AND NatflowPhase = "WaitingForEip" AND ExecutionStatus = "Running"', eipChangedSignal);
      const skip = new Set(woken);
      const waiting = (execution: WorkflowExecutionInfo) => !skip.has(execution.workflowId) && ['fip', 'dnat', 'snat'].includes(attributeOf(execution, 'NatflowKind') ?? '') && phaseOf(execution) === 'WaitingForEip';
      return wake(`NatflowEip = ${JSON.stringify(eip)}`, eipChangedSignal, waiting);
    },
  };
  return withHeartbeats(Object.fromEntries(Object.entries({ ...activities, ...combinedCalls({ ...activities, ...kube }) }).map(([name, activity]) => [name, asActivity(activity as (...args: unknown[]) => Promise<unknown>, client, stopping)])) as unknown as WorkflowCallActivities);
}

