// NAT rules, pure: validation names the field and refuses anything that is not a plain address,
// CIDR, port or known word; rendering gives Kube-OVN's chain layout, tagged by owner, in
// iptables-save's own form (so that what is read back compares equal to what was rendered).
import { describe, expect, it } from 'vitest';
import { NatflowError, Reason } from '../domain/errors.js';
import { NAT_CHAINS, natChainLayout, ownerOf, renderNatRule, RULE_CHAINS, validateNatRule, type NatRule } from '../domain/nat-rules.js';
import { conntrackFilters, parseNatTable, planChange, planInit, restoreLine, tokenizeSaveLine } from '../domain/nat-table.js';

const UID = '5f0c2a7e-8d1b-4c3e-9a6f-0b1c2d3e4f5a';
const fip: NatRule = { kind: 'fip', owner: UID, eip: '172.18.0.10', internalIp: '10.0.1.10' };
const dnat: NatRule = { kind: 'dnat', owner: 'd1', eip: '172.18.0.12', protocol: 'udp', externalPort: 5353, internalIp: '10.0.1.11', internalPort: 53 };
const snat: NatRule = { kind: 'snat', owner: 's1', eip: '172.18.0.13', internalCidr: '10.0.1.0/24' };

function reasonAndMessage(fn: () => unknown): { reason: string; message: string } {
  try {
    fn();
  } catch (err) {
    if (err instanceof NatflowError) return { reason: err.reason, message: err.message };
    throw err;
  }
  throw new Error('expected a NatflowError');
}

describe('validateNatRule', () => {
  it('accepts good rules and returns a clean copy', () => {
    expect(validateNatRule(fip)).toEqual(fip);
    expect(validateNatRule(dnat)).toEqual(dnat);
    expect(validateNatRule({ ...fip, extra: 'ignored' })).toEqual(fip);
    expect(validateNatRule({ ...snat, internalCidr: '10.0.1.77/24' })).toEqual(snat);
  });

  const bad: [string, unknown, RegExp][] = [
    ['no object', null, /NAT rule null is not an object/],
    ['unknown kind', { ...fip, kind: 'nat' }, /kind "nat" must be fip, dnat or snat/],
    ['empty owner', { ...fip, owner: '' }, /fip rule owner "" must be 1-64 letters/],
    ['long owner', { ...fip, owner: 'a'.repeat(65) }, /owner "a{65}" must be 1-64/],
    ['owner with a space', { ...fip, owner: 'a b' }, /owner "a b"/],
    ['owner with $()', { ...fip, owner: '$(reboot)' }, /owner "\$\(reboot\)"/],
    ['owner with a colon', { ...fip, owner: 'a:b' }, /owner "a:b"/],
    ['eip with ;', { ...fip, eip: '172.18.0.10;reboot' }, /fip rule .*: eip "172\.18\.0\.10;reboot" is not an IPv4 address/],
    ['eip with a space', { ...fip, eip: '172.18.0.10 ' }, /eip "172\.18\.0\.10 " is not an IPv4 address/],
    ['short eip', { ...fip, eip: '172.18.10' }, /eip "172\.18\.10" is not an IPv4 address/],
    ['octet too big', { ...fip, eip: '172.18.0.300' }, /eip "172\.18\.0\.300"/],
    ['IPv6 eip', { ...fip, eip: 'fd00::1' }, /eip "fd00::1" is not an IPv4 address/],
    ['multicast eip', { ...fip, eip: '224.0.0.1' }, /eip "224\.0\.0\.1" is a multicast address/],
    ['eip as a number', { ...fip, eip: 12 }, /eip 12 is not an IPv4 address/],
    ['internalIp with |', { ...fip, internalIp: '10.0.1.10|id' }, /internalIp "10\.0\.1\.10\|id"/],
    ['internalIp with a newline', { ...fip, internalIp: '10.0.1.10\n-A x' }, /internalIp "10\.0\.1\.10\\n-A x"/],
    ['loopback internalIp', { ...fip, internalIp: '127.0.0.1' }, /internalIp "127\.0\.0\.1" is a loopback address/],
    ['protocol sctp', { ...dnat, protocol: 'sctp' }, /dnat rule d1: protocol "sctp" must be tcp or udp/],
    ['protocol with ;', { ...dnat, protocol: 'tcp;' }, /protocol "tcp;"/],
    ['protocol in capitals', { ...dnat, protocol: 'TCP' }, /protocol "TCP"/],
    ['port 0', { ...dnat, externalPort: 0 }, /externalPort 0 is not a port \(an integer from 1 to 65535\)/],
    ['port 65536', { ...dnat, internalPort: 65536 }, /internalPort 65536 is not a port/],
    ['port 1.5', { ...dnat, externalPort: 1.5 }, /externalPort 1\.5 is not a port/],
    ['port as a string', { ...dnat, externalPort: '80' }, /externalPort "80" is not a port/],
    ['port missing', { ...dnat, internalPort: undefined }, /internalPort undefined is not a port/],
    ['CIDR /33', { ...snat, internalCidr: '10.0.1.0/33' }, /snat rule s1: internalCidr "10\.0\.1\.0\/33" is not an IPv4 CIDR block/],
    ['CIDR without a prefix', { ...snat, internalCidr: '10.0.1.0' }, /internalCidr "10\.0\.1\.0" is not an IPv4 CIDR/],
    ['CIDR with a backtick', { ...snat, internalCidr: '10.0.1.0/24`id`' }, /internalCidr "10\.0\.1\.0\/24`id`"/],
    ['CIDR with a space', { ...snat, internalCidr: '10.0.1.0/24 -j ACCEPT' }, /internalCidr "10\.0\.1\.0\/24 -j ACCEPT"/],
    ['IPv6 CIDR', { ...snat, internalCidr: 'fd00::/64' }, /internalCidr "fd00::\/64"/],
  ];
  it.each(bad)('refuses %s, naming the field', (_, rule, message) => {
    const err = reasonAndMessage(() => validateNatRule(rule));
    expect(err.reason).toBe(Reason.InvalidSpec);
    expect(err.message).toMatch(message);
  });
});

describe('renderNatRule', () => {
  it('FIP: DNAT of everything to the EIP in EXCLUSIVE_DNAT, SNAT of the VM in EXCLUSIVE_SNAT, both tagged', () => {
    expect(renderNatRule(fip)).toEqual([
      { table: 'nat', chain: 'EXCLUSIVE_DNAT', spec: ['-d', '172.18.0.10/32', '-m', 'comment', '--comment', `natflow:${UID}`, '-j', 'DNAT', '--to-destination', '10.0.1.10'] },
      { table: 'nat', chain: 'EXCLUSIVE_SNAT', spec: ['-s', '10.0.1.10/32', '-m', 'comment', '--comment', `natflow:${UID}`, '-j', 'SNAT', '--to-source', '172.18.0.10'] },
    ]);
  });

  it('DNAT: one rule in SHARED_DNAT with protocol and port', () => {
    expect(renderNatRule(dnat)).toEqual([
      {
        table: 'nat',
        chain: 'SHARED_DNAT',
        spec: ['-d', '172.18.0.12/32', '-p', 'udp', '-m', 'udp', '--dport', '5353', '-m', 'comment', '--comment', 'natflow:d1', '-j', 'DNAT', '--to-destination', '10.0.1.11:53'],
      },
    ]);
  });

  it('SNAT: the chain of its prefix length, leaving through the external interface, --random-fully', () => {
    expect(renderNatRule(snat)).toEqual([
      { table: 'nat', chain: 'SHARED_SNAT_24', spec: ['-s', '10.0.1.0/24', '-o', 'net1', '-m', 'comment', '--comment', 'natflow:s1', '-j', 'SNAT', '--to-source', '172.18.0.13', '--random-fully'] },
    ]);
    expect(renderNatRule({ ...snat, internalCidr: '10.0.1.10/32' })[0]!.chain).toBe('SHARED_SNAT_32');
    expect(renderNatRule({ ...snat, internalCidr: '10.0.1.77/24' })[0]!.spec.slice(0, 2)).toEqual(['-s', '10.0.1.0/24']);
    // iptables-save prints no `-s` for 0.0.0.0/0.
    expect(renderNatRule({ ...snat, internalCidr: '0.0.0.0/0' })[0]).toMatchObject({ chain: 'SHARED_SNAT_0', spec: ['-o', 'net1', '-m', 'comment', '--comment', 'natflow:s1', '-j', 'SNAT', '--to-source', '172.18.0.13', '--random-fully'] });
    expect(renderNatRule(snat, { externalInterface: 'ext0' })[0]!.spec).toContain('ext0');
  });

  it('validates before rendering', () => {
    expect(reasonAndMessage(() => renderNatRule({ ...fip, eip: '1.2.3.4 -j ACCEPT' })).reason).toBe(Reason.InvalidSpec);
    expect(reasonAndMessage(() => renderNatRule(fip, { vpcInterface: 'eth0;x' })).message).toMatch(/vpcInterface "eth0;x" is not an interface name/);
  });

  it('every rendered rule names its owner, and only in natflow rule chains', () => {
    for (const rule of [fip, dnat, snat, { ...snat, internalCidr: '0.0.0.0/0' }] as NatRule[]) {
      for (const r of renderNatRule(rule)) {
        expect(ownerOf(r.spec)).toBe(rule.owner);
        expect(RULE_CHAINS).toContain(r.chain);
      }
    }
    expect(ownerOf(['-j', 'DNAT_FILTER'])).toBeNull();
    expect(ownerOf(['-m', 'comment', '--comment', 'kube-ovn:x'])).toBeNull();
  });
});

describe('chain layout', () => {
  it("is Kube-OVN's, with SHARED_SNAT_32 … SHARED_SNAT_0 created in descending order", () => {
    expect(NAT_CHAINS.slice(0, 6)).toEqual(['DNAT_FILTER', 'EXCLUSIVE_DNAT', 'SHARED_DNAT', 'SNAT_FILTER', 'EXCLUSIVE_SNAT', 'SHARED_SNAT']);
    expect(NAT_CHAINS.slice(6, 39)).toEqual(Array.from({ length: 33 }, (_, i) => `SHARED_SNAT_${32 - i}`));
    expect(NAT_CHAINS.at(-1)).toBe('HAIRPIN_SNAT');
    const layout = natChainLayout();
    expect(layout.staticRules.DNAT_FILTER).toEqual([['-i', 'eth0', '-j', 'MARK', '--set-xmark', '0x20000/0x20000'], ['-j', 'EXCLUSIVE_DNAT'], ['-j', 'SHARED_DNAT']]);
    expect(layout.staticRules.SNAT_FILTER).toEqual([['-j', 'EXCLUSIVE_SNAT'], ['-j', 'SHARED_SNAT'], ['-j', 'HAIRPIN_SNAT']]);
    expect(layout.staticRules.SHARED_SNAT![0]).toEqual(['-j', 'SHARED_SNAT_32']);
    expect(layout.staticRules.SHARED_SNAT!.at(-1)).toEqual(['-j', 'SHARED_SNAT_0']);
    expect(layout.entryJumps).toEqual([
      { chain: 'PREROUTING', spec: ['-j', 'DNAT_FILTER'] },
      { chain: 'POSTROUTING', spec: ['-j', 'SNAT_FILTER'] },
    ]);
  });
});

describe('planning a change (pure part of the agent)', () => {
  const layout = natChainLayout();
  const save = (lines: string[]) =>
    parseNatTable(['*nat', ':PREROUTING ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]', ...NAT_CHAINS.map((c) => `:${c} - [0:0]`), ...lines, 'COMMIT'].join('\n'));
  const initLines = () => {
    const lines: string[] = ['-A PREROUTING -j DNAT_FILTER', '-A POSTROUTING -j SNAT_FILTER'];
    for (const [chain, specs] of Object.entries(layout.staticRules)) for (const spec of specs) lines.push(restoreLine('-A', chain, spec));
    return lines;
  };
  const asSaved = (rule: NatRule) => renderNatRule(rule).map((r) => `-A ${r.chain} ${r.spec.map((a) => (a.includes(':') && !a.includes('.') ? `"${a}"` : a)).join(' ')}`);
  const desired = (...rules: NatRule[]) => rules.flatMap((r) => renderNatRule(r).map((x) => ({ owner: r.owner, chain: x.chain, spec: x.spec })));

  it('reads iptables-save quoting back', () => {
    expect(tokenizeSaveLine('-A X -m comment --comment "natflow:abc" -j DNAT')).toEqual(['-A', 'X', '-m', 'comment', '--comment', 'natflow:abc', '-j', 'DNAT']);
    expect(tokenizeSaveLine('-A X --comment "a \\"b\\" c" ""')).toEqual(['-A', 'X', '--comment', 'a "b" c', '']);
    expect(restoreLine('-D', 'X', ['--comment', 'a "b" c'])).toBe('-D X --comment "a \\"b\\" c"');
  });

  it('init on a fresh table declares every chain and writes every static rule; on a good one, nothing', () => {
    const fresh = planInit(parseNatTable('*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n'), layout);
    expect(fresh.declare).toHaveLength(NAT_CHAINS.length);
    expect(fresh.flush).toEqual([]);
    expect(fresh.rules).toHaveLength(3 + 3 + 33 + 1 + 2);
    const good = planInit(save(initLines()), layout);
    expect([...good.declare, ...good.flush, ...good.rules]).toEqual([]);
  });

  it('init repairs a static chain in the wrong order and removes a duplicate jump', () => {
    const lines = initLines().filter((l) => !l.startsWith('-A SNAT_FILTER'));
    lines.push('-A SNAT_FILTER -j SHARED_SNAT', '-A SNAT_FILTER -j EXCLUSIVE_SNAT', '-A SNAT_FILTER -j HAIRPIN_SNAT', '-A PREROUTING -j DNAT_FILTER');
    const plan = planInit(save(lines), layout);
    expect(plan.declare).toEqual([]);
    expect(plan.flush).toEqual(['-F SNAT_FILTER']);
    expect(plan.rules).toEqual(['-A SNAT_FILTER -j EXCLUSIVE_SNAT', '-A SNAT_FILTER -j SHARED_SNAT', '-A SNAT_FILTER -j HAIRPIN_SNAT', '-D PREROUTING -j DNAT_FILTER']);
  });

  it('adds what is missing, deletes by tag, keeps what is right, and removes duplicates', () => {
    const moved: NatRule = { ...fip, internalIp: '10.0.1.11' };
    const table = save([...initLines(), ...asSaved(fip), ...asSaved(dnat), ...asSaved(dnat), ...asSaved(snat)]);
    const init = planInit(table, layout);
    // FIP moved to another VM; DNAT duplicated; SNAT owner removed.
    const plan = planChange(table, init, desired(moved, dnat), { removeOwners: ['s1', 'unknown-owner'] });
    expect(plan).toEqual({
      added: 2,
      removed: 4,
      lines: [
        `-D EXCLUSIVE_DNAT -d 172.18.0.10/32 -m comment --comment natflow:${UID} -j DNAT --to-destination 10.0.1.10`,
        `-D EXCLUSIVE_SNAT -s 10.0.1.10/32 -m comment --comment natflow:${UID} -j SNAT --to-source 172.18.0.10`,
        '-D SHARED_DNAT -d 172.18.0.12/32 -p udp -m udp --dport 5353 -m comment --comment natflow:d1 -j DNAT --to-destination 10.0.1.11:53',
        '-D SHARED_SNAT_24 -s 10.0.1.0/24 -o net1 -m comment --comment natflow:s1 -j SNAT --to-source 172.18.0.13 --random-fully',
        `-A EXCLUSIVE_DNAT -d 172.18.0.10/32 -m comment --comment natflow:${UID} -j DNAT --to-destination 10.0.1.11`,
        `-A EXCLUSIVE_SNAT -s 10.0.1.11/32 -m comment --comment natflow:${UID} -j SNAT --to-source 172.18.0.10`,
      ],
    });
    // An owner both added and removed (a changed rule) is replaced, not removed.
    expect(planChange(table, init, desired(fip), { removeOwners: [UID] })).toMatchObject({ added: 0, removed: 0, lines: [] });
    // replaceAll: everything of owners not added goes.
    expect(planChange(table, init, desired(fip), { removeOwners: [], replaceAll: true })).toMatchObject({ added: 0, removed: 3 });
  });
});

describe('conntrack filters', () => {
  it('FIP: inbound to the EIP and outbound as the EIP; DNAT: inbound with port only; SNAT: outbound from the CIDR only', () => {
    expect(conntrackFilters({ eip: '172.18.0.10', internalIp: '10.0.1.10' })).toEqual([
      ['-d', '172.18.0.10'],
      ['-q', '172.18.0.10', '-s', '10.0.1.10'],
    ]);
    expect(conntrackFilters({ eip: '172.18.0.12', internalIp: '10.0.1.11', protocol: 'tcp', port: 8080 })).toEqual([['-d', '172.18.0.12', '-p', 'tcp', '--dport', '8080']]);
    expect(conntrackFilters({ eip: '172.18.0.13', internalCidr: '10.0.1.0/24' })).toEqual([['-q', '172.18.0.13', '-s', '10.0.1.0/24']]);
    expect(conntrackFilters({ eip: '172.18.0.13', internalCidr: '0.0.0.0/0' })).toEqual([['-q', '172.18.0.13']]);
  });
});
