// The audit: what a gateway, an IPAM and the cluster really hold, compared with what natflow's
// workflows say they should hold. Pure: the audit workflow gathers the observations (activities)
// and calls these checks; every finding names its kind, its resource, what was expected and found,
// and the repair that `--fix` would apply (none when no repair is provably safe).
import { cidrContains, parseCidr, parseIPv4 } from './ip.js';
import type { GatewayState } from './gateway.js';
import type { IpamState } from './ipam.js';
import { renderNatRule } from './nat-rules.js';
import { placedChain } from './nat-table.js';
import type { KubeKind } from './kube.js';
import type { ResourceKind } from './names.js';

export type FindingKind =
  /** A natflow-tagged rule on the gateway whose owner is not a rule the gateway should carry. */
  | 'leaked-rule'
  /** A rule the gateway should carry that is missing or different on it. */
  | 'missing-rule'
  /** A rule the gateway workflow holds for a NAT rule whose workflow no longer runs. */
  | 'orphaned-rule'
  /** An untagged rule in the Kube-OVN chains natflow writes (what Kube-OVN's controller left). */
  | 'foreign-rule'
  /** A natflow-labelled address on the external interface that no EIP holds there. */
  | 'leaked-address'
  /** An EIP's address missing from the external interface. */
  | 'missing-address'
  /** An address the gateway workflow holds for an EIP whose workflow no longer runs. */
  | 'orphaned-address'
  /** Conntrack entries still translating to an address of the external subnet that no EIP holds. */
  | 'stale-conntrack'
  /** An IPAM allocation whose EIP workflow no longer runs. */
  | 'orphaned-allocation'
  /** An EIP bound on a gateway with an address its subnet's IPAM does not give it. */
  | 'unallocated-eip'
  /** One address allocated to two owners. */
  | 'double-allocation'
  /** A subnet's usage counters that do not match its allocations (IPAM, or the Subnet's status). */
  | 'subnet-counters'
  /** A live Kubernetes object with no running workflow. */
  | 'missing-workflow'
  /** A workflow started for a Kubernetes object that is gone. */
  | 'orphaned-workflow'
  /** A deleted object still held by natflow's finalizer with no workflow left to remove it. */
  | 'stuck-finalizer'
  /** An object whose status says Ready while its workflow is not. */
  | 'false-ready';

/** What `--fix` does for a finding; each is re-checked just before it is applied. */
export type Repair =
  /** The gateway workflow re-applies its whole desired state (addresses and tagged rules) onto its agent. */
  | { restoreGateway: { gateway: string } }
  | { removeRule: { gateway: string; owner: string } }
  | { unbindAddress: { gateway: string; owner: string } }
  | { removeForeignRules: { gateway: string; rules: { chain: string; spec: string[] }[] } }
  | { flushConntrack: { gateway: string; address: string } }
  | { releaseAllocation: { subnet: string; owner: string } }
  | { cancelWorkflow: { workflowId: string } }
  /** Starts the object's workflow as the bridge does: it adopts a live object, or cleans up for a deleted one and lets it go. */
  | { startWorkflow: { kind: ResourceKind; name: string; uid: string } }
  | { publishSubnetUsage: { subnet: string } }
  /** Tells the resource's workflow to look again: it re-asserts and publishes its status. */
  | { reassert: { workflowId: string } };

export interface Finding {
  kind: FindingKind;
  /** e.g. `gateway gw1 rule 5f0c…`, `subnet ovn-vpc-external-network 172.18.0.7`, `fip fip1`. */
  resource: string;
  expected: string;
  found: string;
  /** The repair, in words; what `--fix` does, or why it does nothing. */
  repairText: string;
  repair?: Repair;
}

export interface AuditReport {
  startedAt: string;
  finishedAt: string;
  /** Findings seen in both observations (a state in flux between them is not a leak). */
  findings: Finding[];
  /** What could not be checked, and why (an agent that does not answer, a gateway restoring). */
  unchecked: { what: string; why: string }[];
  /** Findings by kind (all of them, also those left out of `findings`). */
  counts: Partial<Record<FindingKind, number>>;
  /** Findings left out of `findings` (at most MAX_LISTED_PER_KIND of a kind are listed). */
  omitted?: number;
  /** With `fix`: the repairs applied, and those that failed or were no longer needed. */
  repairs?: { finding: string; result: 'applied' | 'skipped' | 'failed'; detail: string }[];
}

// --- observations ----------------------------------------------------------------------------

/** A running resource workflow, as visibility lists it. */
export interface LiveResource {
  kind: ResourceKind;
  name: string;
  uid: string;
  workflowId: string;
  phase: string;
  fromKube: boolean;
}

/** What a gateway's agent reads from the gateway itself. */
export interface GatewayReading {
  instanceId: string;
  externalInterface: string;
  /** Every rule in natflow's chains but their static ones (jumps, mark, hairpin): tagged (owner) or not. */
  rules: { chain: string; spec: string[]; owner: string | null }[];
  /** The addresses on the external interface; `eip`: labelled as natflow's. */
  addresses: { address: string; prefixLength: number; eip: boolean }[];
  /** Translated conntrack entries, counted by the address on the EIP side; null when the table was too large to list. */
  conntrack: Record<string, number> | null;
}

/** A Kubernetes object of a kind natflow drives. */
export interface KubeObjectView {
  kind: Exclude<KubeKind, 'subnet'>;
  name: string;
  uid: string;
  deleting: boolean;
  /** natflow's finalizer is on. */
  held: boolean;
  /** `status.ready` is true. */
  ready: boolean;
}

export interface SubnetStatusView {
  name: string;
  status: Record<string, unknown>;
}

export interface Observation {
  /** What the control side could not observe (a gateway or IPAM that did not answer its query). */
  unobserved?: AuditReport['unchecked'];
  resources: LiveResource[];
  gateways: { name: string; state: GatewayState; reading: GatewayReading | null; why?: string }[];
  subnets: { name: string; state: IpamState }[];
  /** Absent when natflow runs without Kubernetes. */
  kube?: { objects: KubeObjectView[]; subnets: SubnetStatusView[] };
}

/** What the control side observes: everything but the gateways' readings, which their agents take. */
export type ControlObservation = Omit<Observation, 'gateways'> & { gateways: { name: string; state: GatewayState }[] };

// --- the checks ------------------------------------------------------------------------------

const READY = 'Ready';
const LEAVING = new Set(['Deleting', 'Deleted']);

/** Every finding of one observation, and what it could not check. */
export function auditObservation(o: Observation): { findings: Finding[]; unchecked: AuditReport['unchecked'] } {
  const findings: Finding[] = [];
  const unchecked: AuditReport['unchecked'] = [...(o.unobserved ?? [])];
  const live = new Map(o.resources.map((r) => [r.workflowId, r]));
  const liveRuleUids = new Set(o.resources.filter((r) => r.kind !== 'eip').map((r) => r.uid));
  // A check that cannot make sense of what it was given reports that part as not checked, never fails the audit.
  const checked = (what: string, check: () => Finding[]) => {
    try {
      findings.push(...check());
    } catch (err) {
      unchecked.push({ what, why: `its check failed: ${(err as Error).message}` });
    }
  };
  for (const gw of o.gateways) {
    checked(`gateway ${gw.name} (desired state)`, () => desiredStateFindings(gw.name, gw.state, live, liveRuleUids));
    if (!gw.reading) unchecked.push({ what: `gateway ${gw.name}`, why: gw.why ?? 'its agent did not answer' });
    else if (gw.state.deleting) unchecked.push({ what: `gateway ${gw.name}`, why: 'it is being deleted: everything comes off it' });
    else if (!gw.state.ready || gw.state.agent?.instanceId !== gw.reading.instanceId) {
      unchecked.push({ what: `gateway ${gw.name}`, why: `not ready (${gw.state.reason || 'another agent instance answered'}): its workflow is bringing the agent to its desired state` });
    } else {
      const reading = gw.reading;
      const cidr = o.subnets.find((s) => s.name === gw.state.spec.externalSubnet)?.state.subnet.cidrBlock;
      // A new incarnation may carry more than it holds until its rebuild window ends, when it removes it itself.
      const extra = new Set<FindingKind>(['leaked-rule', 'leaked-address', 'stale-conntrack']);
      if (gw.state.rebuilding) unchecked.push({ what: `gateway ${gw.name}: rules, addresses and conntrack entries it does not hold`, why: 'it is rebuilding its desired state from its users (a new incarnation); what nobody re-asserts goes when that window ends' });
      if (reading.conntrack === null) unchecked.push({ what: `gateway ${gw.name}: conntrack entries`, why: 'its conntrack table is too large to list' });
      checked(`gateway ${gw.name}`, () => gatewayFindings(gw.name, gw.state, reading, o.resources, cidr).filter((f) => !gw.state.rebuilding || !extra.has(f.kind)));
    }
  }
  checked('IPAM allocations', () => ipamFindings(o.subnets, live, o.gateways));
  if (o.kube) {
    const kube = o.kube;
    checked('Kubernetes objects', () => kubeFindings(kube, o.resources, o.subnets));
    // A workflow gone while its object lives: what it held is taken back by the run --fix starts
    // (allocation and binding are idempotent per owner), so nothing of it is removed first.
    const liveObjects = new Set(kube.objects.filter((obj) => !obj.deleting).map((obj) => obj.uid));
    for (const f of findings) {
      const owner = f.repair && ('removeRule' in f.repair ? f.repair.removeRule.owner : 'unbindAddress' in f.repair ? f.repair.unbindAddress.owner : 'releaseAllocation' in f.repair ? f.repair.releaseAllocation.owner : null);
      if (owner && liveObjects.has(owner.slice(owner.lastIndexOf('/') + 1))) {
        delete f.repair;
        f.repairText = 'none: its object is live; its workflow, which --fix starts (missing-workflow), takes this back';
      }
    }
  }
  return { findings, unchecked };
}

/** What the gateway workflow holds for owners whose workflows are gone. */
function desiredStateFindings(gateway: string, state: GatewayState, live: Map<string, LiveResource>, liveRuleUids: Set<string>): Finding[] {
  const findings: Finding[] = [];
  for (const [owner, rule] of Object.entries(state.rules)) {
    if (liveRuleUids.has(owner)) continue;
    findings.push({
      kind: 'orphaned-rule',
      resource: `gateway ${gateway} ${rule.kind} rule ${owner}`,
      expected: 'a running NAT rule workflow with this uid',
      found: `the gateway workflow holds its ${rule.kind} rule on ${rule.eip}; no NAT rule workflow with this uid runs`,
      repairText: 'remove the rule from the gateway (its conntrack entries go too)',
      repair: { removeRule: { gateway, owner } },
    });
  }
  for (const [owner, address] of Object.entries(state.eips)) {
    if (live.get(owner)?.kind === 'eip') continue;
    findings.push({
      kind: 'orphaned-address',
      resource: `gateway ${gateway} address ${address.address}`,
      expected: `EIP workflow ${owner} running`,
      found: `the gateway workflow holds ${address.address} for ${owner}, which does not run`,
      repairText: 'unbind the address from the gateway',
      repair: { unbindAddress: { gateway, owner } },
    });
  }
  return findings;
}

/** The gateway's real nat table, addresses and conntrack against its workflow's desired state. */
export function gatewayFindings(gateway: string, state: GatewayState, reading: GatewayReading, resources: LiveResource[], externalCidr?: string): Finding[] {
  const findings: Finding[] = [];
  const restore = { restoreGateway: { gateway } };
  const tagged = new Map<string, string[]>();
  const foreign: GatewayReading['rules'] = [];
  for (const r of reading.rules) {
    if (r.owner) tagged.set(r.owner, [...(tagged.get(r.owner) ?? []), ruleText(r)]);
    else foreign.push(r);
  }
  const liveRules = new Map(resources.filter((r) => r.kind !== 'eip').map((r) => [r.uid, r]));
  for (const [owner, lines] of tagged) {
    if (state.rules[owner]) continue;
    const rule = liveRules.get(owner);
    findings.push({
      kind: 'leaked-rule',
      resource: `gateway ${gateway} rule ${owner}`,
      expected: 'no rule with this tag: the gateway carries no rule for it',
      found: `${lines.length} rule(s) tagged natflow:${owner}${rule ? ` (${rule.kind} ${rule.name}, ${rule.phase || 'Pending'})` : ', whose owner is no running NAT rule'}: ${lines.join('; ')}`,
      repairText: 'restore the gateway: its tagged rules become exactly the desired ones, and the removed rules’ conntrack entries are flushed',
      repair: restore,
    });
  }
  for (const [owner, rule] of Object.entries(state.rules)) {
    const want = renderNatRule(rule, { externalInterface: reading.externalInterface }).map((x) => ruleText({ chain: placedChain(x.chain, owner), spec: x.spec })).sort();
    const have = [...(tagged.get(owner) ?? [])].sort();
    if (want.join('\n') === have.join('\n')) continue;
    findings.push({
      kind: 'missing-rule',
      resource: `gateway ${gateway} ${rule.kind} rule ${owner}`,
      expected: want.join('; '),
      found: have.length > 0 ? have.join('; ') : 'no rule with its tag',
      repairText: 'restore the gateway: the rule is re-applied',
      repair: restore,
    });
  }
  const desired = new Map(Object.entries(state.eips).map(([owner, a]) => [a.address, owner]));
  const forwarded = new Set(Object.values(state.rules).map((rule) => rule.eip));
  for (const r of foreign) {
    const eip = ruleAddress(r.spec);
    // Safe to delete when no EIP holds its address, or when natflow forwards that EIP itself; else
    // (a gateway taken over from Kube-OVN, natflow's rule not there yet) it may still carry traffic.
    const safe = !eip || !desired.has(eip) || forwarded.has(eip);
    const user = !eip || !desired.has(eip) ? `for ${eip ?? 'an unknown address'}, which no live EIP on this gateway holds` : forwarded.has(eip) ? `EIP ${eip} is bound for ${desired.get(eip)} and forwarded by natflow: this rule misroutes its traffic` : `EIP ${eip} is bound for ${desired.get(eip)}, which natflow does not forward yet`;
    findings.push({
      kind: 'foreign-rule',
      resource: `gateway ${gateway} untagged ${ruleText(r)}`,
      expected: `only natflow-tagged rules in ${r.chain}`,
      found: `a rule without natflow's tag (${user})`,
      ...(safe
        ? { repairText: 'delete this rule from the gateway (natflow writes none like it)', repair: { removeForeignRules: { gateway, rules: [{ chain: r.chain, spec: r.spec }] } } }
        : { repairText: 'none automatic: it may still be what forwards this EIP; delete it by hand once natflow forwards the EIP (or the EIP is gone)' }),
    });
  }
  const onInterface = new Map(reading.addresses.map((a) => [a.address, a]));
  for (const a of reading.addresses.filter((a) => a.eip && !desired.has(a.address))) {
    findings.push({
      kind: 'leaked-address',
      resource: `gateway ${gateway} address ${a.address}`,
      expected: 'no EIP label on an address no EIP holds',
      found: `${a.address}/${a.prefixLength} on ${reading.externalInterface}, held by no EIP`,
      repairText: 'restore the gateway: the address goes',
      repair: restore,
    });
  }
  for (const [address, owner] of desired) {
    if (onInterface.get(address)?.eip) continue;
    findings.push({
      kind: 'missing-address',
      resource: `gateway ${gateway} address ${address}`,
      expected: `${address} on ${reading.externalInterface} for ${owner}`,
      found: onInterface.has(address) ? 'the address is there without natflow’s label' : 'no such address',
      repairText: 'restore the gateway: the address is added and announced',
      repair: restore,
    });
  }
  const subnet = externalCidr ? parseCidr(externalCidr) : null;
  for (const [address, entries] of Object.entries(reading.conntrack ?? {})) {
    if (desired.has(address) || onInterface.has(address) && !onInterface.get(address)!.eip) continue;
    if (!subnet || !cidrContains(subnet, parseIPv4(address))) continue;
    findings.push({
      kind: 'stale-conntrack',
      resource: `gateway ${gateway} conntrack ${address}`,
      expected: `no translated connection to or from ${address}: no EIP holds it`,
      found: `${entries} conntrack entr${entries === 1 ? 'y' : 'ies'}`,
      repairText: `flush the conntrack entries of ${address}`,
      repair: { flushConntrack: { gateway, address } },
    });
  }
  return findings;
}

/** Allocations against live EIPs and the gateways' bindings; usage counters against allocations. */
export function ipamFindings(subnets: Observation['subnets'], live: Map<string, LiveResource>, gateways: Observation['gateways']): Finding[] {
  const findings: Finding[] = [];
  /** Owner → address and subnet, over every subnet: an EIP may take its address from another subnet than its gateway's. */
  const allocated = new Map<string, { address: string; subnet: string }>();
  for (const { name: subnet, state } of subnets) {
    const holders = new Map<string, string[]>();
    for (const [owner, address] of Object.entries(state.allocations)) {
      allocated.set(owner, { address, subnet });
      holders.set(address, [...(holders.get(address) ?? []), owner]);
      if (live.get(owner)?.kind === 'eip') continue;
      findings.push({
        kind: 'orphaned-allocation',
        resource: `subnet ${subnet} address ${address}`,
        expected: `EIP workflow ${owner} running`,
        found: `${address} is allocated to ${owner}, which does not run`,
        repairText: 'release the allocation',
        repair: { releaseAllocation: { subnet, owner } },
      });
    }
    for (const [address, owners] of holders) {
      if (owners.length < 2) continue;
      findings.push({ kind: 'double-allocation', resource: `subnet ${subnet} address ${address}`, expected: 'one owner', found: `held by ${owners.join(', ')}`, repairText: 'none automatic: delete all but one of these EIPs' });
    }
    const using = Object.keys(state.allocations).length;
    if (state.usage.v4usingIPs !== using) {
      findings.push({ kind: 'subnet-counters', resource: `subnet ${subnet}`, expected: `v4usingIPs ${using} (its allocations)`, found: `v4usingIPs ${state.usage.v4usingIPs}`, repairText: 'none automatic: the IPAM workflow counts its own allocations' });
    }
  }
  for (const gw of gateways) {
    for (const [owner, bound] of Object.entries(gw.state.eips)) {
      const held = allocated.get(owner);
      if (held?.address === bound.address || !live.has(owner)) continue;
      findings.push({
        kind: 'unallocated-eip',
        resource: `gateway ${gw.name} address ${bound.address}`,
        expected: `${bound.address} allocated to ${owner}`,
        found: held ? `${owner} holds ${held.address} in subnet ${held.subnet} instead` : `${owner} holds no address in any subnet`,
        repairText: 'none automatic: delete and re-create the EIP',
      });
    }
  }
  return findings;
}

/** Objects against workflows, both ways, and Subnet statuses against their IPAMs. */
export function kubeFindings(kube: NonNullable<Observation['kube']>, resources: LiveResource[], subnets: Observation['subnets']): Finding[] {
  const findings: Finding[] = [];
  const byUid = new Map(resources.map((r) => [r.uid, r]));
  const objectUids = new Set(kube.objects.map((o) => o.uid));
  for (const obj of kube.objects) {
    if (obj.kind === 'vpc-nat-gw') continue;
    const run = byUid.get(obj.uid);
    const what = `${obj.kind} ${obj.name}`;
    const start = { startWorkflow: { kind: obj.kind, name: obj.name, uid: obj.uid } };
    if (!run && !obj.deleting) {
      findings.push({ kind: 'missing-workflow', resource: what, expected: 'a running workflow for this object', found: `none runs for uid ${obj.uid}`, repairText: 'start its workflow, as the bridge does', repair: start });
    } else if (!run && obj.held) {
      findings.push({ kind: 'stuck-finalizer', resource: what, expected: 'the object gone once its cleanup ran', found: `deleting, natflow's finalizer still on, no workflow to clean up and remove it`, repairText: 'start its workflow: it finds the object deleting, cleans up and removes the finalizer', repair: start });
    } else if (obj.ready && (!run || run.phase !== READY)) {
      findings.push({ kind: 'false-ready', resource: what, expected: 'status ready only while its workflow is Ready', found: `status ready, workflow ${run ? `phase ${run.phase || 'Pending'}` : 'not running'}`, repairText: 'tell its workflow to look again: it publishes its status', ...(run && { repair: { reassert: { workflowId: run.workflowId } } }) });
    }
  }
  for (const r of resources) {
    if (!r.fromKube || objectUids.has(r.uid) || LEAVING.has(r.phase)) continue;
    findings.push({ kind: 'orphaned-workflow', resource: `${r.kind} ${r.name}`, expected: `its object (uid ${r.uid})`, found: `workflow ${r.workflowId} runs; the object is gone`, repairText: 'cancel the workflow: its cleanup runs', repair: { cancelWorkflow: { workflowId: r.workflowId } } });
  }
  for (const status of kube.subnets) {
    const ipam = subnets.find((s) => s.name === status.name);
    if (!ipam) continue;
    const differs = Object.entries(ipam.state.usage).filter(([field, value]) => status.status[field] !== value);
    if (differs.length === 0) continue;
    findings.push({
      kind: 'subnet-counters',
      resource: `Subnet ${status.name} status`,
      expected: differs.map(([field, value]) => `${field} ${JSON.stringify(value)}`).join(', '),
      found: differs.map(([field]) => `${field} ${JSON.stringify(status.status[field])}`).join(', '),
      repairText: 'write the IPAM’s usage into the Subnet’s status',
      repair: { publishSubnetUsage: { subnet: status.name } },
    });
  }
  return findings;
}

/**
 * One finding's identity across observations: its kind and resource; for counters also what they
 * said, since counters that the bridge copies every few seconds differ between two looks under churn.
 */
export const findingKey = (f: Finding) => `${f.kind} ${f.resource}${f.kind === 'subnet-counters' ? ` ${f.found}` : ''}`;

/** The findings of `later` that `earlier` had too: a leak persists, a change under way does not. */
export function persistent(earlier: Finding[], later: Finding[]): Finding[] {
  const seen = new Set(earlier.map(findingKey));
  return later.filter((f) => seen.has(findingKey(f)));
}

/** At most this many findings of one kind are listed in a report (all are counted and repaired): a report stays small whatever leaked. */
export const MAX_LISTED_PER_KIND = 100;

/** The report's findings (at most MAX_LISTED_PER_KIND a kind), their counts by kind, and how many were left out. */
export function summarize(findings: Finding[]): Pick<AuditReport, 'findings' | 'counts' | 'omitted'> {
  const counts: AuditReport['counts'] = {};
  const listed = findings.filter((f) => (counts[f.kind] = (counts[f.kind] ?? 0) + 1) <= MAX_LISTED_PER_KIND);
  return { findings: listed, counts, ...(listed.length < findings.length && { omitted: findings.length - listed.length }) };
}

const ruleText = (r: { chain: string; spec: string[] }) => `-A ${r.chain} ${r.spec.join(' ')}`;

/** The EIP a Kube-OVN style rule translates: `-d <eip>/32` (DNAT) or `--to-source <eip>` (SNAT). */
export function ruleAddress(spec: string[]): string | null {
  const at = (flag: string) => {
    const i = spec.indexOf(flag);
    return i >= 0 ? spec[i + 1]?.split('/')[0] ?? null : null;
  };
  return at('--to-source') ?? at('-d');
}
