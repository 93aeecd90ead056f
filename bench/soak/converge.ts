// Convergence: what the soak asked for (its model) against what the API, the gateway and Temporal
// hold. Every live object is Ready at its latest generation, or not Ready with the reason its
// situation calls for (a bad spec, a missing or unready EIP, a taken EIP, a duplicate port);
// every deleted object is gone (an EIP still used by a Ready rule is held, saying so). Until the
// audit is the oracle, a small interim check of the gateway too: its natflow-tagged rules belong
// exactly to the Ready rule objects, its EIP addresses exactly to the EIPs that hold one.
import type { Client } from '@temporalio/client';
import { Reason } from '../../domain/errors.js';
import { createAddressActivities } from '../../activities/gateway-addresses.js';
import { createNatActivities } from '../../activities/gateway-nat.js';
import { readyCondition, type KubeApi, type KubeObject } from './kube-api.js';
import { RESOURCE_KINDS, type Driver, type ModelObject, type ResourceKind } from './operations.js';

export interface Verdict {
  problems: string[];
  stats: { live: number; ready: number; refused: number; reasons: Record<string, number>; deletedGone: number; held: number; gatewayRules: number; gatewayAddresses: number };
}

/** What an object may show: Ready (when allowed), or not Ready with one of these reasons. */
interface Acceptable {
  ready: boolean;
  reasons: Set<string>;
}

const isDeleting = (o: KubeObject | undefined) => Boolean(o?.metadata?.deletionTimestamp);
const isReady = (o: KubeObject | undefined) => o?.status?.ready === true;
const reasonOf = (o: KubeObject) => readyCondition(o)?.reason ?? '(no Ready condition)';
const describe = (o: KubeObject) => `${o.status?.phase ?? '-'}/${reasonOf(o)}: ${readyCondition(o)?.message ?? ''}`;

export async function evaluate(opts: { api: KubeApi; driver: Driver; gateway: string; netns: string; client: Client; subnet: string }): Promise<Verdict> {
  const { api, driver, gateway } = opts;
  const problems: string[] = [];
  const stats: Verdict['stats'] = { live: 0, ready: 0, refused: 0, reasons: {}, deletedGone: 0, held: 0, gatewayRules: 0, gatewayAddresses: 0 };
  const inApi = new Map<ResourceKind, Map<string, KubeObject>>();
  for (const kind of RESOURCE_KINDS) inApi.set(kind, new Map((await api.list(kind)).map((o) => [o.metadata!.name!, o])));
  const eips = inApi.get('eip')!;
  const rules = (['fip', 'dnat', 'snat'] as const).flatMap((k) => [...inApi.get(k)!.values()].map((o) => ({ kind: k, o })));
  const liveRulesOn = (eip: string) => rules.filter((r) => !isDeleting(r.o) && r.o.spec?.eip === eip);
  const gw = await api.get('vpc-nat-gw', gateway);

  if (!gw) problems.push(`vpc-nat-gw ${gateway}: missing`);
  else if (!isReady(gw) || isDeleting(gw)) problems.push(`vpc-nat-gw ${gateway}: not Ready (${describe(gw)})`);

  const acceptable = (m: ModelObject, o: KubeObject): Acceptable => {
    const only = (...reasons: string[]): Acceptable => ({ ready: false, reasons: new Set(reasons) });
    if (m.kind === 'eip') {
      if (m.refusedWith) return only(m.refusedWith);
      if (!gw) return only(Reason.GatewayNotFound);
      if (m.fixedIp) {
        const holder = [...eips.values()].some((e) => e !== o && (e.status?.ip === m.fixedIp || e.spec?.v4ip === m.fixedIp));
        return { ready: true, reasons: new Set(holder ? [Reason.AddressTaken] : []) };
      }
      return { ready: true, reasons: new Set() };
    }
    const eip = eips.get(String(o.spec?.eip ?? ''));
    /** What the other live rules on the EIP may refuse this one for (the claim comes before the gateway checks the rule). */
    const conflicts = (on: KubeObject) => {
      const others = liveRulesOn(on.metadata!.name!).filter((r) => r.o !== o);
      const reasons = new Set<string>();
      if (others.length > 0 && (m.kind === 'fip' || others.some((r) => r.kind === 'fip'))) reasons.add(Reason.EipInUse);
      const port = (x: KubeObject) => `${String(x.spec?.protocol ?? '').toLowerCase()}/${Number(x.spec?.externalPort)}`;
      if (m.kind === 'dnat' && others.some((r) => r.kind === 'dnat' && port(r.o) === port(o))) reasons.add(Reason.DuplicateDnat);
      return reasons;
    };
    if (m.refusedWith === Reason.InvalidSpec) return isReady(eip) && !isDeleting(eip) ? only(Reason.InvalidSpec, ...conflicts(eip!)) : only(Reason.InvalidSpec, Reason.EipNotFound, Reason.EipNotReady);
    if (m.refusedWith) return only(m.refusedWith);
    if (!eip) return only(Reason.EipNotFound);
    // A Ready rule keeps its EIP held while it is deleted; a rule that came after waits, or stays
    // refused for the rule that holds it (still true: the claim is what it waits for).
    if (isDeleting(eip)) return { ready: true, reasons: new Set([Reason.EipNotReady, Reason.EipNotFound, ...conflicts(eip)]) };
    if (!isReady(eip)) return only(Reason.EipNotReady);
    return { ready: true, reasons: conflicts(eip) };
  };

  const modelled = new Set<string>();
  for (const m of driver.objects.values()) {
    const o = inApi.get(m.kind)!.get(m.name);
    modelled.add(`${m.kind}/${m.name}`);
    const what = `${m.kind} ${m.name}`;
    if (m.deleted) {
      if (!o) stats.deletedGone++;
      else if (m.kind === 'eip' && isDeleting(o) && liveRulesOn(m.name).some((r) => isReady(r.o))) {
        stats.held++;
        if (reasonOf(o) !== Reason.EipInUse) problems.push(`${what}: deleted and held by its Ready users, but says ${describe(o)}`);
      } else problems.push(`${what}: deleted, still there (${describe(o)})`);
      continue;
    }
    if (!o) {
      problems.push(`${what}: missing (created, never deleted)`);
      continue;
    }
    stats.live++;
    if (isDeleting(o)) problems.push(`${what}: being deleted, but nobody deleted it`);
    const generation = o.metadata?.generation ?? 1;
    if (o.status?.observedGeneration !== generation) problems.push(`${what}: status is of generation ${o.status?.observedGeneration ?? 'none'}, the object is at ${generation} (${describe(o)})`);
    const ok = acceptable(m, o);
    if (isReady(o)) {
      stats.ready++;
      if (!ok.ready) problems.push(`${what}: Ready, expected ${[...ok.reasons].join(' or ')}`);
    } else {
      if (ok.reasons.has(reasonOf(o))) {
        stats.refused++;
        stats.reasons[reasonOf(o)] = (stats.reasons[reasonOf(o)] ?? 0) + 1;
      }
      else problems.push(`${what}: not Ready (${describe(o)}), expected ${[...(ok.ready ? ['Ready'] : []), ...ok.reasons].join(' or ')}`);
    }
  }
  for (const [kind, objects] of inApi) for (const name of objects.keys()) if (!modelled.has(`${kind}/${name}`)) problems.push(`${kind} ${name}: in the API, but the soak never created it`);

  // What Ready rules on one EIP may be: a FIP alone; DNATs each on their own port. And liveness:
  // a Ready EIP with users that are not refused for their own spec has at least one of them Ready.
  const addresses = new Map<string, string>();
  for (const e of eips.values()) {
    const name = e.metadata!.name!;
    if (e.status?.ip) {
      if (addresses.has(e.status.ip)) problems.push(`eip ${name} and eip ${addresses.get(e.status.ip)} both show ${e.status.ip}`);
      addresses.set(e.status.ip, name);
    }
    const users = liveRulesOn(name);
    const ready = users.filter((r) => isReady(r.o));
    if (ready.some((r) => r.kind === 'fip') && ready.length > 1) problems.push(`eip ${name}: a FIP is Ready beside other Ready rules (${ready.map((r) => `${r.kind} ${r.o.metadata!.name}`).join(', ')})`);
    const ports = ready.filter((r) => r.kind === 'dnat').map((r) => `${String(r.o.spec?.protocol).toLowerCase()}/${Number(r.o.spec?.externalPort)}`);
    if (new Set(ports).size !== ports.length) problems.push(`eip ${name}: two Ready DNATs forward the same port (${ports.join(', ')})`);
    const eligible = users.filter((r) => !driver.objects.get(`${r.kind}/${r.o.metadata!.name}`)?.refusedWith);
    if (isReady(e) && !isDeleting(e) && eligible.length > 0 && ready.length === 0) problems.push(`eip ${name}: Ready with ${eligible.length} users, none of them Ready (${eligible.map((r) => `${r.kind} ${r.o.metadata!.name}: ${reasonOf(r.o)}`).join(', ')})`);
    for (const r of ready) if (r.o.status?.v4ip !== e.status?.ip) problems.push(`${r.kind} ${r.o.metadata!.name}: Ready with v4ip ${r.o.status?.v4ip}, its EIP ${name} has ${e.status?.ip}`);
  }

  // The gateway (interim oracle): rules tagged with the uids of exactly the Ready rule objects,
  // addresses of exactly the EIPs that hold one (Ready, or held by their users while deleted).
  const owners = new Set((await createNatActivities({ netns: opts.netns }).listNatRules()).map((r) => r.owner));
  const readyRuleUids = new Map(rules.filter((r) => isReady(r.o)).map((r) => [r.o.metadata!.uid!, `${r.kind} ${r.o.metadata!.name}`]));
  stats.gatewayRules = owners.size;
  for (const owner of owners) if (!readyRuleUids.has(owner)) problems.push(`gateway ${gateway}: rules tagged natflow:${owner}, which is no Ready rule object`);
  for (const [uid, what] of readyRuleUids) if (!owners.has(uid)) problems.push(`gateway ${gateway}: no rule of ${what} (Ready, uid ${uid})`);
  const onGateway = new Set(await createAddressActivities({ netns: opts.netns, externalInterface: 'net1' }).listEipAddresses());
  stats.gatewayAddresses = onGateway.size;
  const holding = [...eips.values()].filter((e) => e.status?.ip && (isReady(e) || reasonOf(e) === Reason.EipInUse));
  const expected = new Set(holding.map((e) => `${e.status!.ip}/24`));
  for (const a of onGateway) if (!expected.has(a)) problems.push(`gateway ${gateway}: address ${a} held by no EIP`);
  for (const e of holding) if (!onGateway.has(`${e.status!.ip}/24`)) problems.push(`gateway ${gateway}: address ${e.status!.ip} of eip ${e.metadata!.name} missing`);

  // Temporal: one running workflow per resource object; the subnet's usage counts the EIPs holding an address.
  const running = (await opts.client.workflow.count('NatflowKind IN ("eip", "fip", "dnat", "snat") AND ExecutionStatus = "Running"')).count;
  const objectCount = [...inApi.values()].reduce((sum, m) => sum + m.size, 0);
  if (running !== objectCount) problems.push(`temporal: ${running} resource workflows running for ${objectCount} objects in the API`);
  const subnet = await api.get('subnet', opts.subnet);
  const allocated = [...eips.values()].filter((e) => e.status?.ip).length;
  if (subnet?.status?.v4usingIPs !== allocated) problems.push(`subnet ${opts.subnet}: v4usingIPs ${subnet?.status?.v4usingIPs}, ${allocated} EIPs show an address`);
  return { problems, stats };
}

/** Workflows that ended badly: a resource, gateway or IPAM workflow should never fail, be terminated or time out. */
export async function badlyEnded(client: Client): Promise<string[]> {
  const out: string[] = [];
  for await (const w of client.workflow.list({ query: 'ExecutionStatus IN ("Failed", "Terminated", "TimedOut")' })) out.push(`${w.workflowId} (${w.type}: ${w.status.name})`);
  return out;
}
