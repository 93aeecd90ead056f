// `natflow audit` end to end: a clean system audits clean; leaks planted by hand in each category
// on a real gateway, IPAM and gateway workflow — the two seed leaks the way Kube-OVN left them
// among them — are each found with their kind, nothing changes without --fix, and --fix repairs
// them (traffic shows the misrouting gone) and audits clean again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCommand } from '../activities/exec.js';
import { createNatActivities } from '../activities/gateway-nat.js';
import type { AuditReport, FindingKind } from '../domain/audit.js';
import type { LabTopology } from '../domain/lab.js';
import { workflowIds } from '../domain/names.js';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import { allocateUpdate, bindEipUpdate, setRuleUpdate } from '../domain/workflow-api.js';
import { runAudit } from '../starter/audit.js';
import { createResource, deleteResource, gatewayState, resourceStatus, subnetState } from '../starter/resources.js';
import { conntrackEntries, Listener, ping, send } from './support/traffic.js';
import { eventually, resourcePhase, uid } from './support/workflows.js';
import { startStack, type Stack } from './support/stack.js';
import { ensureKubeBinaries, examplesDir, kubeovnObjects, startKube, type KubeEnv } from './support/kube.js';
import { applyObjects, readManifests } from '../temporal-dev/kube/apiserver.js';
import { mergePatch } from '../activities/kube.js';
import { crd, FINALIZER, KUBEOVN_API_VERSION, KUBEOVN_KINDS } from '../domain/kube.js';
import { resourceStart } from '../starter/resources.js';

const GW = 't-audit';

describe('natflow audit (end to end)', () => {
  let stack: Stack;
  let lab: LabTopology;
  beforeAll(async () => {
    // A short rebuild window: a new gateway incarnation removes nothing it does not hold until it ends, nor does the audit count it.
    stack = await startStack(DEFAULT_EXTERNAL_SUBNET, { gatewayRebuildWindowMs: 2_000 });
    lab = await stack.addGateway(GW);
    await eventually(() => gatewayState(stack.resources, GW), (s) => s.ready && !s.rebuilding, 30_000, 'gateway past its rebuild window');
  });
  afterAll(async () => {
    await stack?.teardown();
  });

  const r = () => stack.resources;
  const audit = (fix = false) => runAudit(r(), { fix, graceMs: 1000 });
  const kinds = (report: AuditReport) => report.findings.map((f) => f.kind).sort();
  const inGateway = (cmd: string, args: string[]) => runCommand(cmd, args, { netns: lab.gatewayNs });
  const vm = (i: number) => ({ ns: lab.vmNamespaces[i]!, ip: lab.vmIps[i]! });
  async function eip(name: string, v4ip?: string): Promise<string> {
    await createResource(r(), 'eip', name, { natGwDp: GW, ...(v4ip && { v4ip }) });
    return (await resourcePhase(r(), 'eip', name, 'Ready')).ip;
  }

  it('a system with EIPs, a FIP, a DNAT and an SNAT audits clean, and again once they are deleted', async () => {
    await eip('a-eip1');
    await eip('a-eip2');
    await createResource(r(), 'fip', 'a-fip', { eip: 'a-eip1', internalIp: vm(0).ip });
    await createResource(r(), 'dnat', 'a-dnat', { eip: 'a-eip2', protocol: 'tcp', externalPort: '8080', internalIp: vm(1).ip, internalPort: '80' });
    await createResource(r(), 'snat', 'a-snat', { eip: 'a-eip2', internalCIDR: '10.0.1.0/24' });
    for (const [kind, name] of [['fip', 'a-fip'], ['dnat', 'a-dnat'], ['snat', 'a-snat']] as const) await resourcePhase(r(), kind, name, 'Ready');
    expect(await ping(lab.clientNs, (await resourceStatus(r(), 'eip', 'a-eip1')).ip)).toBe(true); // translated connections exist

    const report = await audit();
    expect(report.findings).toEqual([]);
    expect(report.unchecked).toEqual([]);

    for (const [kind, name] of [['fip', 'a-fip'], ['dnat', 'a-dnat'], ['snat', 'a-snat'], ['eip', 'a-eip1'], ['eip', 'a-eip2']] as const) await deleteResource(r(), kind, name);
    expect((await audit()).findings).toEqual([]);
  });

  it('finds each planted leak with its kind, changes nothing without --fix, and --fix repairs them all', async () => {
    const [x1, x2, x4, x6] = ['172.18.0.201', '172.18.0.202', '172.18.0.204', '172.18.0.206'];
    // Seed 1, as Kube-OVN leaves a FIP created and deleted quickly: its rule, untagged, in its chain
    // (left before natflow took the gateway over, so ahead of natflow's own jumps).
    await inGateway('iptables', ['-t', 'nat', '-I', 'EXCLUSIVE_DNAT', '1', '-d', `${x1}/32`, '-j', 'DNAT', '--to-destination', vm(0).ip]);
    // A new EIP takes the address, with a FIP to another VM: the stale rule comes first and misroutes.
    await eip('b-reuse', x1);
    await createResource(r(), 'fip', 'b-fip', { eip: 'b-reuse', internalIp: vm(1).ip });
    await resourcePhase(r(), 'fip', 'b-fip', 'Ready');
    const reachedVm = async (port: number, text: string) => {
      const listeners = await Promise.all([Listener.open(vm(0).ns, port), Listener.open(vm(1).ns, port)]);
      try {
        expect(await send(lab.clientNs, x1, port, text)).toBe(true);
        return (await Promise.all(listeners.map((l) => l.waitFor(text, 1500)))).map((got, i) => (got ? i : -1)).filter((i) => i >= 0);
      } finally {
        for (const l of listeners) l.close();
      }
    };
    expect(await reachedVm(8081, 'before')).toEqual([0]); // misrouted to VM 1

    // A tagged rule with no owner, on an address labelled as an EIP that nobody holds; traffic to it leaves conntrack entries.
    await createNatActivities({ netns: lab.gatewayNs }).applyNatRules({ add: [{ kind: 'fip', owner: 'leaked-owner-1', eip: x2, internalIp: '10.0.1.12' }], removeOwners: [] });
    await inGateway('ip', ['addr', 'add', `${x2}/24`, 'dev', 'net1', 'label', 'net1:eip']);
    await ping(lab.clientNs, x2);
    expect(await conntrackEntries(lab.gatewayNs, x2, { nat: true })).not.toEqual([]);
    // Seed 2: an allocation whose EIP is gone.
    const ipam = stack.env.client.workflow.getHandle(workflowIds.ipam(DEFAULT_EXTERNAL_SUBNET));
    await ipam.executeUpdate(allocateUpdate, { args: [{ owner: `natflow/eip/ghost/${uid()}`, requested: x4 }] });
    // The gateway workflow holding an address and a rule for owners whose workflows are gone.
    const gateway = stack.env.client.workflow.getHandle(workflowIds.gateway(GW));
    await gateway.executeUpdate(bindEipUpdate, { args: [{ owner: `natflow/eip/ghost-bound/${uid()}`, address: x6, prefixLength: 24 }] });
    await gateway.executeUpdate(setRuleUpdate, { args: [{ kind: 'dnat', owner: 'orphan-rule-1', eip: x6, protocol: 'udp', externalPort: 53, internalIp: vm(0).ip, internalPort: 53 }] });
    // Drift from a live EIP and FIP: its address and its rules taken off the gateway by hand.
    const driftIp = await eip('b-drift');
    await createResource(r(), 'fip', 'b-drift-fip', { eip: 'b-drift', internalIp: '10.0.1.13' });
    await resourcePhase(r(), 'fip', 'b-drift-fip', 'Ready');
    const driftOwner = (await resourceStatus(r(), 'fip', 'b-drift-fip')).workflowId.split('/').pop()!;
    await inGateway('ip', ['addr', 'del', `${driftIp}/24`, 'dev', 'net1']);
    await createNatActivities({ netns: lab.gatewayNs }).applyNatRules({ add: [], removeOwners: [driftOwner] });

    const rulesBefore = await stack.natRules(GW);
    const report = await audit();
    const expected: FindingKind[] = ['foreign-rule', 'leaked-address', 'leaked-rule', 'missing-address', 'missing-rule', 'orphaned-address', 'orphaned-allocation', 'orphaned-rule', 'stale-conntrack'];
    expect(kinds(report)).toEqual(expected);
    const one = (kind: FindingKind) => report.findings.find((f) => f.kind === kind)!;
    expect(one('foreign-rule').found).toContain('misroutes');
    expect(one('foreign-rule').resource).toContain(`-d ${x1}/32`);
    expect(one('leaked-rule').resource).toContain('leaked-owner-1');
    expect(one('leaked-address').resource).toContain(x2);
    expect(one('stale-conntrack').resource).toContain(x2);
    expect(one('orphaned-allocation').resource).toContain(x4);
    expect(one('orphaned-address').resource).toContain(x6);
    expect(one('orphaned-rule').resource).toContain('orphan-rule-1');
    expect(one('missing-address').resource).toContain(driftIp);
    expect(one('missing-rule').resource).toContain(driftOwner);
    for (const f of report.findings) expect(f.expected && f.found && f.repairText).toBeTruthy();
    expect(report.counts).toMatchObject({ 'foreign-rule': 1, 'leaked-rule': 1 });
    // Without --fix nothing changed.
    expect(await stack.natRules(GW)).toEqual(rulesBefore);
    expect(await reachedVm(8082, 'still')).toEqual([0]);

    const fixed = await audit(true);
    expect(fixed.findings).toEqual([]);
    expect(fixed.repairs!.filter((x) => x.result === 'failed')).toEqual([]);
    expect(await reachedVm(8083, 'after')).toEqual([1]); // the FIP's own VM
    expect(await conntrackEntries(lab.gatewayNs, x2, { nat: true })).toEqual([]);
    expect(Object.values((await subnetState(r(), DEFAULT_EXTERNAL_SUBNET)).allocations).sort()).toEqual([driftIp, x1].sort());
    const state = await gatewayState(r(), GW);
    expect(Object.keys(state.rules)).not.toContain('orphan-rule-1');
    expect(Object.values(state.eips).map((a) => a.address).sort()).toEqual([driftIp, x1].sort());
    expect((await stack.eipAddresses(GW)).sort()).toEqual([`${driftIp}/24`, `${x1}/24`].sort());
    expect(Object.keys(state.rules)).toContain(driftOwner);
    expect(new Set((await stack.natRules(GW)).map((x) => x.owner))).toEqual(new Set(Object.keys(state.rules))); // the drifted FIP's rules are back
  });
});

describe('natflow audit: Kubernetes objects and workflows (real kube-apiserver, no bridge)', () => {
  const GWK = 't-audit-k';
  let kube: KubeEnv;
  let stack: Stack;
  const { get, create, del, gone } = kubeovnObjects(() => kube.custom);
  beforeAll(async () => {
    await ensureKubeBinaries();
    kube = await startKube();
    stack = await startStack(DEFAULT_EXTERNAL_SUBNET, { kubeConfig: kube.kc, gatewayRebuildWindowMs: 2_000 });
    await stack.addGateway(GWK);
    await eventually(() => gatewayState(stack.resources, GWK), (s) => s.ready && !s.rebuilding, 30_000, 'gateway past its rebuild window');
  }, 900_000);
  afterAll(async () => {
    await stack?.teardown();
    await kube?.stop();
  });
  const audit = (fix = false) => runAudit(stack.resources, { fix, graceMs: 1000 });
  const kinds = (report: AuditReport) => report.findings.map((f) => f.kind).sort();
  const fipSpec = { eip: 'no-such-eip', internalIp: '10.0.1.10' };
  /** Starts an object's workflow as the bridge would. */
  async function drive(name: string) {
    const obj = await get('fip', name);
    const start = resourceStart('fip', { name, uid: obj.metadata!.uid!, generation: 1, fromKube: true }, fipSpec, stack.resources.taskQueue);
    await stack.env.client.workflow.start(start.workflow, start.options);
    await eventually(() => get('fip', name), (o) => (o.metadata?.finalizers ?? []).includes(FINALIZER), 30_000, `${name} adopted`);
    return start.options.workflowId;
  }

  it("a Subnet's usage that differs from its IPAM's is found, and --fix writes the IPAM's", async () => {
    const subnet = (await readManifests(examplesDir())).filter((o) => o.kind === 'Subnet' && o.metadata?.name === DEFAULT_EXTERNAL_SUBNET);
    await applyObjects(kube.kc, subnet);
    await kube.custom.patchClusterCustomObjectStatus({ ...crd('subnet'), name: DEFAULT_EXTERNAL_SUBNET, body: { status: { v4usingIPs: 99 } } }, mergePatch);
    const report = await audit();
    expect(kinds(report)).toEqual(['subnet-counters']);
    expect(report.findings[0]!.found).toContain('v4usingIPs 99');
    expect((await get('subnet', DEFAULT_EXTERNAL_SUBNET)).status?.v4usingIPs).toBe(99); // nothing changed without --fix
    expect((await audit(true)).findings).toEqual([]);
    expect((await get('subnet', DEFAULT_EXTERNAL_SUBNET)).status?.v4usingIPs).toBe(0);
  });

  it('finds an object without a workflow, a stuck finalizer and an orphaned workflow, and --fix re-drives, cleans up and cancels', async () => {
    await create('fip', 'k-missing', fipSpec);
    // Held by natflow's finalizer and deleted while no workflow runs for it.
    await kube.custom.createClusterCustomObject({ ...crd('fip'), body: { apiVersion: KUBEOVN_API_VERSION, kind: KUBEOVN_KINDS.fip.kind, metadata: { name: 'k-stuck', finalizers: [FINALIZER] }, spec: fipSpec } });
    await del('fip', 'k-stuck');
    // A workflow whose object went while nobody watched: its finalizer removed by hand, the object deleted.
    await create('fip', 'k-orphan', fipSpec);
    const orphan = await drive('k-orphan');
    await kube.custom.patchClusterCustomObject({ ...crd('fip'), name: 'k-orphan', body: { metadata: { finalizers: null } } }, mergePatch);
    await del('fip', 'k-orphan');
    await gone('fip', 'k-orphan');

    const report = await audit();
    expect(kinds(report)).toEqual(['missing-workflow', 'orphaned-workflow', 'stuck-finalizer']);
    expect(report.findings.find((f) => f.kind === 'orphaned-workflow')!.found).toContain(orphan);
    expect((await get('fip', 'k-stuck')).metadata?.deletionTimestamp).toBeTruthy(); // nothing changed without --fix

    const fixed = await audit(true);
    expect(fixed.findings).toEqual([]);
    await gone('fip', 'k-stuck');
    expect((await stack.env.client.workflow.getHandle(orphan).describe()).status.name).not.toBe('RUNNING');
    expect((await get('fip', 'k-missing')).metadata?.finalizers).toContain(FINALIZER); // its workflow runs and adopted it
  });
});
