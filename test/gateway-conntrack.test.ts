// The full restore's conntrack flush, through a fake gateway (test/support/fake-commands.ts): the
// conntrack targets of removed rules are read from the rules themselves (domain/nat-table.ts), so a
// restore flushes for rules whose owner nobody remembers; test/gateway-lab.test.ts does the same
// on a real gateway with traffic.
import { beforeEach, describe, expect, it } from 'vitest';
import { createNatActivities, type NatActivities } from '../activities/gateway-nat.js';
import { conntrackTarget, renderNatRule, type NatRule } from '../domain/nat-rules.js';
import { conntrackFilters, removedConntrackTargets } from '../domain/nat-table.js';
import { FakeCommands } from './support/fake-commands.js';

const fip: NatRule = { kind: 'fip', owner: 'f1', eip: '172.18.0.10', internalIp: '10.0.1.10' };
const dnat: NatRule = { kind: 'dnat', owner: 'd1', eip: '172.18.0.12', protocol: 'udp', externalPort: 5353, internalIp: '10.0.1.11', internalPort: 53 };
const snat: NatRule = { kind: 'snat', owner: 's1', eip: '172.18.0.13', internalCidr: '10.0.1.0/24' };
const snatAll: NatRule = { kind: 'snat', owner: 's0', eip: '172.18.0.14', internalCidr: '0.0.0.0/0' };

/** The `conntrack -D` filters of a rule, as the fake gateway keys its entries. */
const filters = (rule: NatRule) => conntrackFilters(conntrackTarget(rule)).map((f) => f.join(' '));

describe('conntrack targets of removed rules', () => {
  it('are read from the rendered rules: FIP from either of its rules (once), DNAT with protocol and port, SNAT with its CIDR (/0 has no -s)', () => {
    const rendered = [fip, dnat, snat, snatAll].flatMap((r) => renderNatRule(r));
    expect(removedConntrackTargets(rendered)).toEqual([
      { eip: fip.eip, internalIp: fip.internalIp },
      { eip: dnat.eip, internalIp: dnat.internalIp, protocol: 'udp', port: 5353 },
      { eip: snat.eip, internalCidr: '10.0.1.0/24' },
      { eip: snatAll.eip, internalCidr: '0.0.0.0/0' },
    ]);
    // Each is exactly what the rule itself would flush.
    for (const rule of [fip, dnat, snat, snatAll]) {
      expect(removedConntrackTargets(renderNatRule(rule)).flatMap(conntrackFilters)).toEqual(conntrackFilters(conntrackTarget(rule)));
    }
    // Half a FIP (a partial apply) still names the same connections.
    expect(removedConntrackTargets(renderNatRule(fip).slice(1))).toEqual([{ eip: fip.eip, internalIp: fip.internalIp }]);
  });

  it('skip a tagged rule that is not in the form natflow writes, and untagged chains', () => {
    expect(
      removedConntrackTargets([
        { chain: 'EXCLUSIVE_DNAT', spec: ['-d', 'nonsense', '-j', 'DNAT', '--to-destination', '10.0.1.1'] },
        { chain: 'SHARED_DNAT', spec: ['-d', '172.18.0.12/32', '-p', 'sctp', '--dport', '1', '-j', 'DNAT', '--to-destination', '10.0.1.1:1'] },
        { chain: 'HAIRPIN_SNAT', spec: ['-j', 'MASQUERADE'] },
      ]),
    ).toEqual([]);
  });
});

describe('applyNatRules with flushConntrack (fake gateway)', () => {
  let fake: FakeCommands;
  let nat: NatActivities;
  beforeEach(async () => {
    fake = new FakeCommands();
    nat = createNatActivities({ netns: 'gw-fake', runner: fake });
    await nat.applyNatRules({ add: [fip, dnat, snat, snatAll], removeOwners: [] });
    for (const rule of [fip, dnat, snat, snatAll]) for (const f of filters(rule)) fake.conntrack.set(f, 2);
    fake.commands.length = 0;
  });

  it('a full restore removes the rules nobody claims and then flushes their entries, leaving the kept rule\'s', async () => {
    expect(await nat.applyNatRules({ add: [snat], removeOwners: [], replaceAll: true, flushConntrack: true })).toEqual({ added: 0, removed: 4, flushed: 8 });
    // Read, restore, then the flushes: never a flush before its rule is gone.
    // Four filters: the table is listed first, then each EIP found in it is flushed.
    expect(fake.commands.map((c) => (c.cmd === 'conntrack' ? `conntrack ${c.args[0]}` : c.cmd))).toEqual(['iptables-save', 'iptables-restore', 'conntrack -C', 'conntrack -L', ...Array(4).fill('conntrack -D')]);
    expect([...fake.conntrack.keys()]).toEqual(filters(snat));
  });

  it('removing an owner by tag flushes what its rules mapped, though the caller sent no spec; a replaced rule flushes its old mapping', async () => {
    expect(await nat.applyNatRules({ add: [], removeOwners: [dnat.owner], flushConntrack: true })).toEqual({ added: 0, removed: 1, flushed: 2 });
    expect(fake.conntrack.has(filters(dnat)[0]!)).toBe(false);
    const moved: NatRule = { ...fip, internalIp: '10.0.1.20' };
    expect(await nat.applyNatRules({ add: [moved], removeOwners: [fip.owner], flushConntrack: true })).toEqual({ added: 2, removed: 2, flushed: 4 });
    expect(filters(fip).map((f) => fake.conntrack.has(f))).toEqual([false, false]);
  });

  it('a flush of many rules lists the table once and runs no `conntrack -D` for EIPs without entries', async () => {
    for (const f of [...filters(fip), ...filters(dnat)]) fake.conntrack.delete(f);
    expect(await nat.applyNatRules({ add: [], removeOwners: [fip.owner, dnat.owner, snatAll.owner], flushConntrack: true })).toEqual({ added: 0, removed: 4, flushed: 2 }); // a FIP is two rules
    expect(fake.commands.filter((c) => c.cmd === 'conntrack').map((c) => c.args.join(' '))).toEqual(['-C', '-L', ...filters(snatAll).map((f) => `-D ${f}`)]);
    expect([...fake.conntrack.keys()]).toEqual(filters(snat));
  });

  it('without flushConntrack nothing is flushed; an unchanged restore flushes nothing; a bad flag is refused before anything runs', async () => {
    expect(await nat.applyNatRules({ add: [], removeOwners: [snatAll.owner] })).toEqual({ added: 0, removed: 1 });
    expect(fake.commands.map((c) => c.cmd)).toEqual(['iptables-save', 'iptables-restore']);
    fake.commands.length = 0;
    expect(await nat.applyNatRules({ add: [fip, dnat, snat], removeOwners: [], replaceAll: true, flushConntrack: true })).toEqual({ added: 0, removed: 0, flushed: 0 });
    expect(fake.commands.map((c) => c.cmd)).toEqual(['iptables-save']);
    fake.commands.length = 0;
    await expect(nat.applyNatRules({ add: [], removeOwners: [], flushConntrack: 'yes' as never })).rejects.toThrow(/flushConntrack "yes" must be true or false/);
    expect(fake.commands).toEqual([]);
  });
});
