// Records the histories replayed in CI: each workflow type through its important paths, on the
// real stack (dev server, control worker, lab gateway and its agent).
//   npm run record-histories [-- scenario ...]     (all scenarios when none is named)
// Fixture names carry the code version, so older recordings stay: they are the open workflows
// of earlier releases. Re-recording a scenario on the same commit replaces its own files.
import { randomUUID } from 'node:crypto';
import { runCommand } from '../../activities/exec.js';
import { DEFAULT_EXTERNAL_SUBNET } from '../../domain/subnet.js';
import { workflowIds, type ResourceKind } from '../../domain/names.js';
import type { NatKind, NatSpec, NatSpecs } from '../../domain/nat-resources.js';
import type { EipSpec } from '../../domain/eip.js';
import { createResource, deleteResource, resourceStart, resourceStatus, updateNatSpec } from '../../starter/resources.js';
import { ipamWorkflow } from '../../workflows/ipam.js';
import { createWorkflowCallActivities } from '../../activities/workflow-calls.js';
import { startStack, type Stack } from '../support/stack.js';
import { kubeovnObjects, startKube } from '../support/kube.js';
import { KubeBridge } from '../../starter/bridge.js';
import type { KubernetesObject } from '@kubernetes/client-node';
import { eventually } from '../support/workflows.js';
import { allocateUpdate } from '../../domain/workflow-api.js';
import { runAudit } from '../../starter/audit.js';
import { codeVersion, saveFixture } from './fixtures.js';

const GW = 'rec-gw';
/** A scenario returns the workflow runs to record (the first run when `runId` is given). */
type Scenario = (s: Stack) => Promise<{ workflowType: string; workflowId: string; runId?: string }[]>;

const settle = (s: Stack, kind: ResourceKind, name: string, phase: string) =>
  eventually(() => resourceStatus(s.resources, kind, name), (st) => st.phase === phase, 60_000, `${kind} ${name} ${phase}`);
const eip = async (s: Stack, name: string, gateway = GW) => {
  const created = await createResource(s.resources, 'eip', name, { natGwDp: gateway });
  await settle(s, 'eip', name, 'Ready');
  return created;
};

/** Deletes a FIP, then its EIP: the runs to record are theirs (of the newest types unless told). */
async function deleteFipThenEip(s: Stack, fip: { name: string; workflowId: string }, eip: { name: string; workflowId: string }, types = { fip: 'fipWorkflowV6', eip: 'eipWorkflowV6' }) {
  await deleteResource(s.resources, 'fip', fip.name);
  await deleteResource(s.resources, 'eip', eip.name);
  return [
    { workflowType: types.fip, workflowId: fip.workflowId },
    { workflowType: types.eip, workflowId: eip.workflowId },
  ];
}

/** A NAT rule through create, a spec change and delete. */
const ruleLifecycle = <K extends NatKind>(kind: K, spec: NatSpecs[K], changed: NatSpecs[K]): Scenario => async (s) => {
  await eip(s, `eip-${kind}`);
  const rule = await createResource(s.resources, kind, `${kind}-1`, spec as never);
  await settle(s, kind, `${kind}-1`, 'Ready');
  await updateNatSpec(s.resources, kind, `${kind}-1`, changed);
  await eventually(() => resourceStatus(s.resources, kind, `${kind}-1`), (st) => st.ready && st.observedGeneration === 2, 60_000, 'updated');
  await deleteResource(s.resources, kind, `${kind}-1`);
  await deleteResource(s.resources, 'eip', `eip-${kind}`);
  return [{ workflowType: `${kind}WorkflowV6`, workflowId: rule.workflowId }];
};

/** A rule deleted while it is being claimed or applied. */
const deleteMidApply = <K extends NatKind>(kind: K, spec: NatSpecs[K]): Scenario => async (s) => {
  await eip(s, spec.eip);
  const rule = await createResource(s.resources, kind, `${kind}-mid`, spec as never);
  await eventually(() => resourceStatus(s.resources, kind, `${kind}-mid`), (st) => ['Claiming', 'Applying', 'Ready'].includes(st.phase), 60_000, 'applying');
  await deleteResource(s.resources, kind, `${kind}-mid`);
  await deleteResource(s.resources, 'eip', spec.eip);
  return [{ workflowType: `${kind}WorkflowV6`, workflowId: rule.workflowId }];
};

const scenarios: Record<string, Scenario> = {
  'eip-happy': async (s) => {
    const e = await eip(s, 'eip-happy');
    await deleteResource(s.resources, 'eip', 'eip-happy');
    return [{ workflowType: 'eipWorkflowV6', workflowId: e.workflowId }];
  },
  'eip-missing-gateway-deleted': async (s) => {
    const e = await createResource(s.resources, 'eip', 'eip-orphan', { natGwDp: 'no-such-gateway' });
    await settle(s, 'eip', 'eip-orphan', 'WaitingForGateway');
    await deleteResource(s.resources, 'eip', 'eip-orphan');
    return [{ workflowType: 'eipWorkflowV6', workflowId: e.workflowId }];
  },
  'eip-compensation': async (s) => {
    // The agent dies while the gateway still looks ready: the bind fails, the address is released,
    // the EIP waits; a new agent comes up and the EIP becomes ready.
    const gw = s.gateways.get(GW)!;
    await gw.agent.stop();
    const e = await createResource(s.resources, 'eip', 'eip-comp', { natGwDp: GW });
    await settle(s, 'eip', 'eip-comp', 'WaitingForGateway');
    await s.restartAgent(GW);
    await settle(s, 'eip', 'eip-comp', 'Ready');
    await deleteResource(s.resources, 'eip', 'eip-comp');
    return [{ workflowType: 'eipWorkflowV6', workflowId: e.workflowId }];
  },
  'fip-lifecycle': ruleLifecycle('fip', { eip: 'eip-fip', internalIp: '10.0.1.10' }, { eip: 'eip-fip', internalIp: '10.0.1.11' }),
  'dnat-lifecycle': ruleLifecycle(
    'dnat',
    { eip: 'eip-dnat', protocol: 'tcp', externalPort: '8080', internalIp: '10.0.1.10', internalPort: '80' },
    { eip: 'eip-dnat', protocol: 'tcp', externalPort: '8080', internalIp: '10.0.1.11', internalPort: '8080' },
  ),
  'snat-lifecycle': ruleLifecycle('snat', { eip: 'eip-snat', internalCIDR: '10.0.1.0/24' }, { eip: 'eip-snat', internalCIDR: '10.0.1.0/25' }),
  'fip-before-eip': async (s) => {
    // The rule waits for an EIP that does not exist yet; the EIP's readiness wakes it.
    const rule = await createResource(s.resources, 'fip', 'fip-early', { eip: 'eip-late', internalIp: '10.0.1.10' });
    await settle(s, 'fip', 'fip-early', 'WaitingForEip');
    const e = await eip(s, 'eip-late');
    await settle(s, 'fip', 'fip-early', 'Ready');
    return deleteFipThenEip(s, rule, e);
  },
  'fip-right-after-eip': async (s) => {
    // Created together, as `kubectl apply` of both does: the rule's first call finds the EIP while
    // it takes its address, and its claim waits in the EIP until the EIP is Ready.
    const e = await createResource(s.resources, 'eip', 'eip-together', { natGwDp: GW });
    const rule = await createResource(s.resources, 'fip', 'fip-together', { eip: 'eip-together', internalIp: '10.0.1.10' });
    await settle(s, 'fip', 'fip-together', 'Ready');
    return deleteFipThenEip(s, rule, e);
  },
  'types-before-v2': async (s) => {
    // Runs of the types from before the V2 types, as an open one continues as new on this code: an
    // EIP and a FIP created together; they ask for the patches of their base (find-claim-apply).
    const start = async (kind: 'eip' | 'fip', name: string, spec: EipSpec | NatSpec) => {
      const { options } = resourceStart(kind, { name, uid: randomUUID(), generation: 1 }, spec, s.resources.taskQueue);
      return { name, workflowId: (await s.env.client.workflow.start(`${kind}Workflow`, options)).workflowId };
    };
    const e = await start('eip', 'eip-v1', { natGwDp: GW });
    const rule = await start('fip', 'fip-v1', { eip: 'eip-v1', internalIp: '10.0.1.10' });
    await settle(s, 'fip', 'fip-v1', 'Ready');
    return deleteFipThenEip(s, rule, e, { fip: 'fipWorkflow', eip: 'eipWorkflow' });
  },
  'fip-woken-by-eip': async (s) => {
    // The rule finds its EIP not ready (its gateway's agent is down): the lookup asks the EIP to
    // wake it, and once woken it claims without looking the EIP up again.
    await s.gateways.get(GW)!.agent.stop();
    const e = await createResource(s.resources, 'eip', 'eip-woken', { natGwDp: GW });
    await settle(s, 'eip', 'eip-woken', 'WaitingForGateway');
    const rule = await createResource(s.resources, 'fip', 'fip-woken', { eip: 'eip-woken', internalIp: '10.0.1.10' });
    await settle(s, 'fip', 'fip-woken', 'WaitingForEip');
    await s.restartAgent(GW);
    await settle(s, 'fip', 'fip-woken', 'Ready');
    return deleteFipThenEip(s, rule, e);
  },
  'fip-waits-for-free-eip': async (s) => {
    // A FIP refused because another FIP has the EIP waits (no retry loop) and takes the EIP once it
    // is given up: by the update that spends the EIP's budget, so the wake-up and the EIP's
    // continue-as-new leave in one workflow task.
    const e = await createResource({ ...s.resources, historyLimits: { updates: 2 } }, 'eip', 'eip-shared', { natGwDp: GW });
    await settle(s, 'eip', 'eip-shared', 'Ready');
    await createResource(s.resources, 'fip', 'fip-first', { eip: 'eip-shared', internalIp: '10.0.1.10' });
    await settle(s, 'fip', 'fip-first', 'Ready');
    const waiting = await createResource(s.resources, 'fip', 'fip-second', { eip: 'eip-shared', internalIp: '10.0.1.11' });
    await settle(s, 'fip', 'fip-second', 'Failed');
    await deleteResource(s.resources, 'fip', 'fip-first');
    await settle(s, 'fip', 'fip-second', 'Ready');
    await deleteResource(s.resources, 'fip', 'fip-second');
    await deleteResource(s.resources, 'eip', 'eip-shared');
    // The EIP's first run: the one that handed over as it woke the FIP.
    const runs: { runId: string; startTime: Date }[] = [];
    for await (const run of s.env.client.workflow.list({ query: `WorkflowId = "${e.workflowId}"` })) runs.push(run);
    const [first] = runs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime());
    return [
      { workflowType: 'fipWorkflowV6', workflowId: waiting.workflowId },
      { workflowType: 'eipWorkflowV6', workflowId: e.workflowId, runId: first!.runId },
    ];
  },
  'fip-delete-mid-apply': deleteMidApply('fip', { eip: 'eip-mid-fip', internalIp: '10.0.1.10' }),
  'dnat-delete-mid-apply': deleteMidApply('dnat', { eip: 'eip-mid-dnat', protocol: 'udp', externalPort: '5353', internalIp: '10.0.1.10', internalPort: '53' }),
  'snat-delete-mid-apply': deleteMidApply('snat', { eip: 'eip-mid-snat', internalCIDR: '10.0.1.0/24' }),
  'kube-fip-lifecycle': async (s) => {
    // The production path: objects in Kubernetes, driven by the bridge; adopt, status, finalizer.
    const bridge = new KubeBridge({ kubeConfig: kube.kc, client: s.env.client, taskQueue: s.resources.taskQueue, resyncMs: 2000, log: () => undefined });
    await bridge.start();
    try {
      const k = kubeovnObjects(() => kube.custom);
      const eipObj = await k.create('eip', 'eip-kube', { natGwDp: GW });
      const fipObj = await k.create('fip', 'fip-kube', { eip: 'eip-kube', internalIp: '10.0.1.10' });
      await k.ready('fip', 'fip-kube');
      await k.patchSpec('fip', 'fip-kube', { internalIp: '10.0.1.11' });
      await eventually(() => k.get('fip', 'fip-kube'), (o) => o.status?.internalIp === '10.0.1.11' && o.status.ready === true, 60_000, 'kube FIP moved');
      for (const [short, name] of [['fip', 'fip-kube'], ['eip', 'eip-kube']] as const) {
        await k.del(short, name);
        await k.gone(short, name);
      }
      const idOf = (kind: ResourceKind, o: KubernetesObject) => workflowIds.resource(kind, { name: o.metadata!.name!, uid: o.metadata!.uid! });
      return [
        { workflowType: 'eipWorkflowV6', workflowId: idOf('eip', eipObj) },
        { workflowType: 'fipWorkflowV6', workflowId: idOf('fip', fipObj) },
      ];
    } finally {
      await bridge.stop();
    }
  },
  'gateway-agent-restart': async (s) => {
    await eip(s, 'eip-restore');
    await createResource(s.resources, 'fip', 'fip-restore', { eip: 'eip-restore', internalIp: '10.0.1.10' });
    await settle(s, 'fip', 'fip-restore', 'Ready');
    const ns = s.gateways.get(GW)!.topology.gatewayNs;
    await s.restartAgent(GW, async () => {
      await runCommand('iptables', ['-t', 'nat', '-F'], { netns: ns });
      await runCommand('iptables', ['-t', 'nat', '-X'], { netns: ns });
    });
    await eventually(() => s.natRules(GW), (rules) => rules.length > 0, 60_000, 'rules restored');
    await deleteResource(s.resources, 'fip', 'fip-restore');
    await deleteResource(s.resources, 'eip', 'eip-restore');
    return [{ workflowType: 'gatewayWorkflow', workflowId: workflowIds.gateway(GW) }];
  },
  'delete-while-agent-down': async (s) => {
    // Deleted while the gateway's agent is down: a FIP and an EIP without users wait (Deleting,
    // GatewayNotReady) and go once an agent is back.
    await eip(s, 'eip-down');
    const lone = await eip(s, 'eip-lone');
    const rule = await createResource(s.resources, 'fip', 'fip-down', { eip: 'eip-down', internalIp: '10.0.1.10' });
    await settle(s, 'fip', 'fip-down', 'Ready');
    await s.restartAgent(GW, async () => {
      await deleteResource(s.resources, 'fip', 'fip-down', false);
      await deleteResource(s.resources, 'eip', 'eip-lone', false);
      const waiting = (st: { phase: string; conditions: { reason: string }[] }) => st.phase === 'Deleting' && st.conditions.some((c) => c.reason === 'GatewayNotReady');
      await eventually(() => resourceStatus(s.resources, 'fip', 'fip-down'), waiting, 60_000, 'the FIP waiting for its gateway');
      await eventually(() => resourceStatus(s.resources, 'eip', 'eip-lone'), waiting, 60_000, 'the EIP waiting for its gateway');
    });
    for (const { workflowId } of [rule, lone]) await s.env.client.workflow.getHandle(workflowId).result().catch(() => undefined);
    await deleteResource(s.resources, 'eip', 'eip-down');
    return [
      { workflowType: 'fipWorkflowV6', workflowId: rule.workflowId },
      { workflowType: 'eipWorkflowV6', workflowId: lone.workflowId },
    ];
  },
  'dnats-refused-on-one-eip': async (s) => {
    // Two rules the gateway refuses (outside its VPC) on one EIP: each one's give-back wakes the
    // other, which retries after a pause growing with each refusal (refusal-backoff).
    const e = await eip(s, 'eip-refusals');
    const rules = [];
    for (const port of ['81', '82']) rules.push(await createResource(s.resources, 'dnat', `dnat-out-${port}`, { eip: 'eip-refusals', protocol: 'tcp', externalPort: port, internalIp: '192.168.9.9', internalPort: '80' }));
    for (const port of ['81', '82']) await settle(s, 'dnat', `dnat-out-${port}`, 'Failed');
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    for (const port of ['81', '82']) await deleteResource(s.resources, 'dnat', `dnat-out-${port}`);
    await deleteResource(s.resources, 'eip', 'eip-refusals');
    return [...rules.map((r) => ({ workflowType: 'dnatWorkflowV6', workflowId: r.workflowId })), { workflowType: 'eipWorkflowV6', workflowId: e.workflowId }];
  },
  'audit-fix': async (s) => {
    // An allocation whose EIP is gone, and an EIP's address taken off its gateway by hand: found by
    // both looks, released and restored (the gateway's restoreGateway) by --fix, audited again.
    await s.env.client.workflow.getHandle(workflowIds.ipam(DEFAULT_EXTERNAL_SUBNET)).executeUpdate(allocateUpdate, { args: [{ owner: 'natflow/eip/gone/0', requested: '172.18.0.99' }] });
    await eip(s, 'eip-drift');
    const { ip } = await resourceStatus(s.resources, 'eip', 'eip-drift');
    await runCommand('ip', ['addr', 'del', `${ip}/24`, 'dev', 'net1'], { netns: s.gateways.get(GW)!.topology.gatewayNs });
    const report = await runAudit(s.resources, { fix: true, graceMs: 1000 });
    if (report.findings.length > 0 || report.repairs?.some((r) => r.result !== 'applied')) throw new Error(`expected both repaired: ${JSON.stringify(report)}`);
    await deleteResource(s.resources, 'eip', 'eip-drift');
    return [
      { workflowType: 'auditWorkflow', workflowId: report.workflowId },
      { workflowType: 'gatewayWorkflow', workflowId: workflowIds.gateway(GW) },
    ];
  },
  'ipam-continue-as-new': async (s) => {
    const subnet = { name: 'rec-ipam', cidrBlock: '172.30.0.0/24', gateway: '172.30.0.1', excludeIps: [] };
    const handle = await s.env.client.workflow.start(ipamWorkflow, { taskQueue: s.resources.taskQueue!, workflowId: workflowIds.ipam(subnet.name), args: [{ subnet, maxHistoryLength: 40 }] });
    const control = createWorkflowCallActivities(s.env.client);
    for (let i = 0; i < 12; i++) await control.allocateAddress({ subnet: subnet.name, owner: `owner-${i}`, requested: i === 3 ? '172.30.0.99' : undefined });
    for (let i = 0; i < 12; i += 2) await control.releaseAddress({ subnet: subnet.name, owner: `owner-${i}` });
    const { runId } = await handle.describe();
    if (runId === handle.firstExecutionRunId) throw new Error('expected a continue-as-new');
    await handle.terminate();
    return [{ workflowType: 'ipamWorkflow', workflowId: handle.workflowId, runId: handle.firstExecutionRunId }];
  },
};

const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !(name in scenarios));
if (unknown.length > 0) throw new Error(`unknown scenario(s) ${unknown.join(', ')}; known: ${Object.keys(scenarios).join(', ')}`);

const kube = await startKube();
const stack = await startStack(DEFAULT_EXTERNAL_SUBNET, { kubeConfig: kube.kc });
try {
  await stack.addGateway(GW);
  const version = codeVersion();
  for (const [scenario, run] of Object.entries(scenarios)) {
    if (wanted.length > 0 && !wanted.includes(scenario)) continue;
    for (const { workflowType, workflowId, runId } of await run(stack)) {
      const history = await stack.env.client.workflow.getHandle(workflowId, runId).fetchHistory();
      const file = saveFixture({ scenario, workflowType, workflowId, codeVersion: version, recordedAt: new Date().toISOString(), howMade: `npm run record-histories -- ${scenario}` }, history);
      console.log(`recorded ${file} (${history.events?.length} events)`);
    }
  }
} finally {
  await stack.teardown();
  await kube.stop();
}
