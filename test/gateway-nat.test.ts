// NAT rules on a real lab gateway, checked with real traffic (nc, ping) between the external client,
// the gateway and the VMs, and on the gateway's own nat and conntrack tables.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCommand, spawnRunner, type CommandRunner } from '../activities/exec.js';
import { createAddressActivities } from '../activities/gateway-addresses.js';
import { createNatActivities, type NatChange } from '../activities/gateway-nat.js';
import type { LabTopology } from '../domain/lab.js';
import { NAT_CHAINS, renderNatRule, type NatRule } from '../domain/nat-rules.js';
import { GENERATION_CHAIN, placedChain } from '../domain/nat-table.js';
import { labDown, labUp } from '../temporal-dev/lab.js';
import { FakeCommands } from './support/fake-commands.js';
import { conntrack, Listener, ping, send, Session } from './support/traffic.js';

const GW = 't-nat';
const EIP = ['172.18.0.10', '172.18.0.11', '172.18.0.12', '172.18.0.13'] as const;
let t: LabTopology;
let nat: ReturnType<typeof createNatActivities>;
const commands: string[] = [];

const vm = (i: 0 | 1) => ({ ns: t.vmNamespaces[i]!, ip: t.vmIps[i]! });
const client = () => ({ ns: t.clientNs, ip: t.externalGatewayIp });

const fip = (owner: string, eip: string, internalIp: string): NatRule => ({ kind: 'fip', owner, eip, internalIp });
const snat = (owner: string, eip: string, internalCidr: string): NatRule => ({ kind: 'snat', owner, eip, internalCidr });
const dnat = (owner: string, eip: string, protocol: 'tcp' | 'udp', externalPort: number, internalIp: string, internalPort: number): NatRule => ({
  kind: 'dnat',
  owner,
  eip,
  protocol,
  externalPort,
  internalIp,
  internalPort,
});

/** The nat table without iptables-save's timestamped comments. */
async function natTable(): Promise<string[]> {
  const { stdout } = await runCommand('iptables-save', ['-t', 'nat'], { netns: t.gatewayNs });
  return stdout.split('\n').filter((l) => l && !l.startsWith('#'));
}

/** Runs `fn` with listeners open, and always closes them. */
async function withListeners<T>(specs: [string, number, ('tcp' | 'udp')?][], fn: (...listeners: Listener[]) => Promise<T>): Promise<T> {
  const listeners = await Promise.all(specs.map(([ns, port, protocol]) => Listener.open(ns, port, protocol)));
  try {
    return await fn(...listeners);
  } finally {
    for (const l of listeners) l.close();
  }
}

/** The source address a listener in the client namespace sees for a connection from `from`. */
async function seenFromOutside(from: { ns: string }, port: number): Promise<string | undefined> {
  return withListeners([[client().ns, port]], async (l) => {
    expect(await send(from.ns, client().ip, port, 'who')).toBe(true);
    expect(await l.waitFor('who')).toBe(true);
    return l.peers[0];
  });
}

/** Removes every natflow rule and every conntrack entry, so that each test starts clean. */
async function reset(): Promise<void> {
  await nat.applyNatRules({ add: [], removeOwners: [], replaceAll: true });
  await runCommand('conntrack', ['-F'], { netns: t.gatewayNs });
}

describe('NAT rules on the gateway (real traffic)', () => {
  beforeAll(async () => {
    await labDown(GW);
    t = await labUp(GW);
    await createAddressActivities({ netns: t.gatewayNs, externalInterface: t.externalInterface, warn: () => {} }).reconcileEipAddresses(
      EIP.map((address) => ({ address, prefixLength: 24 })),
    );
    nat = createNatActivities({
      netns: t.gatewayNs,
      runner: { run: (cmd, args, opts) => (commands.push(cmd), spawnRunner.run(cmd, args, opts)) },
    });
    await nat.initNatChains();
  });

  afterAll(async () => {
    await labDown(GW);
  });

  it('init creates the chains and jumps once; repeating it runs no write at all', async () => {
    const table = await natTable();
    for (const chain of NAT_CHAINS) expect(table).toContain(`:${chain} - [0:0]`);
    expect(table.filter((l) => l === '-A PREROUTING -j DNAT_FILTER')).toHaveLength(1);
    expect(table.filter((l) => l === '-A POSTROUTING -j SNAT_FILTER')).toHaveLength(1);
    expect(table.filter((l) => l.startsWith('-A SHARED_SNAT -j'))).toEqual(Array.from({ length: 33 }, (_, i) => `-A SHARED_SNAT -j SHARED_SNAT_${32 - i}`));

    commands.length = 0;
    await nat.initNatChains();
    await nat.initNatChains();
    expect(commands).toEqual(['iptables-save', 'iptables-save']);
    expect(await natTable()).toEqual(table);
  });

  it('FIP: the outside reaches the VM through the EIP and the VM leaves as the EIP', async () => {
    await reset();
    expect(await nat.applyNatRules({ add: [fip('fip-a', EIP[0], vm(0).ip)], removeOwners: [] })).toEqual({ added: 2, removed: 0 });
    expect(await ping(client().ns, EIP[0])).toBe(true);
    await withListeners([[vm(0).ns, 8080]], async (l) => {
      expect(await send(client().ns, EIP[0], 8080, 'inbound')).toBe(true);
      expect(await l.waitFor('inbound')).toBe(true);
      expect(l.peers).toEqual([client().ip]); // inbound keeps the client's address
    });
    expect(await seenFromOutside(vm(0), 9090)).toBe(EIP[0]);
  });

  it('FIP removed: new connections fail, an open one stops once conntrack is flushed, and no entry remains', async () => {
    await reset();
    const rule = fip('fip-b', EIP[0], vm(0).ip);
    await nat.applyNatRules({ add: [rule], removeOwners: [] });
    const listener = await Listener.open(vm(0).ns, 8081);
    const session = await Session.open(client().ns, EIP[0], 8081);
    try {
      session.write('before');
      expect(await listener.waitFor('before')).toBe(true);

      expect(await nat.applyNatRules({ add: [], removeOwners: ['fip-b'] })).toEqual({ added: 0, removed: 2 });
      expect(await nat.listNatRules()).toEqual([]);
      // The rule is gone but the connection's conntrack entry still carries the NAT: this is why
      // a delete must flush conntrack (the leak Kube-OVN leaves on the outbound side).
      session.write('still-open');
      expect(await listener.waitFor('still-open')).toBe(true);
      expect(await send(client().ns, EIP[0], 8081, 'new-after-remove')).toBe(false);

      expect(await conntrack(t.gatewayNs, '-d', EIP[0])).not.toEqual([]);
      expect(await nat.flushConntrack([{ eip: EIP[0], internalIp: vm(0).ip }])).toBeGreaterThan(0);
      expect(await conntrack(t.gatewayNs, '-d', EIP[0])).toEqual([]);
      expect(await conntrack(t.gatewayNs, '-q', EIP[0])).toEqual([]);

      session.write('after-flush');
      expect(await listener.waitFor('after-flush', 800)).toBe(false);
      // Flushing again finds nothing and is fine.
      expect(await nat.flushConntrack([{ eip: EIP[0], internalIp: vm(0).ip }])).toBeGreaterThanOrEqual(0);
    } finally {
      session.close();
      listener.close();
    }
  });

  it('DNAT: tcp and udp ports to internal ports, two rules sharing one EIP; a flush takes only its own port', async () => {
    await reset();
    const rules = [dnat('dnat-tcp1', EIP[2], 'tcp', 8022, vm(0).ip, 2222), dnat('dnat-tcp2', EIP[2], 'tcp', 8023, vm(1).ip, 2223), dnat('dnat-udp', EIP[2], 'udp', 5353, vm(1).ip, 5300)];
    expect(await nat.applyNatRules({ add: rules, removeOwners: [] })).toEqual({ added: 3, removed: 0 });
    await withListeners(
      [
        [vm(0).ns, 2222],
        [vm(1).ns, 2223],
        [vm(1).ns, 5300, 'udp'],
      ],
      async (tcp1, tcp2, udp) => {
        expect(await send(client().ns, EIP[2], 8022, 'to-vm1')).toBe(true);
        expect(await send(client().ns, EIP[2], 8023, 'to-vm2')).toBe(true);
        await send(client().ns, EIP[2], 5353, 'over-udp', 'udp');
        expect(await tcp1.waitFor('to-vm1')).toBe(true);
        expect(await tcp2.waitFor('to-vm2')).toBe(true);
        expect(await udp.waitFor('over-udp')).toBe(true);
        expect(tcp1.received).not.toContain('to-vm2');
        // A port with no rule is not forwarded.
        expect(await send(client().ns, EIP[2], 2222, 'unmapped')).toBe(false);
      },
    );

    expect(await nat.applyNatRules({ add: [], removeOwners: ['dnat-tcp1'] })).toEqual({ added: 0, removed: 1 });
    expect(await nat.flushConntrack([{ eip: EIP[2], internalIp: vm(0).ip, protocol: 'tcp', port: 8022 }])).toBeGreaterThan(0);
    expect(await conntrack(t.gatewayNs, '-d', EIP[2], '-p', 'tcp', '--dport', '8022')).toEqual([]);
    expect(await conntrack(t.gatewayNs, '-d', EIP[2], '-p', 'tcp', '--dport', '8023')).not.toEqual([]);
    expect(await conntrack(t.gatewayNs, '-d', EIP[2], '-p', 'udp', '--dport', '5353')).not.toEqual([]);
    expect(await send(client().ns, EIP[2], 8022, 'gone')).toBe(false);
  });

  it('SNAT: a VM without FIP leaves as the EIP; a flush narrowed by source CIDR takes only that CIDR', async () => {
    await reset();
    await nat.applyNatRules({ add: [snat('snat-vpc', EIP[3], t.vpcCidr)], removeOwners: [] });
    expect(await seenFromOutside(vm(0), 9091)).toBe(EIP[3]);
    expect(await seenFromOutside(vm(1), 9092)).toBe(EIP[3]);
    expect(await conntrack(t.gatewayNs, '-q', EIP[3], '-s', vm(0).ip)).not.toEqual([]);

    expect(await nat.flushConntrack([{ eip: EIP[3], internalCidr: `${vm(1).ip}/32` }])).toBe(1);
    expect(await conntrack(t.gatewayNs, '-q', EIP[3], '-s', vm(1).ip)).toEqual([]);
    expect(await conntrack(t.gatewayNs, '-q', EIP[3], '-s', vm(0).ip)).not.toEqual([]);
    expect(await nat.flushConntrack([{ eip: EIP[3], internalCidr: t.vpcCidr }])).toBe(1);
    expect(await conntrack(t.gatewayNs, '-q', EIP[3])).toEqual([]);
  });

  it.each([
    ['the /24 first', ['wide', 'narrow']],
    ['the /32 first', ['narrow', 'wide']],
  ])('SNAT: overlapping CIDRs on different EIPs, %s: the longest prefix wins', async (_, order) => {
    await reset();
    const rules: Record<string, NatRule> = { wide: snat('snat-wide', EIP[3], '10.0.1.0/24'), narrow: snat('snat-narrow', EIP[1], `${vm(0).ip}/32`) };
    for (const name of order) await nat.applyNatRules({ add: [rules[name]!], removeOwners: [] });
    expect(await seenFromOutside(vm(0), 9093)).toBe(EIP[1]);
    expect(await seenFromOutside(vm(1), 9094)).toBe(EIP[3]);
  });

  it('hairpin: a VM reaches another VM through its EIP, seen as the gateway, or as its own FIP when it has one', async () => {
    await reset();
    await nat.applyNatRules({ add: [fip('fip-vm2', EIP[1], vm(1).ip), dnat('dnat-vm2', EIP[2], 'tcp', 8070, vm(1).ip, 7071)], removeOwners: [] });
    await withListeners(
      [
        [vm(1).ns, 7070],
        [vm(1).ns, 7071],
      ],
      async (viaFip, viaDnat) => {
        expect(await send(vm(0).ns, EIP[1], 7070, 'hairpin-fip')).toBe(true);
        expect(await viaFip.waitFor('hairpin-fip')).toBe(true);
        expect(await send(vm(0).ns, EIP[2], 8070, 'hairpin-dnat')).toBe(true);
        expect(await viaDnat.waitFor('hairpin-dnat')).toBe(true);
        expect([...viaFip.peers, ...viaDnat.peers]).toEqual([t.lanIp, t.lanIp]);

        await nat.applyNatRules({ add: [fip('fip-vm1', EIP[0], vm(0).ip)], removeOwners: [] });
        expect(await send(vm(0).ns, EIP[1], 7070, 'hairpin-from-fip')).toBe(true);
        expect(await viaFip.waitFor('hairpin-from-fip')).toBe(true);
        expect(viaFip.peers.at(-1)).toBe(EIP[0]);
      },
    );
  });

  it('is idempotent: the same change twice adds nothing the second time, and an unknown owner is fine', async () => {
    await reset();
    const rules = [fip('idem-fip', EIP[0], vm(0).ip), dnat('idem-dnat', EIP[2], 'udp', 53, vm(1).ip, 53), snat('idem-snat', EIP[3], '10.0.1.0/25')];
    expect(await nat.applyNatRules({ add: rules, removeOwners: [] })).toEqual({ added: 4, removed: 0 });
    const table = await natTable();
    commands.length = 0;
    expect(await nat.applyNatRules({ add: rules, removeOwners: [] })).toEqual({ added: 0, removed: 0 });
    expect(await nat.applyNatRules({ add: [], removeOwners: ['never-seen-owner'] })).toEqual({ added: 0, removed: 0 });
    expect(commands).toEqual(['iptables-save', 'iptables-save']); // nothing to write, nothing written
    expect(await natTable()).toEqual(table);
    const listed = await nat.listNatRules();
    expect(listed).toHaveLength(4);
    expect(new Set(listed.map((r) => `${r.chain} ${r.spec.join(' ')}`)).size).toBe(4);
    expect(listed.map((r) => r.owner).sort()).toEqual(['idem-dnat', 'idem-fip', 'idem-fip', 'idem-snat']);
  });

  it('converges from a partial state: stray and duplicated tagged rules go, a missing one comes back, a changed mapping is replaced', async () => {
    await reset();
    const keep = fip('conv-fip', EIP[0], vm(0).ip);
    const moved = dnat('conv-dnat', EIP[2], 'tcp', 8080, vm(0).ip, 80);
    await nat.applyNatRules({ add: [keep, moved], removeOwners: [] });
    const ipt = (...args: string[]) => runCommand('iptables', ['-w', '-t', 'nat', ...args], { netns: t.gatewayNs });
    const [keepDnat, keepSnat] = renderNatRule(keep);
    await ipt('-D', placedChain(keepSnat!.chain, keep.owner), ...keepSnat!.spec); // a missing rule
    await ipt('-A', placedChain(keepDnat!.chain, keep.owner), ...keepDnat!.spec); // a duplicate
    await ipt('-A', 'EXCLUSIVE_DNAT', '-d', '172.18.0.99/32', '-m', 'comment', '--comment', 'natflow:stray', '-j', 'DNAT', '--to-destination', '10.0.1.99');
    await ipt('-I', 'PREROUTING', '1', '-d', '172.18.0.98/32', '-m', 'comment', '--comment', 'natflow:stray2', '-j', 'DNAT', '--to-destination', '10.0.1.98');
    await ipt('-A', 'EXCLUSIVE_DNAT', '-d', '172.18.0.97/32', '-j', 'DNAT', '--to-destination', '10.0.1.97'); // not natflow's

    const now = { ...moved, internalIp: vm(1).ip };
    expect(await nat.applyNatRules({ add: [keep, now], removeOwners: [], replaceAll: true })).toEqual({ added: 2, removed: 4 });
    const expected = [keep, now].flatMap((r) => renderNatRule(r).map((x) => ({ chain: placedChain(x.chain, r.owner), owner: r.owner, spec: x.spec })));
    expect(await nat.listNatRules()).toEqual(expect.arrayContaining(expected));
    expect(await nat.listNatRules()).toHaveLength(expected.length);
    expect(await natTable()).toContain('-A EXCLUSIVE_DNAT -d 172.18.0.97/32 -j DNAT --to-destination 10.0.1.97');

    await withListeners([[vm(1).ns, 80]], async (l) => {
      expect(await send(client().ns, EIP[2], 8080, 'moved')).toBe(true);
      expect(await l.waitFor('moved')).toBe(true);
    });
    await ipt('-D', 'EXCLUSIVE_DNAT', '-d', '172.18.0.97/32', '-j', 'DNAT', '--to-destination', '10.0.1.97');
  });

  it('converges after the gateway lost its nat table (a restarted gateway pod), and repairs damaged jumps', async () => {
    await reset();
    const rule = fip('restart-fip', EIP[0], vm(0).ip);
    await nat.applyNatRules({ add: [rule], removeOwners: [] });
    const healthy = await natTable();
    await runCommand('iptables', ['-w', '-t', 'nat', '-F'], { netns: t.gatewayNs });
    await runCommand('iptables', ['-w', '-t', 'nat', '-X'], { netns: t.gatewayNs });
    expect(await nat.applyNatRules({ add: [rule], removeOwners: [] })).toEqual({ added: 2, removed: 0 });
    expect(await natTable()).toEqual(healthy);

    await runCommand('iptables', ['-w', '-t', 'nat', '-F', 'SNAT_FILTER'], { netns: t.gatewayNs });
    await runCommand('iptables', ['-w', '-t', 'nat', '-A', 'PREROUTING', '-j', 'DNAT_FILTER'], { netns: t.gatewayNs });
    await nat.initNatChains();
    expect(await natTable()).toEqual(healthy);
    await withListeners([[vm(0).ns, 8082]], async (l) => {
      expect(await send(client().ns, EIP[0], 8082, 'after-restart')).toBe(true);
      expect(await l.waitFor('after-restart')).toBe(true);
    });
  });

  it('refuses shell metacharacters and bad values in any field, with nothing applied', async () => {
    await reset();
    await nat.applyNatRules({ add: [fip('safe-fip', EIP[0], vm(0).ip)], removeOwners: [] });
    const before = await natTable();
    const good = snat('safe-snat', EIP[3], '10.0.1.0/24');
    const bad: [unknown, RegExp][] = [
      [{ add: [good, fip('evil', '172.18.0.11; iptables -t nat -F', vm(1).ip)], removeOwners: [] }, /eip "172\.18\.0\.11; iptables -t nat -F" is not an IPv4 address/],
      [{ add: [good, fip('evil', EIP[1], '$(reboot)')], removeOwners: [] }, /internalIp "\$\(reboot\)"/],
      [{ add: [good, fip('evil`id`', EIP[1], vm(1).ip)], removeOwners: [] }, /owner "evil`id`"/],
      [{ add: [good, { ...dnat('evil', EIP[2], 'tcp', 80, vm(1).ip, 80), protocol: 'tcp|nc' }], removeOwners: [] }, /protocol "tcp\|nc" must be tcp or udp/],
      [{ add: [good, dnat('evil', EIP[2], 'tcp', 0, vm(1).ip, 80)], removeOwners: [] }, /externalPort 0 is not a port/],
      [{ add: [good, snat('evil', EIP[3], '10.0.1.0/24 -j ACCEPT')], removeOwners: [] }, /internalCidr "10\.0\.1\.0\/24 -j ACCEPT"/],
      [{ add: [good], removeOwners: ['safe-fip && rm -rf /'] }, /removeOwners entry "safe-fip && rm -rf \/"/],
      [{ add: [good], removeOwners: [], replaceAll: 'yes' }, /replaceAll "yes" must be true or false/],
    ];
    for (const [change, message] of bad) {
      const err = await nat.applyNatRules(change as never).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, JSON.stringify(change)).toMatchObject({ type: 'InvalidSpec', nonRetryable: true });
      expect((err as Error).message).toMatch(message);
    }
    await expect(nat.flushConntrack([{ eip: EIP[0] }, { eip: '172.18.0.10 -F' }])).rejects.toMatchObject({ type: 'InvalidSpec', nonRetryable: true });
    await expect(nat.flushConntrack([{ eip: EIP[0], port: 80 }])).rejects.toMatchObject({ message: expect.stringMatching(/a port needs a protocol/) });
    expect(await natTable()).toEqual(before);
  });

  it('serializes concurrent changes on one gateway: no duplicate, no failed delete', async () => {
    await reset();
    const rules = Array.from({ length: 20 }, (_, i) => fip(`conc-${i}`, `172.18.1.${i + 1}`, `10.0.1.${100 + i}`));
    await Promise.all(rules.map((rule) => nat.applyNatRules({ add: [rule, rules[0]!], removeOwners: [] })));
    expect(await nat.listNatRules()).toHaveLength(40);
    await Promise.all(rules.map((rule) => nat.applyNatRules({ add: [], removeOwners: [rule.owner, rules[0]!.owner] })));
    expect(await nat.listNatRules()).toEqual([]);
  });

  it('a remembering agent: a change is one restore and no read; what someone else did in between is neither lost nor duplicated', async () => {
    await reset();
    const seen: string[] = [];
    const remembering = () =>
      createNatActivities({ netns: t.gatewayNs, remember: true, runner: { run: (cmd, args, opts) => (seen.push(cmd), spawnRunner.run(cmd, args, opts)) } });
    const agent = remembering();
    const ipt = (...args: string[]) => runCommand('iptables', ['-w', '-t', 'nat', ...args], { netns: t.gatewayNs });
    try {
      await rememberingChanges();
    } finally {
      // The other tests' stateless instance would keep replacing it.
      await ipt('-F', GENERATION_CHAIN).catch(() => undefined);
      await ipt('-X', GENERATION_CHAIN).catch(() => undefined);
    }
    async function rememberingChanges() {
      const owners = async () => (await nat.listNatRules()).map((r) => r.owner).sort();
      const a = fip('mem-a', EIP[0], vm(0).ip);
      const b = fip('mem-b', EIP[1], vm(1).ip);
      const c = dnat('mem-c', EIP[2], 'tcp', 8080, vm(1).ip, 80);
      expect(await agent.applyNatRules({ add: [a], removeOwners: [] })).toEqual({ added: 2, removed: 0 });
      expect(seen).toEqual(['iptables-save', 'iptables-restore']);
      seen.length = 0;
      expect(await agent.applyNatRules({ add: [b], removeOwners: [] })).toEqual({ added: 2, removed: 0 });
      expect(seen).toEqual(['iptables-restore']);

      // An operator deletes one of b's rules: the remembered delete is refused, the agent reads and removes the rest.
      const [bDnat] = renderNatRule(b);
      await ipt('-D', placedChain(bDnat!.chain, b.owner), ...bDnat!.spec);
      seen.length = 0;
      expect(await agent.applyNatRules({ add: [], removeOwners: [b.owner] })).toEqual({ added: 0, removed: 1 });
      expect(seen).toEqual(['iptables-restore', 'iptables-save', 'iptables-restore']);

      // Another agent adds c: the first one, asked for c too, does not add it twice.
      expect(await remembering().applyNatRules({ add: [c], removeOwners: [] })).toEqual({ added: 1, removed: 0 });
      expect(await agent.applyNatRules({ add: [c], removeOwners: [] })).toEqual({ added: 0, removed: 0 });
      expect(await owners()).toEqual(['mem-a', 'mem-a', 'mem-c']);

      // The whole nat table flushed: the next change brings natflow's chains back with it.
      const healthy = await natTable();
      await ipt('-F');
      seen.length = 0;
      expect(await agent.applyNatRules({ add: [b], removeOwners: [] })).toEqual({ added: 2, removed: 0 });
      expect(seen).toEqual(['iptables-restore', 'iptables-save', 'iptables-restore']);
      expect(await owners()).toEqual(['mem-b', 'mem-b']);
      const layoutOf = (table: string[]) => table.filter((l) => !l.includes('natflow:') && !l.includes(GENERATION_CHAIN));
      expect(layoutOf(await natTable())).toEqual(layoutOf(healthy));
      await withListeners([[vm(1).ns, 8083]], async (l) => {
        expect(await send(client().ns, EIP[1], 8083, 'remembered')).toBe(true);
        expect(await l.waitFor('remembered')).toBe(true);
      });
    }
  });

  it('the fake gateway of the unit tests (test/support/fake-commands.ts) answers as this one does', async () => {
    await reset();
    const fake = new FakeCommands((await natTable()).join('\n'));
    const sameTable = async () => expect(fake.save().split('\n').filter((l) => l && !l.startsWith('#'))).toEqual(await natTable());
    await sameTable();

    const faked = createNatActivities({ runner: fake });
    const changes: NatChange[] = [
      { add: [fip('diff-fip', EIP[0], vm(0).ip), dnat('diff-dnat', EIP[2], 'tcp', 8080, vm(1).ip, 80), snat('diff-snat', EIP[3], t.vpcCidr)], removeOwners: [] },
      { add: [fip('diff-fip', EIP[0], vm(1).ip)], removeOwners: ['diff-fip', 'diff-dnat'] },
      { add: [snat('diff-all', EIP[1], '0.0.0.0/0')], removeOwners: [], replaceAll: true },
    ];
    for (const change of changes) {
      expect(await faked.applyNatRules(change)).toEqual(await nat.applyNatRules(change));
      await sameTable();
    }

    // What the planner relies on, restore by restore, from the same table.
    const restore = (runner: CommandRunner, netns: string | undefined, lines: string[]) =>
      runner.run('iptables-restore', ['--noflush', '-w', '10'], { netns, input: ['*nat', ...lines, 'COMMIT', ''].join('\n') }).then(
        () => 'applied',
        (err: Error) => err.message.slice(err.message.indexOf('exited')),
      );
    const rule = '-s 10.9.0.1/32 -m comment --comment natflow:diff -j DIFF_B';
    const steps: [string, string[], RegExp][] = [
      ['new chains, a rule twice', [':DIFF_A - [0:0]', ':DIFF_B - [0:0]', `-A DIFF_A ${rule}`, `-A DIFF_A ${rule}`, '-A DIFF_B -j RETURN'], /^applied$/],
      ['two identical deletes take both copies', [`-D DIFF_A ${rule}`, `-D DIFF_A ${rule}`], /^applied$/],
      ['a delete of a missing rule fails all', ['-A DIFF_A -j RETURN', `-D DIFF_A ${rule}`], /code 1: iptables-restore: line 3 failed: Bad rule/],
      ['a tagged rule', [`-A DIFF_A ${rule}`], /^applied$/],
      ['a delete compares the comment', ['-D DIFF_A -s 10.9.0.1/32 -j DIFF_B'], /line 2 failed/],
      ['declaring an existing chain empties it, a built-in one keeps its rules', [':DIFF_A - [0:0]', ':PREROUTING ACCEPT [0:0]'], /^applied$/],
      ['an append to a missing chain', ['-A DIFF_B -j RETURN', '-A DIFF_NONE -j RETURN'], /line 3 failed: No chain/],
      ['a flush of a missing chain', ['-F DIFF_NONE'], /line 2 failed/],
      ['a jump to a missing chain', ['-A DIFF_A -j DIFF_NONE'], /code 2: .*Chain 'DIFF_NONE' does not exist\nError occurred at line: 3/],
      ['a flush, then appends', ['-A DIFF_A -j DIFF_B', '-F DIFF_A', '-A DIFF_A -j RETURN'], /^applied$/],
    ];
    for (const [what, lines, outcome] of steps) {
      const real = await restore(spawnRunner, t.gatewayNs, lines);
      expect(real, what).toMatch(outcome);
      expect(await restore(fake, undefined, lines), what).toBe(real);
      await sameTable();
    }
    for (const args of [['-F', 'DIFF_A'], ['-F', 'DIFF_B'], ['-X', 'DIFF_A'], ['-X', 'DIFF_B']]) await runCommand('iptables', ['-w', '-t', 'nat', ...args], { netns: t.gatewayNs });
  });
});
