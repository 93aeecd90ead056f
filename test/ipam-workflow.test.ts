// The IPAM workflow on a real dev server: concurrent allocation from two workers' worth of
// clients, through continue-as-new, never gives one address twice.
import { describe, expect, it } from 'vitest';
import { Client } from '@temporalio/client';
import { createWorkflowCallActivities } from '../activities/workflow-calls.js';
import { workflowIds } from '../domain/names.js';
import { ipamStateQuery, ipamUsageQuery, subnetSpecSignal } from '../domain/workflow-api.js';
import { ipamWorkflow } from '../workflows/ipam.js';
import { useTestEnv } from './support/temporal-env.js';
import { eventually, withWorkflow } from './support/workflows.js';

describe('IPAM workflow', () => {
  const env = useTestEnv();

  it('gives 200 concurrent allocations from two workers 200 distinct addresses, across continue-as-new', async () => {
    const subnet = { name: 'ext-200', cidrBlock: '172.18.0.0/24', gateway: '172.18.0.1', excludeIps: [] };
    // Small batches and a budget of a few updates a run force several continue-as-new runs in the middle of the flood.
    await withWorkflow(env(), {}, ipamWorkflow, { workflowId: workflowIds.ipam(subnet.name), args: [{ subnet, limits: { updates: 3 } }] }, async (handle) => {
      // Two control workers: each has its own client (and so its own connection) running the allocate activity.
      const workers = [0, 1].map(() => createWorkflowCallActivities(new Client({ connection: env().connection }), { inFlight: 2, maxBatch: 10 }));
      const owners = Array.from({ length: 200 }, (_, i) => `natflow/eip/e${i}/uid-${i}`);
      const allocations = await Promise.all(owners.map((owner, i) => workers[i % 2]!.allocateAddress({ subnet: subnet.name, owner })));

      expect(new Set(allocations.map((a) => a.address)).size).toBe(200);
      const state = await handle.query(ipamStateQuery);
      expect(state.usage.v4usingIPs).toBe(200);
      expect(state.usage.v4availableIPs).toBe(253 - 200);
      expect(state.usage.v4usingIPrange).toBe('172.18.0.2-172.18.0.201');
      const { runId } = await handle.describe();
      expect(runId).not.toBe(handle.firstExecutionRunId);

      // A retried allocation returns the same address; then everything goes back.
      expect((await workers[1]!.allocateAddress({ subnet: subnet.name, owner: owners[0]! })).address).toBe(allocations[0]!.address);
      await Promise.all(owners.map((owner, i) => workers[i % 2]!.releaseAddress({ subnet: subnet.name, owner })));
      const after = await handle.query(ipamStateQuery);
      expect(after.usage).toMatchObject({ v4usingIPs: 0, v4availableIPs: 253, v4usingIPrange: '' });
      expect(after.allocations).toEqual({});
      await handle.terminate();
    });
  });

  it('refuses bad requests with a reason and records nothing', async () => {
    const subnet = { name: 'ext-bad', cidrBlock: '172.19.0.0/24', gateway: '172.19.0.1', excludeIps: [] };
    await withWorkflow(env(), {}, ipamWorkflow, { workflowId: workflowIds.ipam(subnet.name), args: [{ subnet }] }, async (handle) => {
      const control = createWorkflowCallActivities(env().client);
      await control.allocateAddress({ subnet: subnet.name, owner: 'a', requested: '172.19.0.7' });
      const refusal = (requested: string, owner = 'b') => control.allocateAddress({ subnet: subnet.name, owner, requested }).then(() => 'allocated', (err) => `${err.type}: ${err.message}`);
      expect(await refusal('172.19.0.7')).toBe('AddressTaken: 172.19.0.7 is already allocated in subnet ext-bad');
      expect(await refusal('172.20.0.7')).toBe('AddressOutOfRange: 172.20.0.7 is outside subnet ext-bad (172.19.0.0/24)');
      expect(await refusal('not-an-ip')).toMatch(/^InvalidSpec: requested address "not-an-ip" is not an IPv4 address/);
      expect(await control.allocateAddress({ subnet: 'no-such-subnet', owner: 'b' }).catch((err) => err.type)).toBe('SubnetNotFound');
      expect((await handle.query(ipamStateQuery)).allocations).toEqual({ a: '172.19.0.7' });
      await handle.terminate();
    });
  });

  it('takes a Subnet spec change that fits; keeps one that would strand an allocation waiting, visibly and across continue-as-new, until it fits', async () => {
    const subnet = { name: 'ext-respec', cidrBlock: '172.20.0.0/24', gateway: '172.20.0.1', excludeIps: [] };
    await withWorkflow(env(), {}, ipamWorkflow, { workflowId: workflowIds.ipam(subnet.name), args: [{ subnet, generation: 1, limits: { updates: 2 } }] }, async (handle) => {
      const control = createWorkflowCallActivities(env().client);
      const usage = () => handle.query(ipamUsageQuery);
      await control.allocateAddress({ subnet: subnet.name, owner: 'a', requested: '172.20.0.200' });

      const fits = { ...subnet, excludeIps: ['172.20.0.250..172.20.0.254'] };
      await handle.signal(subnetSpecSignal, { spec: fits, generation: 2 });
      await eventually(usage, (s) => s.observedGeneration === 2, 10_000, 'generation 2 taken');
      expect((await usage()).subnet).toEqual(fits);

      const strands = { ...subnet, cidrBlock: '172.20.0.0/25', gateway: '172.20.0.1' };
      await handle.signal(subnetSpecSignal, { spec: strands, generation: 3 });
      const waiting = await eventually(usage, (s) => s.pendingSpec?.generation === 3, 10_000, 'generation 3 waiting');
      expect(waiting).toMatchObject({ subnet: fits, observedGeneration: 2 });
      expect(waiting.pendingSpec!.reason).toMatch(/172\.20\.0\.200 \(a\)/);
      // New allocations stay inside what the waiting spec would keep. The second update: the run
      // continues as new, with the waiting spec.
      expect((await control.allocateAddress({ subnet: subnet.name, owner: 'b' })).address).toBe('172.20.0.2');
      await eventually(() => handle.describe(), (d) => d.runId !== handle.firstExecutionRunId, 10_000, 'continued as new');
      expect((await usage()).pendingSpec?.generation).toBe(3);
      expect(await control.allocateAddress({ subnet: subnet.name, owner: 'c', requested: '172.20.0.130' }).catch((err) => err.type)).toBe('AddressReserved');

      await control.releaseAddress({ subnet: subnet.name, owner: 'a' });
      const taken = await eventually(usage, (s) => s.observedGeneration === 3, 10_000, 'generation 3 taken');
      expect(taken.subnet).toEqual(strands);
      expect(taken.pendingSpec).toBeUndefined();
      expect((await handle.query(ipamStateQuery)).allocations).toEqual({ b: '172.20.0.2' });
      await handle.terminate();
    });
  });
});
