// Bad input (issue 11, R3), property-based with fast-check on the whole stack: a real
// kube-apiserver with natflow's CRDs, the bridge, the dev server, the control worker and a lab
// gateway (gwbad) with its agent. Every named class below generates malformed objects of one kind
// (IptablesEIP, IptablesFIPRule, IptablesDnatRule, IptablesSnatRule, VpcNatGateway, Subnet) and one
// field: bad addresses, CIDRs, ports, protocols and names, shell metacharacters, newlines, unicode,
// huge values, wrong types, empty and missing fields, references to EIPs and gateways that do not
// exist or are not usable, conflicts with what valid objects hold, a spoofed status.
//
// One property run is one batch: an object of every class, written through the API. Each one is
// either refused by the apiserver with a message naming its field, or accepted and then shows a
// Ready condition that is False, with the class's reason and a message — never Ready, its workflow
// running without a failing workflow task. Meanwhile nothing is applied, allocated or leaked: the
// gateway's natflow rules and EIP addresses and the external subnet's IPAM allocations are exactly
// those of the valid objects set up first. Deleting the batch leaves no object (no stuck finalizer),
// no running workflow and the same rules, addresses and allocations.
//
// The client path (`createResource`, what the CLI calls) gets the same classes without the CRDs in
// front: a thrown error naming the field, or a workflow whose status condition says what is wrong,
// and again nothing applied or allocated.
//
// Deterministic: a fixed seed (NATFLOW_BAD_INPUT_SEED overrides it), printed on failure; no
// shrinking (one run is a whole batch on a real stack), the first failing batch is reported.
import fc from 'fast-check';
import { ApiException } from '@kubernetes/client-node';
import { WorkflowNotFoundError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crd, KUBEOVN_API_VERSION, KUBEOVN_KINDS, type KubeKind } from '../domain/kube.js';
import { workflowIds, type ResourceKind } from '../domain/names.js';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import { statusQuery } from '../domain/workflow-api.js';
import { KubeBridge } from '../starter/bridge.js';
import { createResource, subnetState } from '../starter/resources.js';
import { applyExampleNetwork, ensureKubeBinaries, startKube, type KubeEnv, type KubeovnObject } from './support/kube.js';
import { startStack, type Stack } from './support/stack.js';
import { eventually } from './support/workflows.js';

const GW = 'gwbad';
const SEED = Number(process.env.NATFLOW_BAD_INPUT_SEED ?? 1_111_011);
/** Batches through the API, and through the client. */
const KUBE_RUNS = 2;
const CLI_RUNS = 2;
const MIN_CLASSES = 40;
/** How long an accepted object may take to show its condition, and a deleted one to disappear. */
const SETTLE_MS = 60_000;
const GONE_MS = 60_000;

// --- the valid objects every batch is measured against ------------------------------------------

const OK = {
  fipEip: 'ok-eip-fip', // held by the FIP ok-fip alone
  sharedEip: 'ok-eip-shared', // shared by the DNAT ok-dnat (tcp 8080) and the SNAT ok-snat
  freeEip: 'ok-eip-free', // ready, nobody uses it: bad rules on it get as far as the gateway
  // One more free EIP for each class of rule the gateway itself refuses (see the note on CLASSES).
  freeEips: { fipOutside: 'ok-eip-free-2', fipEdge: 'ok-eip-free-3', dnatOutside: 'ok-eip-free-4', snatOutside: 'ok-eip-free-5' },
  addresses: { fip: '172.18.0.200', shared: '172.18.0.201', free: '172.18.0.202', free2: '172.18.0.203', free3: '172.18.0.204', free4: '172.18.0.205', free5: '172.18.0.206' },
  dnatPort: '8080',
};

// Placeholders a generated spec may hold, replaced when its batch is written.
const REF_PORT = '@@port'; // an external port of its own (a bad DNAT must not collide with another by accident)
const REF_NOGW_EIP = '@@eip-on-missing-gateway'; // this batch's EIP whose gateway does not exist
const REF_BAD_GW = '@@bad-gateway'; // this batch's VpcNatGateway without an agent (bad lanIp)

// --- the classes of bad input -------------------------------------------------------------------

type Outcome = 'refused' | 'condition' | 'refused-or-condition';
interface Bad {
  spec: unknown; // undefined: no spec at all
  name?: string; // a generated (bad) object name; otherwise the batch names it
  status?: unknown; // a status written with the create (ignored by the apiserver: subresource)
}
interface BadClass {
  name: string;
  kind: KubeKind;
  /** What the apiserver's refusal must name: `spec.v4ip`, `metadata.name`, `spec`. */
  field: string;
  outcome: Outcome;
  /** The reasons an accepted object's Ready condition may settle on (InvalidSpec when unset). */
  reasons?: string[];
  /** What that condition's message must say. */
  message?: RegExp;
  /** false: bad only in Kubernetes' terms (schema, references to this batch's objects), not for the client. */
  cli?: boolean;
  gen: fc.Arbitrary<Bad>;
}

const octet = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'));
const ipv6 = fc.ipV6().filter((a) => !a.includes('.')); // not an IPv4-mapped form either
/** A unicast address outside the lab's VPC subnet 10.0.1.0/24 and outside 172.18.0.0/24. */
const unicastElsewhere = fc
  .tuple(fc.integer({ min: 1, max: 223 }), octet, octet, fc.integer({ min: 1, max: 254 }))
  .filter(([a, b, c]) => a !== 127 && !(a === 10 && b === 0 && c === 1) && !(a === 172 && b === 18 && c === 0))
  .map((o) => o.join('.'));
const validName = fc.stringMatching(/^[a-z][a-z0-9-]{0,24}[a-z0-9]$/);
const metachar = fc.constantFrom(';', '|', '&&', '$(', '`', '>', '<', "'", '"', '\\', '*', '?', '{', '}', '!', '#', '~', ' ', '\t', '\n', '\r\n', '\u0000');
const command = fc.constantFrom('reboot', 'rm -rf /', 'iptables -t nat -F', 'id)', '');
const shellTail = fc.tuple(metachar, command).map(([m, c]) => m + c);
const whitespace = fc.constantFrom(' ', '\t', '\n', '\r\n', '\u00a0', '\u200b', '\ufeff');
const unicode = fc.constantFrom('ｇｗ', 'é', '\u200b', '\u202e', '١', '🔥', 'ß', 'İ', 'Ω', '\ufeff', 'ǅ', '١٠');
const insertAnywhere = (s: string, extra: fc.Arbitrary<string>) => fc.tuple(fc.nat({ max: s.length }), extra).map(([i, x]) => s.slice(0, i) + x + s.slice(i));
/** Names no Kubernetes object (and so no natflow resource) may have. */
const badName = fc.oneof(
  validName.map((n) => n.toUpperCase()),
  validName.map((n) => `${n[0]}_${n.slice(1)}`),
  validName.map((n) => `-${n}`),
  validName.map((n) => `${n}.`),
  fc.tuple(validName, validName).map(([a, b]) => `${a}..${b}`),
  fc.tuple(validName, validName).map(([a, b]) => `${a}/${b}`),
  fc.tuple(validName, shellTail).map(([n, t]) => n + t),
  validName.chain((n) => insertAnywhere(n, unicode)),
  validName.chain((n) => insertAnywhere(n, whitespace)),
);
const tooLongName = fc.integer({ min: 254, max: 600 }).map((n) => 'a'.repeat(n));
/** Anything that is not a string, for a string field. */
const notAString = fc.oneof(fc.constantFrom<unknown>(0, false, true, -1, 1.5, 8080, [], {}), fc.array(fc.string({ maxLength: 5 }), { minLength: 1, maxLength: 4 }), fc.dictionary(fc.string({ minLength: 1, maxLength: 4 }), fc.integer()));

const eipSpec = (over: Record<string, unknown>) => ({ natGwDp: GW, ...over });
const fipSpec = (over: Record<string, unknown>) => ({ eip: OK.freeEip, internalIp: '10.0.1.10', ...over });
const dnatSpec = (over: Record<string, unknown>) => ({ eip: OK.sharedEip, protocol: 'tcp', externalPort: REF_PORT, internalIp: '10.0.1.11', internalPort: '80', ...over });
const snatSpec = (over: Record<string, unknown>) => ({ eip: OK.sharedEip, internalCIDR: '10.0.1.0/24', ...over });
const specOf = { eip: eipSpec, fip: fipSpec, dnat: dnatSpec, snat: snatSpec } as const;
const REQUIRED = { eip: ['natGwDp'], fip: ['eip', 'internalIp'], dnat: ['eip', 'protocol', 'externalPort', 'internalIp', 'internalPort'], snat: ['eip', 'internalCIDR'] } as const;
const without = (spec: Record<string, unknown>, field: string) => Object.fromEntries(Object.entries(spec).filter(([k]) => k !== field));

const spec = <T>(arb: fc.Arbitrary<T>, build: (v: T) => unknown): fc.Arbitrary<Bad> => arb.map((v) => ({ spec: build(v) }));
const resourceKind = fc.constantFrom<ResourceKind>('eip', 'fip', 'dnat', 'snat');
/** Bad addresses for an IPv4 field (every one refused by the CRD, and by natflow's own check). */
const badOctets = fc.tuple(octet, octet, octet, fc.integer({ min: 256, max: 99_999 }), fc.nat({ max: 3 })).map(([a, b, c, big, at]) => {
  const parts = [a, b, c, big];
  [parts[3], parts[at]] = [parts[at]!, parts[3]!];
  return parts.join('.');
});
const notAnAddress = fc.oneof(
  fc.tuple(octet, octet, octet).map((o) => o.join('.')), // three octets
  fc.tuple(octet, octet, octet, octet, octet).map((o) => o.join('.')), // five
  fc.tuple(octet, octet, octet, fc.integer({ min: 1, max: 99 })).map(([a, b, c, d]) => `${a}.${b}.${c}.0${d}`), // leading zero
  fc.stringMatching(/^[a-z][a-z-]{0,15}$/), // a word
  fc.integer({ min: 0, max: 0xffffffff }).map(String), // a bare integer
  fc.integer({ min: 0, max: 0xffffffff }).map((n) => `0x${n.toString(16)}`), // hex
);

// Rules that pass every check of their own and are refused by the gateway (outside its VPC subnet,
// a port already forwarded) each get an EIP no other bad rule claims: two such rules on one EIP
// wake each other (each one's give-back of its claim is a change of the EIP the other waits for),
// and retry after a pause that grows with each refusal (workflows/nat-rule.ts, found by this test;
// convergence.test.ts shows it). A retry passes through Claiming and Applying, which this test
// would read as a flapping condition.
const CLASSES: BadClass[] = [
  // IptablesEIP
  { name: 'eip.v4ip.octet-out-of-range', kind: 'eip', field: 'spec.v4ip', outcome: 'refused', gen: spec(badOctets, (v4ip) => eipSpec({ v4ip })) },
  { name: 'eip.v4ip.not-an-address', kind: 'eip', field: 'spec.v4ip', outcome: 'refused', gen: spec(notAnAddress, (v4ip) => eipSpec({ v4ip })) },
  { name: 'eip.v4ip.ipv6', kind: 'eip', field: 'spec.v4ip', outcome: 'refused', gen: spec(ipv6, (v4ip) => eipSpec({ v4ip })) },
  { name: 'eip.v4ip.shell-metacharacters', kind: 'eip', field: 'spec.v4ip', outcome: 'refused', gen: spec(fc.tuple(fc.integer({ min: 2, max: 250 }), shellTail), ([d, t]) => eipSpec({ v4ip: `172.18.0.${d}${t}` })) },
  { name: 'eip.v4ip.whitespace-or-newline', kind: 'eip', field: 'spec.v4ip', outcome: 'refused', gen: spec(fc.tuple(fc.integer({ min: 2, max: 250 }), whitespace, fc.boolean()), ([d, w, before]) => eipSpec({ v4ip: before ? `${w}172.18.0.${d}` : `172.18.0.${d}${w}` })) },
  { name: 'eip.v4ip.cidr-notation', kind: 'eip', field: 'spec.v4ip', outcome: 'refused', gen: spec(fc.tuple(fc.integer({ min: 2, max: 250 }), fc.integer({ min: 0, max: 32 })), ([d, p]) => eipSpec({ v4ip: `172.18.0.${d}/${p}` })) },
  { name: 'eip.v4ip.outside-subnet', kind: 'eip', field: 'spec.v4ip', outcome: 'condition', reasons: ['AddressOutOfRange'], message: /is outside subnet/, gen: spec(fc.oneof(ipv4.filter((a) => !a.startsWith('172.18.0.')), fc.constantFrom('0.0.0.0', '255.255.255.255', '224.0.0.1', '127.0.0.1')), (v4ip) => eipSpec({ v4ip })) },
  { name: 'eip.v4ip.reserved-in-subnet', kind: 'eip', field: 'spec.v4ip', outcome: 'condition', reasons: ['AddressReserved', 'AddressOutOfRange'], gen: spec(fc.constantFrom('172.18.0.0', '172.18.0.1', '172.18.0.254', '172.18.0.255'), (v4ip) => eipSpec({ v4ip })) },
  { name: 'eip.v4ip.taken-by-a-valid-eip', kind: 'eip', field: 'spec.v4ip', outcome: 'condition', reasons: ['AddressTaken'], message: /already allocated/, gen: spec(fc.constantFrom(...Object.values(OK.addresses)), (v4ip) => eipSpec({ v4ip })) },
  { name: 'eip.v4ip.dual-stack-pair', kind: 'eip', field: 'spec.v4ip', outcome: 'condition', message: /spec\.v4ip/, gen: spec(fc.tuple(fc.integer({ min: 2, max: 250 }), ipv6, fc.boolean()), ([d, v6, v6first]) => eipSpec({ v4ip: v6first ? `${v6},172.18.0.${d}` : `172.18.0.${d},${v6}` })) },
  { name: 'eip.v6ip.any-or-huge', kind: 'eip', field: 'spec.v6ip', outcome: 'condition', message: /spec\.v6ip/, gen: spec(fc.oneof(ipv6, fc.string({ minLength: 1, maxLength: 40 }), fc.integer({ min: 10_000, max: 200_000 }).map((n) => 'f'.repeat(n))), (v6ip) => eipSpec({ v6ip })) },
  { name: 'eip.natGwDp.missing-or-empty', kind: 'eip', field: 'spec.natGwDp', outcome: 'condition', message: /spec\.natGwDp is required/, gen: spec(fc.constantFrom('missing', 'empty', 'no-spec-fields'), (how) => (how === 'missing' ? { v4ip: '' } : how === 'empty' ? { natGwDp: '' } : {})) },
  { name: 'eip.natGwDp.misspelled-key', kind: 'eip', field: 'spec.natGwDp', outcome: 'condition', message: /spec\.natGwDp is required/, cli: true, gen: spec(fc.constantFrom('natGWDp', 'natgwdp', 'nat_gw_dp', 'natGwDP', 'gateway', 'natGwDp '), (key) => ({ [key]: GW })) },
  { name: 'eip.natGwDp.invalid-name', kind: 'eip', field: 'spec.natGwDp', outcome: 'refused', gen: spec(badName, (natGwDp) => eipSpec({ natGwDp })) },
  { name: 'eip.natGwDp.too-long', kind: 'eip', field: 'spec.natGwDp', outcome: 'refused', gen: spec(tooLongName, (natGwDp) => eipSpec({ natGwDp })) },
  { name: 'eip.natGwDp.missing-gateway', kind: 'eip', field: 'spec.natGwDp', outcome: 'condition', reasons: ['GatewayNotFound'], message: /does not exist/, gen: spec(validName, (n) => eipSpec({ natGwDp: `nogw-${n}` })) },
  { name: 'eip.natGwDp.gateway-without-agent', kind: 'eip', field: 'spec.natGwDp', outcome: 'condition', reasons: ['GatewayNotReady', 'GatewayNotFound'], cli: false, gen: fc.constant({ spec: eipSpec({ natGwDp: REF_BAD_GW }) }) },
  { name: 'eip.externalSubnet.invalid-name', kind: 'eip', field: 'spec.externalSubnet', outcome: 'refused', gen: spec(fc.oneof(badName, tooLongName), (externalSubnet) => eipSpec({ externalSubnet })) },
  { name: 'eip.externalSubnet.missing-or-not-external', kind: 'eip', field: 'spec.externalSubnet', outcome: 'condition', reasons: ['SubnetNotFound'], message: /does not exist/, gen: spec(fc.oneof(validName.map((n) => `nosubnet-${n}`), fc.constant('vpc1-subnet1')), (externalSubnet) => eipSpec({ externalSubnet })) },
  { name: 'eip.field.wrong-type', kind: 'eip', field: 'spec.*', outcome: 'refused', gen: fc.tuple(fc.constantFrom('natGwDp', 'v4ip', 'v6ip', 'externalSubnet', 'macAddress', 'qosPolicy'), notAString).map(([f, v]) => ({ spec: eipSpec({ [f]: v }) })) },
  { name: 'eip.spec.not-an-object', kind: 'eip', field: 'spec', outcome: 'refused', gen: spec(fc.oneof(fc.string({ maxLength: 10 }), fc.array(fc.constant(GW), { maxLength: 3 }), fc.integer(), fc.boolean()), (s) => s) },
  { name: 'eip.spec.absent', kind: 'eip', field: 'spec', outcome: 'condition', message: /spec\.natGwDp is required/, gen: fc.constant({ spec: undefined }) },
  // Any resource kind
  { name: 'any.metadata.name.invalid', kind: 'eip', field: 'metadata.name', outcome: 'refused', gen: fc.tuple(fc.oneof(badName, tooLongName), resourceKind).map(([name, kind]) => ({ name, spec: { kind } })) },
  { name: 'any.required-field.null', kind: 'eip', field: 'spec.*', outcome: 'refused-or-condition', gen: resourceKind.chain((kind) => fc.constantFrom(...REQUIRED[kind]).map((f) => ({ spec: { kind, field: f } }))) },
  { name: 'any.status.spoofed-ready', kind: 'fip', field: 'status', outcome: 'condition', reasons: ['EipNotFound'], gen: validName.map((n) => ({ spec: fipSpec({ eip: `noeip-${n}` }), status: { ready: true, phase: 'Ready', v4ip: OK.addresses.free, natGwDp: GW, conditions: [{ type: 'Ready', status: 'True', reason: 'Ready', message: 'spoofed', lastUpdateTime: '2026-01-01T00:00:00Z', lastTransitionTime: '2026-01-01T00:00:00Z' }] } })) },
  // IptablesFIPRule
  { name: 'fip.eip.missing-reference', kind: 'fip', field: 'spec.eip', outcome: 'condition', reasons: ['EipNotFound'], message: /does not exist/, gen: spec(validName, (n) => fipSpec({ eip: `noeip-${n}` })) },
  { name: 'fip.eip.empty-or-missing', kind: 'fip', field: 'spec.eip', outcome: 'condition', message: /spec\.eip/, gen: spec(fc.boolean(), (missing) => (missing ? without(fipSpec({}), 'eip') : fipSpec({ eip: '' }))) },
  { name: 'fip.eip.invalid-name', kind: 'fip', field: 'spec.eip', outcome: 'refused', gen: spec(fc.oneof(badName, tooLongName), (eip) => fipSpec({ eip })) },
  { name: 'fip.eip.not-ready', kind: 'fip', field: 'spec.eip', outcome: 'condition', reasons: ['EipNotReady'], cli: false, gen: fc.constant({ spec: fipSpec({ eip: REF_NOGW_EIP }) }) },
  { name: 'fip.eip.in-use', kind: 'fip', field: 'spec.eip', outcome: 'condition', reasons: ['EipInUse'], message: /already used by/, gen: spec(fc.constantFrom(OK.fipEip, OK.sharedEip), (eip) => fipSpec({ eip })) },
  { name: 'fip.internalIp.not-an-address', kind: 'fip', field: 'spec.internalIp', outcome: 'refused', gen: spec(fc.oneof(badOctets, notAnAddress, ipv6), (internalIp) => fipSpec({ internalIp })) },
  { name: 'fip.internalIp.with-prefix-or-port', kind: 'fip', field: 'spec.internalIp', outcome: 'refused', gen: spec(fc.tuple(fc.integer({ min: 2, max: 250 }), fc.constantFrom('/32', '/24', ':80', ':', '/')), ([d, x]) => fipSpec({ internalIp: `10.0.1.${d}${x}` })) },
  { name: 'fip.internalIp.shell-unicode-whitespace', kind: 'fip', field: 'spec.internalIp', outcome: 'refused', gen: spec(fc.oneof(shellTail, unicode, whitespace).chain((x) => insertAnywhere('10.0.1.10', fc.constant(x))), (internalIp) => fipSpec({ internalIp })) },
  { name: 'fip.internalIp.unusable-range', kind: 'fip', field: 'spec.internalIp', outcome: 'condition', message: /spec\.internalIp .* is a (unspecified|broadcast|multicast|loopback) address/, gen: spec(fc.oneof(fc.constantFrom('0.0.0.0', '255.255.255.255'), fc.tuple(fc.integer({ min: 224, max: 239 }), octet, octet, octet).map((o) => o.join('.')), fc.tuple(octet, octet, octet).map((o) => `127.${o.join('.')}`)), (internalIp) => fipSpec({ internalIp })) },
  { name: 'fip.internalIp.outside-vpc', kind: 'fip', field: 'spec.internalIp', outcome: 'condition', message: /internalIp .* is outside the VPC subnet/, gen: spec(unicastElsewhere, (internalIp) => fipSpec({ eip: OK.freeEips.fipOutside, internalIp })) },
  { name: 'fip.internalIp.vpc-network-broadcast-or-lanip', kind: 'fip', field: 'spec.internalIp', outcome: 'condition', message: /is the (network address|broadcast address|lanIp)/, gen: spec(fc.constantFrom('10.0.1.0', '10.0.1.255', '10.0.1.254'), (internalIp) => fipSpec({ eip: OK.freeEips.fipEdge, internalIp })) },
  { name: 'fip.internalIp.empty-or-missing', kind: 'fip', field: 'spec.internalIp', outcome: 'condition', message: /spec\.internalIp/, gen: spec(fc.boolean(), (missing) => (missing ? without(fipSpec({}), 'internalIp') : fipSpec({ internalIp: '' }))) },
  // IptablesDnatRule
  { name: 'dnat.protocol.unsupported', kind: 'dnat', field: 'spec.protocol', outcome: 'refused', gen: spec(fc.oneof(fc.constantFrom('sctp', 'icmp', 'all', 'tcp,udp', 'tcp|udp', 'tcp/udp', 'tcpudp', '6', '17'), fc.stringMatching(/^[a-z]{1,8}$/).filter((p) => p !== 'tcp' && p !== 'udp')), (protocol) => dnatSpec({ protocol })) },
  { name: 'dnat.protocol.shell-unicode-whitespace', kind: 'dnat', field: 'spec.protocol', outcome: 'refused', gen: spec(fc.tuple(fc.constantFrom('tcp', 'udp', 'TCP'), fc.oneof(shellTail, unicode, whitespace)).chain(([p, x]) => insertAnywhere(p, fc.constant(x))), (protocol) => dnatSpec({ protocol })) },
  { name: 'dnat.protocol.huge', kind: 'dnat', field: 'spec.protocol', outcome: 'refused', gen: spec(fc.integer({ min: 1_000, max: 200_000 }).map((n) => 'tcp'.repeat(n)), (protocol) => dnatSpec({ protocol })) },
  { name: 'dnat.protocol.empty-or-missing', kind: 'dnat', field: 'spec.protocol', outcome: 'condition', message: /spec\.protocol/, gen: spec(fc.boolean(), (missing) => (missing ? without(dnatSpec({}), 'protocol') : dnatSpec({ protocol: '' }))) },
  { name: 'dnat.port.out-of-range', kind: 'dnat', field: 'spec.*Port', outcome: 'refused', gen: fc.tuple(fc.constantFrom('externalPort', 'internalPort'), fc.oneof(fc.constant(0), fc.integer({ min: 65_536, max: 99_999 }), fc.integer({ min: -65_535, max: -1 }))).map(([f, p]) => ({ spec: dnatSpec({ [f]: String(p) }) })) },
  { name: 'dnat.port.not-a-number', kind: 'dnat', field: 'spec.*Port', outcome: 'refused', gen: fc.tuple(fc.constantFrom('externalPort', 'internalPort'), fc.oneof(fc.constantFrom('http', '0x50', '80.5', '8080-8081', '1e3', '80,443', '８０', '-0', '++80', '80 ', ' 80', '80\n'), fc.stringMatching(/^[a-z]{1,6}$/), fc.tuple(fc.integer({ min: 1, max: 65535 }), shellTail).map(([p, t]) => `${p}${t}`))).map(([f, p]) => ({ spec: dnatSpec({ [f]: p }) })) },
  { name: 'dnat.port.huge', kind: 'dnat', field: 'spec.*Port', outcome: 'refused', gen: fc.tuple(fc.constantFrom('externalPort', 'internalPort'), fc.integer({ min: 6, max: 5_000 })).map(([f, n]) => ({ spec: dnatSpec({ [f]: '9'.repeat(n) }) })) },
  { name: 'dnat.port.json-number', kind: 'dnat', field: 'spec.*Port', outcome: 'refused', cli: false, gen: fc.tuple(fc.constantFrom('externalPort', 'internalPort'), fc.integer({ min: 1, max: 65535 })).map(([f, p]) => ({ spec: dnatSpec({ [f]: p }) })) },
  { name: 'dnat.port.empty-or-missing', kind: 'dnat', field: 'spec.*Port', outcome: 'condition', message: /spec\.(external|internal)Port/, gen: fc.tuple(fc.constantFrom('externalPort', 'internalPort'), fc.boolean()).map(([f, missing]) => ({ spec: missing ? without(dnatSpec({}), f) : dnatSpec({ [f]: '' }) })) },
  { name: 'dnat.field.wrong-type', kind: 'dnat', field: 'spec.*', outcome: 'refused', gen: fc.tuple(fc.constantFrom('eip', 'protocol', 'internalIp', 'externalPort', 'internalPort'), notAString.filter((v) => typeof v !== 'number')).map(([f, v]) => ({ spec: dnatSpec({ [f]: v }) })) },
  { name: 'dnat.internalIp.not-an-address', kind: 'dnat', field: 'spec.internalIp', outcome: 'refused', gen: spec(fc.oneof(badOctets, notAnAddress, ipv6, fc.constant('10.0.1.11:80'), shellTail.map((t) => `10.0.1.11${t}`)), (internalIp) => dnatSpec({ internalIp })) },
  { name: 'dnat.internalIp.outside-vpc-or-gateway-own', kind: 'dnat', field: 'spec.internalIp', outcome: 'condition', message: /internalIp/, gen: spec(fc.oneof(unicastElsewhere, fc.constantFrom('10.0.1.0', '10.0.1.255', '10.0.1.254')), (internalIp) => dnatSpec({ eip: OK.freeEips.dnatOutside, internalIp })) },
  { name: 'dnat.externalPort.already-forwarded', kind: 'dnat', field: 'spec.externalPort', outcome: 'condition', reasons: ['DuplicateDnat'], message: /already forwarded/, gen: spec(fc.tuple(fc.constantFrom('8080', '+8080', '08080'), fc.constantFrom('tcp', 'TCP', 'Tcp')), ([externalPort, protocol]) => dnatSpec({ externalPort, protocol })) },
  { name: 'dnat.eip.missing-reference', kind: 'dnat', field: 'spec.eip', outcome: 'condition', reasons: ['EipNotFound'], message: /does not exist/, gen: spec(validName, (n) => dnatSpec({ eip: `noeip-${n}` })) },
  { name: 'dnat.eip.held-by-a-fip', kind: 'dnat', field: 'spec.eip', outcome: 'condition', reasons: ['EipInUse'], message: /takes it alone/, gen: fc.constant({ spec: dnatSpec({ eip: OK.fipEip }) }) },
  { name: 'dnat.eip.invalid-name', kind: 'dnat', field: 'spec.eip', outcome: 'refused', gen: spec(fc.oneof(badName, tooLongName), (eip) => dnatSpec({ eip })) },
  { name: 'dnat.required-field.missing', kind: 'dnat', field: 'spec.*', outcome: 'condition', gen: fc.constantFrom(...REQUIRED.dnat).map((f) => ({ spec: without(dnatSpec({}), f) })) },
  // IptablesSnatRule
  { name: 'snat.internalCIDR.prefix-out-of-range', kind: 'snat', field: 'spec.internalCIDR', outcome: 'refused', gen: spec(fc.oneof(fc.integer({ min: 33, max: 999 }).map(String), fc.constantFrom('-1', '', '+24', 'x', '24.0', '0x18')), (p) => snatSpec({ internalCIDR: `10.0.1.0/${p}` })) },
  { name: 'snat.internalCIDR.list-or-range', kind: 'snat', field: 'spec.internalCIDR', outcome: 'refused', gen: spec(fc.constantFrom('10.0.1.0/24,10.0.2.0/24', '10.0.1.0/24 10.0.2.0/24', '10.0.1.10-10.0.1.20', '10.0.1.10..10.0.1.20', '10.0.1.0/24;10.0.2.0/24'), (internalCIDR) => snatSpec({ internalCIDR })) },
  { name: 'snat.internalCIDR.ipv6', kind: 'snat', field: 'spec.internalCIDR', outcome: 'refused', gen: spec(fc.tuple(ipv6, fc.integer({ min: 0, max: 128 })), ([a, p]) => snatSpec({ internalCIDR: `${a}/${p}` })) },
  { name: 'snat.internalCIDR.malformed-address', kind: 'snat', field: 'spec.internalCIDR', outcome: 'refused', gen: spec(fc.tuple(fc.oneof(badOctets, notAnAddress), fc.integer({ min: 0, max: 32 })), ([a, p]) => snatSpec({ internalCIDR: `${a}/${p}` })) },
  { name: 'snat.internalCIDR.shell-unicode-whitespace-huge', kind: 'snat', field: 'spec.internalCIDR', outcome: 'refused', gen: spec(fc.oneof(shellTail.map((t) => `10.0.1.0/24${t}`), unicode.chain((u) => insertAnywhere('10.0.1.0/24', fc.constant(u))), whitespace.map((w) => `10.0.1.0/24${w}`), fc.integer({ min: 65, max: 5000 }).map((n) => `10.0.1.0/${'0'.repeat(n)}24`)), (internalCIDR) => snatSpec({ internalCIDR })) },
  { name: 'snat.internalCIDR.outside-or-wider-than-vpc', kind: 'snat', field: 'spec.internalCIDR', outcome: 'condition', message: /internalCIDR .* is outside/, gen: spec(fc.oneof(fc.constantFrom('0.0.0.0/0', '10.0.0.0/8', '10.0.0.0/16', '10.0.1.0/23'), unicastElsewhere, fc.tuple(unicastElsewhere, fc.integer({ min: 24, max: 32 })).map(([a, p]) => `${a}/${p}`)), (internalCIDR) => snatSpec({ eip: OK.freeEips.snatOutside, internalCIDR })) },
  { name: 'snat.internalCIDR.empty-or-missing', kind: 'snat', field: 'spec.internalCIDR', outcome: 'condition', message: /spec\.internalCIDR/, gen: spec(fc.boolean(), (missing) => (missing ? without(snatSpec({}), 'internalCIDR') : snatSpec({ internalCIDR: '' }))) },
  { name: 'snat.eip.missing-reference', kind: 'snat', field: 'spec.eip', outcome: 'condition', reasons: ['EipNotFound'], message: /does not exist/, gen: spec(validName, (n) => snatSpec({ eip: `noeip-${n}` })) },
  { name: 'snat.eip.held-by-a-fip', kind: 'snat', field: 'spec.eip', outcome: 'condition', reasons: ['EipInUse'], gen: fc.constant({ spec: snatSpec({ eip: OK.fipEip }) }) },
  { name: 'snat.field.wrong-type', kind: 'snat', field: 'spec.*', outcome: 'refused', gen: fc.tuple(fc.constantFrom('eip', 'internalCIDR'), notAString).map(([f, v]) => ({ spec: snatSpec({ [f]: v }) })) },
  // VpcNatGateway (natflow reads name, lanIp, subnet, externalSubnets; the rest is Kube-OVN's pod scheduling)
  { name: 'gw.field.wrong-type', kind: 'vpc-nat-gw', field: 'spec.*', outcome: 'refused', cli: false, gen: fc.tuple(fc.constantFrom('lanIp', 'subnet', 'vpc', 'externalSubnets', 'selector', 'noDefaultEIP', 'annotations'), fc.constantFrom<unknown>(5, true, 'x', ['x'], { a: 'b' })).filter(([f, v]) => (['externalSubnets', 'selector'].includes(f) ? !Array.isArray(v) : f === 'noDefaultEIP' ? typeof v !== 'boolean' : f === 'annotations' ? typeof v !== 'object' || Array.isArray(v) : typeof v !== 'string')).map(([f, v]) => ({ spec: { vpc: 'vpc1', subnet: 'vpc1-subnet1', lanIp: '10.0.1.253', [f]: v } })) },
  { name: 'gw.tolerations.not-in-enum', kind: 'vpc-nat-gw', field: 'spec.tolerations', outcome: 'refused', cli: false, gen: spec(fc.constantFrom({ operator: 'Maybe' }, { effect: 'Reboot' }, { operator: 'equal' }), (t) => ({ lanIp: '10.0.1.253', tolerations: [{ key: 'k', ...t }] })) },
  { name: 'gw.metadata.name.invalid', kind: 'vpc-nat-gw', field: 'metadata.name', outcome: 'refused', cli: false, gen: fc.oneof(badName, tooLongName).map((name) => ({ name, spec: { lanIp: '10.0.1.253' } })) },
  { name: 'gw.lanIp-subnet.bad-without-agent', kind: 'vpc-nat-gw', field: 'spec.lanIp', outcome: 'condition', reasons: ['GatewayNotReady'], cli: false, gen: spec(fc.tuple(fc.oneof(badOctets, notAnAddress, shellTail.map((t) => `10.0.1.253${t}`)), fc.oneof(validName.map((n) => `nosubnet-${n}`), fc.constant('vpc1-subnet1'))), ([lanIp, subnet]) => ({ vpc: 'vpc1', subnet, lanIp, externalSubnets: [`noext-${subnet}`] })) },
  // Subnet (natflow reads an external subnet's cidrBlock, gateway and excludeIps)
  { name: 'subnet.field.out-of-schema', kind: 'subnet', field: 'spec.*', outcome: 'refused', cli: false, gen: fc.constantFrom<[string, unknown]>(['mtu', 10], ['mtu', 70_000], ['protocol', 'IPv5'], ['protocol', 'ipv4'], ['policyRoutingTableID', 254], ['policyRoutingPriority', 0], ['cidrBlock', 172], ['gateway', ['172.30.0.1']], ['excludeIps', '172.30.0.9'], ['natOutgoing', 'yes']).map(([f, v]) => ({ spec: { protocol: 'IPv4', cidrBlock: '172.30.0.0/24', gateway: '172.30.0.1', [f]: v } })) },
  { name: 'subnet.metadata.name.leading-digit-or-invalid', kind: 'subnet', field: 'metadata.name', outcome: 'refused', cli: false, gen: fc.oneof(validName.map((n) => `1${n}`), badName).map((name) => ({ name, spec: { protocol: 'IPv4', cidrBlock: '172.30.0.0/24', gateway: '172.30.0.1' } })) },
];

/** Kinds whose generated spec is built when the batch is written (`{ kind, field }` placeholders above). */
function materialise(cls: BadClass, bad: Bad): { kind: KubeKind; spec: unknown } {
  if (cls.name === 'any.metadata.name.invalid') {
    const kind = (bad.spec as { kind: ResourceKind }).kind;
    return { kind, spec: specOf[kind]({}) };
  }
  if (cls.name === 'any.required-field.null') {
    const { kind, field } = bad.spec as { kind: ResourceKind; field: string };
    return { kind, spec: specOf[kind]({ [field]: null }) };
  }
  return { kind: cls.kind, spec: bad.spec };
}

// --- the run -------------------------------------------------------------------------------------

interface Written {
  cls: BadClass;
  kind: KubeKind;
  name: string;
  spec: unknown;
  uid?: string; // set when accepted
  refusal?: { code: number; message: string };
}

const isResource = (kind: KubeKind): kind is ResourceKind => kind === 'eip' || kind === 'fip' || kind === 'dnat' || kind === 'snat';
const readyCondition = (o: { status?: { conditions?: unknown } } | undefined) => (o?.status?.conditions as { type: string; status: string; reason: string; message: string }[] | undefined)?.find((c) => c.type === 'Ready');
const show = (v: unknown) => {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 160 ? `${s.slice(0, 160)}...(${s.length} chars)` : s;
};
const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9.-]/g, '-');

describe('bad input, property-based, through the Kubernetes API and the client', () => {
  let kube: KubeEnv;
  let stack: Stack;
  let bridge: KubeBridge;
  const exercised = new Map<string, number>();
  let baseline: { rules: string[]; addresses: string[]; allocations: Record<string, string> };

  const api = () => kube.custom;
  const get = (kind: KubeKind, name: string) => api().getClusterCustomObject({ ...crd(kind), name }) as Promise<KubeovnObject>;
  const exists = (kind: KubeKind, name: string) =>
    get(kind, name).then(
      () => true,
      (err) => (err instanceof ApiException && err.code === 404 ? false : Promise.reject(err)),
    );
  const create = (kind: KubeKind, name: string, spec: unknown, status?: unknown) =>
    api().createClusterCustomObject({
      ...crd(kind),
      body: { apiVersion: KUBEOVN_API_VERSION, kind: KUBEOVN_KINDS[kind].kind, metadata: { name }, ...(spec !== undefined && { spec }), ...(status !== undefined && { status }) },
    }) as Promise<KubeovnObject>;
  const del = (kind: KubeKind, name: string) =>
    api()
      .deleteClusterCustomObject({ ...crd(kind), name })
      .catch((err) => {
        if (!(err instanceof ApiException && err.code === 404)) throw err;
      });
  const client = () => stack.env.client;

  /** The gateway's natflow rules (owner + chain + spec), its EIP addresses and the external subnet's allocations. */
  async function dataPlane() {
    const rules = (await stack.natRules(GW)).map((r) => `${r.owner} ${r.chain} ${r.spec.join(' ')}`).sort();
    const addresses = (await stack.eipAddresses(GW)).sort();
    const allocations = (await subnetState(stack.resources, DEFAULT_EXTERNAL_SUBNET)).allocations;
    return { rules, addresses, allocations };
  }

  /** Nothing more than the valid objects hold, and nothing owned by any of `uids` (rule tags) or `eipIds` (allocations). */
  async function expectNothingApplied(uids: Set<string>, eipIds: Set<string>, when: string) {
    const now = await dataPlane();
    const leakedRules = now.rules.filter((r) => uids.has(r.split(' ')[0]!));
    expect(leakedRules, `${when}: natflow rules of bad objects on ${GW}`).toEqual([]);
    expect(now.rules, `${when}: natflow rules on ${GW}`).toEqual(baseline.rules);
    expect(now.addresses, `${when}: EIP addresses on ${GW}`).toEqual(baseline.addresses);
    const leakedAllocations = Object.keys(now.allocations).filter((owner) => eipIds.has(owner));
    expect(leakedAllocations, `${when}: IPAM allocations of bad EIPs`).toEqual([]);
    expect(now.allocations, `${when}: IPAM allocations of ${DEFAULT_EXTERNAL_SUBNET}`).toEqual(baseline.allocations);
  }

  /** Its workflow runs, with no workflow task failing over and over (a crash loop). */
  async function expectHealthyWorkflow(workflowId: string, what: string) {
    const d = await client().workflow.getHandle(workflowId).describe();
    expect(d.status.name, `${what}: workflow ${workflowId}`).toBe('RUNNING');
    const attempt = d.raw.pendingWorkflowTask?.attempt ?? 0;
    expect(attempt, `${what}: workflow task attempts of ${workflowId} (a crash loop)`).toBeLessThan(3);
  }

  const workflowIdOf = (w: Pick<Written, 'kind' | 'name' | 'uid'>) => (w.kind === 'vpc-nat-gw' ? workflowIds.gateway(w.name) : isResource(w.kind) ? workflowIds.resource(w.kind, { name: w.name, uid: w.uid! }) : null);

  async function expectWorkflowGone(workflowId: string, what: string) {
    await eventually(
      async () => {
        try {
          return (await client().workflow.getHandle(workflowId).describe()).status.name;
        } catch (err) {
          if (err instanceof WorkflowNotFoundError) return 'NOT_FOUND';
          throw err;
        }
      },
      (s) => s !== 'RUNNING',
      30_000,
      `${what}: workflow ${workflowId} to end`,
    );
  }

  /** Runs a property, printing the seed (and how to reproduce) when it fails. */
  async function check<T>(what: string, arb: fc.Arbitrary<T>, numRuns: number, run: (value: T) => Promise<void>) {
    // fc.check rather than fc.assert: the counterexample (a whole batch, some values of 100 KB) is
    // left out of the report; the failing object is named by the assertion itself.
    const details = await fc.check(fc.asyncProperty(arb, run), { seed: SEED, numRuns, endOnFailure: true });
    if (details.failed) {
      const reproduce = `seed ${details.seed}, path "${details.counterexamplePath}" (rerun: NATFLOW_BAD_INPUT_SEED=${details.seed} npx vitest run test/bad-input.test.ts)`;
      console.error(`[bad-input] ${what} failed at run ${details.numRuns} with ${reproduce}`);
      const cause = details.errorInstance instanceof Error ? details.errorInstance : new Error(String(details.errorInstance));
      cause.message = `${what} failed with ${reproduce}:\n${cause.message}`;
      throw cause;
    }
  }

  beforeAll(async () => {
    await ensureKubeBinaries();
    kube = await startKube();
    stack = await startStack(DEFAULT_EXTERNAL_SUBNET, { kubeConfig: kube.kc, registerSubnet: false });
    await stack.addGateway(GW, { register: false });
    await applyExampleNetwork(kube.kc, GW);
    bridge = new KubeBridge({ kubeConfig: kube.kc, client: stack.env.client, taskQueue: stack.resources.taskQueue, resyncMs: 3000, log: () => undefined });
    await bridge.start();
    // The valid objects: three EIPs at fixed addresses, a FIP holding one, a DNAT and an SNAT sharing another.
    await create('eip', OK.fipEip, { natGwDp: GW, v4ip: OK.addresses.fip });
    await create('eip', OK.sharedEip, { natGwDp: GW, v4ip: OK.addresses.shared });
    await create('eip', OK.freeEip, { natGwDp: GW, v4ip: OK.addresses.free });
    const freeEips = Object.values(OK.freeEips);
    for (const [i, name] of freeEips.entries()) await create('eip', name, { natGwDp: GW, v4ip: [OK.addresses.free2, OK.addresses.free3, OK.addresses.free4, OK.addresses.free5][i] });
    await create('fip', 'ok-fip', { eip: OK.fipEip, internalIp: '10.0.1.10' });
    await create('dnat', 'ok-dnat', { eip: OK.sharedEip, protocol: 'tcp', externalPort: OK.dnatPort, internalIp: '10.0.1.11', internalPort: '80' });
    await create('snat', 'ok-snat', { eip: OK.sharedEip, internalCIDR: '10.0.1.0/24' });
    for (const [kind, name] of [['eip', OK.fipEip], ['eip', OK.sharedEip], ['eip', OK.freeEip], ...freeEips.map((n) => ['eip', n] as const), ['fip', 'ok-fip'], ['dnat', 'ok-dnat'], ['snat', 'ok-snat']] as const) {
      await eventually(() => get(kind, name), (o) => o.status?.ready === true, 90_000, `${kind} ${name} ready`);
    }
    baseline = await eventually(dataPlane, (d) => d.addresses.length === 7 && d.rules.length === 4 && Object.keys(d.allocations).length === 7, 30_000, 'the valid objects on the gateway');
  }, 900_000);

  afterAll(async () => {
    await bridge?.stop();
    await stack?.teardown();
    await kube?.stop();
  });

  it(`defines at least ${MIN_CLASSES} distinct named classes, over every kind`, () => {
    const names = CLASSES.map((c) => c.name);
    expect(new Set(names).size, 'class names are distinct').toBe(names.length);
    expect(names.length).toBeGreaterThanOrEqual(MIN_CLASSES);
    expect(new Set(CLASSES.map((c) => c.kind))).toEqual(new Set(['eip', 'fip', 'dnat', 'snat', 'vpc-nat-gw', 'subnet']));
  });

  it('through the API: each bad object is refused naming its field, or shows a False Ready condition; nothing applied, allocated or left', async () => {
    let run = 0;
    await check('the Kubernetes API property', fc.tuple(...CLASSES.map((c) => c.gen)), KUBE_RUNS, async (bads) => {
      run++;
      const prefix = `k${run}`;
      const nameOf = (cls: BadClass) => `${prefix}-${slug(cls.name)}`;
      const refs: Record<string, string> = {
        [REF_NOGW_EIP]: nameOf(CLASSES.find((c) => c.name === 'eip.natGwDp.missing-gateway')!),
        [REF_BAD_GW]: nameOf(CLASSES.find((c) => c.name === 'gw.lanIp-subnet.bad-without-agent')!),
      };
      const resolve = (v: unknown, i: number): unknown =>
        v === REF_PORT ? String(20_000 + run * 100 + i) : typeof v === 'string' && v in refs ? refs[v] : Array.isArray(v) ? v.map((x) => resolve(x, i)) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, resolve(x, i)])) : v;

      // Write the batch: gateways first (what EIPs name), then EIPs, then rules.
      const order: KubeKind[] = ['subnet', 'vpc-nat-gw', 'eip', 'fip', 'dnat', 'snat'];
      const batch: Written[] = CLASSES.map((cls, i) => {
        const { kind, spec } = materialise(cls, bads[i]!);
        return { cls, kind, name: bads[i]!.name ?? nameOf(cls), spec: resolve(spec, i) };
      });
      batch.sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind));
      for (const w of batch) {
        const status = bads[CLASSES.indexOf(w.cls)]!.status;
        try {
          w.uid = (await create(w.kind, w.name, w.spec, status)).metadata!.uid!;
        } catch (err) {
          if (!(err instanceof ApiException)) throw err;
          const body = typeof err.body === 'string' ? (JSON.parse(err.body) as { message?: string }) : (err.body as { message?: string });
          w.refusal = { code: err.code, message: body?.message ?? String(err.body) };
        }
        exercised.set(w.cls.name, (exercised.get(w.cls.name) ?? 0) + 1);
      }
      const accepted = batch.filter((w) => w.uid);
      try {
        // Refused: a 422 naming the field, and nothing stored.
        for (const w of batch) {
          const what = `${w.cls.name}: ${w.kind} ${show(w.name)} ${show(w.spec)}`;
          if (w.cls.outcome === 'refused') expect(w.refusal, `${what} was accepted`).toBeDefined();
          if (w.cls.outcome === 'condition') expect(w.refusal, `${what} was refused`).toBeUndefined();
          if (!w.refusal) continue;
          expect(w.refusal.code, what).toBe(422);
          // The field by name (`spec.*Port`: spec.externalPort or spec.internalPort), as `<field>: ...`.
          expect(w.refusal.message, what).toMatch(new RegExp(`${w.cls.field.replace(/\./g, '\\.').replace('*', '\\w+')}(\\[\\d+\\]\\.\\w+)?: `));
          if (w.name.length <= 253 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(w.name)) expect(await exists(w.kind, w.name), what).toBe(false);
        }
        // Accepted: a False Ready condition with the class's reason and a message, never Ready.
        const settled = (w: Written, o: KubeovnObject) => {
          const c = readyCondition(o);
          const reasons = w.cls.reasons ?? (w.kind === 'vpc-nat-gw' ? ['GatewayNotReady'] : ['InvalidSpec']);
          return o.status?.ready !== true && c?.status === 'False' && reasons.includes(c.reason) && c.message.length > 0;
        };
        const latest = new Map<Written, KubeovnObject>();
        const deadline = Date.now() + SETTLE_MS;
        for (;;) {
          for (const w of accepted) {
            const o = await get(w.kind, w.name);
            latest.set(w, o);
            expect(o.status?.ready, `${w.cls.name}: ${w.kind} ${w.name} ${show(w.spec)} became Ready`).not.toBe(true);
          }
          const waiting = accepted.filter((w) => !settled(w, latest.get(w)!));
          if (waiting.length === 0) break;
          if (Date.now() > deadline) {
            throw new Error(`no settled condition within ${SETTLE_MS} ms:\n${waiting.map((w) => `  ${w.cls.name}: ${w.kind} ${w.name} ${show(w.spec)} -> ${show(latest.get(w)!.status)}`).join('\n')}`);
          }
          await new Promise((r) => setTimeout(r, 500));
        }
        for (const w of accepted) {
          const c = readyCondition(latest.get(w))!;
          if (w.cls.message) expect(c.message, `${w.cls.name}: ${w.kind} ${w.name}`).toMatch(w.cls.message);
          await expectHealthyWorkflow(workflowIdOf(w)!, `${w.cls.name} (${w.kind} ${w.name})`);
        }
        const uids = new Set(accepted.map((w) => w.uid!));
        const eipIds = new Set(accepted.filter((w) => w.kind === 'eip').map((w) => workflowIdOf(w)!));
        await expectNothingApplied(uids, eipIds, `batch ${run} settled`);
        // Still nothing Ready a moment later (a refusal is not a step on the way to Ready).
        await new Promise((r) => setTimeout(r, 1000));
        for (const w of accepted) expect((await get(w.kind, w.name)).status?.ready, `${w.cls.name}: ${w.kind} ${w.name} later`).not.toBe(true);
      } finally {
        // Delete everything accepted: every object goes within the bound, its workflow ends, nothing is left.
        for (const w of accepted) await del(w.kind, w.name);
        const deadline = Date.now() + GONE_MS;
        for (const w of accepted) {
          await eventually(() => exists(w.kind, w.name), (e) => !e, Math.max(1000, deadline - Date.now()), `${w.cls.name}: ${w.kind} ${w.name} gone (finalizer released)`);
        }
      }
      for (const w of accepted) await expectWorkflowGone(workflowIdOf(w)!, `${w.cls.name} (${w.kind} ${w.name})`);
      await expectNothingApplied(new Set(accepted.map((w) => w.uid!)), new Set(accepted.filter((w) => w.kind === 'eip').map((w) => workflowIdOf(w)!)), `batch ${run} deleted`);
    });
    const distinct = [...exercised.keys()];
    expect(distinct.length, `classes exercised: ${distinct.join(', ')}`).toBeGreaterThanOrEqual(MIN_CLASSES);
    for (const cls of CLASSES) expect(exercised.get(cls.name), cls.name).toBe(KUBE_RUNS);
  }, 600_000);

  it('through the client (createResource, as the CLI): a thrown error naming the field, or a False Ready condition; nothing created, applied or allocated', async () => {
    const classes = CLASSES.filter((c) => c.cli !== false && isResource(c.kind));
    expect(classes.length).toBeGreaterThanOrEqual(MIN_CLASSES);
    const cliExercised = new Set<string>();
    let run = 0;
    await check('the client property', fc.tuple(...classes.map((c) => c.gen)), CLI_RUNS, async (bads) => {
      run++;
      const started: { cls: BadClass; kind: ResourceKind; name: string; spec: unknown; workflowId: string; uid: string }[] = [];
      try {
        for (const [i, cls] of classes.entries()) {
          const bad = bads[i]!;
          const { kind, spec: raw } = materialise(cls, bad);
          const resolve = (v: unknown): unknown => (v === REF_PORT ? String(30_000 + run * 100 + i) : Array.isArray(v) ? v.map(resolve) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, resolve(x)])) : v);
          const spec = resolve(raw);
          const name = bad.name ?? `c${run}-${slug(cls.name)}`;
          const uid = `bad-cli-${run}-${i}`;
          const resourceKind = kind as ResourceKind;
          const what = `${cls.name}: createResource(${resourceKind}, ${show(name)}, ${show(spec)})`;
          cliExercised.add(cls.name);
          let created = false;
          try {
            await createResource(stack.resources, resourceKind, name, spec as never, uid);
            created = true;
          } catch (err) {
            // Refused up front: a clear message that names the field, and no workflow.
            const message = (err as Error).message ?? '';
            const leaf = cls.field.split('.').pop()!.replace('*', '');
            expect(message, what).toMatch(/\S/);
            if (leaf) expect(message.toLowerCase(), what).toContain(leaf.toLowerCase());
            await expect(client().workflow.getHandle(workflowIds.resource(resourceKind, { name, uid })).describe(), `${what}: no workflow`).rejects.toThrow(WorkflowNotFoundError);
          }
          if (created) started.push({ cls, kind: resourceKind, name, spec, uid, workflowId: workflowIds.resource(resourceKind, { name, uid }) });
        }
        // Started: its status query settles on a False Ready condition with a reason and a message.
        for (const s of started) {
          const what = `${s.cls.name}: ${s.kind} ${show(s.name)} ${show(s.spec)}`;
          const reasons = s.cls.outcome === 'refused' ? ['InvalidSpec'] : (s.cls.reasons ?? ['InvalidSpec']);
          const status = await eventually(
            () => client().workflow.getHandle(s.workflowId).query(statusQuery),
            (st) => st.ready || reasons.includes(readyCondition({ status: st })?.reason ?? ''),
            SETTLE_MS,
            `${what}: a condition with reason ${reasons.join('|')}`,
          );
          expect(status.ready, `${what} became Ready`).toBe(false);
          const c = readyCondition({ status })!;
          expect(c.status, what).toBe('False');
          expect(c.message, what).toMatch(/\S/);
          if (s.cls.message && s.cls.outcome !== 'refused') expect(c.message, what).toMatch(s.cls.message);
          await expectHealthyWorkflow(s.workflowId, what);
        }
        const eipIds = new Set(started.filter((s) => s.kind === 'eip').map((s) => s.workflowId));
        await expectNothingApplied(new Set(started.map((s) => s.uid)), eipIds, `client batch ${run}`);
      } finally {
        for (const s of started) await client().workflow.getHandle(s.workflowId).cancel().catch(() => undefined);
        for (const s of started) await expectWorkflowGone(s.workflowId, `${s.cls.name} (${s.kind} ${s.name})`);
      }
      await expectNothingApplied(new Set(started.map((s) => s.uid)), new Set(started.filter((s) => s.kind === 'eip').map((s) => s.workflowId)), `client batch ${run} deleted`);
    });
    expect(cliExercised.size).toBeGreaterThanOrEqual(MIN_CLASSES);
  }, 400_000);
});
