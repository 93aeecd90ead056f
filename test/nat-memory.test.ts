// The remembering gateway agent (createNatActivities({ remember: true }), what worker/agent.ts runs)
// on a fake gateway (test/support/fake-commands.ts): a change is planned from the table it keeps in
// memory, with no read, and what someone else did to the table in between is never lost or
// duplicated. test/gateway-nat.test.ts does the same on a real gateway.
import { beforeEach, describe, expect, it } from 'vitest';
import { createNatActivities, type NatActivities } from '../activities/gateway-nat.js';
import type { NatRule } from '../domain/nat-rules.js';
import { GENERATION_CHAIN, parseNatTable } from '../domain/nat-table.js';
import { FakeCommands, restoreLines } from './support/fake-commands.js';

const f1: NatRule = { kind: 'fip', owner: 'f1', eip: '172.18.0.10', internalIp: '10.0.1.10' };
const f2: NatRule = { kind: 'fip', owner: 'f2', eip: '172.18.0.11', internalIp: '10.0.1.11' };
const d1: NatRule = { kind: 'dnat', owner: 'd1', eip: '172.18.0.12', protocol: 'tcp', externalPort: 80, internalIp: '10.0.1.12', internalPort: 8080 };

let fake: FakeCommands;
let agent: NatActivities;
const remembering = (rememberForMs?: number) => createNatActivities({ runner: fake, remember: true, rememberForMs });
const commands = () => fake.commands.map((c) => c.cmd);
const expected = (...rules: NatRule[]) => restoreLines('-A', ...rules).sort();

beforeEach(async () => {
  fake = new FakeCommands();
  agent = remembering();
  await agent.initNatChains();
  fake.commands.length = 0;
});

describe('a remembering agent (fake gateway)', () => {
  it('reads once; then a change is one restore that replaces the generation, and a remove flushes what the remembered rule mapped', async () => {
    expect(await agent.applyNatRules({ add: [f1, d1], removeOwners: [] })).toEqual({ added: 3, removed: 0 });
    expect(commands()).toEqual(['iptables-restore']);
    const generation = () => parseNatTable(fake.save()).rules.filter((r) => r.chain === GENERATION_CHAIN);
    const before = generation();
    expect(before).toHaveLength(1);
    fake.conntrack.set('-d 172.18.0.12 -p tcp --dport 80', 3);
    expect(await agent.applyNatRules({ add: [f2], removeOwners: [d1.owner], flushConntrack: true })).toEqual({ added: 2, removed: 1, flushed: 3 });
    expect(commands()).toEqual(['iptables-restore', 'iptables-restore', 'conntrack']);
    expect(generation()).toHaveLength(1);
    expect(generation()).not.toEqual(before);
    expect(fake.tagged()).toEqual(expected(f1, f2));
  });

  it('a rule someone else deleted is not lost when its owner is asserted again: the agent reads', async () => {
    await agent.applyNatRules({ add: [f1, f2], removeOwners: [] });
    fake.write([restoreLines('-D', f1)[1]!]); // an operator deletes f1's SNAT rule
    fake.commands.length = 0;
    expect(await agent.applyNatRules({ add: [f1], removeOwners: [] })).toEqual({ added: 1, removed: 0 });
    expect(commands()).toEqual(['iptables-save', 'iptables-restore']);
    expect(fake.tagged()).toEqual(expected(f1, f2));
  });

  it("another agent's change in between is neither lost nor duplicated: the generation it replaced refuses the remembered plan", async () => {
    await agent.applyNatRules({ add: [f1], removeOwners: [] });
    const other = remembering();
    expect(await other.applyNatRules({ add: [f2, d1], removeOwners: [] })).toEqual({ added: 3, removed: 0 });
    fake.commands.length = 0;
    expect(await agent.applyNatRules({ add: [f2], removeOwners: [d1.owner] })).toEqual({ added: 0, removed: 1 });
    expect(commands()).toEqual(['iptables-restore', 'iptables-save', 'iptables-restore']);
    expect(fake.tagged()).toEqual(expected(f1, f2));
  });

  it('a stateless writer replaces the generation too, so it is seen', async () => {
    await agent.applyNatRules({ add: [f1], removeOwners: [] });
    await createNatActivities({ runner: fake }).applyNatRules({ add: [f2], removeOwners: [] });
    expect(await agent.applyNatRules({ add: [f2], removeOwners: [] })).toEqual({ added: 0, removed: 0 });
    expect(fake.tagged()).toEqual(expected(f1, f2));
  });

  it('an operator deleting a remembered rule makes its delete fail: nothing half-applied, the change is planned again from a read', async () => {
    await agent.applyNatRules({ add: [f1, d1], removeOwners: [] });
    fake.write(restoreLines('-D', d1));
    fake.commands.length = 0;
    expect(await agent.applyNatRules({ add: [f2], removeOwners: [f1.owner, d1.owner] })).toEqual({ added: 2, removed: 2 });
    expect(commands()).toEqual(['iptables-restore', 'iptables-save', 'iptables-restore']);
    expect(fake.tagged()).toEqual(expected(f2));
  });

  it('a flushed table (every chain emptied) is rebuilt by the next change; a foreign rule written meanwhile is kept', async () => {
    await agent.applyNatRules({ add: [f1], removeOwners: [] });
    const chains = [...parseNatTable(fake.save()).chains].filter((c) => !['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'].includes(c));
    const foreign = '-A EXCLUSIVE_DNAT -d 172.18.0.97/32 -j DNAT --to-destination 10.0.1.97';
    fake.write([...chains.map((c) => `:${c} - [0:0]`), foreign]); // declaring a chain empties it, as iptables -t nat -F would
    fake.commands.length = 0;
    expect(await agent.applyNatRules({ add: [f2], removeOwners: [f1.owner] })).toEqual({ added: 2, removed: 0 });
    expect(commands()).toEqual(['iptables-restore', 'iptables-save', 'iptables-restore']);
    expect(fake.tagged()).toEqual(expected(f2));
    expect(fake.save()).toContain(`\n${foreign}\n`);
    const clean = new FakeCommands();
    await createNatActivities({ runner: clean }).applyNatRules({ add: [f2], removeOwners: [] });
    const layout = (save: string) => save.split('\n').filter((l) => l.startsWith('-A') && !l.includes('natflow') && l !== foreign);
    expect(layout(fake.save()).sort()).toEqual(layout(clean.save()).sort());
  });

  it('a full restore, and memory older than rememberForMs, read', async () => {
    await agent.applyNatRules({ add: [f1], removeOwners: [] });
    fake.commands.length = 0;
    expect(await agent.applyNatRules({ add: [f2], removeOwners: [], replaceAll: true })).toEqual({ added: 2, removed: 2 });
    expect(commands()).toEqual(['iptables-save', 'iptables-restore']);

    const forgetful = remembering(-1);
    fake.commands.length = 0;
    await forgetful.applyNatRules({ add: [d1], removeOwners: [] });
    await forgetful.applyNatRules({ add: [f1], removeOwners: [] });
    expect(commands()).toEqual(['iptables-save', 'iptables-restore', 'iptables-save', 'iptables-restore']);
    expect(fake.tagged()).toEqual(expected(f1, f2, d1));
  });
});
