// A gateway workflow of the last release, open when this code is deployed: its worker is replaced
// by one running this code, which replays its history as written and, at its next wake-up, hands
// over: it continues as new with its desired state, which the new run restores without wiping
// anything. The last release's workflow code is taken from git (the commit that last changed
// workflows/gateway.ts before `gateway-lifecycle`) and bundled as its worker bundled it.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { createWorkflowCallActivities } from '../activities/workflow-calls.js';
import type { AgentInfo } from '../domain/gateway.js';
import { gatewayTaskQueue, workflowIds } from '../domain/names.js';
import type { NatRule } from '../domain/nat-rules.js';
import { bindEipUpdate, gatewayStateQuery, setRuleUpdate } from '../domain/workflow-api.js';
import { createAgentActivities } from '../worker/agent.js';
import { EXT, FakeGateway } from './support/gateway-fakes.js';
import { createTestEnv } from './support/temporal-env.js';
import { eventually, uniqueQueue, workflowBundle } from './support/workflows.js';

/** The last release's gateway workflow (the replay fixture gateway-agent-restart was recorded on its predecessor). */
const LAST_RELEASE = '7ceaaaf';

describe('a gateway workflow of the last release hands over to this code', () => {
  let env: TestWorkflowEnvironment;
  let oldBundle: WorkflowBundleWithSourceMap;
  let oldTree: string;
  beforeAll(async () => {
    env = await createTestEnv();
    oldTree = mkdtempSync(path.join(tmpdir(), 'natflow-last-release-'));
    const archive = execFileSync('git', ['archive', LAST_RELEASE, 'workflows', 'domain']);
    execFileSync('tar', ['-x', '-C', oldTree], { input: archive });
    symlinkSync(path.resolve('node_modules'), path.join(oldTree, 'node_modules'));
    const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };
    oldBundle = await bundleWorkflowCode({ workflowsPath: path.join(oldTree, 'workflows/index.ts'), logger: quiet as never });
  });
  afterAll(async () => {
    await env?.teardown();
    if (oldTree) rmSync(oldTree, { recursive: true, force: true });
  });

  it('replays what the old run did, then continues as new with its addresses and rules, and the agent keeps them', async () => {
    const gw = `gw-${randomUUID().slice(0, 8)}`;
    const taskQueue = uniqueQueue('handover');
    const net = new FakeGateway();
    const info: AgentInfo = { gateway: gw, instanceId: randomUUID(), startedAt: new Date().toISOString(), externalInterface: EXT };
    const agent = await Worker.create({ connection: env.nativeConnection, taskQueue: gatewayTaskQueue(gw), activities: createAgentActivities({ gateway: gw, externalInterface: EXT, runner: net }, info) });
    const agentRun = agent.run();
    const control = { notifyGatewayWaiters: async () => 0, gatewayUsers: async () => [] };
    const calls = createWorkflowCallActivities(env.client);
    const rule: NatRule = { kind: 'fip', owner: 'fip-old', eip: '172.18.0.80', internalIp: '10.0.1.80' };
    const id = workflowIds.gateway(gw);
    try {
      // The last release runs the gateway: ready, an address bound and a rule set.
      const oldWorker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: oldBundle, activities: control });
      await oldWorker.runUntil(async () => {
        await env.client.workflow.start('gatewayWorkflow', { taskQueue, workflowId: id, args: [{ spec: { name: gw, internalCidr: '10.0.1.0/24' } }] });
        await eventually(() => env.client.workflow.getHandle(id).query(gatewayStateQuery), (s) => s.ready, 20_000, 'the old gateway ready');
        // Its callers sent one update per request.
        const old = env.client.workflow.getHandle(id);
        await old.executeUpdate(bindEipUpdate, { args: [{ owner: 'eip-old', address: rule.eip, prefixLength: 24 }] });
        await old.executeUpdate(setRuleUpdate, { args: [rule] });
      });
      const handle = env.client.workflow.getHandle(id);
      const { runId: oldRun } = await handle.describe();
      const before = await handle.query(gatewayStateQuery).catch(() => null); // no worker: may not answer

      // This code takes over the task queue; the next wake-up is live.
      const newWorker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: await workflowBundle(), activities: control });
      await newWorker.runUntil(async () => {
        // The first batch from this release's callers wakes it: it hands over, and the batch is sent again to the new run.
        expect(await calls.unbindAddress({ gateway: gw, owner: 'eip-never-bound' })).toEqual({ applied: true });
        await eventually(async () => (await handle.describe()).runId, (run) => run !== oldRun, 30_000, 'the hand-over');
        const state = await eventually(() => handle.query(gatewayStateQuery), (s) => s.ready, 20_000, 'the new run ready');
        expect(state.eips).toEqual({ 'eip-old': { address: rule.eip, prefixLength: 24 } });
        expect(state.rules).toEqual({ [rule.owner]: rule });
        if (before) expect({ eips: before.eips, rules: before.rules }).toEqual({ eips: state.eips, rules: state.rules });
        // The old run replayed without a determinism error and ended by continuing as new, marked.
        const events = (await env.client.workflow.getHandle(id, oldRun).fetchHistory()).events ?? [];
        expect(events.at(-1)?.workflowExecutionContinuedAsNewEventAttributes).toBeTruthy();
        expect(events.some((e) => e.markerRecordedEventAttributes?.markerName === 'core_patch')).toBe(true);
        // (A completion that raced a new event is retried by the server: UnhandledCommand is no failure of the code.)
        const failures = events.flatMap((e) => e.workflowTaskFailedEventAttributes ?? []).filter((f) => !['WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND', '1'].includes(String(f.cause)));
        expect(failures.map((f) => f.failure?.message)).toEqual([]);
        // Nothing was wiped: the rule and the address stayed on the gateway throughout.
        expect(net.owners()).toEqual([rule.owner]);
        expect([...net.addresses.keys()]).toEqual([rule.eip]);
        // And the new run serves: a new rule is applied.
        await calls.setGatewayRule({ gateway: gw, rule: { ...rule, owner: 'fip-new', eip: '172.18.0.81', internalIp: '10.0.1.81' } });
        expect(net.owners()).toEqual(['fip-new', rule.owner]);
        await handle.terminate();
      });
    } finally {
      agent.shutdown();
      await agentRun;
    }
  });
});
