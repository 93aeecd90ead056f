// The audit's checks alone (pure): the kinds no real system can be brought into by hand (an address
// held twice, a binding the IPAM does not back, a status that says Ready for a workflow that is not),
// how two looks are combined, and how translated conntrack entries are read.
import { describe, expect, it } from 'vitest';
import { auditObservation, persistent, summarize, type Finding, type LiveResource, type Observation } from '../domain/audit.js';
import type { GatewayState } from '../domain/gateway.js';
import type { IpamState } from '../domain/ipam.js';
import { natAddresses } from '../domain/nat-table.js';

const SUBNET = 'ext';
const eip = (name: string, phase = 'Ready'): LiveResource => ({ kind: 'eip', name, uid: `u-${name}`, workflowId: `natflow/eip/${name}/u-${name}`, phase, fromKube: true });
const ipam = (allocations: Record<string, string>, v4usingIPs = Object.keys(allocations).length): IpamState =>
  ({ subnet: { name: SUBNET, cidrBlock: '172.18.0.0/24' }, usage: { v4usingIPs }, observedGeneration: 0, allocations }) as unknown as IpamState;
const gateway = (eips: GatewayState['eips']): GatewayState => ({ spec: { name: 'gw', externalSubnet: SUBNET }, ready: true, reason: '', agent: null, eips, rules: {}, deleting: false });
const observe = (o: Partial<Observation>): Observation => ({ resources: [], gateways: [], subnets: [], ...o });
const kindsOf = (o: Observation) => auditObservation(o).findings.map((f) => f.kind).sort();

describe('audit checks (pure)', () => {
  it('an address allocated to two owners, a usage count that is not the allocations', () => {
    const [a, b] = [eip('a'), eip('b')];
    const subnets = [{ name: SUBNET, state: ipam({ [a.workflowId]: '172.18.0.5', [b.workflowId]: '172.18.0.5' }, 7) }];
    expect(kindsOf(observe({ resources: [a, b], subnets }))).toEqual(['double-allocation', 'subnet-counters']);
  });

  it('an EIP bound on a gateway with an address the IPAM does not give it', () => {
    const a = eip('a');
    const gateways = [{ name: 'gw', state: gateway({ [a.workflowId]: { address: '172.18.0.9', prefixLength: 24 } }), reading: null }];
    const subnets = [{ name: SUBNET, state: ipam({ [a.workflowId]: '172.18.0.5' }) }];
    const { findings, unchecked } = auditObservation(observe({ resources: [a], gateways, subnets }));
    expect(findings.map((f) => f.kind)).toEqual(['unallocated-eip']);
    expect(findings[0]!.found).toContain('172.18.0.5');
    expect(unchecked.map((u) => u.what)).toEqual(['gateway gw']); // its agent gave no reading
  });

  it('Kubernetes: a Ready status for a workflow that is not Ready; a workflow on its way out is no orphan', () => {
    const waiting = eip('a', 'WaitingForGateway');
    const leaving = { ...eip('b', 'Deleting') };
    const objects = [{ kind: 'eip' as const, name: 'a', uid: waiting.uid, deleting: false, held: true, ready: true }];
    const found = auditObservation(observe({ resources: [waiting, leaving], kube: { objects, subnets: [] } })).findings;
    expect(found.map((f) => f.kind)).toEqual(['false-ready']);
    expect(found[0]!.repair).toEqual({ reassert: { workflowId: waiting.workflowId } });
  });

  it('an EIP taking its address from another subnet than its gateway’s is no finding', () => {
    const a = eip('a');
    const gateways = [{ name: 'gw', state: gateway({ [a.workflowId]: { address: '10.9.0.5', prefixLength: 24 } }), reading: null }];
    const subnets = [{ name: SUBNET, state: ipam({}) }, { name: 'other', state: ipam({ [a.workflowId]: '10.9.0.5' }) }];
    expect(kindsOf(observe({ resources: [a], gateways, subnets }))).toEqual([]);
  });

  it('what a dead workflow held is not taken while its object lives (the restarted run takes it back)', () => {
    const uidOfDead = 'u-dead';
    const owner = `natflow/eip/dead/${uidOfDead}`;
    const gateways = [{ name: 'gw', state: gateway({ [owner]: { address: '172.18.0.5', prefixLength: 24 } }), reading: null }];
    const subnets = [{ name: SUBNET, state: ipam({ [owner]: '172.18.0.5' }) }];
    const objects = [{ kind: 'eip' as const, name: 'dead', uid: uidOfDead, deleting: false, held: true, ready: true }];
    const { findings } = auditObservation(observe({ gateways, subnets, kube: { objects, subnets: [] } }));
    expect(findings.map((f) => [f.kind, Boolean(f.repair)]).sort()).toEqual([['missing-workflow', true], ['orphaned-address', false], ['orphaned-allocation', false]]);
  });

  it("an untagged rule for an EIP natflow does not forward yet is reported but not deleted; one that misroutes a forwarded EIP is", () => {
    const a = eip('a');
    const state: GatewayState = { ...gateway({ [a.workflowId]: { address: '172.18.0.5', prefixLength: 24 } }), agent: { gateway: 'gw', instanceId: 'i', startedAt: '', externalInterface: 'net1' } };
    const reading = {
      instanceId: 'i',
      externalInterface: 'net1',
      rules: [{ chain: 'EXCLUSIVE_DNAT', spec: ['-d', '172.18.0.5/32', '-j', 'DNAT', '--to-destination', '10.0.1.10'], owner: null }],
      addresses: [{ address: '172.18.0.5', prefixLength: 24, eip: true }],
      conntrack: {},
    };
    const foreign = (s: GatewayState) => auditObservation(observe({ resources: [a], gateways: [{ name: 'gw', state: s, reading }], subnets: [{ name: SUBNET, state: ipam({ [a.workflowId]: '172.18.0.5' }) }] })).findings;
    expect(foreign(state).map((f) => [f.kind, Boolean(f.repair)])).toEqual([['foreign-rule', false]]);
    const forwarded = { ...state, rules: { r1: { kind: 'fip' as const, owner: 'r1', eip: '172.18.0.5', internalIp: '10.0.1.11' } } };
    expect(foreign(forwarded).filter((f) => f.kind === 'foreign-rule').map((f) => [f.found.includes('misroutes'), Boolean(f.repair)])).toEqual([[true, true]]);
  });

  it('a report lists at most 100 findings of a kind and counts them all', () => {
    const owners = Object.fromEntries(Array.from({ length: 150 }, (_, i) => [`natflow/eip/gone/${i}`, `172.18.${Math.floor(i / 200)}.${i % 200}`]));
    const { findings } = auditObservation(observe({ subnets: [{ name: SUBNET, state: ipam(owners) }] }));
    expect(summarize(findings)).toMatchObject({ counts: { 'orphaned-allocation': 150 }, omitted: 50 });
    expect(summarize(findings).findings).toHaveLength(100);
  });

  it('counters that differ between the two looks (the bridge copying them under churn) are no finding; the same wrong ones are', () => {
    const counters = (found: string): Finding => ({ kind: 'subnet-counters', resource: 'Subnet ext status', expected: '', found, repairText: '' });
    expect(persistent([counters('v4usingIPs 3')], [counters('v4usingIPs 4')])).toEqual([]);
    expect(persistent([counters('v4usingIPs 3')], [counters('v4usingIPs 3')])).toHaveLength(1);
  });

  it('only what both looks found is reported', () => {
    const f = (resource: string, found = 'x'): Finding => ({ kind: 'leaked-rule', resource, expected: '', found, repairText: '' });
    expect(persistent([f('r1'), f('r2')], [f('r2', 'y'), f('r3')]).map((x) => x.resource)).toEqual(['r2']);
  });

  it('translated conntrack entries give the EIP side: a DNAT its original destination, an SNAT its reply destination', () => {
    const listing = [
      'icmp     1 29 src=172.18.0.1 dst=172.18.0.7 type=8 code=0 id=1 src=10.0.1.10 dst=172.18.0.1 type=0 code=0 id=1 mark=0 use=1',
      'udp      17 29 src=10.0.1.11 dst=172.18.0.1 sport=5 dport=6 [UNREPLIED] src=172.18.0.1 dst=172.18.0.8 sport=6 dport=5 mark=0 use=1',
      'tcp      6 431999 ESTABLISHED src=10.0.1.11 dst=10.0.1.10 sport=1 dport=2 src=10.0.1.10 dst=10.0.1.11 sport=2 dport=1 [ASSURED] mark=0 use=1',
      'conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.',
    ].join('\n');
    expect(natAddresses(listing)).toEqual(['172.18.0.7', '172.18.0.8']);
  });
});
