// Every activity natflow's workflows call, with the options each needs and why.
import { ActivityCancellationType, proxyActivities, proxyLocalActivities, type ActivityInterfaceFor, type LocalActivityInterfaceFor } from '@temporalio/workflow';
import { gatewayTaskQueue } from '../domain/names.js';
import type { AuditActivities, GatewayAgentActivities, KubeActivities, WorkflowCallActivities } from '../domain/workflow-api.js';

/**
 * Calls to the IPAM, gateway and EIP workflows. Each is idempotent, so it retries until it
 * succeeds; refusals come back non-retryable. A cancelled workflow waits for a call in flight
 * to finish: its cleanup must never race an allocation, claim or apply still going on.
 */
const CALL_OPTIONS = {
  retry: { initialInterval: '1s', maximumInterval: '30s' },
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
} as const;

/**
 * How soon an attempt lost with its worker (a SIGKILL, a node gone) is made again. The chaos
 * soak's convergence after a last kill was bound by it: a minute, when it was the start-to-close
 * timeout. The control worker's activities heartbeat while they run (activities/heartbeats.ts).
 */
const LIVENESS = { heartbeatTimeout: '10s' } as const;

/**
 * The calls that take something (an address, a claim, a binding, a rule) carry their attempt's
 * fence (activities/workflow-calls.ts), a deadline the attempt must know when it sends: so they
 * are not timed by heartbeats, which move with beats the server may not have received, but by a
 * start-to-close timeout short enough to be the liveness check. In a burst of 1,000 creates none
 * took that long; one that does (a bind whose gateway's agent died mid-apply) is made again.
 */
const FENCED_CALLS = new Set<string>(['allocateAddress', 'claimEip', 'bindAddress', 'setGatewayRule'] satisfies (keyof WorkflowCallActivities)[]);
const fencedCalls = proxyActivities<WorkflowCallActivities>({ ...CALL_OPTIONS, startToCloseTimeout: '20s' });
/** Two or three fenced steps in one call (takeAddress, claimAndApply, findClaimAndApply, and those after an adoption), under one fence: the time of their steps together. */
const COMBINED_CALLS = new Set<string>(['takeAddress', 'adoptAndTakeAddress', 'claimAndApply', 'findClaimAndApply', 'adoptAndFindClaimAndApply'] satisfies (keyof WorkflowCallActivities)[]);
const combinedCalls = proxyActivities<WorkflowCallActivities>({ ...CALL_OPTIONS, startToCloseTimeout: '30s' });
/**
 * The others give back, look or wake. Their heartbeats tell a lost attempt; the start-to-close
 * timeout bounds a live one. A minute: when the agent still ran a conntrack process per removed
 * filter, rule removals in a burst of 1,000 deletes waited longer than that for their gateway and
 * were sent again, and with 5 minutes the burst took twice as long (316 s against 158 s; not
 * understood). Since the agent lists the table first, none timed out (93 s).
 */
const otherCalls = proxyActivities<WorkflowCallActivities>({ ...CALL_OPTIONS, ...LIVENESS, startToCloseTimeout: '60s' });
export const calls = byName(otherCalls, [COMBINED_CALLS, combinedCalls], [FENCED_CALLS, fencedCalls]);

/** One set of proxies: a call goes through the first proxy whose set names it, else through `others`. */
function byName<P extends object>(others: P, ...routes: [Set<string>, P][]): P {
  return new Proxy(others, { get: (_, name: string) => (routes.find(([names]) => names.has(name))?.[1] ?? others)[name as keyof P] });
}

/** Finalizers and status: idempotent, retried until the apiserver answers. */
const KUBE_OPTIONS = {
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', maximumInterval: '30s' },
} as const;
export const kube = proxyActivities<KubeActivities>({ ...KUBE_OPTIONS, ...LIVENESS });

/**
 * The same calls as local activities, for the resource workflows' runs from the 'local-calls'
 * patch to 'remote-calls' (workflows/patches.ts says why they ended): the control worker ran them
 * inside the workflow task, a marker each. Their histories still replay through these. A retry
 * that would back off for longer than a few seconds waits on a server timer instead, which ends
 * the workflow task: a call that keeps failing must not keep a task open for minutes.
 */
const LOCAL = { localRetryThreshold: '4s' } as const;
export const localCalls = proxyLocalActivities<WorkflowCallActivities>({ ...CALL_OPTIONS, startToCloseTimeout: '60s', ...LOCAL });
export const localKube = proxyLocalActivities<KubeActivities>({ ...KUBE_OPTIONS, ...LOCAL });

/**
 * What a resource workflow calls through: remote activities, except in the runs of the release
 * that made them local. A NAT rule's calls to its EIP (claim, unclaim) stayed remote even then:
 * the EIP workflow answers on the same queue, and rules waiting for it in local activities would
 * hold the slots it needs to answer (a burst of 1,000 deletes deadlocked on it).
 */
export interface CallProxies {
  calls: ActivityInterfaceFor<WorkflowCallActivities> | LocalActivityInterfaceFor<WorkflowCallActivities>;
  kube: ActivityInterfaceFor<KubeActivities> | LocalActivityInterfaceFor<KubeActivities>;
  /** What status writes go through: remote since 'remote-status' (workflows/patches.ts says why). */
  status: ActivityInterfaceFor<KubeActivities> | LocalActivityInterfaceFor<KubeActivities>;
}
export const callProxies = (local: boolean, remoteStatus = false): CallProxies =>
  local ? { calls: localCalls, kube: localKube, status: remoteStatus ? kube : localKube } : { calls, kube, status: kube };
export const eipCalls = calls;

/** Wake-ups are a shortcut (waiters also re-check on a timer): a few tries, then move on. */
export const wakeUps = proxyActivities<Pick<WorkflowCallActivities, 'notifyGatewayWaiters'>>({
  startToCloseTimeout: '30s',
  ...LIVENESS,
  retry: { maximumAttempts: 3 },
});

/** How long an agent in session may be silent before the gateway takes it for lost. */
const AGENT_HEARTBEAT_TIMEOUT = '15s';

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
    heartbeatTimeout: AGENT_HEARTBEAT_TIMEOUT,
    retry: { maximumAttempts: 1 },
  });

/** The calls that change the gateway. */
const AGENT_CHANGES = new Set<string>(['reconcileEipAddresses', 'changeEipAddresses', 'applyNatRules', 'applyGatewayChange'] satisfies (keyof GatewayAgentActivities)[]);

/**
 * A gateway's agent, on that gateway's own task queue. A missing agent must be noticed quickly,
 * not waited on: schedule-to-start bounds the wait for a poller, and the gateway workflow (which
 * probes and re-applies on its own) is the retry loop. A change goes to an agent just probed or in
 * session, so it may wait as long as the session's heartbeat (which notices a dead agent as soon):
 * under a burst a busy server has matched a live agent's poll 5 s late, and the gateway went not
 * ready and woke its two thousand users twice for it.
 */
export const gatewayAgent = (gateway: string): ActivityInterfaceFor<GatewayAgentActivities> => {
  const options = { taskQueue: gatewayTaskQueue(gateway), startToCloseTimeout: '30s', retry: { maximumAttempts: 1 } } as const;
  const probes = proxyActivities<GatewayAgentActivities>({ ...options, scheduleToStartTimeout: '5s' });
  const changes = proxyActivities<GatewayAgentActivities>({ ...options, scheduleToStartTimeout: AGENT_HEARTBEAT_TIMEOUT });
  return byName(probes, [AGENT_CHANGES, changes]);
};

/** The audit's control side: a look at every workflow's state (minutes at most) and one repair at a time, a few tries each. */
export const auditControl = proxyActivities<AuditActivities>({
  startToCloseTimeout: '5m',
  retry: { initialInterval: '2s', maximumAttempts: 3 },
});
