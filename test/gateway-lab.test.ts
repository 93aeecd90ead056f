// The gateway's life on a real lab gateway with real traffic. First the agent's side alone: a full
// restore takes off what it was not given and flushes those rules' connections, read from the
// rules themselves. Then end to end (dev server, control worker, agent, EIP and FIP workflows): a
// rule or address deleted while the agent is down waits for it (the object stays), and is gone with
// its connections once an agent is back, and a
// gateway workflow restarted without its state wipes nothing, gets its users back, and only after
// its rebuild window removes what nobody claimed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAddressActivities } from '../activities/gateway-addresses.js';
import { createNatActivities } from '../activities/gateway-nat.js';
import { Reason } from '../domain/errors.js';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import type { LabTopology } from '../domain/lab.js';
import { workflowIds } from '../domain/names.js';
import type { NatRule } from '../domain/nat-rules.js';
import { gatewayStateQuery } from '../domain/workflow-api.js';
import { createResource, deleteResource, resourceStatus } from '../starter/resources.js';
import { labDown, labUp } from '../temporal-dev/lab.js';
import { gatewayWorkflow } from '../workflows/gateway.js';
import { startStack, type Stack } from './support/stack.js';
import { conntrack, Listener, send, Session } from './support/traffic.js';
import { eventually } from './support/workflows.js';

const GW = 't-gwlife';

/** Writes `text` on an open session; true when the listener gets it. */
async function passes(session: Session, listener: Listener, text: string, timeoutMs = 3000): Promise<boolean> {
  session.write(text);
  return listener.waitFor(text, timeoutMs);
}

describe('full restore on a real gateway (agent activities)', () => {
  let t: LabTopology;
  const EIP = ['172.18.0.110', '172.18.0.111', '172.18.0.112'] as const;
  beforeAll(async () => {
    await labDown(GW);
    t = await labUp(GW);
    await createAddressActivities({ netns: t.gatewayNs, externalInterface: t.externalInterface, warn: () => {} }).reconcileEipAddresses(EIP.map((address) => ({ address, prefixLength: 24 })));
  });
  afterAll(async () => {
    await labDown(GW);
  });

  it("takes off every rule it was not given and flushes their connections (FIP, DNAT, SNAT), leaving the kept rule's", async () => {
    const nat = createNatActivities({ netns: t.gatewayNs, externalInterface: t.externalInterface, vpcInterface: t.vpcInterface });
    const vm1 = { ns: t.vmNamespaces[0]!, ip: t.vmIps[0]! };
    const vm2 = { ns: t.vmNamespaces[1]!, ip: t.vmIps[1]! };
    // vm1 has no FIP, so that it leaves through the SNAT rule; the DNAT rule shares the SNAT's EIP.
    const gone: NatRule[] = [
      { kind: 'fip', owner: 'fip-gone', eip: EIP[0], internalIp: vm2.ip },
      { kind: 'dnat', owner: 'dnat-gone', eip: EIP[2], protocol: 'tcp', externalPort: 8093, internalIp: vm1.ip, internalPort: 9093 },
      { kind: 'snat', owner: 'snat-gone', eip: EIP[2], internalCidr: `${vm1.ip}/32` },
    ];
    const kept: NatRule = { kind: 'dnat', owner: 'dnat-kept', eip: EIP[1], protocol: 'tcp', externalPort: 8092, internalIp: vm2.ip, internalPort: 9092 };
    await nat.applyNatRules({ add: [...gone, kept], removeOwners: [] });

    const listeners = await Promise.all([Listener.open(vm2.ns, 9091), Listener.open(vm2.ns, 9092), Listener.open(vm1.ns, 9093), Listener.open(t.clientNs, 9094)]);
    const sessions: Session[] = [];
    try {
      sessions.push(await Session.open(t.clientNs, EIP[0], 9091)); // in through the FIP
      sessions.push(await Session.open(t.clientNs, EIP[1], 8092)); // in through the kept DNAT
      sessions.push(await Session.open(t.clientNs, EIP[2], 8093)); // in through the other DNAT
      sessions.push(await Session.open(vm1.ns, t.externalGatewayIp, 9094)); // out through the SNAT
      for (const [i, s] of sessions.entries()) expect(await passes(s, listeners[i]!, `before-${i}`)).toBe(true);
      const entries = {
        fip: () => conntrack(t.gatewayNs, '-d', EIP[0]),
        dnat: () => conntrack(t.gatewayNs, '-d', EIP[2], '-p', 'tcp', '--dport', '8093'),
        snat: () => conntrack(t.gatewayNs, '-q', EIP[2], '-s', vm1.ip),
        kept: () => conntrack(t.gatewayNs, '-d', EIP[1]),
      };
      for (const list of Object.values(entries)) expect(await list()).not.toEqual([]);

      // The caller names only what stays: what goes, and which connections, is read from the table.
      expect(await nat.applyNatRules({ add: [kept], removeOwners: [], replaceAll: true, flushConntrack: true })).toMatchObject({ added: 0, removed: 4 });
      expect((await nat.listNatRules()).map((r) => r.owner)).toEqual(['dnat-kept']);
      expect([await entries.fip(), await entries.dnat(), await entries.snat()]).toEqual([[], [], []]);
      expect(await passes(sessions[0]!, listeners[0]!, 'after-0', 800)).toBe(false);
      expect(await passes(sessions[2]!, listeners[2]!, 'after-2', 800)).toBe(false);
      expect(await passes(sessions[3]!, listeners[3]!, 'after-3', 800)).toBe(false);
      // The kept rule's connection was not touched.
      expect(await entries.kept()).not.toEqual([]);
      expect(await passes(sessions[1]!, listeners[1]!, 'after-1')).toBe(true);
    } finally {
      for (const s of sessions) s.close();
      for (const l of listeners) l.close();
    }
  });
});

describe('gateway life end to end', () => {
  let stack: Stack;
  let lab: LabTopology;
  beforeAll(async () => {
    await labDown(GW);
    stack = await startStack(DEFAULT_EXTERNAL_SUBNET);
    lab = await stack.addGateway(GW);
  });
  afterAll(async () => {
    await stack?.teardown();
  });

  const r = () => stack.resources;
  const vm1 = () => ({ ns: lab.vmNamespaces[0]!, ip: lab.vmIps[0]! });
  const ready = <K extends 'eip' | 'fip'>(kind: K, name: string) => eventually(() => resourceStatus(r(), kind, name), (s) => s.ready, 40_000, `${kind} ${name} ready`);
  async function fipOn(name: string): Promise<{ eip: string; owner: string }> {
    await createResource(r(), 'eip', `eip-${name}`, { natGwDp: GW });
    const { ip } = await ready('eip', `eip-${name}`);
    const { uid } = await createResource(r(), 'fip', name, { eip: `eip-${name}`, internalIp: vm1().ip });
    await ready('fip', name);
    return { eip: ip, owner: uid };
  }
  async function remove(name: string): Promise<void> {
    await deleteResource(r(), 'fip', name);
    await deleteResource(r(), 'eip', `eip-${name}`);
  }

  it('a FIP and an EIP deleted while the agent is down wait for it, their rule and address still there (and forwarding); once an agent is back both are gone and the open connection stops', async () => {
    const { eip, owner } = await fipOn('fip-down');
    await createResource(r(), 'eip', 'eip-lone', { natGwDp: GW });
    const lone = (await ready('eip', 'eip-lone')).ip;
    const listener = await Listener.open(vm1().ns, 9191);
    const session = await Session.open(lab.clientNs, eip, 9191);
    const reason = (s: { phase: string; conditions: { type: string; reason: string }[] }) => `${s.phase}/${s.conditions.find((c) => c.type === 'Ready')?.reason}`;
    const deleted: string[] = [];
    try {
      expect(await passes(session, listener, 'before')).toBe(true);
      await stack.restartAgent(GW, async () => {
        deleted.push(await deleteResource(r(), 'fip', 'fip-down', false), await deleteResource(r(), 'eip', 'eip-lone', false));
        // Nothing can reach the gateway: the deletes wait for it, and say so.
        await eventually(() => resourceStatus(r(), 'fip', 'fip-down'), (s) => reason(s) === `Deleting/${Reason.GatewayNotReady}`, 30_000, 'the FIP waiting for its gateway');
        await eventually(() => resourceStatus(r(), 'eip', 'eip-lone'), (s) => reason(s) === `Deleting/${Reason.GatewayNotReady}`, 30_000, 'the EIP waiting for its gateway');
        // What they wait for is real: the rule still forwards, the address is still there.
        expect((await stack.natRules(GW)).map((x) => x.owner)).toContain(owner);
        expect(await stack.eipAddresses(GW)).toContain(`${lone}/24`);
        expect(await passes(session, listener, 'while down')).toBe(true);
        for (const id of deleted) expect((await r().client.workflow.getHandle(id).describe()).status.name).toBe('RUNNING');
      });
      // A delete is a cancellation: the run ends cancelled once its cleanup is done.
      for (const id of deleted) await expect(r().client.workflow.getHandle(id).result()).rejects.toThrow('Workflow execution cancelled');
      expect((await stack.natRules(GW)).map((x) => x.owner)).not.toContain(owner);
      expect(await stack.eipAddresses(GW)).not.toContain(`${lone}/24`);
      // The same apply flushes right after the restore (an established entry would otherwise stay for days).
      await eventually(() => conntrack(lab.gatewayNs, '-d', eip), (entries) => entries.length === 0, 10_000, 'its connection flushed');
      expect(await passes(session, listener, 'after', 800)).toBe(false);
    } finally {
      session.close();
      listener.close();
    }
    await deleteResource(r(), 'eip', 'eip-fip-down');
  });

  it('a gateway workflow started again without its state wipes nothing: traffic passes throughout, its users re-assert, and after the window only a leftover goes', async () => {
    const { eip, owner } = await fipOn('fip-kept');
    // A rule nobody claims any more, as an earlier incarnation could leave it.
    const leftover: NatRule = { kind: 'fip', owner: 'leftover-owner', eip: '172.18.0.250', internalIp: lab.vmIps[1]! };
    await createNatActivities({ netns: lab.gatewayNs }).applyNatRules({ add: [leftover], removeOwners: [] });
    const reaches = () => withListener(vm1().ns, 9292, (l) => send(lab.clientNs, eip, 9292, 'hello').then(() => l.waitFor('hello')));
    expect(await reaches()).toBe(true);

    const id = workflowIds.gateway(GW);
    await r().client.workflow.getHandle(id).terminate('lost its state');
    const spec = { name: GW, externalSubnet: stack.subnet.name, lanIp: lab.lanIp, internalCidr: lab.vpcCidr };
    const handle = await r().client.workflow.start(gatewayWorkflow, { taskQueue: r().taskQueue!, workflowId: id, args: [{ spec, rebuildWindowMs: 15_000 }] });

    // Rebuilding: nothing taken off, and its users come back into its state by themselves.
    const rebuilt = await eventually(() => handle.query(gatewayStateQuery), (s) => s.ready && owner in s.rules && Object.values(s.eips).some((e) => e.address === eip), 30_000, 'its users re-asserted');
    expect(Object.keys(rebuilt.rules)).toEqual([owner]);
    expect((await stack.natRules(GW)).map((x) => x.owner).sort()).toEqual([owner, owner, leftover.owner, leftover.owner].sort());
    expect(await reaches()).toBe(true);

    await eventually(() => stack.natRules(GW), (rules) => !rules.some((x) => x.owner === leftover.owner), 40_000, 'the leftover removed after the window');
    expect((await stack.natRules(GW)).map((x) => x.owner)).toEqual([owner, owner]);
    expect(await stack.eipAddresses(GW)).toContain(`${eip}/24`);
    expect(await reaches()).toBe(true);
    expect((await resourceStatus(r(), 'fip', 'fip-kept')).ready).toBe(true);

    await remove('fip-kept');
    expect(await stack.natRules(GW)).toEqual([]);
  });
});

async function withListener<T>(ns: string, port: number, fn: (l: Listener) => Promise<T>): Promise<T> {
  const listener = await Listener.open(ns, port);
  try {
    return await fn(listener);
  } finally {
    listener.close();
  }
}
