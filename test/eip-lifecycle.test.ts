// End to end for EIPs: real dev server, control worker, gateway agent and lab namespaces.
// Every test ends by checking the two leak invariants: no allocation and no address left.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultPayloadConverter } from '@temporalio/common';
import { runCommand } from '../activities/exec.js';
import type { EipPhase, EipSpec } from '../domain/eip.js';
import { Reason } from '../domain/errors.js';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import { createEip, deleteEip, subnetState } from '../starter/resources.js';
import { ping } from './support/traffic.js';
import { eventually, resourcePhase } from './support/workflows.js';
import { startStack, type Stack } from './support/stack.js';

const GW = 't-eip';
const LATE_GW = 't-late';

describe('EIP lifecycle (end to end)', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack(DEFAULT_EXTERNAL_SUBNET);
    await stack.addGateway(GW);
  });
  afterAll(async () => {
    await stack?.teardown();
  });

  /** When a workflow wrote phase Ready (its server time), or undefined when it never did. */
  async function readyWrittenAt(workflowId: string): Promise<number | undefined> {
    const { events } = await stack.env.client.workflow.getHandle(workflowId).fetchHistory();
    const ready = (events ?? []).find((e) => {
      const phase = e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields?.NatflowPhase;
      return phase != null && defaultPayloadConverter.fromPayload(phase) === 'Ready';
    });
    return ready?.eventTime ? Number(ready.eventTime.seconds) * 1000 + Math.floor((ready.eventTime.nanos ?? 0) / 1e6) : undefined;
  }
  const phaseOf = (name: string, phase: EipPhase) => resourcePhase(stack.resources, 'eip', name, phase);
  const allocations = async () => (await subnetState(stack.resources, stack.subnet.name)).allocations;
  async function expectNothingLeft() {
    expect(await allocations()).toEqual({});
    // A gateway that was restoring when the EIP left takes the address off right after.
    for (const gateway of stack.gateways.keys()) await eventually(() => stack.eipAddresses(gateway), (a) => a.length === 0, 15_000, `no address on ${gateway}`);
  }

  it('becomes ready with its address on the gateway, answering the external network, with subnet usage right', async () => {
    await createEip(stack.resources, 'eip-a', { natGwDp: GW });
    const ready = await phaseOf('eip-a', 'Ready');
    expect(ready).toMatchObject({ ready: true, natGwDp: GW, ip: '172.18.0.2' });
    expect(await stack.eipAddresses(GW)).toEqual(['172.18.0.2/24']);
    expect(await ping(stack.gateways.get(GW)!.topology.clientNs, '172.18.0.2')).toBe(true);
    expect((await subnetState(stack.resources, stack.subnet.name)).usage).toEqual({
      v4usingIPs: 1,
      v4availableIPs: 251, // 254 hosts - the subnet gateway .1 - the NAT gateway's own .254 - this EIP
      v4usingIPrange: '172.18.0.2',
      v4availableIPrange: '172.18.0.3-172.18.0.253',
    });
    await deleteEip(stack.resources, 'eip-a');
    expect(await ping(stack.gateways.get(GW)!.topology.clientNs, '172.18.0.2')).toBe(false);
    await expectNothingLeft();
  });

  it('Kube-OVN bug: an EIP on a missing gateway allocates nothing, and its delete leaves nothing', async () => {
    await createEip(stack.resources, 'eip-orphan', { natGwDp: LATE_GW });
    const waiting = await phaseOf('eip-orphan', 'WaitingForGateway');
    expect(waiting.conditions.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: Reason.GatewayNotFound, message: `NAT gateway ${LATE_GW} does not exist` });
    expect(await allocations()).toEqual({});
    await deleteEip(stack.resources, 'eip-orphan');
    await expectNothingLeft();
  });

  it('an EIP still waiting becomes ready once its gateway is created', async () => {
    await createEip(stack.resources, 'eip-patient', { natGwDp: LATE_GW });
    await phaseOf('eip-patient', 'WaitingForGateway');
    await stack.addGateway(LATE_GW);
    const ready = await phaseOf('eip-patient', 'Ready');
    expect(await stack.eipAddresses(LATE_GW)).toEqual([`${ready.ip}/24`]);
    await deleteEip(stack.resources, 'eip-patient');
    await expectNothingLeft();
  });

  it('a delete at any moment of creation leaves zero allocations and zero addresses', async () => {
    // Deletes spread over the whole creation hit every step on the way. How long a creation takes
    // depends on the machine, so the spread is measured, not assumed: the first EIP is deleted at
    // once, the last once it is Ready, the others in between.
    const started = Date.now();
    await createEip(stack.resources, 'eip-probe', { natGwDp: GW });
    await phaseOf('eip-probe', 'Ready');
    const creation = Date.now() - started;
    await deleteEip(stack.resources, 'eip-probe');
    const names = Array.from({ length: 16 }, (_, i) => `eip-race-${i}`);
    const deletes = await Promise.all(
      names.map(async (name, i) => {
        const { workflowId } = await createEip(stack.resources, name, { natGwDp: GW });
        if (i === names.length - 1) await phaseOf(name, 'Ready');
        else await new Promise((r) => setTimeout(r, (i * 3 * creation) / (names.length - 1))); // 16 at once are slower than one
        const handle = stack.env.client.workflow.getHandle(workflowId);
        const requestedAt = Date.now();
        await handle.cancel();
        await handle.result().catch(() => undefined);
        return { workflowId, requestedAt };
      }),
    );
    // Where each delete arrived: before the EIP wrote Ready (part-way through its creation, or
    // before it began) or after. Its history cannot say by the order of events (a delete that
    // arrives while the steps of a creation run, as local activities in one workflow task, is
    // written after them), so the time the delete was sent is compared with the Ready write's.
    const arrivals = await Promise.all(deletes.map(async ({ workflowId, requestedAt }) => (requestedAt < ((await readyWrittenAt(workflowId)) ?? Infinity) ? 'before Ready' : 'after Ready')));
    expect(arrivals).toContain('after Ready');
    expect(arrivals).toContain('before Ready');
    console.log(`deletes arrived: ${arrivals.join(', ')}`);
    await expectNothingLeft();
  });

  it('bad input gets a clear condition and allocates nothing', async () => {
    await createEip(stack.resources, 'eip-holder', { natGwDp: GW, v4ip: '172.18.0.77' });
    await phaseOf('eip-holder', 'Ready');
    // The CLI refuses a malformed spec before creating anything (the workflow's own check is unit-tested).
    await expect(createEip(stack.resources, 'eip-malformed', { natGwDp: GW, v4ip: '172.18.0.777' })).rejects.toThrow(/spec.v4ip "172\.18\.0\.777" is not an IPv4 address/);
    const cases: { name: string; spec: EipSpec; phase: EipPhase; reason: Reason; message: RegExp }[] = [
      { name: 'eip-outside', spec: { natGwDp: GW, v4ip: '10.1.2.3' }, phase: 'Failed', reason: Reason.AddressOutOfRange, message: /10\.1\.2\.3 is outside subnet ovn-vpc-external-network/ },
      { name: 'eip-taken', spec: { natGwDp: GW, v4ip: '172.18.0.77' }, phase: 'Failed', reason: Reason.AddressTaken, message: /172\.18\.0\.77 is already allocated/ },
      { name: 'eip-nosubnet', spec: { natGwDp: GW, externalSubnet: 'no-such-subnet' }, phase: 'Failed', reason: Reason.SubnetNotFound, message: /no-such-subnet does not exist/ },
      { name: 'eip-nogateway', spec: { natGwDp: 'no-such-gw' }, phase: 'WaitingForGateway', reason: Reason.GatewayNotFound, message: /no-such-gw does not exist/ },
    ];
    for (const c of cases) {
      await createEip(stack.resources, c.name, c.spec);
      const s = await phaseOf(c.name, c.phase);
      const ready = s.conditions.find((cond) => cond.type === 'Ready')!;
      expect(ready.reason).toBe(c.reason);
      expect(ready.message).toMatch(c.message);
      expect(s.ip).toBe('');
    }
    expect(Object.values(await allocations())).toEqual(['172.18.0.77']);
    expect(await stack.eipAddresses(GW)).toEqual(['172.18.0.77/24']);
    for (const c of [...cases, { name: 'eip-holder' }]) await deleteEip(stack.resources, c.name);
    await expectNothingLeft();
  });

  it('a restarted agent (a new pod, empty interface) gets every ready EIP back', async () => {
    await createEip(stack.resources, 'eip-durable', { natGwDp: GW });
    const { ip } = await phaseOf('eip-durable', 'Ready');
    const { topology } = stack.gateways.get(GW)!;
    await stack.restartAgent(GW, async () => {
      await runCommand('ip', ['addr', 'del', `${ip}/24`, 'dev', topology.externalInterface], { netns: topology.gatewayNs });
      expect(await stack.eipAddresses(GW)).toEqual([]);
    });
    await eventually(() => stack.eipAddresses(GW), (a) => a.length === 1, 30_000, 'address restored');
    expect(await stack.eipAddresses(GW)).toEqual([`${ip}/24`]);
    expect(await ping(topology.clientNs, ip)).toBe(true);
    await deleteEip(stack.resources, 'eip-durable');
    await expectNothingLeft();
  });
});
