// End to end for FIP, DNAT and SNAT: real dev server, control worker, gateway agent, lab
// namespaces and real traffic. The leak invariants are checked on the gateway itself: its nat
// table (iptables-save) and its conntrack table.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCommand } from '../activities/exec.js';
import { Reason } from '../domain/errors.js';
import type { LabTopology } from '../domain/lab.js';
import type { NatKind, NatPhase, NatSpecs } from '../domain/nat-resources.js';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import { createResource, deleteResource, resourceStatus, updateNatSpec } from '../starter/resources.js';
import { conntrackEntries, Listener, ping, send, Session, UdpFlows } from './support/traffic.js';
import { eventually, resourcePhase } from './support/workflows.js';
import { startStack, type Stack } from './support/stack.js';

const GW = 't-nat-e2e';

describe('NAT rules (end to end, real traffic)', () => {
  let stack: Stack;
  let lab: LabTopology;
  const eipIps = new Map<string, string>();
  beforeAll(async () => {
    stack = await startStack(DEFAULT_EXTERNAL_SUBNET);
    lab = await stack.addGateway(GW);
  });
  afterAll(async () => {
    await stack?.teardown();
  });

  const r = () => stack.resources;
  async function eip(name: string): Promise<string> {
    await createResource(r(), 'eip', name, { natGwDp: GW });
    const { ip } = await resourcePhase(r(), 'eip', name, 'Ready');
    eipIps.set(name, ip);
    return ip;
  }
  async function rule<K extends NatKind>(kind: K, name: string, spec: NatSpecs[K], phase: NatPhase = 'Ready') {
    await createResource(r(), kind, name, spec as never);
    return resourcePhase(r(), kind, name, phase);
  }
  const [vm1, vm2] = [0, 1].map((i) => () => ({ ns: lab.vmNamespaces[i]!, ip: lab.vmIps[i]! }));
  const client = () => ({ ns: lab.clientNs, ip: lab.externalGatewayIp });

  it('FIP: the outside reaches the VM through the EIP, the VM leaves as the EIP, and after the delete nothing passes or remains', async () => {
    const ip = await eip('eip-fip');
    const fip = await rule('fip', 'fip1', { eip: 'eip-fip', internalIp: vm1().ip });
    expect(fip).toMatchObject({ ready: true, v4ip: ip, natGwDp: GW, internalIp: vm1().ip });
    expect((await resourceStatus(r(), 'eip', 'eip-fip')).nat).toBe('fip');

    const inbound = await Listener.open(vm1().ns, 8080);
    const outbound = await Listener.open(client().ns, 9090);
    try {
      expect(await ping(client().ns, ip)).toBe(true);
      expect(await send(client().ns, ip, 8080, 'in-1')).toBe(true);
      expect(await inbound.waitFor('in-1')).toBe(true);
      expect(await send(vm1().ns, client().ip, 9090, 'out-1')).toBe(true);
      expect(await outbound.waitFor('out-1')).toBe(true);
      expect(outbound.peers).toContain(ip); // SNAT: the VM is seen as its EIP

      // A connection open through the FIP stops passing data once the FIP is deleted.
      const session = await Session.open(client().ns, ip, 8080);
      session.write('before-delete');
      expect(await inbound.waitFor('before-delete')).toBe(true);
      expect(await conntrackEntries(lab.gatewayNs, ip)).not.toEqual([]);
      await deleteResource(r(), 'fip', 'fip1');
      session.write('after-delete');
      expect(await inbound.waitFor('after-delete', 2000)).toBe(false);
      session.close();

      expect(await send(client().ns, ip, 8080, 'in-2')).toBe(false);
      expect(await inbound.waitFor('in-2', 1000)).toBe(false);
      expect(await stack.natRules(GW)).toEqual([]);
      expect(await conntrackEntries(lab.gatewayNs, ip)).toEqual([]);
      expect((await resourceStatus(r(), 'eip', 'eip-fip')).nat).toBe('');
    } finally {
      inbound.close();
      outbound.close();
    }
  });

  it('DNAT: tcp and udp ports forward to the internal port; two rules share an EIP; a duplicate port is refused', async () => {
    const ip = await eip('eip-dnat');
    await rule('dnat', 'dnat-tcp', { eip: 'eip-dnat', protocol: 'tcp', externalPort: '8080', internalIp: vm1().ip, internalPort: '80' });
    await rule('dnat', 'dnat-udp', { eip: 'eip-dnat', protocol: 'udp', externalPort: 5353, internalIp: vm2().ip, internalPort: 53 });
    const dup = await rule('dnat', 'dnat-dup', { eip: 'eip-dnat', protocol: 'tcp', externalPort: '8080', internalIp: vm2().ip, internalPort: '80' }, 'Failed');
    expect(dup.conditions.find((c) => c.type === 'Ready')).toMatchObject({ reason: Reason.DuplicateDnat });
    expect((await resourceStatus(r(), 'eip', 'eip-dnat')).nat).toBe('dnat');

    const tcp = await Listener.open(vm1().ns, 80);
    const udp = await Listener.open(vm2().ns, 53, 'udp');
    try {
      expect(await send(client().ns, ip, 8080, 'tcp-hello')).toBe(true);
      expect(await tcp.waitFor('tcp-hello')).toBe(true);
      await send(client().ns, ip, 5353, 'udp-hello', 'udp');
      expect(await udp.waitFor('udp-hello')).toBe(true);
    } finally {
      tcp.close();
      udp.close();
    }
    for (const name of ['dnat-tcp', 'dnat-udp', 'dnat-dup']) await deleteResource(r(), 'dnat', name);
    expect(await stack.natRules(GW)).toEqual([]);
    expect(await conntrackEntries(lab.gatewayNs, ip)).toEqual([]);
  });

  it('SNAT: sources leave as the EIP, and the longest prefix wins whatever the order of creation', async () => {
    const wide = await eip('eip-snat-wide');
    const narrow = await eip('eip-snat-narrow');
    const seenFrom = async (vm: { ns: string }) => {
      const listener = await Listener.open(client().ns, 9191);
      try {
        await send(vm.ns, client().ip, 9191, 'who');
        await listener.waitFor('who');
        return listener.peers[0];
      } finally {
        listener.close();
      }
    };
    for (const order of [['narrow', 'wide'], ['wide', 'narrow']]) {
      for (const which of order) {
        if (which === 'wide') await rule('snat', 'snat-wide', { eip: 'eip-snat-wide', internalCIDR: lab.vpcCidr });
        else await rule('snat', 'snat-narrow', { eip: 'eip-snat-narrow', internalCIDR: `${vm1().ip}/32` });
      }
      expect(await seenFrom(vm1())).toBe(narrow);
      expect(await seenFrom(vm2())).toBe(wide);
      await deleteResource(r(), 'snat', 'snat-wide');
      await deleteResource(r(), 'snat', 'snat-narrow');
    }
    expect(await stack.natRules(GW)).toEqual([]);
  });

  it('hairpin: a VM reaches another VM through that VM\'s EIP', async () => {
    const ip = await eip('eip-hairpin');
    await rule('fip', 'fip-hairpin', { eip: 'eip-hairpin', internalIp: vm1().ip });
    const listener = await Listener.open(vm1().ns, 7070);
    try {
      expect(await send(vm2().ns, ip, 7070, 'hairpin')).toBe(true);
      expect(await listener.waitFor('hairpin')).toBe(true);
    } finally {
      listener.close();
    }
    await deleteResource(r(), 'fip', 'fip-hairpin');
  });

  it('a changed internalIp moves the mapping: the new VM gets traffic, the old one no longer does', async () => {
    const ip = await eip('eip-move');
    await rule('fip', 'fip-move', { eip: 'eip-move', internalIp: vm1().ip });
    const old = await Listener.open(vm1().ns, 6060);
    const next = await Listener.open(vm2().ns, 6060);
    try {
      expect(await send(client().ns, ip, 6060, 'first')).toBe(true);
      expect(await old.waitFor('first')).toBe(true);
      await updateNatSpec(r(), 'fip', 'fip-move', { eip: 'eip-move', internalIp: vm2().ip });
      await eventually(() => resourceStatus(r(), 'fip', 'fip-move'), (s) => s.ready && s.internalIp === vm2().ip, 30_000, 'moved');
      expect(await send(client().ns, ip, 6060, 'second')).toBe(true);
      expect(await next.waitFor('second')).toBe(true);
      expect(old.received).not.toContain('second');
    } finally {
      old.close();
      next.close();
    }
    await deleteResource(r(), 'fip', 'fip-move');
  });

  it('an EIP in use is deleted only after its users, with a status that names them', async () => {
    await eip('eip-busy');
    await rule('fip', 'fip-busy', { eip: 'eip-busy', internalIp: vm1().ip });
    await deleteResource(r(), 'eip', 'eip-busy', false);
    const waiting = await resourcePhase(r(), 'eip', 'eip-busy', 'Deleting');
    expect(waiting.conditions.find((c) => c.type === 'Ready')).toMatchObject({ reason: Reason.EipInUse, message: expect.stringContaining('fip fip-busy') });
    expect(await stack.eipAddresses(GW)).toContain(`${eipIps.get('eip-busy')}/24`);
    await deleteResource(r(), 'fip', 'fip-busy');
    await eventually(() => stack.eipAddresses(GW), (a) => !a.includes(`${eipIps.get('eip-busy')}/24`), 30_000, 'EIP released');
  });

  it('bad input gets a clear condition, and nothing is applied', async () => {
    await eip('eip-bad');
    await rule('fip', 'fip-taker', { eip: 'eip-bad', internalIp: vm1().ip });
    const meta = '10.0.1.10; iptables -F';
    const cases: { kind: NatKind; name: string; spec: NatSpecs[NatKind]; phase: NatPhase; reason: string }[] = [
      { kind: 'fip', name: 'bad-unknown-eip', spec: { eip: 'no-such-eip', internalIp: vm1().ip }, phase: 'WaitingForEip', reason: Reason.EipNotFound },
      { kind: 'fip', name: 'bad-second-fip', spec: { eip: 'eip-bad', internalIp: vm2().ip }, phase: 'Failed', reason: Reason.EipInUse },
      { kind: 'dnat', name: 'bad-dnat-on-fip', spec: { eip: 'eip-bad', protocol: 'tcp', externalPort: '80', internalIp: vm2().ip, internalPort: '80' }, phase: 'Failed', reason: Reason.EipInUse },
      { kind: 'fip', name: 'bad-outside-vpc', spec: { eip: 'eip-dnat', internalIp: '192.168.77.7' }, phase: 'Failed', reason: Reason.InvalidSpec },
      { kind: 'dnat', name: 'bad-port', spec: { eip: 'eip-dnat', protocol: 'tcp', externalPort: '70000', internalIp: vm1().ip, internalPort: '80' }, phase: 'Invalid', reason: Reason.InvalidSpec },
      { kind: 'dnat', name: 'bad-protocol', spec: { eip: 'eip-dnat', protocol: 'sctp', externalPort: '80', internalIp: vm1().ip, internalPort: '80' }, phase: 'Invalid', reason: Reason.InvalidSpec },
      { kind: 'fip', name: 'bad-meta-ip', spec: { eip: 'eip-dnat', internalIp: meta }, phase: 'Invalid', reason: Reason.InvalidSpec },
      { kind: 'dnat', name: 'bad-meta-port', spec: { eip: 'eip-dnat', protocol: 'tcp', externalPort: '80`reboot`', internalIp: vm1().ip, internalPort: '$(id)' }, phase: 'Invalid', reason: Reason.InvalidSpec },
      { kind: 'dnat', name: 'bad-meta-proto', spec: { eip: 'eip-dnat', protocol: 'tcp|udp', externalPort: '81', internalIp: vm1().ip, internalPort: '80' }, phase: 'Invalid', reason: Reason.InvalidSpec },
      { kind: 'snat', name: 'bad-meta-cidr', spec: { eip: 'eip-dnat', internalCIDR: '10.0.1.0/24 && true' }, phase: 'Invalid', reason: Reason.InvalidSpec },
    ];
    await expect(createResource(r(), 'fip', 'bad-meta-eip', { eip: 'eip-bad; rm -rf /', internalIp: vm1().ip })).rejects.toThrow(/spec.eip .* is not a valid name/);
    const before = await stack.natRules(GW);
    for (const c of cases) {
      const s = await rule(c.kind, c.name, c.spec as never, c.phase);
      const ready = s.conditions.find((cond) => cond.type === 'Ready')!;
      expect(`${c.name}: ${ready.reason}`).toBe(`${c.name}: ${c.reason}`);
      expect(ready.message.length).toBeGreaterThan(10);
    }
    expect(await stack.natRules(GW)).toEqual(before);
    for (const c of cases) await deleteResource(r(), c.kind, c.name);
    await deleteResource(r(), 'fip', 'fip-taker');
    expect(await stack.natRules(GW)).toEqual([]);
  });

  it('a restarted agent with an empty nat table gets every ready rule back, passing traffic', async () => {
    const ip = await eip('eip-restore');
    await rule('fip', 'fip-restore', { eip: 'eip-restore', internalIp: vm1().ip });
    const rulesBefore = await stack.natRules(GW);
    await stack.restartAgent(GW, async () => {
      // A restarted gateway pod starts with empty tables.
      await runCommand('iptables', ['-t', 'nat', '-F'], { netns: lab.gatewayNs });
      await runCommand('iptables', ['-t', 'nat', '-X'], { netns: lab.gatewayNs });
      expect(await stack.natRules(GW)).toEqual([]);
    });
    await eventually(() => stack.natRules(GW), (rules) => rules.length === rulesBefore.length, 30_000, 'rules restored');
    expect(await stack.natRules(GW)).toEqual(rulesBefore);
    const listener = await Listener.open(vm1().ns, 5050);
    try {
      expect(await send(client().ns, ip, 5050, 'restored')).toBe(true);
      expect(await listener.waitFor('restored')).toBe(true);
    } finally {
      listener.close();
    }
    await deleteResource(r(), 'fip', 'fip-restore');
  });

  it('Kube-OVN v1.13.4 race: 300 FIPs created and deleted 0–50 ms later, under traffic, leave no rule and no translated conntrack entry', async () => {
    const lanes = 10;
    const eips = await Promise.all(Array.from({ length: lanes }, (_, i) => eip(`eip-race-${i}`)));
    // Traffic to every raced EIP for the whole race: a new UDP flow to each every 25 ms. While a
    // FIP is applied its DNAT makes conntrack entries towards the VM, which its delete must flush.
    const flows = await UdpFlows.start(client().ns, eips, 5999, { everyMs: 25, maxMs: 240_000 });
    let translatedSeen = 0;
    try {
      // Each lane owns one EIP (a FIP takes it alone) and runs its 30 FIPs one after another;
      // the lanes run at once, so ten creates and deletes are in flight together. Few of those
      // live long enough to be applied, so after every tenth a FIP is held until the traffic has
      // been translated to the VM (seen in conntrack), then deleted like the others.
      await Promise.all(
        eips.map(async (ip, lane) => {
          for (let i = 0; i < 300 / lanes; i++) {
            const name = `fip-race-${lane}-${i}`;
            await createResource(r(), 'fip', name, { eip: `eip-race-${lane}`, internalIp: vm1().ip });
            await new Promise((res) => setTimeout(res, Math.random() * 50));
            await deleteResource(r(), 'fip', name);
            if (i % 10 === 9) {
              const held = `fip-held-${lane}-${i}`;
              await rule('fip', held, { eip: `eip-race-${lane}`, internalIp: vm1().ip });
              const toVm = async () => (await conntrackEntries(lab.gatewayNs, ip, { nat: true })).filter((e) => e.includes(`src=${vm1().ip} `));
              translatedSeen += (await eventually(toVm, (entries) => entries.length > 0, 10_000, `traffic to ${ip} translated to the VM`)).length;
              await deleteResource(r(), 'fip', held);
            }
          }
        }),
      );
    } finally {
      const sent = await flows.stop();
      console.log(`race traffic: ${sent} datagrams; ${translatedSeen} conntrack entries translated to ${vm1().ip} seen under held FIPs`);
    }
    expect(translatedSeen, 'entries translated to the VM while rules were applied').toBeGreaterThan(0);
    expect(await stack.natRules(GW)).toEqual([]);
    // Entries for the EIPs themselves (answered by the gateway while no FIP held them) are not leaks; a translated one is.
    expect(await conntrackEntries(lab.gatewayNs, eips, { nat: true })).toEqual([]);
    // Every EIP is immediately usable again by a new FIP that passes traffic.
    const listener = await Listener.open(vm2().ns, 4040);
    try {
      for (let lane = 0; lane < lanes; lane++) {
        await rule('fip', `fip-after-${lane}`, { eip: `eip-race-${lane}`, internalIp: vm2().ip });
        expect(await send(client().ns, eips[lane]!, 4040, `after-${lane}`)).toBe(true);
        expect(await listener.waitFor(`after-${lane}`)).toBe(true);
        await deleteResource(r(), 'fip', `fip-after-${lane}`);
      }
    } finally {
      listener.close();
    }
    expect(await stack.natRules(GW)).toEqual([]);
  });
});
