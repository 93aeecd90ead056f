// Traffic through a sample of the Ready FIPs and DNATs once everything has converged: from the
// lab's external namespace to the EIP, answered by the VM the rule names (a listener on each VM;
// only the right one may hear it). A FIP's EIP also answers a ping (that alone would not tell
// which VM is behind it, or whether the gateway answered itself).
import type { LabTopology } from '../../domain/lab.js';
import { Listener, ping, send } from '../../test/support/traffic.js';
import type { KubeApi, KubeObject } from './kube-api.js';
import type { Rng } from './prng.js';

export interface ProbeResult {
  what: string;
  ok: boolean;
  detail: string;
}

export async function probe(api: KubeApi, lab: LabTopology, rng: Rng, perKind: number): Promise<ProbeResult[]> {
  const vms = new Map(lab.vmIps.map((ip, i) => [ip, lab.vmNamespaces[i]!]));
  const eips = new Map((await api.list('eip')).map((e) => [e.metadata!.name!, e]));
  const byName = (a: KubeObject, b: KubeObject) => a.metadata!.name!.localeCompare(b.metadata!.name!);
  const sample = (items: KubeObject[]) => rng.shuffle(items.sort(byName)).slice(0, perKind);
  const onVm = (o: KubeObject) => o.status?.ready === true && !o.metadata?.deletionTimestamp && vms.has(String(o.spec?.internalIp));
  const fips = sample((await api.list('fip')).filter(onVm));
  const dnats = sample((await api.list('dnat')).filter((o) => onVm(o) && String(o.spec?.protocol).toLowerCase() === 'tcp'));
  const results: ProbeResult[] = [];
  let port = 9100;
  for (const [kind, rules] of [['fip', fips], ['dnat', dnats]] as const) {
    for (const rule of rules) {
      const address = String(eips.get(String(rule.spec?.eip))?.status?.ip ?? rule.status?.v4ip);
      const vm = String(rule.spec?.internalIp);
      const [sendPort, listenPort] = kind === 'fip' ? [port, port] : [Number(rule.spec?.externalPort), Number(rule.spec?.internalPort)];
      port++;
      const token = `soak-${kind}-${rule.metadata!.name}`;
      const what = `${kind} ${rule.metadata!.name} (${address}${kind === 'dnat' ? `:${sendPort}` : ''} → ${vm}${kind === 'dnat' ? `:${listenPort}` : ''})`;
      const listeners = new Map<string, Listener>();
      try {
        for (const [ip, ns] of vms) listeners.set(ip, await Listener.open(ns, listenPort));
        const delivered = await send(lab.clientNs, address, sendPort, token);
        const heard = delivered && (await listeners.get(vm)!.waitFor(token));
        const wrong = [...listeners].filter(([ip, l]) => ip !== vm && l.received.includes(token)).map(([ip]) => ip);
        const pinged = kind === 'fip' ? await ping(lab.clientNs, address) : true;
        const ok = heard && wrong.length === 0 && pinged;
        results.push({ what, ok, detail: ok ? 'answered by the right VM' : `delivered ${delivered}, heard by ${vm} ${heard}, heard by others [${wrong.join(', ')}], ping ${pinged}` });
      } finally {
        for (const l of listeners.values()) l.close();
      }
    }
  }
  return results;
}
