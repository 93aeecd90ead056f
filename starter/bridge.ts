// The kube watcher bridge: Kube-OVN custom resources drive natflow's workflows. It is level-
// triggered: every event and every periodic resync compares what an object asks for with what
// its workflow has taken in, and sends only the difference — a start for an object without a
// workflow, a spec for a newer generation, a cancel for a delete or an orphan — so that an idle
// system writes no history. Comparisons read the objects' status (written by the workflows),
// visibility and queries, none of which adds to a history. Finalizers and status are written by
// the workflows themselves, except the Subnet's usage, which the bridge copies from its IPAM.
import { parseArgs } from 'node:util';
import { WorkflowNotFoundError, type Client, type QueryDefinition } from '@temporalio/client';
import { ApiException, CustomObjectsApi, KubeConfig, makeInformer, type Informer, type KubernetesObject, type ObjectCache } from '@kubernetes/client-node';
import { mergePatch } from '../activities/kube.js';
import type { EipSpec } from '../domain/eip.js';
import type { GatewaySpec } from '../domain/gateway.js';
import { crd, FINALIZER, KUBEOVN_GROUP, KUBEOVN_KINDS, KUBEOVN_VERSION, type KubeKind } from '../domain/kube.js';
import { workflowIds, type ResourceKind } from '../domain/names.js';
import type { NatSpec } from '../domain/nat-resources.js';
import { DEFAULT_EXTERNAL_SUBNET, sameSubnetSpec, type SubnetSpec } from '../domain/subnet.js';
import { gatewaySpecSignal, gatewayStateQuery, ipamUsageQuery, specChangedSignal, subnetSpecSignal } from '../domain/workflow-api.js';
import { connectTemporal, temporalTarget } from '../worker/connection.js';
import { loadKubeConfig } from '../worker/kube-config.js';
import { isMainModule } from '../worker/process.js';
import { findRunning, type ResourceRecord } from './find-resources.js';
import { ensureGateway, ensureSubnet, resourceStart, type HistoryLimitOverrides, type Resources } from './resources.js';

interface KubeOvnObject extends KubernetesObject {
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

type Watched = KubeKind;
const RESOURCE_KINDS: ResourceKind[] = ['eip', 'fip', 'dnat', 'snat'];
/** Subnets first, then gateways: a gateway's spec holds its VPC subnet's CIDR. */
const WATCHED: Watched[] = ['subnet', 'vpc-nat-gw', ...RESOURCE_KINDS];

/** Phases of a resource workflow that is already giving everything back: a cancel adds nothing. */
const LEAVING = new Set(['Deleting', 'Deleted']);
/** Visibility is eventually consistent: a workflow sent something this recently is not sent it again for being missing from a list. */
const VISIBILITY_GRACE_MS = 10_000;
/** What `sent` records for a cancel request. */
const CANCEL = 'cancel';
/**
 * A workflow sent a cancel is not sent another for this long while its status does not show the
 * cleanup yet: under a burst of deletes every status event and every resync would otherwise ask
 * again, each a describe and a cancel request of thousands (an accepted cancel is in its history).
 */
const CANCEL_GRACE_MS = 5 * 60_000;

export interface BridgeOptions {
  kubeConfig: KubeConfig;
  client: Client;
  taskQueue?: string;
  /** How often everything is re-listed and compared (level-triggered), ms. */
  resyncMs?: number;
  /** Lower per-run history limits for the workflows it starts (tests). */
  historyLimits?: HistoryLimitOverrides;
  log?: (msg: string) => void;
}

export class KubeBridge {
  private readonly api: CustomObjectsApi;
  private readonly resources: Resources;
  private readonly informers = new Map<Watched, Informer<KubeOvnObject> & ObjectCache<KubeOvnObject>>();
  /** Informers replaced by a restart: their errors no longer restart them. */
  private readonly retired = new WeakSet<object>();
  /** Kinds whose informer cache disagreed with a fresh list at the last resync. */
  private readonly suspect = new Set<Watched>();
  /**
   * What was last sent to each workflow (a generation, a spec), and when: a status or a
   * visibility list that has not caught up yet is no reason to send it again. Lost on restart,
   * which costs at most one repeated (and ignored) signal per workflow.
   */
  private readonly sent = new Map<string, { what: string; at: number }>();
  /** Events before the first resync are left to it: until then the caches are not all full. */
  private synced = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Work under way (event handling, resyncs): stop() waits for it, so nothing outlives the bridge. */
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly log: (msg: string) => void;

  constructor(private readonly opts: BridgeOptions) {
    this.api = opts.kubeConfig.makeApiClient(CustomObjectsApi);
    this.resources = { client: opts.client, taskQueue: opts.taskQueue, historyLimits: opts.historyLimits };
    this.log = opts.log ?? ((msg) => console.log(`[bridge] ${msg}`));
  }

  async start(): Promise<void> {
    for (const kind of WATCHED) this.informers.set(kind, await this.startInformer(kind));
    this.synced = true;
    await this.resync();
    const loop = () => {
      this.timer = setTimeout(() => void this.track(this.resync()).finally(() => !this.stopped && loop()), this.opts.resyncMs ?? 15_000);
    };
    loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await Promise.all([...this.informers.values()].map((i) => i.stop()));
    await Promise.allSettled([...this.inFlight]);
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.inFlight.add(work);
    void work.finally(() => this.inFlight.delete(work)).catch(() => undefined);
    return work;
  }

  private list(kind: Watched) {
    return this.api.listClusterCustomObject(crd(kind)) as Promise<{ items: KubeOvnObject[]; metadata: { resourceVersion?: string } }>;
  }

  /** A started informer: its cache is full (its first list is done) when this resolves. */
  private async startInformer(kind: Watched): Promise<Informer<KubeOvnObject> & ObjectCache<KubeOvnObject>> {
    const informer = makeInformer<KubeOvnObject>(this.opts.kubeConfig, `/apis/${KUBEOVN_GROUP}/${KUBEOVN_VERSION}/${KUBEOVN_KINDS[kind].plural}`, () => this.list(kind) as never);
    const handle = (what: string, work: (obj: KubeOvnObject) => Promise<void>) => (obj: KubeOvnObject) => {
      if (!this.synced) return;
      void this.track(work(obj)).catch((err) => this.log(`${kind} ${obj.metadata?.name} (${what}): ${oneLine(err)} (retried at the next resync)`));
    };
    informer.on('add', handle('added', (obj) => this.drive(kind, obj)));
    informer.on('update', handle('updated', (obj) => this.drive(kind, obj)));
    informer.on('delete', handle('deleted', (obj) => this.gone(kind, obj)));
    // The client's informer stops on a watch error: start it again (a resync covers the gap).
    const current = () => !this.stopped && !this.retired.has(informer);
    informer.on('error', (err) => {
      if (!current()) return;
      this.log(`${kind} watch failed (${oneLine(err)}); restarting it`);
      setTimeout(() => current() && void informer.start().catch(() => undefined), 1000);
    });
    await informer.start();
    return informer;
  }

  /** Level-triggered: compare every object with its workflow; collect orphans; restart a watch whose cache stopped following the API. */
  async resync(): Promise<void> {
    const live = new Set<string>();
    for (const kind of WATCHED) {
      try {
        const items = await this.freshList(kind);
        if (kind === 'subnet' || kind === 'vpc-nat-gw') {
          const drive = (item: KubeOvnObject) => (kind === 'subnet' ? this.driveIpam(item) : this.driveGateway(item));
          for (const item of items) await drive(item).catch((err) => this.log(`${kind} ${item.metadata?.name}: ${oneLine(err)}`));
          if (kind === 'vpc-nat-gw') await this.collectOrphans('gateway', new Set(items.map((i) => workflowIds.gateway(i.metadata!.name!))));
        } else {
          const ids = await this.resyncResources(kind, items);
          ids.forEach((id) => live.add(id));
        }
      } catch (err) {
        this.log(`resync of ${kind} failed: ${oneLine(err)}`);
      }
    }
    for (const id of this.sent.keys()) if (!live.has(id) && !this.isEntity(id)) this.sent.delete(id);
  }

  private isEntity(workflowId: string): boolean {
    return workflowId.startsWith(workflowIds.gateway('')) || workflowId.startsWith(workflowIds.ipam(''));
  }

  /** The kind's objects from the API; a watch that was behind at the last resync too is restarted. */
  private async freshList(kind: Watched): Promise<KubeOvnObject[]> {
    const { items } = await this.list(kind);
    const informer = this.informers.get(kind);
    const stale = items.some((item) => informer?.get(item.metadata!.name!)?.metadata?.resourceVersion !== item.metadata?.resourceVersion);
    if (stale && this.suspect.has(kind)) {
      this.log(`${kind} watch is behind the API since the last resync: restarting it`);
      // The old cache serves until the new one is full: a gateway's spec is read from the Subnet
      // cache, and an empty one would send it without its VPC CIDR.
      this.informers.set(kind, await this.startInformer(kind));
      if (informer) this.retired.add(informer);
      await informer?.stop();
    }
    if (stale) this.suspect.add(kind);
    else this.suspect.delete(kind);
    return items;
  }

  /** One kind of resource: its running workflows listed once, each object compared; returns the workflow IDs of its objects. */
  private async resyncResources(kind: ResourceKind, items: KubeOvnObject[]): Promise<Set<string>> {
    const running = new Map((await findRunning(this.resources, kind)).map((w) => [w.workflowId, w]));
    const ids = new Set<string>();
    for (const item of items) {
      const id = workflowIds.resource(kind, { name: item.metadata!.name!, uid: item.metadata!.uid! });
      ids.add(id);
      await this.driveResource(kind, item, running.get(id) ?? null).catch((err) => this.log(`${kind} ${item.metadata?.name}: ${oneLine(err)}`));
    }
    await this.collectOrphans(kind, ids, [...running.values()]);
    return ids;
  }

  /** An event: the object, and what depends on it (a gateway's external subnet; the gateways in front of a VPC subnet). */
  private async drive(kind: Watched, obj: KubeOvnObject): Promise<void> {
    if (kind === 'vpc-nat-gw') {
      await this.driveGateway(obj);
      const external = this.informers.get('subnet')?.get(this.gatewaySpec(obj).externalSubnet!);
      if (external) await this.driveIpam(external);
    } else if (kind === 'subnet') {
      await this.driveIpam(obj);
      for (const gw of this.informers.get('vpc-nat-gw')?.list() ?? []) if (gw.spec?.subnet === obj.metadata?.name) await this.driveGateway(gw);
    } else {
      await this.driveResource(kind, obj);
    }
  }

  /**
   * An EIP or NAT rule: start its workflow if none runs, send it a newer generation, cancel it
   * on a delete — otherwise nothing. `running` is its running workflow from a visibility list
   * (null: none listed); an event leaves it out and decides from the object alone.
   */
  private async driveResource(kind: ResourceKind, obj: KubeOvnObject, running?: ResourceRecord | null): Promise<void> {
    const meta = obj.metadata!;
    const resource = { name: meta.name!, uid: meta.uid!, generation: meta.generation ?? 1, fromKube: true };
    const spec = (obj.spec ?? {}) as unknown as EipSpec | NatSpec;
    const start = resourceStart(kind, resource, spec, this.opts.taskQueue, this.opts.historyLimits);
    const workflowId = start.options.workflowId;
    // Signal-with-start: starts the workflow if none runs; a running one takes the spec if its generation is newer.
    const send = (graceMs?: number) =>
      this.sendOnce(workflowId, String(resource.generation), () => this.opts.client.workflow.signalWithStart(start.workflow, { ...start.options, signal: specChangedSignal, signalArgs: [{ spec, generation: resource.generation }] }), graceMs);
    if (meta.deletionTimestamp) {
      // Already cleaning up: its status says so (visibility may not: a lean run does not write the
      // phases it passes through), or it was sent the cancel a moment ago. A cancel adds nothing.
      if (LEAVING.has(running?.phase ?? '') || LEAVING.has(String(obj.status?.phase ?? ''))) return;
      if (this.sentRecently(workflowId, CANCEL, CANCEL_GRACE_MS)) return;
      if (await this.cancel(workflowId)) return void this.sent.set(workflowId, { what: CANCEL, at: Date.now() });
      // None runs but our finalizer is still on: a run started now finds the object deleting, only cleans up and lets it go.
      if (await this.stillHeld(kind, obj)) await send(VISIBILITY_GRACE_MS);
      return;
    }
    if (running === null) return send(VISIBILITY_GRACE_MS);
    // Its workflow has taken this generation in (its status says so), or is sent it once.
    if (Number(obj.status?.observedGeneration ?? 0) < resource.generation) await send();
  }

  /**
   * Sends `what` unless it was sent to this workflow already (within `graceMs`, when given). It is
   * claimed before it is sent, so that an event and a resync racing each other send it once.
   */
  private async sendOnce(workflowId: string, what: string, send: () => Promise<unknown>, graceMs = Infinity): Promise<void> {
    if (this.sentRecently(workflowId, what, graceMs)) return;
    this.sent.set(workflowId, { what, at: Date.now() });
    try {
      await send();
    } catch (err) {
      this.sent.delete(workflowId);
      throw err;
    }
  }

  private sentRecently(workflowId: string, what: string, graceMs: number): boolean {
    const last = this.sent.get(workflowId);
    return last?.what === what && Date.now() - last.at < graceMs;
  }

  /**
   * Workflows the bridge started whose object no longer exists (deleted and its finalizer removed
   * while nobody drove the cleanup): cancelled, so that their cleanup runs. A list and visibility
   * race, so each is checked against the API first. Workflows without the bridge's memo (the CLI's) are never touched.
   */
  private async collectOrphans<K extends ResourceKind | 'gateway'>(kind: K, objectIds: Set<string>, running?: ResourceRecord<K>[]): Promise<void> {
    for (const w of running ?? (await findRunning(this.resources, kind))) {
      if (!w.fromKube || objectIds.has(w.workflowId) || LEAVING.has(w.phase)) continue;
      const object = await this.get(kind === 'gateway' ? 'vpc-nat-gw' : (kind as ResourceKind), w.name);
      if (object && (kind === 'gateway' || object.metadata?.uid === w.workflowId.slice(w.workflowId.lastIndexOf('/') + 1))) continue;
      this.log(`${kind} ${w.name}: its object is gone; cancelling its workflow ${w.workflowId}, which cleans up`);
      await this.opts.client.workflow.getHandle(w.workflowId).cancel().catch((err) => {
        if (!(err instanceof WorkflowNotFoundError)) throw err;
      });
    }
  }

  /**
   * Whether the API still holds this object with our finalizer. An event can be older than the end
   * of the run that released it (the run ends after its release): the API, read after seeing that no
   * run is left, tells whether a cleanup is still owed.
   */
  private async stillHeld(kind: Watched, obj: KubeOvnObject): Promise<boolean> {
    if (!(obj.metadata!.finalizers ?? []).includes(FINALIZER)) return false;
    const now = await this.get(kind, obj.metadata!.name!);
    return now?.metadata?.uid === obj.metadata!.uid && (now?.metadata?.finalizers ?? []).includes(FINALIZER);
  }

  /** The object, or null when the API does not have it. */
  private async get(kind: Watched, name: string): Promise<KubeOvnObject | null> {
    try {
      return (await this.api.getClusterCustomObject({ ...crd(kind), name })) as KubeOvnObject;
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return null;
      throw err;
    }
  }

  /** True when a running workflow was asked to clean up. */
  private async cancel(workflowId: string): Promise<boolean> {
    try {
      const handle = this.opts.client.workflow.getHandle(workflowId);
      if ((await handle.describe()).status.name !== 'RUNNING') return false;
      await handle.cancel();
      return true;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      throw err;
    }
  }

  /** A running workflow's answer to a query (no history), or null when none runs. */
  private async ask<T>(workflowId: string, query: QueryDefinition<T>): Promise<T | null> {
    try {
      const handle = this.opts.client.workflow.getHandle(workflowId);
      if ((await handle.describe()).status.name !== 'RUNNING') return null;
      return await handle.query(query);
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return null;
      throw err;
    }
  }

  private async gone(kind: Watched, obj: KubeOvnObject): Promise<void> {
    if (kind === 'vpc-nat-gw') {
      await this.cancel(workflowIds.gateway(obj.metadata!.name!));
      return;
    }
    if (kind === 'subnet') return; // an IPAM with allocations must outlive a mistaken delete
    // Normally the workflow held the object until its cleanup was done (its last status says it
    // was cleaning up); this covers a forced removal.
    if (LEAVING.has(String(obj.status?.phase ?? ''))) return;
    const meta = obj.metadata!;
    const workflowId = workflowIds.resource(kind, { name: meta.name!, uid: meta.uid! });
    this.sent.delete(workflowId);
    await this.cancel(workflowId);
  }

  // --- gateways and subnets ------------------------------------------------------------------

  /** External subnets: the default one and every subnet a gateway names as external. */
  private externalSubnets(): Set<string> {
    const names = new Set([DEFAULT_EXTERNAL_SUBNET]);
    for (const gw of this.informers.get('vpc-nat-gw')?.list() ?? []) for (const s of (gw.spec?.externalSubnets as string[] | undefined) ?? []) names.add(s);
    return names;
  }

  /** A VpcNatGateway as its workflow sees it: the VPC subnet's CIDR comes from the Subnet its `spec.subnet` names (from the cache unless given). */
  private gatewaySpec(obj: KubeOvnObject, vpcSubnet = this.informers.get('subnet')?.get(String(obj.spec?.subnet ?? ''))): GatewaySpec {
    const spec = obj.spec ?? {};
    return {
      name: obj.metadata!.name!,
      externalSubnet: ((spec.externalSubnets as string[] | undefined) ?? [])[0] ?? DEFAULT_EXTERNAL_SUBNET,
      lanIp: spec.lanIp as string | undefined,
      internalCidr: subnetSpecOf(vpcSubnet)?.cidrBlock,
    };
  }

  private async driveGateway(obj: KubeOvnObject): Promise<void> {
    const meta = obj.metadata!;
    const workflowId = workflowIds.gateway(meta.name!);
    let spec = this.gatewaySpec(obj);
    const kube = { uid: meta.uid!, generation: meta.generation ?? 1 };
    const state = await this.ask(workflowId, gatewayStateQuery);
    if (meta.deletionTimestamp) {
      if (state && !state.deleting) await this.opts.client.workflow.getHandle(workflowId).cancel();
      // None runs but our finalizer is still on: a run started now only cleans up and lets it go.
      else if (!state && (await this.stillHeld('vpc-nat-gw', obj))) await ensureGateway(this.resources, spec, kube);
      return;
    }
    if (!state) {
      await ensureGateway(this.resources, spec, kube);
      return;
    }
    const adopting = state.kubeUid !== kube.uid;
    // An object older than what the workflow has seen (a resync's list taken before the event that
    // already brought the change) is not sent: it would be refused, after a signal for nothing.
    if (!adopting && kube.generation < (state.observedGeneration ?? 0)) return;
    if (!adopting && sameGatewaySpec(state.spec, spec)) return;
    // The VPC CIDR comes from the Subnet cache, which may be behind (a watch that fell behind, or
    // the event not in yet): what is sent is read from the API, so that no older CIDR goes out.
    const vpcSubnet = obj.spec?.subnet ? await this.get('subnet', String(obj.spec.subnet)) : null;
    spec = this.gatewaySpec(obj, vpcSubnet ?? undefined);
    // Sent once: its workflow may not show it yet, or not take it. A workflow linked to no object
    // (registered by the CLI, as `npm start` does) or to an older one adopts this one.
    if (adopting || !sameGatewaySpec(state.spec, spec)) {
      await this.sendOnce(workflowId, JSON.stringify([kube, spec]), () => this.opts.client.workflow.getHandle(workflowId).signal(gatewaySpecSignal, { spec, generation: kube.generation, kube: { uid: kube.uid } }));
    }
  }

  /** An external subnet (others have no IPAM): its IPAM runs with the Subnet's spec, and its usage is in the Subnet's status. */
  private async driveIpam(obj: KubeOvnObject): Promise<void> {
    const meta = obj.metadata!;
    const spec = this.externalSubnets().has(meta.name!) ? subnetSpecOf(obj) : null;
    if (!spec) return;
    const generation = meta.generation ?? 1;
    const workflowId = workflowIds.ipam(spec.name);
    const summary = await this.ask(workflowId, ipamUsageQuery);
    if (!summary) {
      await ensureSubnet(this.resources, spec, generation);
      return;
    }
    // A spec in force that is not the Subnet's, or a spec waiting that the Subnet no longer asks for.
    const inForce = sameSubnetSpec(summary.subnet, spec);
    if (inForce ? summary.pendingSpec : !summary.pendingSpec || !sameSubnetSpec(summary.pendingSpec.spec, spec)) {
      await this.sendOnce(workflowId, JSON.stringify([generation, spec]), () => this.opts.client.workflow.getHandle(workflowId).signal(subnetSpecSignal, { spec, generation }));
    }
    const status = obj.status ?? {};
    if (Object.entries(summary.usage).some(([field, value]) => status[field] !== value)) {
      await this.api.patchClusterCustomObjectStatus({ ...crd('subnet'), name: spec.name, body: { status: summary.usage } }, mergePatch);
    }
  }
}

/** One line for the log: the API's own message when the error carries its response (the client's message is the whole response). */
function oneLine(err: unknown): string {
  const { code, body, message } = (err ?? {}) as { code?: number; body?: unknown; message?: string };
  try {
    const apiMessage = (typeof body === 'string' ? JSON.parse(body) : body) as { message?: unknown } | undefined;
    if (typeof apiMessage?.message === 'string') return `HTTP ${code}: ${apiMessage.message}`;
  } catch {
    // not JSON: the message's first line below
  }
  return String(message ?? err).split('\n')[0]!;
}

/** The fields of a Subnet that natflow uses; null without a cidrBlock. */
function subnetSpecOf(subnet: KubeOvnObject | undefined): SubnetSpec | null {
  if (!subnet?.spec?.cidrBlock) return null;
  return { name: subnet.metadata!.name!, cidrBlock: String(subnet.spec.cidrBlock), gateway: String(subnet.spec.gateway ?? ''), excludeIps: (subnet.spec.excludeIps as string[] | undefined) ?? [] };
}

/** The fields a gateway workflow takes from its VpcNatGateway and VPC subnet (unset and empty alike). */
function sameGatewaySpec(a: GatewaySpec, b: GatewaySpec): boolean {
  const fields = (s: GatewaySpec) => JSON.stringify([s.externalSubnet ?? '', s.lanIp ?? '', s.internalCidr ?? '']);
  return fields(a) === fields(b);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { kubeconfig: { type: 'string' }, address: { type: 'string' }, namespace: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    console.log('usage: bridge [--kubeconfig FILE] [--address host:port] [--namespace default]\nWatches kubeovn.io resources and drives natflow workflows.');
    return;
  }
  const kubeConfig = loadKubeConfig(values.kubeconfig);
  const temporal = await connectTemporal(temporalTarget({ address: values.address, namespace: values.namespace }), { worker: false });
  const bridge = new KubeBridge({ kubeConfig, client: temporal.client });
  await bridge.start();
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => void bridge.stop().then(temporal.close).then(() => process.exit(0)));
}

if (isMainModule(import.meta.url)) {
  await main();
}
