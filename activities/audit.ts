// The audit's control side: what natflow's workflows hold (every running resource, every gateway's
// and IPAM's state) and, with Kubernetes, the objects; and the repairs that go through a workflow
// or the API. Each repair checks again, just before it acts, that it is still needed and safe.
import { Context } from '@temporalio/activity';
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { KubeObjectView, LiveResource, Observation, Repair } from '../domain/audit.js';
import { crd, FINALIZER, type KubeKind } from '../domain/kube.js';
import { workflowIds, type ResourceKind } from '../domain/names.js';
import {
  eipClaimsQuery,
  gatewayChangedSignal,
  gatewayStateQuery,
  ipamStateQuery,
  ipamUsageQuery,
  releaseUpdate,
  removeRuleUpdate,
  restoreGatewaySignal,
  specChangedSignal,
  unbindEipUpdate,
  type AuditActivities,
} from '../domain/workflow-api.js';
import { findRunning } from '../starter/find-resources.js';
import { resourceStart } from '../starter/resources.js';
import { mergePatch } from './kube.js';

const RESOURCE_KINDS: ResourceKind[] = ['eip', 'fip', 'dnat', 'snat'];
const OBJECT_KINDS = [...RESOURCE_KINDS, 'vpc-nat-gw'] as const;

interface KubeObject {
  metadata?: { name?: string; uid?: string; generation?: number; deletionTimestamp?: string; finalizers?: string[] };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

export function createAuditActivities(client: Client, kubeConfig?: KubeConfig, taskQueue?: string): AuditActivities {
  const r = { client };
  const api = kubeConfig?.makeApiClient(CustomObjectsApi);
  const list = async (kind: KubeKind) => ((await api!.listClusterCustomObject(crd(kind))) as { items: KubeObject[] }).items;
  const uidOf = (workflowId: string) => workflowId.slice(workflowId.lastIndexOf('/') + 1);
  const running = async (workflowId: string) => {
    try {
      return (await client.workflow.getHandle(workflowId).describe()).status.name === 'RUNNING';
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      throw err;
    }
  };

  /**
   * The running workflow of rule `owner` (a uid) on `gateway`, asked where it is strongly consistent
   * rather than of visibility: a rule holds its claim on its EIP while its rule is on the gateway,
   * so a live one is among the claims of the EIP bound at its rule's address.
   */
  async function liveClaimant(gateway: string, owner: string): Promise<string | null> {
    const state = await client.workflow.getHandle(workflowIds.gateway(gateway)).query(gatewayStateQuery);
    const rule = state.rules[owner];
    if (!rule) return null;
    const eip = Object.entries(state.eips).find(([, a]) => a.address === rule.eip)?.[0];
    if (!eip || !(await running(eip))) return null;
    const claim = (await client.workflow.getHandle(eip).query(eipClaimsQuery)).find((c) => uidOf(c.owner) === owner);
    return claim && (await running(claim.owner)) ? claim.owner : null;
  }

  async function observeKube(): Promise<Observation['kube']> {
    if (!api) return undefined;
    const objects: KubeObjectView[] = [];
    for (const kind of OBJECT_KINDS) {
      for (const o of await list(kind)) {
        const m = o.metadata ?? {};
        objects.push({ kind, name: m.name ?? '', uid: m.uid ?? '', deleting: Boolean(m.deletionTimestamp), held: (m.finalizers ?? []).includes(FINALIZER), ready: o.status?.ready === true });
      }
    }
    const subnets = (await list('subnet')).map((s) => ({ name: s.metadata?.name ?? '', status: s.status ?? {} }));
    return { objects, subnets };
  }

  const activities: AuditActivities = {
    async observeControl() {
      const resources: LiveResource[] = [];
      for (const kind of RESOURCE_KINDS) {
        for (const w of await findRunning(r, kind)) resources.push({ kind, name: w.name, uid: uidOf(w.workflowId), workflowId: w.workflowId, phase: w.phase, fromKube: w.fromKube });
      }
      // One gateway or IPAM that does not answer is that one not checked, not the audit failed.
      const unobserved: { what: string; why: string }[] = [];
      const queried = async <T>(what: string, query: () => Promise<T>): Promise<T[]> => {
        try {
          return [await query()];
        } catch (err) {
          unobserved.push({ what, why: `its workflow did not answer: ${(err as Error).message}` });
          return [];
        }
      };
      const gateways = (await Promise.all((await findRunning(r, 'gateway')).map((g) => queried(`gateway ${g.name}`, async () => ({ name: g.name, state: await client.workflow.getHandle(g.workflowId).query(gatewayStateQuery) }))))).flat();
      const subnets = (await Promise.all((await findRunning(r, 'subnet')).map((s) => queried(`subnet ${s.name}`, async () => ({ name: s.name, state: await client.workflow.getHandle(s.workflowId).query(ipamStateQuery) }))))).flat();
      const kube = (await queried('Kubernetes objects', observeKube))[0];
      return { resources, gateways, subnets, ...(kube && { kube }), ...(unobserved.length > 0 && { unobserved }) };
    },

    async addressInUse({ gateway, address }) {
      const state = await client.workflow.getHandle(workflowIds.gateway(gateway)).query(gatewayStateQuery);
      const bound = Object.values(state.eips).some((a) => a.address === address);
      const ipams = await Promise.all((await findRunning(r, 'subnet')).map((s) => client.workflow.getHandle(s.workflowId).query(ipamStateQuery)));
      return { held: bound || ipams.some((ipam) => Object.values(ipam.allocations).includes(address)), forwarded: Object.values(state.rules).some((rule) => rule.eip === address) };
    },

    async repair(repair: Repair) {
      if ('restoreGateway' in repair) {
        await client.workflow.getHandle(workflowIds.gateway(repair.restoreGateway.gateway)).signal(restoreGatewaySignal);
        return { result: 'applied', detail: 'the gateway workflow restores its desired state' };
      }
      if ('removeRule' in repair) {
        const { gateway, owner } = repair.removeRule;
        const claimant = await liveClaimant(gateway, owner);
        if (claimant) return { result: 'skipped', detail: `${claimant} runs and holds its claim` };
        const { applied } = await client.workflow.getHandle(workflowIds.gateway(gateway)).executeUpdate(removeRuleUpdate, { args: [{ owner }] });
        return { result: 'applied', detail: applied ? 'removed from the gateway' : 'removed from the desired state (the agent is down: its next restore is without it)' };
      }
      if ('unbindAddress' in repair) {
        const { gateway, owner } = repair.unbindAddress;
        if (await running(owner)) return { result: 'skipped', detail: `${owner} runs` };
        await client.workflow.getHandle(workflowIds.gateway(gateway)).executeUpdate(unbindEipUpdate, { args: [{ owner }] });
        return { result: 'applied', detail: 'unbound' };
      }
      if ('releaseAllocation' in repair) {
        const { subnet, owner } = repair.releaseAllocation;
        if (await running(owner)) return { result: 'skipped', detail: `${owner} runs` };
        const address = await client.workflow.getHandle(workflowIds.ipam(subnet)).executeUpdate(releaseUpdate, { args: [{ owner }] });
        return { result: 'applied', detail: address ? `released ${address}` : 'it held nothing any more' };
      }
      if ('cancelWorkflow' in repair) {
        const { workflowId } = repair.cancelWorkflow;
        const obj = api && (await list(workflowId.split('/')[1] as ResourceKind)).find((o) => o.metadata?.uid === uidOf(workflowId));
        if (!api || obj) return { result: 'skipped', detail: 'its object exists (or Kubernetes is not reachable)' };
        await client.workflow.getHandle(workflowId).cancel();
        return { result: 'applied', detail: 'cancelled: its cleanup runs' };
      }
      if ('startWorkflow' in repair) {
        const { kind, name, uid } = repair.startWorkflow;
        const obj = api && (await list(kind)).find((o) => o.metadata?.uid === uid);
        if (!obj) return { result: 'skipped', detail: 'the object is gone' };
        if (await running(workflowIds.resource(kind, { name, uid }))) return { result: 'skipped', detail: 'its workflow runs' };
        // As the bridge starts it: a live object is adopted, a deleting one is cleaned up and let go.
        const generation = obj.metadata?.generation ?? 1;
        const start = resourceStart(kind, { name, uid, generation, fromKube: true }, (obj.spec ?? {}) as never, taskQueue);
        await client.workflow.signalWithStart(start.workflow, { ...start.options, signal: specChangedSignal, signalArgs: [{ spec: obj.spec as never, generation }] });
        return { result: 'applied', detail: `started ${start.options.workflowId}` };
      }
      if ('publishSubnetUsage' in repair) {
        const { subnet } = repair.publishSubnetUsage;
        if (!api) return { result: 'skipped', detail: 'Kubernetes is not reachable' };
        const summary = await client.workflow.getHandle(workflowIds.ipam(subnet)).query(ipamUsageQuery);
        await api.patchClusterCustomObjectStatus({ ...crd('subnet'), name: subnet, body: { status: summary.usage } }, mergePatch);
        return { result: 'applied', detail: 'usage written' };
      }
      if ('reassert' in repair) {
        await client.workflow.getHandle(repair.reassert.workflowId).signal(gatewayChangedSignal);
        return { result: 'applied', detail: 'signalled' };
      }
      return { result: 'skipped', detail: `not a repair this worker knows: ${JSON.stringify(repair)}` };
    },
  };
  // Each activity's client calls run under its attempt's cancellation signal: a call still retrying
  // when the worker stops ends with it, rather than retry on a connection closed meanwhile.
  return Object.fromEntries(
    Object.entries(activities).map(([name, fn]) => [name, (...args: unknown[]) => client.withAbortSignal(Context.current().cancellationSignal, () => (fn as (...a: unknown[]) => Promise<unknown>)(...args))]),
  ) as unknown as AuditActivities;
}
