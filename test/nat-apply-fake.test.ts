// The gateway agent's NAT activities driven through a fake gateway (test/support/fake-commands.ts):
// which commands run, what each iptables-restore says, and what the nat table becomes, with no
// namespace. test/gateway-nat.test.ts does the same on a real gateway with traffic.
import { beforeEach, describe, expect, it } from 'vitest';
import type { CommandRunner } from '../activities/exec.js';
import { createNatActivities, type NatActivities } from '../activities/gateway-nat.js';
import { conntrackTarget, NAT_CHAINS, natChainLayout, type NatRule } from '../domain/nat-rules.js';
import { gatewayLayout, parseNatTable, placedChain, restoreLine } from '../domain/nat-table.js';
import { FakeCommands, restoreLines } from './support/fake-commands.js';

const GW = 'gw-fake';
const fip: NatRule = { kind: 'fip', owner: 'f1', eip: '172.18.0.10', internalIp: '10.0.1.10' };
const dnat: NatRule = { kind: 'dnat', owner: 'd1', eip: '172.18.0.12', protocol: 'udp', externalPort: 5353, internalIp: '10.0.1.11', internalPort: 53 };
const snat: NatRule = { kind: 'snat', owner: 's1', eip: '172.18.0.13', internalCidr: '10.0.1.0/24' };

let fake: FakeCommands;
let nat: NatActivities;

beforeEach(() => {
  fake = new FakeCommands();
  nat = createNatActivities({ netns: GW, runner: fake });
});

/** What each iptables-restore was given, between `*nat` and `COMMIT`. */
const restores = () => fake.commands.filter((c) => c.cmd === 'iptables-restore').map((c) => c.input!.split('\n').slice(1, -2));
const settled = async (...rules: NatRule[]) => {
  await nat.applyNatRules({ add: rules, removeOwners: [] });
  fake.commands.length = 0;
};

describe('NAT activities on a fake gateway', () => {
  it('init on an empty table writes the whole layout in one restore, in the namespace; a second init only reads', async () => {
    await nat.initNatChains();
    expect(fake.commands.map((c) => `${c.netns} ${c.cmd} ${c.args.join(' ')}`)).toEqual([`${GW} iptables-save -t nat`, `${GW} iptables-restore --noflush -w 10`]);
    const layout = gatewayLayout(natChainLayout());
    expect(restores()).toEqual([
      [
        ...layout.chains.map((c) => `:${c} - [0:0]`),
        ...Object.entries(layout.staticRules).flatMap(([chain, specs]) => specs.map((spec) => restoreLine('-A', chain, spec))),
        '-A PREROUTING -j DNAT_FILTER',
        '-A POSTROUTING -j SNAT_FILTER',
        // Each chain of one rule per FIP or DNAT rule jumps to its 64 buckets.
        ...['EXCLUSIVE_DNAT', 'SHARED_DNAT', 'EXCLUSIVE_SNAT'].flatMap((c) => Array.from({ length: 64 }, (_, b) => `-A ${c} -j ${c}_${String(b).padStart(2, '0')}`)),
      ],
    ]);
    const table = fake.save();
    expect(parseNatTable(table).chains).toEqual(new Set(['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING', ...NAT_CHAINS, ...layout.chains]));
    expect(layout.chains).toHaveLength(NAT_CHAINS.length + 3 * 64);

    fake.commands.length = 0;
    await nat.initNatChains();
    expect(fake.commands.map((c) => c.cmd)).toEqual(['iptables-save']);
    expect(fake.save()).toBe(table);
  });

  it('apply adds exactly the rendered rules in one restore; the same apply again writes nothing', async () => {
    await nat.initNatChains();
    fake.commands.length = 0;
    expect(await nat.applyNatRules({ add: [fip, dnat, snat], removeOwners: [] })).toEqual({ added: 4, removed: 0 });
    expect(restores()).toEqual([restoreLines('-A', fip, dnat, snat)]);
    expect(fake.tagged()).toEqual(restoreLines('-A', fip, dnat, snat).sort());

    fake.commands.length = 0;
    expect(await nat.applyNatRules({ add: [fip, dnat, snat], removeOwners: [] })).toEqual({ added: 0, removed: 0 });
    expect(fake.commands.map((c) => c.cmd)).toEqual(['iptables-save']);
  });

  it("replacing an owner deletes its old rules and appends its new ones in one restore, leaving the others' alone", async () => {
    await settled(fip, dnat);
    const moved: NatRule = { ...fip, internalIp: '10.0.1.20' };
    expect(await nat.applyNatRules({ add: [moved], removeOwners: [fip.owner] })).toEqual({ added: 2, removed: 2 });
    expect(restores()).toEqual([[...restoreLines('-D', fip), ...restoreLines('-A', moved)]]);
    expect(fake.tagged()).toEqual(restoreLines('-A', moved, dnat).sort());
  });

  it('removeOwners deletes the rules of those owners only; an unknown owner writes nothing', async () => {
    await settled(fip, dnat, snat);
    expect(await nat.applyNatRules({ add: [], removeOwners: [dnat.owner, 'never-seen'] })).toEqual({ added: 0, removed: 1 });
    expect(restores()).toEqual([restoreLines('-D', dnat)]);
    expect(fake.tagged()).toEqual(restoreLines('-A', fip, snat).sort());

    fake.commands.length = 0;
    expect(await nat.applyNatRules({ add: [], removeOwners: ['never-seen'] })).toEqual({ added: 0, removed: 0 });
    expect(restores()).toEqual([]);
  });

  it('replaceAll removes every other tagged owner, wherever its rule is, and leaves untagged rules', async () => {
    await settled(fip, dnat);
    const foreign = '-A EXCLUSIVE_DNAT -d 172.18.0.97/32 -j DNAT --to-destination 10.0.1.97';
    const stray = '-A PREROUTING -d 172.18.0.98/32 -m comment --comment natflow:stray -j DNAT --to-destination 10.0.1.98';
    fake.write([foreign, stray]);
    expect(await nat.applyNatRules({ add: [snat], removeOwners: [], replaceAll: true })).toEqual({ added: 1, removed: 4 });
    expect(restores()).toEqual([[stray.replace('-A', '-D'), ...restoreLines('-D', fip, dnat), ...restoreLines('-A', snat)]]);
    expect(fake.tagged()).toEqual(restoreLines('-A', snat));
    expect(fake.save()).toContain(`\n${foreign}\n`);
  });

  it('converges from a partial state to the table a clean apply makes, in one restore', async () => {
    // Half of a first apply: two chains, a wrong static chain, the FIP's DNAT rule and no SNAT.
    const [fipDnat] = restoreLines('-A', fip);
    const bucket = placedChain('EXCLUSIVE_DNAT', fip.owner);
    fake = new FakeCommands(
      ['*nat', ':PREROUTING ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]', ':DNAT_FILTER - [0:0]', ':EXCLUSIVE_DNAT - [0:0]', `:${bucket} - [0:0]`, '-A PREROUTING -j DNAT_FILTER', '-A DNAT_FILTER -j EXCLUSIVE_DNAT', fipDnat!, 'COMMIT'].join('\n'),
    );
    nat = createNatActivities({ netns: GW, runner: fake });
    expect(await nat.applyNatRules({ add: [fip, snat], removeOwners: [] })).toEqual({ added: 2, removed: 0 });
    expect(restores()).toHaveLength(1);

    const clean = new FakeCommands();
    await createNatActivities({ runner: clean }).applyNatRules({ add: [fip, snat], removeOwners: [] });
    expect(fake.save()).toBe(clean.save());
  });

  it('a duplicated tagged rule is deleted once, and its first copy kept', async () => {
    await settled(dnat);
    fake.write(restoreLines('-A', dnat));
    expect(await nat.applyNatRules({ add: [dnat], removeOwners: [] })).toEqual({ added: 0, removed: 1 });
    expect(restores()).toEqual([restoreLines('-D', dnat)]);
    expect(fake.tagged()).toEqual(restoreLines('-A', dnat));
  });

  it('bad input is refused as one InvalidSpec naming every problem, and runs no command', async () => {
    const refused = (p: Promise<unknown>) => p.then(() => expect.fail('accepted'), (err: unknown) => err);
    expect(await refused(nat.applyNatRules({ add: [fip, { ...dnat, protocol: 'sctp' } as never], removeOwners: ['a b'], replaceAll: 'yes' as never }))).toMatchObject({
      type: 'InvalidSpec',
      nonRetryable: true,
      message: 'dnat rule d1: protocol "sctp" must be tcp or udp; removeOwners entry "a b" must be 1-64 letters, digits or \'-\' (a Kubernetes uid); replaceAll "yes" must be true or false',
    });
    expect(await refused(nat.applyNatRules('everything' as never))).toMatchObject({ type: 'InvalidSpec', message: expect.stringMatching(/must be an object/) });
    expect(await refused(nat.flushConntrack([{ eip: '172.18.0.10', port: 80 }, { eip: '172.18.0.10 -F' }]))).toMatchObject({
      type: 'InvalidSpec',
      nonRetryable: true,
      message: 'conntrack target 172.18.0.10: a port needs a protocol; conntrack target eip "172.18.0.10 -F" is not an IPv4 address (a.b.c.d)',
    });
    expect(fake.commands).toEqual([]);
  });

  it('a failed restore applies nothing and its error names the failing line; the retry converges', async () => {
    await settled(fip, dnat);
    // Another writer deletes the DNAT rule between this change's read and its restore.
    const racing: CommandRunner = {
      async run(cmd, args, opts) {
        const result = await fake.run(cmd, args, opts);
        if (cmd === 'iptables-save') fake.write(restoreLines('-D', dnat));
        return result;
      },
    };
    const before = restoreLines('-A', fip).sort();
    await expect(createNatActivities({ netns: GW, runner: racing }).applyNatRules({ add: [], removeOwners: [fip.owner, dnat.owner] })).rejects.toThrow(
      `ip netns exec ${GW} iptables-restore --noflush -w 10 exited with code 1: iptables-restore: line 4 failed: Bad rule (does a matching rule exist in that chain?). [line 4: ${restoreLines('-D', dnat)[0]}]`,
    );
    expect(restores()).toEqual([restoreLines('-D', fip, dnat)]);
    expect(fake.tagged()).toEqual(before);

    expect(await nat.applyNatRules({ add: [], removeOwners: [fip.owner, dnat.owner] })).toEqual({ added: 0, removed: 2 });
    expect(fake.tagged()).toEqual([]);
  });

  it("conntrack: each kind's own filters, in the namespace; entries counted, none left is not an error", async () => {
    fake.conntrack.set('-d 172.18.0.10', 3).set('-q 172.18.0.10 -s 10.0.1.10', 2).set('-d 172.18.0.12 -p udp --dport 5353', 1).set('-q 172.18.0.13 -s 10.0.1.0/24', 4);
    // A filter of another rule on the same EIP is never used: these entries stay.
    fake.conntrack.set('-q 172.18.0.12', 7);
    expect(await nat.flushConntrack([fip, dnat, snat].map(conntrackTarget))).toBe(10);
    // Four filters: the table is listed first (every EIP here has entries, so each filter runs).
    expect(fake.commands.map((c) => `${c.netns} ${c.cmd} ${c.args.join(' ')}`)).toEqual([
      `${GW} conntrack -C`,
      `${GW} conntrack -L`,
      `${GW} conntrack -D -d 172.18.0.10`,
      `${GW} conntrack -D -q 172.18.0.10 -s 10.0.1.10`,
      `${GW} conntrack -D -d 172.18.0.12 -p udp --dport 5353`,
      `${GW} conntrack -D -q 172.18.0.13 -s 10.0.1.0/24`,
    ]);
    expect(await nat.flushConntrack([fip, dnat, snat].map(conntrackTarget))).toBe(0);
    expect([...fake.conntrack]).toEqual([['-q 172.18.0.12', 7]]);
  });
});
