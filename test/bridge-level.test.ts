// The bridge is level-triggered: it sends a workflow only what differs between its object and
// what the workflow has taken in. On the real stack (kube-apiserver, dev server, control worker,
// lab gateway gw1 with its agent) with the examples applied before the bridge starts, and a
// resync several times a second.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client } from '@temporalio/client';
import { crd, FINALIZER, type KubeKind } from '../domain/kube.js';
import { workflowIds } from '../domain/names.js';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import { gatewayStateQuery, ipamStateQuery, ipamUsageQuery } from '../domain/workflow-api.js';
import { mergePatch } from '../activities/kube.js';
import { KubeBridge } from '../starter/bridge.js';
import { createEip, deleteEip } from '../starter/resources.js';
import { ensureKubeBinaries, examplesDir, kubeovnObjects, startKube, type KubeEnv } from './support/kube.js';
import { startStack, type Stack } from './support/stack.js';
import { eventually, historyOf } from './support/workflows.js';

const RESYNC_MS = 300;
const EXAMPLES: [KubeKind, string][] = [['eip', 'eip-fip'], ['eip', 'eip-shared'], ['fip', 'fip-vm1'], ['dnat', 'dnat-vm2-http'], ['snat', 'snat-vpc1-subnet1']];

describe('kube bridge, level-triggered (real kube-apiserver)', () => {
  let kube: KubeEnv;
  let stack: Stack;
  let bridge: KubeBridge;
  const newBridge = () => new KubeBridge({ kubeConfig: kube.kc, client: stack.env.client, taskQueue: stack.resources.taskQueue, resyncMs: RESYNC_MS, log: () => undefined });
  const client = (): Client => stack.env.client;
  /** What the bridge was doing (events, a resync) has ended: a count of signals taken now is not raced by it. */
  const bridgeIdle = async () => {
    const work = (bridge as unknown as { inFlight: Set<Promise<unknown>> }).inFlight;
    while (work.size > 0) await Promise.allSettled([...work]);
  };
  const { get, create, patchSpec, del, ready, gone } = kubeovnObjects(() => kube.custom);
  const workflowOf = async (kind: KubeKind, name: string) => {
    const { uid } = (await get(kind, name)).metadata!;
    return client().workflow.getHandle(workflowIds.resource(kind as 'eip', { name, uid: uid! }));
  };
  const historyLength = async (workflowId: string) => (await client().workflow.getHandle(workflowId).describe()).historyLength;
  const resyncs = (n: number) => new Promise((r) => setTimeout(r, n * RESYNC_MS));

  beforeAll(async () => {
    await ensureKubeBinaries();
    kube = await startKube();
    stack = await startStack(DEFAULT_EXTERNAL_SUBNET, { kubeConfig: kube.kc, registerSubnet: false });
    await stack.addGateway('gw1', { register: false });
    // Everything exists before the bridge: it must not depend on the order it learns of them.
    await kube.applyDir(examplesDir());
    bridge = newBridge();
    await bridge.start();
    for (const [kind, name] of EXAMPLES) await ready(kind, name);
  }, 900_000);
  afterAll(async () => {
    await bridge?.stop();
    await stack?.teardown();
    await kube?.stop();
  });

  it("started after the objects exist, it gives the gateway its VPC subnet's CIDR and lanIp", async () => {
    const state = await client().workflow.getHandle(workflowIds.gateway('gw1')).query(gatewayStateQuery);
    expect(state.spec).toMatchObject({ name: 'gw1', externalSubnet: DEFAULT_EXTERNAL_SUBNET, internalCidr: '10.0.1.0/24', lanIp: '10.0.1.254' });
  });

  it('writes no history for objects that do not change, however often it resyncs', async () => {
    // The gateway's rebuild window (60 s from its start) has ended: its full restore is not the bridge's.
    await eventually(() => client().workflow.getHandle(workflowIds.gateway('gw1')).query(gatewayStateQuery), (s) => !s.rebuilding, 90_000, 'the end of the rebuild window');
    await resyncs(10); // the last statuses land
    const ids = [...(await Promise.all(EXAMPLES.map(([kind, name]) => workflowOf(kind, name)))).map((h) => h.workflowId), workflowIds.ipam(DEFAULT_EXTERNAL_SUBNET), workflowIds.gateway('gw1')];
    const before = await Promise.all(ids.map(historyLength));
    await resyncs(20);
    const after = await Promise.all(ids.map(historyLength));
    expect(Object.fromEntries(ids.map((id, i) => [id, after[i]! - before[i]!]))).toEqual(Object.fromEntries(ids.map((id) => [id, 0])));
  });

  it('sends a spec change once', async () => {
    const handle = await workflowOf('fip', 'fip-vm1');
    const signals = async () => (await historyOf(handle)).filter((e) => e.name === 'specChanged').length;
    const before = await signals();
    await patchSpec('fip', 'fip-vm1', { internalIp: '10.0.1.11' });
    await eventually(() => get('fip', 'fip-vm1'), (o) => o.status?.ready === true && o.status?.observedGeneration === 2, 60_000, 'generation 2 ready');
    await resyncs(10);
    expect(await signals()).toBe(before + 1);
  });

  it('brings a Subnet or VpcNatGateway spec change to its workflow', async () => {
    const ipam = client().workflow.getHandle(workflowIds.ipam(DEFAULT_EXTERNAL_SUBNET));
    const excludeIps = ['172.18.0.254', '172.18.0.200..172.18.0.209'];
    await patchSpec('subnet', DEFAULT_EXTERNAL_SUBNET, { excludeIps });
    await eventually(() => ipam.query(ipamUsageQuery), (s) => s.subnet.excludeIps.length === 2 && s.observedGeneration === 2, 30_000, 'IPAM has the new excludeIps');
    const usage = (await ipam.query(ipamStateQuery)).usage;
    await eventually(() => get('subnet', DEFAULT_EXTERNAL_SUBNET), (s) => s.status?.v4availableIPs === usage.v4availableIPs, 30_000, 'Subnet status shows the new usage');
    expect(usage.v4availableIPs).toBe(250 - 10);

    const gateway = client().workflow.getHandle(workflowIds.gateway('gw1'));
    await patchSpec('vpc-nat-gw', 'gw1', { lanIp: '10.0.1.253' });
    await eventually(() => gateway.query(gatewayStateQuery), (s) => s.spec.lanIp === '10.0.1.253', 30_000, 'gateway has the new lanIp');
    const listedBefore = await get('vpc-nat-gw', 'gw1');
    await patchSpec('vpc-nat-gw', 'gw1', { lanIp: '10.0.1.254' });
    await eventually(() => gateway.query(gatewayStateQuery), (s) => s.spec.lanIp === '10.0.1.254', 30_000, 'gateway has its lanIp back');

    // A resync whose list was taken before that change (it raced the event) sends nothing.
    const specSignals = async () => (await historyOf(gateway)).filter((e) => e.name === 'gatewaySpecChanged').length;
    await bridgeIdle();
    const before = await specSignals();
    await (bridge as unknown as { driveGateway(obj: unknown): Promise<void> }).driveGateway(listedBefore);
    expect(await specSignals()).toBe(before);

    // The VPC subnet behind the gateway changes, the VpcNatGateway does not: its new CIDR is sent, once.
    await patchSpec('subnet', 'vpc1-subnet1', { cidrBlock: '10.0.0.0/23' });
    await eventually(specSignals, (n) => n === before + 1, 30_000, 'the new VPC CIDR sent to the gateway');
    await resyncs(10);
    expect(await specSignals()).toBe(before + 1);
    await patchSpec('subnet', 'vpc1-subnet1', { cidrBlock: '10.0.1.0/24' });
  });

  it('a watch restarted because it fell behind keeps serving its old cache until the new one is full: a gateway spec never loses its VPC CIDR', async () => {
    const b = bridge as unknown as {
      informers: Map<string, { stop(): Promise<void> }>;
      suspect: Set<string>;
      freshList(kind: string): Promise<unknown>;
      gatewaySpec(obj: unknown): { internalCidr?: string };
    };
    const gw = await get('vpc-nat-gw', 'gw1');
    expect(b.gatewaySpec(gw).internalCidr).toBe('10.0.1.0/24');
    // The Subnet watch falls behind (stopped, then a change), as it was already at the last resync.
    await b.informers.get('subnet')!.stop();
    await patchSpec('subnet', 'vpc1-subnet1', { excludeIps: [] });
    b.suspect.add('subnet');
    // What anything driving gw1 meanwhile (its status events do) reads, sampled through the restart.
    const seen = new Set<string | undefined>();
    let restarting = true;
    const sampling = (async () => {
      while (restarting) {
        seen.add(b.gatewaySpec(gw).internalCidr);
        await new Promise((r) => setImmediate(r));
      }
    })();
    await b.freshList('subnet');
    restarting = false;
    await sampling;
    expect([...seen]).toEqual(['10.0.1.0/24']);
    expect(b.informers.get('subnet')).toBeDefined();
  });

  it('a Subnet cache behind a CIDR the gateway already took never sends the older CIDR back', async () => {
    const b = bridge as unknown as {
      informers: Map<string, { stop(): Promise<void>; get(name: string): { spec: { cidrBlock: string } } | undefined }>;
      suspect: Set<string>;
      freshList(kind: string): Promise<unknown>;
      driveGateway(obj: unknown): Promise<void>;
    };
    const gateway = client().workflow.getHandle(workflowIds.gateway('gw1'));
    await patchSpec('subnet', 'vpc1-subnet1', { cidrBlock: '10.0.0.0/23' });
    await eventually(() => gateway.query(gatewayStateQuery), (s) => s.spec.internalCidr === '10.0.0.0/23', 30_000, 'gateway has the new VPC CIDR');
    // The Subnet watch stops and its cache is behind the API (as one that fell behind, or is
    // being replaced, can be): it still holds the CIDR before the change.
    const subnets = b.informers.get('subnet')!;
    await subnets.stop();
    subnets.get('vpc1-subnet1')!.spec.cidrBlock = '10.0.1.0/24';
    const specSignals = async () => (await historyOf(gateway)).filter((e) => e.name === 'gatewaySpecChanged').length;
    await bridgeIdle();
    const before = await specSignals();
    await b.driveGateway(await get('vpc-nat-gw', 'gw1')); // as a status event of gw1 does
    expect((await gateway.query(gatewayStateQuery)).spec.internalCidr).toBe('10.0.0.0/23');
    expect(await specSignals()).toBe(before);
    // Put things back: a watch that follows the API again, and the example's CIDR.
    b.suspect.add('subnet');
    await b.freshList('subnet');
    await patchSpec('subnet', 'vpc1-subnet1', { cidrBlock: '10.0.1.0/24' });
    await eventually(() => gateway.query(gatewayStateQuery), (s) => s.spec.internalCidr === '10.0.1.0/24', 30_000, 'gateway has the example CIDR back');
  });

  it('cancels a workflow whose object was deleted while it was down (finalizer removed by hand), and its cleanup runs; never one the CLI started', async () => {
    await create('eip', 'eip-orphan', { natGwDp: 'gw1' });
    const ip = (await ready('eip', 'eip-orphan')).status!.ip as string;
    const orphan = await workflowOf('eip', 'eip-orphan');
    const cli = await createEip(stack.resources, 'eip-cli', { natGwDp: 'gw1' });
    await bridge.stop();

    await del('eip', 'eip-orphan');
    await kube.custom.patchClusterCustomObject({ ...crd('eip'), name: 'eip-orphan', body: { metadata: { finalizers: null } } }, mergePatch);
    await gone('eip', 'eip-orphan');
    expect((await orphan.describe()).status.name).toBe('RUNNING'); // nobody told it
    expect(await stack.eipAddresses('gw1')).toContain(`${ip}/24`);

    bridge = newBridge();
    await bridge.start();
    await eventually(() => orphan.describe(), (d) => d.status.name === 'CANCELLED', 60_000, 'orphan cancelled');
    expect(await stack.eipAddresses('gw1')).not.toContain(`${ip}/24`);
    expect(Object.keys((await client().workflow.getHandle(workflowIds.ipam(DEFAULT_EXTERNAL_SUBNET)).query(ipamStateQuery)).allocations)).not.toContain(orphan.workflowId);
    await resyncs(5);
    expect((await client().workflow.getHandle(cli.workflowId).describe()).status.name).toBe('RUNNING');
    await deleteEip(stack.resources, 'eip-cli');
  });

  it('a gateway registered by the CLI before its VpcNatGateway exists (as npm start does) adopts the object: finalizer, status, and its delete', async () => {
    await stack.addGateway('gw2');
    const gateway = client().workflow.getHandle(workflowIds.gateway('gw2'));
    expect((await eventually(() => gateway.query(gatewayStateQuery), (s) => s.ready, 30_000, 'gw2 ready')).kubeUid).toBeUndefined();
    await create('vpc-nat-gw', 'gw2', { vpc: 'vpc1', subnet: 'vpc1-subnet1', lanIp: '10.0.1.254', externalSubnets: [DEFAULT_EXTERNAL_SUBNET] });
    const adopted = await ready('vpc-nat-gw', 'gw2');
    expect(adopted.metadata!.finalizers).toContain(FINALIZER);
    expect((await gateway.query(gatewayStateQuery)).kubeUid).toBe(adopted.metadata!.uid);
    // Its object owns it now: deleting the object (nothing names gw2) deletes the gateway, then lets the object go.
    await del('vpc-nat-gw', 'gw2');
    await gone('vpc-nat-gw', 'gw2');
    // Letting the object go is the run's last step: it ends just after.
    await eventually(async () => (await gateway.describe()).status.name, (s) => s === 'CANCELLED', 30_000, 'the gateway workflow cancelled');
    // A late event of the object as it was while deleting (finalizer still on) starts no run that only finds it gone.
    const lateEvent = { ...adopted, metadata: { ...adopted.metadata, deletionTimestamp: new Date() } };
    await (bridge as unknown as { driveGateway(obj: unknown): Promise<void> }).driveGateway(lateEvent);
    expect((await gateway.describe()).status.name).toBe('CANCELLED');
  });

  it("asks a deleting object's workflow for its cleanup once, however often an event or a resync that lags behind shows it not yet cleaning up", async () => {
    await create('eip', 'eip-held', { natGwDp: 'gw1' });
    await create('fip', 'fip-holding', { eip: 'eip-held', internalIp: '10.0.1.12' });
    await ready('fip', 'fip-holding');
    const asReady = await ready('eip', 'eip-held');
    const held = await workflowOf('eip', 'eip-held');
    await del('eip', 'eip-held'); // it waits for its FIP: the run goes on, cleaning up
    await eventually(() => get('eip', 'eip-held'), (o) => o.status?.phase === 'Deleting', 30_000, 'the EIP waits for its user');
    // A second bridge on a client that counts cancel requests, driven as stale events and resyncs
    // would drive it: the object deleting, its status and visibility still showing it Ready.
    let cancels = 0;
    const counting = new Client({ connection: client().connection, namespace: client().options.namespace, interceptors: { workflow: [{ cancel: (input, next) => (cancels++, next(input)) }] } });
    const lagging = new KubeBridge({ kubeConfig: kube.kc, client: counting, taskQueue: stack.resources.taskQueue, log: () => undefined }) as unknown as { driveResource(kind: string, obj: unknown, running?: unknown): Promise<void> };
    const stale = { ...asReady, metadata: { ...asReady.metadata, deletionTimestamp: new Date().toISOString() } };
    for (let i = 0; i < 5; i++) await lagging.driveResource('eip', stale, { kind: 'eip', name: 'eip-held', workflowId: held.workflowId, phase: 'Ready', fromKube: true });
    expect(cancels).toBe(1);
    await del('fip', 'fip-holding');
    for (const [kind, name] of [['fip', 'fip-holding'], ['eip', 'eip-held']] as const) await gone(kind, name);
  });

  it('deleting the examples leaves nothing behind', async () => {
    for (const [kind, name] of [...EXAMPLES].reverse()) await del(kind, name);
    for (const [kind, name] of EXAMPLES) await gone(kind, name);
    expect(await stack.natRules('gw1')).toEqual([]);
    expect(await stack.eipAddresses('gw1')).toEqual([]);
  });
});
