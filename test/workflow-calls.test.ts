// The workflow-call activities as an activity attempt sees them (MockActivityEnvironment), against
// a real IPAM workflow: the fence counts from the attempt's start, not from when it was queued; a
// worker shutting down ends a call waiting for its answer at once, any other cancellation does not.
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { MockActivityEnvironment } from '@temporalio/testing';
import { Client, Connection, type WorkflowHandle, defaultGrpcRetryOptions, makeGrpcRetryInterceptor, WorkflowUpdateFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { Reason } from '../domain/errors.js';
import { InterceptingCall, ListenerBuilder, RequesterBuilder, type Interceptor } from '@grpc/grpc-js';
import { createWorkflowCallActivities, viaUpdate } from '../activities/workflow-calls.js';
import { combinedCalls } from '../activities/combined-calls.js';
import type { Allocation } from '../domain/ipam.js';
import { workflowIds } from '../domain/names.js';
import { ipamWorkflow } from '../workflows/ipam.js';
import { searchAttributes } from '../domain/search-attributes.js';
import { gatewayChangedSignal } from '../domain/workflow-api.js';
import { useTestEnv } from './support/temporal-env.js';
import { eventually, uid, uniqueQueue, withWorkflow } from './support/workflows.js';

describe('workflow-call activities', () => {
  const env = useTestEnv();

  it("an update the server failed because no worker processed it is sent again; a workflow's refusal is not", async () => {
    const unprocessed = new WorkflowUpdateFailedError('Workflow Update failed', ApplicationFailure.create({ message: "Workflow Update is rejected because it wasn't processed by worker. Probably, Workflow Update is not supported by the worker." }));
    let sent = 0;
    expect(await viaUpdate(async () => (++sent === 1 ? Promise.reject(unprocessed) : 'allocated'), () => 'gone')).toBe('allocated');
    expect(sent).toBe(2);
    const refused = new WorkflowUpdateFailedError('Workflow Update failed', ApplicationFailure.nonRetryable('EIP e1 is not ready (Deleting)', Reason.EipNotReady));
    await expect(viaUpdate(() => Promise.reject(refused), () => 'gone')).rejects.toMatchObject({ type: Reason.EipNotReady, nonRetryable: true });
  });

  it("a rule's claim offers to write its EIP's status.nat where the worker can write to Kubernetes, and writes what the EIP hands it beside the apply", async () => {
    const rule = { kind: 'fip' as const, owner: 'natflow/fip/f1/u1', eip: '', internalIp: '10.0.1.5' };
    const writeNat = { object: { kind: 'eip' as const, name: 'e1', uid: 'u' }, from: '', to: 'fip' };
    const claims: unknown[] = [];
    const written: unknown[] = [];
    const steps = (handOver: boolean) => ({
      claimEip: async (req: object) => (claims.push(req), { address: '172.18.0.9', gateway: 'gw1', ...(handOver && { writeNat }) }),
      setGatewayRule: async () => undefined,
    });
    const claim = { eipWorkflowId: 'natflow/eip/e1/u', owner: 'natflow/fip/f1/u1', kind: 'fip' as const, name: 'f1', gateway: 'gw1', rule };
    const withKube = combinedCalls({ ...steps(true), kubeWriteNat: async (write: unknown) => void written.push(write) } as never);
    expect(await withKube.claimAndApply(claim)).toEqual({ applied: { address: '172.18.0.9', gateway: 'gw1' } });
    expect(written).toEqual([writeNat]);
    expect(await combinedCalls(steps(false) as never).claimAndApply(claim)).toEqual({ applied: { address: '172.18.0.9', gateway: 'gw1' } });
    expect(claims).toEqual([expect.objectContaining({ owner: 'natflow/fip/f1/u1', writesNat: true }), expect.not.objectContaining({ writesNat: true })]);
  });

  it('an attempt that waited in the queue longer than its timeout still allocates: its fence counts from its start', async () => {
    const subnet = { name: 'ext-queued', cidrBlock: '172.21.0.0/24', gateway: '172.21.0.1', excludeIps: [] };
    await withWorkflow(env(), {}, ipamWorkflow, { workflowId: workflowIds.ipam(subnet.name), args: [{ subnet }] }, async (handle) => {
      const calls = createWorkflowCallActivities(env().client);
      // Scheduled two minutes ago, started now, 60 s to run: it has not timed out.
      const attempt = new MockActivityEnvironment({ currentAttemptScheduledTimestampMs: Date.now() - 120_000, startToCloseTimeoutMs: 60_000 });
      const allocation = (await attempt.run(calls.allocateAddress, { subnet: subnet.name, owner: 'natflow/eip/queued/u1' })) as Allocation;
      expect(allocation.address).toMatch(/^172\.21\.0\./);
      await handle.terminate();
    });
  });

  /** A client whose requests in flight are counted (with the SDK's retries, as every client has them). */
  async function countingClient(): Promise<{ client: Client; inFlight: () => number; maxInFlight: () => number; close: () => Promise<void> }> {
    let inFlight = 0;
    let maxInFlight = 0;
    const count: Interceptor = (options, next) =>
      new InterceptingCall(
        next(options),
        new RequesterBuilder()
          .withStart((metadata, _listener, start) => {
            maxInFlight = Math.max(maxInFlight, ++inFlight);
            start(metadata, new ListenerBuilder().withOnReceiveStatus((status, done) => (inFlight--, done(status))).build());
          })
          .build(),
      );
    const connection = await Connection.connect({ address: env().address, interceptors: [makeGrpcRetryInterceptor(defaultGrpcRetryOptions()), count] });
    return { client: new Client({ connection }), inFlight: () => inFlight, maxInFlight: () => maxInFlight, close: () => connection.close() };
  }

  it("a gateway's wake-up signals each of its running users once, several at a time, and nobody else", async () => {
    const gateway = `gw-${uid().slice(0, 8)}`;
    const start = (i: number, on: string) => env().client.workflow.start('nobodyRunsThis', { taskQueue: uniqueQueue('nobody'), workflowId: `wake-${gateway}-${i}`, typedSearchAttributes: searchAttributes({ kind: 'fip', gateway: on }) });
    const users = await Promise.all(Array.from({ length: 40 }, (_, i) => start(i, gateway)));
    const stranger = await start(40, `${gateway}-other`);
    const signalsTo = async (h: WorkflowHandle) => ((await h.fetchHistory()).events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes?.signalName === gatewayChangedSignal.name).length;
    try {
      await eventually(async () => (await env().client.workflow.count(`NatflowGateway = "${gateway}"`)).count, (n) => n === users.length, 15_000, 'the users visible');
      const counted = await countingClient();
      try {
        expect(await new MockActivityEnvironment().run(createWorkflowCallActivities(counted.client).notifyGatewayWaiters, gateway)).toBe(users.length);
        expect(counted.maxInFlight()).toBeGreaterThan(1);
        expect(counted.maxInFlight()).toBeLessThanOrEqual(17); // its signals, and the list
      } finally {
        await counted.close();
      }
      expect(await Promise.all(users.map(signalsTo))).toEqual(users.map(() => 1));
      expect(await signalsTo(stranger)).toBe(0);
    } finally {
      await Promise.all([...users, stranger].map((h) => h.terminate()));
    }
  });

  it('a worker shutting down ends a call waiting for its workflow at once, with its requests; a cancellation of the call does not', async () => {
    // An IPAM workflow nobody runs (its worker is gone): an update to it is never answered.
    const subnet = { name: 'ext-unserved', cidrBlock: '172.22.0.0/24', gateway: '172.22.0.1', excludeIps: [] };
    const handle = await env().client.workflow.start(ipamWorkflow, { taskQueue: uniqueQueue('nobody'), workflowId: workflowIds.ipam(subnet.name), args: [{ subnet }] });
    try {
      const calls = createWorkflowCallActivities(env().client);
      const settledWithin = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => 'resolved', (err: Error) => `rejected: ${err.message}`), new Promise((r) => setTimeout(() => r('pending'), ms))]);

      const cancelled = new MockActivityEnvironment({ startToCloseTimeoutMs: 60_000 });
      const waiting = cancelled.run(calls.allocateAddress, { subnet: subnet.name, owner: 'natflow/eip/a/u1' });
      await new Promise((r) => setTimeout(r, 500));
      cancelled.cancel('CANCELLED');
      expect(await settledWithin(waiting, 2000)).toBe('pending'); // a cleanup waits for what is in flight

      // Its requests end with it: none may outlive the worker's connection (one retrying after the
      // connection closed throws where nothing catches it).
      const counted = await countingClient();
      try {
        const shuttingDown = new MockActivityEnvironment({ startToCloseTimeoutMs: 60_000 });
        const cut = shuttingDown.run(createWorkflowCallActivities(counted.client).allocateAddress, { subnet: subnet.name, owner: 'natflow/eip/b/u1' });
        await eventually(async () => counted.inFlight(), (n) => n === 1, 10_000, 'the update sent, waiting for its answer');
        shuttingDown.cancel('WORKER_SHUTDOWN');
        expect(await settledWithin(cut, 2000)).toBe('rejected: WORKER_SHUTDOWN');
        await eventually(async () => counted.inFlight(), (n) => n === 0, 10_000, 'no request left in flight');
      } finally {
        await counted.close();
      }
      waiting.catch(() => undefined);
    } finally {
      await handle.terminate();
    }
  });

  it("as local activities: the worker's stop ends a waiting call at once, and attempts leave nothing on its stop signal", async () => {
    const subnet = { name: 'ext-local', cidrBlock: '172.23.0.0/24', gateway: '172.23.0.1', excludeIps: [] };
    const handle = await env().client.workflow.start(ipamWorkflow, { taskQueue: uniqueQueue('nobody'), workflowId: workflowIds.ipam(subnet.name), args: [{ subnet }] });
    try {
      const stopping = new AbortController();
      const calls = createWorkflowCallActivities(env().client, undefined, stopping.signal);
      const local = () => new MockActivityEnvironment({ isLocal: true, startToCloseTimeoutMs: 60_000 });
      // A month of calls in miniature: each attempt (and each request it makes) must take its listener off.
      for (let i = 0; i < 20; i++) expect(((await local().run(calls.gatewayReadiness, `gw-none-${i}`)) as { exists: boolean }).exists).toBe(false);
      expect(getEventListeners(stopping.signal, 'abort')).toHaveLength(0);

      const waiting = local().run(calls.allocateAddress, { subnet: subnet.name, owner: 'natflow/eip/c/u1' });
      await new Promise((r) => setTimeout(r, 500));
      stopping.abort();
      await expect(waiting).rejects.toMatchObject({ type: 'WorkerStopping', nonRetryable: false });
    } finally {
      await handle.terminate();
    }
  });
});
