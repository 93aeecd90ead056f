// Every activity natflow's workflows call, with the options each needs and why.
import { ActivityCancellationType, proxyActivities } from '@temporalio/workflow';
import { gatewayTaskQueue } from '../domain/names.js';
import type { GatewayAgentActivities, KubeActivities, WorkflowCallActivities } from '../domain/workflow-api.js';

/**
 * Calls to the IPAM, gateway and EIP workflows. Each is idempotent, so it retries until it
 * succeeds; refusals come back non-retryable. A cancelled workflow waits for a call in flight
 * to finish: its cleanup must never race an allocation, claim or apply still going on.
 */
export const calls = proxyActivities<WorkflowCallActivities>({
  startToCloseTimeout: '60s',
  retry: { initialInterval: '1s', maximumInterval: '30s' },
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});

/** Wake-ups are a shortcut (waiters also re-check on a timer): a few tries, then move on. */
export const wakeUps = proxyActivities<Pick<WorkflowCallActivities, 'notifyGatewayWaiters'>>({
  startToCloseTimeout: '30s',
  retry: { maximumAttempts: 3 },
});

/** Finalizers and status: idempotent, retried until the apiserver answers. */
export const kube = proxyActivities<KubeActivities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', maximumInterval: '30s' },
});

/**
 * The agent's side of the gateway's liveness check, on its queue: a missing agent is noticed by
 * schedule-to-start, a dead one by its missed heartbeats (no history while it is alive). The
 * gateway workflow is the retry loop.
 */
export const agentSessions = (gateway: string, sessionMs: number) =>
  proxyActivities<Pick<GatewayAgentActivities, 'agentSession'>>({
    taskQueue: gatewayTaskQueue(gateway),
    scheduleToStartTimeout: '5s',
    startToCloseTimeout: sessionMs + 5 * 60_000,
    heartbeatTimeout: '15s',
    retry: { maximumAttempts: 1 },
  });

/**
 * A gateway's agent, on that gateway's own task queue. A missing agent must be noticed quickly,
 * not waited on: schedule-to-start bounds the wait for a poller, and the gateway workflow (which
 * probes and re-applies on its own) is the retry loop.
 */
export const gatewayAgent = (gateway: string) =>
  proxyActivities<GatewayAgentActivities>({
    taskQueue: gatewayTaskQueue(gateway),
    scheduleToStartTimeout: '5s',
    startToCloseTimeout: '30s',
    retry: { maximumAttempts: 1 },
  });
