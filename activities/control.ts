// Control-worker activities: the bridge between resource workflows and the entity workflows
// (a subnet's IPAM, a gateway) they depend on. Updates are sent from activities because a
// workflow cannot send one itself; errors come back as non-retryable failures named by reason.
import { ApplicationFailure, WorkflowNotFoundError, type SignalDefinition } from '@temporalio/common';
import { Context } from '@temporalio/activity';
import { ServiceError, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import { status as grpcStatus } from '@grpc/grpc-js';
import { Reason } from '../domain/errors.js';
import type { EipAddress, GatewayReadiness } from '../domain/gateway.js';
import type { Allocation } from '../domain/ipam.js';
import { workflowIds } from '../domain/names.js';
import { bindEipUpdate, gatewayStateQuery, removeRuleUpdate, setRuleUpdate, unbindEipUpdate } from '../workflows/gateway.js';
import { claimEipUpdate, eipStatusQuery, unclaimEipUpdate, type EipClaim } from '../workflows/eip.js';
import type { NatRule } from '../domain/nat-rules.js';
import { findOneRunning } from './visibility.js';
import { allocateUpdate, releaseUpdate } from '../workflows/ipam.js';
import { eipChangedSignal, gatewayChangedSignal } from '../workflows/signals.js';

export type ControlActivities = ReturnType<typeof createControlActivities>;

/** The server's limit on updates in flight per workflow (10 by default) answers RESOURCE_EXHAUSTED. */
const isBackpressure = (err: unknown) => err instanceof ServiceError && (err.cause as { code?: number } | undefined)?.code === grpcStatus.RESOURCE_EXHAUSTED;
const BACKPRESSURE_TRIES = 100;

/**
 * Sends an update. Its own failure (typed by the domain reason) is re-raised as non-retryable;
 * the server's backpressure on a busy entity workflow is waited out here, with jitter, rather
 * than failing the attempt (and being retried much later by the activity's retry policy).
 */
async function viaUpdate<T>(fn: () => Promise<T>, notFound: () => T | Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return notFound();
      if (err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure) {
        throw ApplicationFailure.nonRetryable(err.cause.message, err.cause.type ?? Reason.InvalidSpec);
      }
      if (!isBackpressure(err) || attempt >= BACKPRESSURE_TRIES) throw err;
      await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 80 * Math.min(attempt, 10)));
    }
  }
}

function fail(reason: Reason, message: string): never {
  throw ApplicationFailure.nonRetryable(message, reason);
}

export function createControlActivities(client: Client) {
  const running = async (workflowId: string) => {
    try {
      return (await client.workflow.getHandle(workflowId).describe()).status.name === 'RUNNING';
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      throw err;
    }
  };

  /** Signals every running workflow the visibility query finds (but `except`). */
  const wake = async (query: string, signal: SignalDefinition<[]>, except?: string): Promise<number> => {
    let woken = 0;
    for await (const execution of client.workflow.list({ query: `${query} AND ExecutionStatus = "Running"` })) {
      if (execution.workflowId === except) continue;
      await client.workflow.getHandle(execution.workflowId).signal(signal).catch((err) => {
        if (!(err instanceof WorkflowNotFoundError)) throw err;
      });
      woken++;
      Context.current().heartbeat(woken);
    }
    return woken;
  };

  return {
    async allocateAddress(req: { subnet: string; owner: string; requested?: string }): Promise<Allocation> {
      return viaUpdate(
        () => client.workflow.getHandle(workflowIds.ipam(req.subnet)).executeUpdate(allocateUpdate, { args: [{ owner: req.owner, requested: req.requested }] }),
        () => fail(Reason.SubnetNotFound, `external subnet ${req.subnet} does not exist`),
      );
    },

    async releaseAddress(req: { subnet: string; owner: string }): Promise<string | null> {
      // A subnet that is gone holds nothing.
      return viaUpdate(
        () => client.workflow.getHandle(workflowIds.ipam(req.subnet)).executeUpdate(releaseUpdate, { args: [{ owner: req.owner }] }),
        () => null,
      );
    },

    async gatewayReadiness(gateway: string): Promise<GatewayReadiness> {
      const id = workflowIds.gateway(gateway);
      if (!(await running(id))) return { exists: false, ready: false, reason: `NAT gateway ${gateway} does not exist` };
      const state = await client.workflow.getHandle(id).query(gatewayStateQuery);
      return { exists: true, ready: state.ready && !state.deleting, reason: state.reason };
    },

    async bindAddress(req: { gateway: string; owner: string } & EipAddress): Promise<void> {
      await viaUpdate(
        () => client.workflow.getHandle(workflowIds.gateway(req.gateway)).executeUpdate(bindEipUpdate, { args: [{ owner: req.owner, address: req.address, prefixLength: req.prefixLength }] }),
        () => fail(Reason.GatewayNotFound, `NAT gateway ${req.gateway} does not exist`),
      );
    },

    async unbindAddress(req: { gateway: string; owner: string }): Promise<{ applied: boolean }> {
      // A gateway that is gone has already taken its addresses off.
      return viaUpdate(
        () => client.workflow.getHandle(workflowIds.gateway(req.gateway)).executeUpdate(unbindEipUpdate, { args: [{ owner: req.owner }] }),
        () => ({ applied: true }),
      );
    },

    /** The EIP a NAT rule names, found by name: its workflow, readiness, address and gateway. */
    async eipForRule(eip: string): Promise<{ workflowId: string; ready: boolean; address: string; gateway: string; reason: string } | null> {
      const found = await findOneRunning({ client }, 'eip', eip);
      if (!found) return null;
      const status = await client.workflow.getHandle(found.workflowId).query(eipStatusQuery);
      const condition = status.conditions.find((c) => c.type === 'Ready');
      return { workflowId: found.workflowId, ready: status.ready, address: status.ip, gateway: status.natGwDp, reason: condition ? `${condition.reason}: ${condition.message}` : status.phase };
    },

    async claimEip(req: { eipWorkflowId: string } & EipClaim): Promise<{ address: string; gateway: string }> {
      return viaUpdate(
        () => client.workflow.getHandle(req.eipWorkflowId).executeUpdate(claimEipUpdate, { args: [{ owner: req.owner, kind: req.kind, name: req.name }] }),
        () => fail(Reason.EipNotFound, `EIP ${req.eipWorkflowId} does not exist any more`),
      );
    },

    async unclaimEip(req: { eipWorkflowId: string; owner: string }): Promise<void> {
      await viaUpdate(
        () => client.workflow.getHandle(req.eipWorkflowId).executeUpdate(unclaimEipUpdate, { args: [{ owner: req.owner }] }),
        () => undefined, // an EIP that is gone holds no claims
      );
    },

    async setGatewayRule(req: { gateway: string; rule: NatRule }): Promise<void> {
      await viaUpdate(
        () => client.workflow.getHandle(workflowIds.gateway(req.gateway)).executeUpdate(setRuleUpdate, { args: [req.rule] }),
        () => fail(Reason.GatewayNotFound, `NAT gateway ${req.gateway} does not exist`),
      );
    },

    async removeGatewayRule(req: { gateway: string; owner: string }): Promise<{ applied: boolean }> {
      return viaUpdate(
        () => client.workflow.getHandle(workflowIds.gateway(req.gateway)).executeUpdate(removeRuleUpdate, { args: [{ owner: req.owner }] }),
        () => ({ applied: true }), // a gateway that is gone took its rules with it
      );
    },

    /** Wakes every resource workflow waiting for this gateway (they also re-check on a timer). */
    async notifyGatewayWaiters(gateway: string): Promise<number> {
      return wake(`NatflowGateway = ${JSON.stringify(gateway)} AND NatflowPhase = "WaitingForGateway"`, gatewayChangedSignal, workflowIds.gateway(gateway));
    },

    /** Wakes the NAT rules waiting for an EIP (they also re-check on a timer); each checks whether it was its EIP. */
    async notifyEipWaiters(): Promise<number> {
      return wake('NatflowKind IN ("fip", "dnat", "snat") AND NatflowPhase = "WaitingForEip"', eipChangedSignal);
    },
  };
}

