// Workflow unit tier for the gateway workflow's life: on a real dev server, with the gateway
// agent's real activities (worker/agent.ts) running against a fake gateway (the nat table and
// conntrack of test/support/fake-commands.ts, and its EIP addresses) on the gateway's own task
// queue, and the control activities it calls (wake-ups, users, Kubernetes) faked and recorded.
// Updates are sent as the resource workflows send them (activities/workflow-calls.ts).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Context } from '@temporalio/activity';
import { Worker } from '@temporalio/worker';
import { createWorkflowCallActivities } from '../activities/workflow-calls.js';
import { Reason } from '../domain/errors.js';
import type { AgentInfo, EipAddress, GatewayInput, GatewayState } from '../domain/gateway.js';
import { formatIPv4, parseIPv4 } from '../domain/ip.js';
import { gatewayTaskQueue, workflowIds } from '../domain/names.js';
import { conntrackTarget, type NatRule } from '../domain/nat-rules.js';
import { conntrackFilters } from '../domain/nat-table.js';
import { agentStartedSignal, gatewayRequestsUpdate, gatewaySpecSignal, gatewayStateQuery, type KubeActivities, type NamedNatRule } from '../domain/workflow-api.js';
import { createAgentActivities } from '../worker/agent.js';
import { gatewayWorkflow } from '../workflows/gateway.js';
import { gate } from './support/fake-calls.js';
import { EXT, FakeGateway } from './support/gateway-fakes.js';
import { largestPayload, PAYLOAD_LIMIT, wireSize } from './support/payloads.js';
import { createTestEnv } from './support/temporal-env.js';
import { eventually, uniqueQueue, workflowBundle } from './support/workflows.js';

const VPC = '10.0.1.0/24';

interface FakeAgent {
  info: AgentInfo;
  stop(): Promise<void>;
}

describe('gateway workflow (fake gateway, real agent activities)', () => {
  let env: TestWorkflowEnvironment;
  let controlWorker: Worker;
  let controlRun: Promise<void>;
  const controlQueue = uniqueQueue('gateway-control');
  /** Per gateway: wake-ups sent, the users it is told it has, and the Kubernetes calls made. */
  const wakes = new Map<string, number>();
  /** A gateway's wake-ups wait for this before they are answered. */
  const heldWakes = new Map<string, Promise<void>>();
  const users = new Map<string, string[]>();
  /** A gateway's users are answered this late (ms); the runs whose question was answered. */
  const slowUsers = new Map<string, number>();
  const usersAnsweredTo: string[] = [];
  const kubeCalls: string[] = [];
  const published: { name: string; status: Record<string, unknown> }[] = [];
  let calls: ReturnType<typeof createWorkflowCallActivities>;

  beforeAll(async () => {
    env = await createTestEnv();
    calls = createWorkflowCallActivities(env.client);
    const kube: KubeActivities = {
      kubeAdopt: async (ref) => (kubeCalls.push(`adopt ${ref.kind} ${ref.name}`), { exists: true, deleting: false }),
      kubePublishStatus: async (ref) => void (kubeCalls.push(`status ${ref.kind} ${ref.name}`), published.push({ name: ref.name, status: ref.status })),
      kubeWriteNat: async ({ object, to }) => void kubeCalls.push(`nat of ${object.kind} ${object.name}: ${to}`),
      kubeRelease: async (ref) => void kubeCalls.push(`release ${ref.kind} ${ref.name}`),
    };
    controlWorker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue: controlQueue,
      workflowBundle: await workflowBundle(),
      activities: {
        ...kube,
        notifyGatewayWaiters: async (gateway: string) => (wakes.set(gateway, (wakes.get(gateway) ?? 0) + 1), await heldWakes.get(gateway), 0),
        gatewayUsers: async (gateway: string) => {
          await new Promise((r) => setTimeout(r, slowUsers.get(gateway) ?? 0));
          usersAnsweredTo.push(Context.current().info.workflowExecution?.runId ?? '');
          return users.get(gateway) ?? [];
        },
      },
    });
    controlRun = controlWorker.run();
  });

  afterAll(async () => {
    controlWorker?.shutdown();
    await controlRun;
    await env?.teardown();
  });

  const newName = () => `gw-${randomUUID().slice(0, 8)}`;

  /** An agent for `gateway` polling its queue, on `net` (a restarted agent on the same gateway keeps its tables). */
  async function startAgent(gateway: string, net: FakeGateway, announce = false, changesInOneCall?: true): Promise<FakeAgent> {
    const info: AgentInfo = { gateway, instanceId: randomUUID(), startedAt: new Date().toISOString(), externalInterface: EXT, ...(changesInOneCall && { changesInOneCall }) };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: gatewayTaskQueue(gateway), activities: createAgentActivities({ gateway, externalInterface: EXT, runner: net }, info) });
    const done = worker.run();
    if (announce) await env.client.workflow.getHandle(workflowIds.gateway(gateway)).signal(agentStartedSignal, info);
    return {
      info,
      stop: async () => {
        if (worker.getState() === 'RUNNING') worker.shutdown();
        await done;
      },
    };
  }

  function startGateway(gateway: string, input: Omit<GatewayInput, 'spec'> = {}, vpc = { internalCidr: VPC, lanIp: '10.0.1.254' }) {
    return env.client.workflow.start(gatewayWorkflow, {
      taskQueue: controlQueue,
      workflowId: workflowIds.gateway(gateway),
      args: [{ spec: { name: gateway, ...vpc }, ...input }],
    });
  }

  const stateOf = (h: WorkflowHandle, runId?: string) => env.client.workflow.getHandle(h.workflowId, runId).query(gatewayStateQuery);
  const ready = (h: WorkflowHandle, want = true) => eventually(() => stateOf(h), (s) => s.ready === want, 30_000, `gateway ready=${want}`);
  const readyCondition = (s: GatewayState) => s.conditions?.find((c) => c.type === 'Ready');
  const runIdOf = async (h: WorkflowHandle) => (await h.describe()).runId;
  const events = async (h: WorkflowHandle) => (await env.client.workflow.getHandle(h.workflowId).fetchHistory()).events?.length ?? 0;
  const agentCalls = async (h: WorkflowHandle, runId?: string) => {
    const { events: history } = await env.client.workflow.getHandle(h.workflowId, runId).fetchHistory();
    return (history ?? []).flatMap((e) => (e.activityTaskScheduledEventAttributes?.taskQueue?.name?.startsWith('natflow-gateway-') ? [e.activityTaskScheduledEventAttributes.activityType!.name!] : []));
  };

  const fip = (owner: string, eip: string, internalIp: string): NatRule => ({ kind: 'fip', owner, eip, internalIp });
  const dnat = (owner: string, eip: string, port: number, internalIp: string): NatRule => ({ kind: 'dnat', owner, eip, protocol: 'tcp', externalPort: port, internalIp, internalPort: 80 });
  const bind = (gateway: string, owner: string, address: string) => calls.bindAddress({ gateway, owner, address, prefixLength: 24 });
  const setRule = (gateway: string, rule: NatRule) => calls.setGatewayRule({ gateway, rule });
  /** A rule's conntrack entries in the fake gateway: one per `conntrack -D` filter of the rule. */
  const entries = (r: NatRule) => conntrackFilters(conntrackTarget(r)).map((f) => f.join(' '));

  async function ended(h: WorkflowHandle): Promise<void> {
    await env.client.workflow.getHandle(h.workflowId).result().catch(() => undefined);
  }

  it('continues as new while ready with everything it holds, and the next run neither restores nor wipes the agent', async () => {
    const gw = newName();
    const net = new FakeGateway();
    const agent = await startAgent(gw, net);
    // Six updates spend this run's budget: the sixth is followed by continue-as-new.
    const h = await startGateway(gw, { eips: {}, rules: {}, limits: { updates: 6 } });
    try {
      await ready(h);
      for (let i = 0; i < 3; i++) {
        await bind(gw, `eip-${i}`, `172.18.0.${10 + i}`);
        await setRule(gw, fip(`fip-${i}`, `172.18.0.${10 + i}`, `10.0.1.${10 + i}`));
      }
      await eventually(() => runIdOf(h), (id) => id !== h.firstExecutionRunId, 20_000, 'a second run');
      const before = await stateOf(h, h.firstExecutionRunId);
      expect(Object.keys(before.rules)).toHaveLength(3);
      const after = await ready(h);
      expect(after).toEqual(before);
      // Started with the default task timeout, it continued with the entity workflows' own.
      expect((await env.client.workflow.getHandle(h.workflowId, h.firstExecutionRunId).describe()).raw.executionConfig?.defaultWorkflowTaskTimeout?.seconds?.toString()).toBe('10');
      expect((await h.describe()).raw.executionConfig?.defaultWorkflowTaskTimeout?.seconds?.toString()).toBe('20');
      // The same agent instance has it all: the new run applied nothing and removed nothing.
      expect(await eventually(() => agentCalls(h), (c) => c.includes('agentSession'), 15_000, 'a session with the agent')).toEqual(['agentInfo', 'agentSession']);
      expect(net.owners()).toEqual(['fip-0', 'fip-1', 'fip-2']);
      expect([...net.addresses.keys()].sort()).toEqual(['172.18.0.10', '172.18.0.11', '172.18.0.12']);
    } finally {
      await h.terminate();
      await agent.stop();
    }
  });

  it('a run handed a full restore the audit asked for (signalled while the run before handed over) makes it at once', async () => {
    const gw = newName();
    const net = new FakeGateway(); // drifted: it lost what the carried state says its agent has
    const agent = await startAgent(gw, net);
    const rule = fip('fip-1', '172.18.0.40', '10.0.1.40');
    const carried = { ready: true, reason: '', agent: agent.info, appliedBy: agent.info.instanceId, removals: [], rebuilding: false, deleting: false, conditions: [], restore: true };
    const h = await startGateway(gw, { eips: { 'eip-1': { address: rule.eip, prefixLength: 24 } }, rules: { [rule.owner]: rule }, carried });
    try {
      await eventually(async () => net.owners(), (owners) => owners.includes('fip-1'), 20_000, 'the rule restored');
      expect([...net.addresses.keys()]).toEqual([rule.eip]);
    } finally {
      await h.terminate();
      await agent.stop();
    }
  });

  it('holds 10,000 rules on 7,500 addresses of a /16: restored and continued as new with every payload under 2 MB', async () => {
    const gw = newName();
    const net = new FakeGateway();
    const agent = await startAgent(gw, net);
    // 5,000 FIPs on addresses of their own, 5,000 DNATs two ports each on 2,500 more; owners are
    // uids as the bridge makes them (the incompressible part).
    const at = (base: string, i: number) => formatIPv4(parseIPv4(base) + i);
    const eips: Record<string, EipAddress> = {};
    const rules: Record<string, NatRule> = {};
    for (let i = 0; i < 7_500; i++) eips[`natflow/eip/eip-${i}/${randomUUID()}`] = { address: at('100.64.0.2', i), prefixLength: 16 };
    for (let i = 0; i < 10_000; i++) {
      const owner = randomUUID();
      rules[owner] = i < 5_000 ? fip(owner, at('100.64.0.2', i), at('10.0.0.10', i)) : dnat(owner, at('100.64.0.2', 5_000 + Math.floor((i - 5_000) / 2)), 8000 + (i % 2), at('10.0.0.10', i));
    }
    const h = await startGateway(gw, { eips, rules, limits: { updates: 3 } }, { internalCidr: '10.0.0.0/16', lanIp: '10.0.255.254' });
    try {
      await ready(h, true);
      expect(net.owners()).toHaveLength(10_000);
      expect(net.addresses.size).toBe(7_500);
      // Three more requests spend the run's update budget: the next run carries all of it.
      await bind(gw, 'eip-new', '100.64.200.1');
      await setRule(gw, fip('fip-new', '100.64.200.1', '10.0.200.1'));
      await calls.removeGatewayRule({ gateway: gw, owner: Object.keys(rules)[0]! });
      await eventually(() => runIdOf(h), (id) => id !== h.firstExecutionRunId, 30_000, 'a second run');
      const state = await ready(h, true);
      expect([Object.keys(state.rules).length, Object.keys(state.eips).length]).toEqual([10_000, 7_501]);
      expect(net.owners()).toHaveLength(10_000);

      const first = largestPayload(await env.client.workflow.getHandle(h.workflowId, h.firstExecutionRunId).fetchHistory());
      const second = largestPayload(await env.client.workflow.getHandle(h.workflowId).fetchHistory());
      const query = await wireSize(state);
      console.log(`gateway with 10,000 rules and 7,501 addresses: largest payloads (bytes) first run ${JSON.stringify(first)}, second run ${JSON.stringify(second)}, state query ${query}`);
      for (const bytes of [first.bytes, second.bytes, query]) expect(bytes).toBeLessThan(PAYLOAD_LIMIT);
      // What must fit is the whole state: the restore's input and the continued run's input carry it.
      expect(first.bytes).toBeGreaterThan(100_000);
    } finally {
      await h.terminate();
      await agent.stop();
    }
  });

  it('keeps serving while its users are told it became ready: a slow wake-up (thousands of users) holds no change up', async () => {
    const gw = newName();
    const net = new FakeGateway();
    let answerWakes!: () => void;
    heldWakes.set(gw, new Promise<void>((resolve) => (answerWakes = resolve)));
    const agent = await startAgent(gw, net);
    const h = await startGateway(gw, { eips: {}, rules: {} });
    try {
      await ready(h);
      await eventually(async () => wakes.get(gw) ?? 0, (n) => n === 1, 15_000, 'its users being woken');
      let answered = false;
      const changes = bind(gw, 'eip-w', '172.18.0.30').then(() => setRule(gw, fip('fip-w', '172.18.0.30', '10.0.1.30'))).then(() => (answered = true));
      await eventually(async () => answered, (done) => done, 15_000, 'the changes answered while its users are still being woken');
      await changes;
      expect(net.owners()).toEqual(['fip-w']);
      expect(wakes.get(gw)).toBe(1);
    } finally {
      answerWakes();
      await h.terminate();
      await agent.stop();
    }
  });

  it('a change of addresses and rules together goes to an agent that says it takes both in one call as one call; an agent from before gets two', async () => {
    for (const oneCall of [true, undefined] as const) {
      const gw = newName();
      const net = new FakeGateway();
      const agent = await startAgent(gw, net, false, oneCall);
      const h = await startGateway(gw, { eips: {}, rules: {} });
      try {
        await ready(h);
        const before = await agentCalls(h);
        // One batch with a bind and a rule: one apply with both.
        const answers = await env.client.workflow.getHandle(h.workflowId).executeUpdate(gatewayRequestsUpdate, {
          args: [[{ bind: { owner: 'eip-a', address: '172.18.0.90', prefixLength: 24 } }, { setRule: fip('fip-a', '172.18.0.90', '10.0.1.90') }]],
        });
        expect(answers).toEqual([{ ok: null }, { ok: null }]);
        expect((await agentCalls(h)).slice(before.length)).toEqual(oneCall ? ['applyGatewayChange'] : ['changeEipAddresses', 'applyNatRules']);
        expect([...net.addresses.keys()]).toEqual(['172.18.0.90']);
        expect(net.owners()).toEqual(['fip-a']);
        // Either kind alone is the call it always was.
        await setRule(gw, fip('fip-b', '172.18.0.90', '10.0.1.91'));
        await bind(gw, 'eip-c', '172.18.0.92');
        expect((await agentCalls(h)).slice(before.length + (oneCall ? 1 : 2))).toEqual(['applyNatRules', 'changeEipAddresses']);
      } finally {
        await h.terminate();
        await agent.stop();
      }
    }
  });

  it('an idle ready gateway writes (almost) no history: its agent session heartbeats instead of probes', async () => {
    const gw = newName();
    const net = new FakeGateway();
    const agent = await startAgent(gw, net);
    const h = await startGateway(gw, { eips: {}, rules: {} });
    try {
      await ready(h);
      await bind(gw, 'eip-a', '172.18.0.20');
      await setRule(gw, dnat('dnat-a', '172.18.0.20', 8080, '10.0.1.20'));
      await new Promise((r) => setTimeout(r, 1000)); // let the last workflow task settle
      const start = await events(h);
      await new Promise((r) => setTimeout(r, 20_000));
      expect((await events(h)) - start).toBeLessThanOrEqual(2);
      expect((await stateOf(h)).ready).toBe(true);
    } finally {
      await h.terminate();
      await agent.stop();
    }
  });

  it('a new incarnation does not wipe what its gateway carries: it wakes its users, adds what they re-assert, removes by tag when told, and after the window only the leftovers', async () => {
    const gw = newName();
    const net = new FakeGateway();
    const kept = fip('fip-kept', '172.18.0.30', '10.0.1.30');
    const removed = dnat('dnat-removed', '172.18.0.31', 8081, '10.0.1.31');
    const leftover = fip('fip-leftover', '172.18.0.32', '10.0.1.32');
    const seeded = await startAgent(gw, net);
    // What an earlier incarnation (terminated with its state) left on the gateway.
    const { applyNatRules, reconcileEipAddresses } = createAgentActivities({ gateway: gw, externalInterface: EXT, runner: net }, seeded.info);
    await reconcileEipAddresses(['172.18.0.30', '172.18.0.31', '172.18.0.32'].map((address) => ({ address, prefixLength: 24 })));
    await applyNatRules({ add: [kept, removed, leftover], removeOwners: [] });
    for (const filter of [...entries(kept), ...entries(removed), ...entries(leftover)]) net.nat.conntrack.set(filter, 2);

    // A window long enough for the three calls below on a loaded machine (the full restore at its end removes what they have not claimed).
    const h = await startGateway(gw, { rebuildWindowMs: 15_000 });
    try {
      await ready(h);
      await eventually(async () => wakes.get(gw) ?? 0, (n) => n >= 1, 10_000, 'its users woken');
      expect(net.owners()).toEqual(['dnat-removed', 'fip-kept', 'fip-leftover']);
      expect(net.addresses.size).toBe(3);

      // Its users re-assert (the EIP its address, the FIP its rule); a deleted rule is removed by its tag.
      await bind(gw, 'eip-kept', kept.eip);
      await setRule(gw, kept);
      expect(await calls.removeGatewayRule({ gateway: gw, owner: removed.owner })).toEqual({ applied: true });
      expect(net.owners()).toEqual(['fip-kept', 'fip-leftover']);
      expect(net.nat.conntrack.has(entries(removed)[0]!)).toBe(false);
      expect(readyCondition(await stateOf(h))?.message).toMatch(/rebuilding/);

      // The window ends with one full restore: what nobody claimed goes, with its conntrack entries.
      await eventually(() => stateOf(h), (s) => !/rebuilding/.test(readyCondition(s)?.message ?? 'rebuilding'), 30_000, 'the end of the rebuild window');
      expect(net.owners()).toEqual(['fip-kept']);
      expect([...net.addresses.keys()]).toEqual([kept.eip]);
      expect(entries(leftover).map((f) => net.nat.conntrack.has(f))).toEqual([false, false]);
      expect(entries(kept).map((f) => net.nat.conntrack.get(f))).toEqual([2, 2]);
    } finally {
      await h.terminate();
      await seeded.stop();
    }
  });

  it('a rule removed while the agent is down is gone, with its conntrack entries, once an agent is back; not-ready state continues as new unchanged', async () => {
    const gw = newName();
    const net = new FakeGateway();
    const r1 = fip('fip-1', '172.18.0.40', '10.0.1.40');
    const r2 = dnat('dnat-2', '172.18.0.41', 8082, '10.0.1.41');
    let agent = await startAgent(gw, net);
    const h = await startGateway(gw, { eips: {}, rules: {}, limits: { updates: 5 } });
    try {
      await ready(h);
      await setRule(gw, r1);
      await setRule(gw, r2);
      for (const filter of [...entries(r1), ...entries(r2)]) net.nat.conntrack.set(filter, 3);
      const wokenBefore = wakes.get(gw) ?? 0;

      await agent.stop(); // its session ends: not ready, and its users are told
      await ready(h, false);
      await eventually(async () => wakes.get(gw) ?? 0, (n) => n > wokenBefore, 10_000, 'users woken: not ready');
      expect(await calls.removeGatewayRule({ gateway: gw, owner: r1.owner })).toEqual({ applied: false });
      expect(net.owners()).toEqual(['dnat-2', 'fip-1']); // nothing could reach the gateway

      // Two more updates spend the budget while not ready: the next run carries the same state.
      expect(await calls.unbindAddress({ gateway: gw, owner: 'never-bound' })).toEqual({ applied: true });
      expect(await calls.unbindAddress({ gateway: gw, owner: 'never-bound-2' })).toEqual({ applied: true });
      await eventually(() => runIdOf(h), (id) => id !== h.firstExecutionRunId, 20_000, 'a second run');
      // Its first probe takes 5 s to time out: until then it is exactly the state carried.
      expect(await stateOf(h)).toEqual(await stateOf(h, h.firstExecutionRunId));

      agent = await startAgent(gw, net, true); // a new agent instance, on the gateway as it was left
      await ready(h);
      expect(net.owners()).toEqual(['dnat-2']);
      expect(entries(r1).map((f) => net.nat.conntrack.has(f))).toEqual([false, false]);
      expect(net.nat.conntrack.get(entries(r2)[0]!)).toBe(3);
    } finally {
      await h.terminate();
      await agent.stop();
    }
  });

  it('while rebuilding, what is removed while the agent is down is taken off by the next agent, though its restore only adds', async () => {
    const gw = newName();
    const net = new FakeGateway();
    let agent = await startAgent(gw, net);
    const h = await startGateway(gw, { rebuildWindowMs: 120_000 });
    try {
      await ready(h);
      const rule = fip('fip-r', '172.18.0.90', '10.0.1.90');
      await bind(gw, 'eip-r', rule.eip);
      await setRule(gw, rule);
      await agent.stop();
      await ready(h, false);
      expect(await calls.removeGatewayRule({ gateway: gw, owner: rule.owner })).toEqual({ applied: false });
      expect(await calls.unbindAddress({ gateway: gw, owner: 'eip-r' })).toEqual({ applied: false });
      agent = await startAgent(gw, net, true);
      await ready(h);
      expect(readyCondition(await stateOf(h))?.message).toMatch(/rebuilding/);
      expect(net.owners()).toEqual([]);
      expect(net.addresses.size).toBe(0);
    } finally {
      await h.terminate();
      await agent.stop();
    }
  });

  it('a gateway deleted while EIPs name it keeps everything (condition names them), continues as new while waiting, then takes it all off and releases its object last', async () => {
    const gw = newName();
    const net = new FakeGateway();
    const agent = await startAgent(gw, net);
    users.set(gw, ['eip eip1', 'eip eip2']);
    const h = await startGateway(gw, { kube: { uid: randomUUID(), generation: 1 }, limits: { signals: 3 }, rebuildWindowMs: 1_000 });
    try {
      await ready(h);
      await bind(gw, 'eip1', '172.18.0.50');
      await setRule(gw, fip('fip-1', '172.18.0.50', '10.0.1.50'));
      await h.cancel();
      const waiting = await eventually(() => stateOf(h), (s) => readyCondition(s)?.reason === 'GatewayInUse', 20_000, 'GatewayInUse');
      expect(readyCondition(waiting)?.message).toBe('waiting for its users to be deleted: eip eip1, eip eip2');
      expect(waiting.deleting).toBe(true);
      await eventually(async () => published, (p) => p.some((s) => JSON.stringify(s).includes('waiting for its users')), 10_000, 'the condition published');
      const publishedBefore = published.length;

      // Signals spend the budget while deleting: the next run still waits, with the same state, and
      // shows it so before it has asked its users again (they answer late: its agent answers first).
      slowUsers.set(gw, 1500);
      for (let i = 0; i < 3; i++) await env.client.workflow.getHandle(h.workflowId).signal(agentStartedSignal, agent.info);
      const second = await eventually(() => runIdOf(h), (id) => id !== h.firstExecutionRunId, 20_000, 'a second run');
      await eventually(async () => usersAnsweredTo, (runs) => runs.includes(second), 20_000, 'the second run told its users');
      const next = await stateOf(h);
      const shown = published.slice(publishedBefore).filter((p) => p.name === gw);
      expect(shown.map((p) => JSON.stringify(p.status)).filter((s) => !s.includes('waiting for its users to be deleted: eip eip1, eip eip2'))).toEqual([]);
      // The same state, but for `rebuilding`: a run's rebuild window is its own (a continued run that
      // carried it starts one again), so whether it was still on when the run handed over is timing.
      const withoutRebuilding = ({ rebuilding: _, ...state }: GatewayState) => state;
      expect(withoutRebuilding(next)).toEqual(withoutRebuilding(await stateOf(h, h.firstExecutionRunId)));
      expect(readyCondition(next)?.reason).toBe('GatewayInUse');
      expect(net.owners()).toEqual(['fip-1']);
      expect([...net.addresses.keys()]).toEqual(['172.18.0.50']);

      // The users leave: one unbinds (a wake-up), the other simply goes.
      users.set(gw, []);
      slowUsers.delete(gw);
      await calls.unbindAddress({ gateway: gw, owner: 'eip1' });
      await ended(h);
      expect(net.owners()).toEqual([]);
      expect(net.addresses.size).toBe(0);
      const mine = kubeCalls.filter((c) => c.endsWith(` ${gw}`));
      expect(mine[0]).toBe(`adopt vpc-nat-gw ${gw}`);
      expect(mine.at(-1)).toBe(`release vpc-nat-gw ${gw}`);
      expect(mine.filter((c) => c.startsWith('adopt'))).toHaveLength(1);
    } finally {
      await h.terminate().catch(() => undefined);
      await agent.stop();
    }
  });

  it('a gateway deleted while its agent is gone does not hold its users: their removals are answered applied (its own delete takes everything off), so the deletes it waits for can finish', async () => {
    const gw = newName();
    const net = new FakeGateway();
    const agent = await startAgent(gw, net);
    users.set(gw, ['eip eip1']);
    const h = await startGateway(gw);
    try {
      await ready(h);
      await bind(gw, 'eip1', '172.18.0.60');
      await setRule(gw, fip('fip-1', '172.18.0.60', '10.0.1.60'));
      await agent.stop();
      await ready(h, false);
      // Not deleted: a removal waits for the agent (its user keeps its object meanwhile).
      expect(await calls.removeGatewayRule({ gateway: gw, owner: 'fip-1' })).toEqual({ applied: false });
      await h.cancel();
      await eventually(() => stateOf(h), (s) => readyCondition(s)?.reason === 'GatewayInUse', 20_000, 'GatewayInUse');
      expect(await calls.removeGatewayRule({ gateway: gw, owner: 'fip-1' })).toEqual({ applied: true });
      expect(await calls.unbindAddress({ gateway: gw, owner: 'eip1' })).toEqual({ applied: true });
      users.set(gw, []);
      await calls.unbindAddress({ gateway: gw, owner: 'eip1' });
      await ended(h);
    } finally {
      await h.terminate().catch(() => undefined);
    }
  });

  it('continues as new while rebuilding: the next run keeps what was re-asserted and still removes only leftovers after its window', async () => {
    const gw = newName();
    const net = new FakeGateway();
    const agent = await startAgent(gw, net);
    const { applyNatRules } = createAgentActivities({ gateway: gw, externalInterface: EXT, runner: net }, agent.info);
    await applyNatRules({ add: [fip('fip-old', '172.18.0.60', '10.0.1.60'), fip('fip-gone', '172.18.0.61', '10.0.1.61')], removeOwners: [] });
    const h = await startGateway(gw, { limits: { updates: 2 }, rebuildWindowMs: 20_000 }); // long enough for the hand-over on a loaded machine
    try {
      await ready(h);
      await bind(gw, 'eip-old', '172.18.0.60');
      await setRule(gw, fip('fip-old', '172.18.0.60', '10.0.1.60'));
      await eventually(() => runIdOf(h), (id) => id !== h.firstExecutionRunId, 20_000, 'a second run');
      expect(await ready(h)).toEqual(await stateOf(h, h.firstExecutionRunId));
      expect(net.owners()).toEqual(['fip-gone', 'fip-old']);
      await eventually(async () => net.owners(), (o) => o.length === 1, 45_000, 'the leftover removed');
      expect(net.owners()).toEqual(['fip-old']);
    } finally {
      await h.terminate();
      await agent.stop();
    }
  });

  it("re-asserting what is applied resolves at once, even behind a slow apply; a rule must point wholly inside the VPC, never at its network, broadcast or lanIp (messages name the rule)", async () => {
    const gw = newName();
    const net = new FakeGateway();
    const agent = await startAgent(gw, net);
    // The VPC starts a larger aligned block: a CIDR whose first address is inside may still reach out of it.
    const h = await startGateway(gw, { eips: {}, rules: {} }, { internalCidr: '10.0.0.0/24', lanIp: '10.0.0.254' });
    const vpc = `the VPC subnet 10.0.0.0/24 of gateway ${gw}`;
    try {
      await ready(h);
      const rule = fip('fip-same', '172.18.0.70', '10.0.0.70');
      await bind(gw, 'eip-same', rule.eip);
      await setRule(gw, rule);
      const restore = gate();
      net.restoreGate = restore.closed;
      let slowAnswered = false;
      const slow = setRule(gw, fip('fip-slow', '172.18.0.71', '10.0.0.71')).finally(() => (slowAnswered = true));
      await eventually(async () => net.restoresHeld, (n) => n === 1, 20_000, 'the slow apply under way');
      const reasserted = (async () => {
        await bind(gw, 'eip-same', rule.eip);
        await setRule(gw, { ...rule });
      })();
      for (const p of [slow, reasserted]) p.catch(() => undefined); // a failure is reported where they are awaited
      const held = new Promise((_, reject) => setTimeout(() => reject(new Error('the re-assertions waited behind the held apply')), 20_000));
      await Promise.race([reasserted, held]).catch((err: unknown) => {
        restore.open(); // the agent can stop
        throw err;
      });
      expect(slowAnswered).toBe(false); // answered while the apply was still held
      net.restoreGate = null;
      restore.open();
      await slow;

      const refused = (r: NamedNatRule) => setRule(gw, r).then(() => null, (err: Error) => ({ type: (err as { type?: string }).type, message: err.message }));
      expect(await refused({ kind: 'snat', owner: 's1', eip: rule.eip, internalCidr: '10.0.0.0/16', name: 'snat-wide' })).toEqual({
        type: Reason.InvalidSpec,
        message: `snat snat-wide: internalCIDR 10.0.0.0/16 is outside ${vpc} (it must lie wholly inside it)`,
      });
      expect((await refused({ ...fip('f2', rule.eip, '10.0.0.0'), name: 'fip-net' }))?.message).toBe(`fip fip-net: internalIp 10.0.0.0 is the network address of ${vpc}`);
      expect((await refused(dnat('d3', rule.eip, 81, '10.0.0.255')))?.message).toBe(`dnat rule d3: internalIp 10.0.0.255 is the broadcast address of ${vpc}`);
      expect((await refused({ ...fip('f4', rule.eip, '10.0.0.254'), name: 'fip-lan' }))?.message).toMatch(/^fip fip-lan: internalIp 10.0.0.254 is the lanIp of gateway/);
      expect(await refused({ kind: 'snat', owner: 's5', eip: rule.eip, internalCidr: '10.0.0.128/25', name: 'snat-half' })).toBeNull();
      expect(net.owners()).toEqual(['fip-same', 'fip-slow', 's5']);

      // A spec change is taken by generation; a stale one is ignored.
      const handle = env.client.workflow.getHandle(h.workflowId);
      await handle.signal(gatewaySpecSignal, { spec: { name: gw, internalCidr: '10.0.2.0/24' }, generation: 2 });
      await handle.signal(gatewaySpecSignal, { spec: { name: gw, internalCidr: '10.9.9.0/24' }, generation: 1 });
      const s = await eventually(() => stateOf(h), (x) => x.observedGeneration === 2, 10_000, 'generation 2');
      expect(s.spec.internalCidr).toBe('10.0.2.0/24');
      // The same generation may still bring news: the VPC subnet behind the gateway changed.
      await handle.signal(gatewaySpecSignal, { spec: { name: gw, internalCidr: '10.0.3.0/24' }, generation: 2 });
      await eventually(() => stateOf(h), (x) => x.spec.internalCidr === '10.0.3.0/24', 10_000, 'the new VPC subnet');
      expect((await refused(fip('f6', rule.eip, '10.0.0.80')))?.message).toMatch(/outside the VPC subnet 10.0.3.0\/24/);
    } finally {
      await h.terminate();
      await agent.stop();
    }
  });
});
