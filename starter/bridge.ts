// The kube watcher bridge: Kube-OVN custom resources drive natflow's workflows. It keeps no state
// of its own: every event, every periodic resync and every restart re-drives the objects it sees,
// and everything it sends is idempotent (signal-with-start, cancel). Finalizers and status are
// written by the workflows themselves (workflows/kube-sync.ts), never here — except the Subnet's
// usage, which it copies from the subnet's IPAM workflow on each resync.
import { parseArgs } from 'node:util';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { CustomObjectsApi, KubeConfig, makeInformer, type Informer, type KubernetesObject, type ObjectCache } from '@kubernetes/client-node';
import { mergePatch } from '../activities/kube.js';
import { crd, FINALIZER, KUBEOVN_GROUP, KUBEOVN_KINDS, KUBEOVN_VERSION, type KubeKind } from '../domain/kube.js';
import { workflowIds } from '../domain/names.js';
import type { EipSpec } from '../domain/eip.js';
import type { NatSpec } from '../domain/nat-resources.js';
import { DEFAULT_EXTERNAL_SUBNET, type SubnetSpec } from '../domain/subnet.js';
import { specChangedSignal } from '../domain/workflow-api.js';
import { connectTemporal, temporalTarget } from '../worker/connection.js';
import { isMainModule } from '../worker/process.js';
import { ensureGateway, ensureSubnet, resourceStart, subnetState } from './resources.js';

interface KubeOvnObject extends KubernetesObject {
  spec?: Record<string, unknown>;
}

type Watched = KubeKind;
const WATCHED = Object.keys(KUBEOVN_KINDS) as Watched[];

export interface BridgeOptions {
  kubeConfig: KubeConfig;
  client: Client;
  taskQueue?: string;
  /** How often everything is re-listed and re-driven (level-triggered), ms. */
  resyncMs?: number;
  log?: (msg: string) => void;
}

export class KubeBridge {
  private readonly api: CustomObjectsApi;
  private readonly informers = new Map<Watched, Informer<KubeOvnObject> & ObjectCache<KubeOvnObject>>();
  /** Kinds whose informer cache disagreed with a fresh list at the last resync. */
  private readonly suspect = new Set<Watched>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Work under way (event handling, resyncs): stop() waits for it, so nothing outlives the bridge. */
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly log: (msg: string) => void;

  constructor(private readonly opts: BridgeOptions) {
    this.api = opts.kubeConfig.makeApiClient(CustomObjectsApi);
    this.log = opts.log ?? ((msg) => console.log(`[bridge] ${msg}`));
  }

  async start(): Promise<void> {
    for (const kind of WATCHED) await this.startInformer(kind);
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

  private async startInformer(kind: Watched): Promise<void> {
    const informer = makeInformer<KubeOvnObject>(this.opts.kubeConfig, `/apis/${KUBEOVN_GROUP}/${KUBEOVN_VERSION}/${KUBEOVN_KINDS[kind].plural}`, () => this.list(kind) as never);
    const drive = (obj: KubeOvnObject) => void this.track(this.drive(kind, obj)).catch((err) => this.log(`${kind} ${obj.metadata?.name}: ${(err as Error).message} (retried at the next resync)`));
    informer.on('add', drive);
    informer.on('update', drive);
    informer.on('delete', (obj) => void this.track(this.gone(kind, obj)).catch((err) => this.log(`${kind} ${obj.metadata?.name}: ${(err as Error).message}`)));
    // The client's informer stops on a watch error: start it again (a resync covers the gap).
    informer.on('error', (err) => {
      if (this.stopped) return;
      this.log(`${kind} watch failed (${(err as Error)?.message ?? err}); restarting it`);
      setTimeout(() => !this.stopped && void informer.start().catch(() => undefined), 1000);
    });
    this.informers.set(kind, informer);
    await informer.start();
  }

  /** Level-triggered: re-drive every object; restart a watch whose cache stopped following the API. */
  async resync(): Promise<void> {
    for (const kind of WATCHED) {
      try {
        const { items } = await this.list(kind);
        const informer = this.informers.get(kind);
        const stale = items.some((item) => informer?.get(item.metadata!.name!)?.metadata?.resourceVersion !== item.metadata?.resourceVersion);
        if (stale && this.suspect.has(kind)) {
          this.log(`${kind} watch is behind the API since the last resync: restarting it`);
          await informer?.stop();
          this.informers.delete(kind);
          await this.startInformer(kind);
        }
        if (stale) this.suspect.add(kind);
        else this.suspect.delete(kind);
        for (const item of items) await this.drive(kind, item).catch((err) => this.log(`${kind} ${item.metadata?.name}: ${(err as Error).message}`));
      } catch (err) {
        this.log(`resync of ${kind} failed: ${(err as Error).message}`);
      }
    }
    await this.publishSubnetUsage().catch((err) => this.log(`subnet usage: ${(err as Error).message}`));
  }

  private async drive(kind: Watched, obj: KubeOvnObject): Promise<void> {
    if (kind === 'vpc-nat-gw') return this.driveGateway(obj);
    if (kind === 'subnet') return this.driveSubnet(obj);
    const meta = obj.metadata!;
    const resource = { name: meta.name!, uid: meta.uid!, generation: meta.generation ?? 1, fromKube: true };
    const workflowId = workflowIds.resource(kind, resource);
    if (meta.deletionTimestamp) {
      // Being deleted: cancel a running workflow; if none runs but our finalizer is still on,
      // start one, which finds the object deleting and only cleans up and lets it go.
      if (await this.cancel(workflowId)) return;
      if (!(meta.finalizers ?? []).includes(FINALIZER)) return;
    }
    const spec = (obj.spec ?? {}) as unknown as EipSpec | NatSpec;
    const start = resourceStart(kind, resource, spec, this.opts.taskQueue);
    await this.opts.client.workflow.signalWithStart(start.workflow, {
      ...start.options,
      signal: specChangedSignal,
      signalArgs: [{ spec, generation: resource.generation }],
    });
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

  private async gone(kind: Watched, obj: KubeOvnObject): Promise<void> {
    if (kind === 'vpc-nat-gw') {
      await this.cancel(workflowIds.gateway(obj.metadata!.name!));
      return;
    }
    if (kind === 'subnet') return; // an IPAM with allocations must outlive a mistaken delete
    // Normally the workflow held the object until its cleanup was done; this covers a forced removal.
    const meta = obj.metadata!;
    await this.cancel(workflowIds.resource(kind, { name: meta.name!, uid: meta.uid! }));
  }

  private subnetSpec(name: string): SubnetSpec | null {
    const subnet = this.informers.get('subnet')?.get(name);
    if (!subnet?.spec?.cidrBlock) return null;
    return { name, cidrBlock: String(subnet.spec.cidrBlock), gateway: String(subnet.spec.gateway ?? ''), excludeIps: (subnet.spec.excludeIps as string[] | undefined) ?? [] };
  }

  /** External subnets: the default one and every subnet a gateway names as external. */
  private externalSubnets(): Set<string> {
    const names = new Set([DEFAULT_EXTERNAL_SUBNET]);
    for (const gw of this.informers.get('vpc-nat-gw')?.list() ?? []) for (const s of (gw.spec?.externalSubnets as string[] | undefined) ?? []) names.add(s);
    return names;
  }

  private async driveSubnet(obj: KubeOvnObject): Promise<void> {
    const name = obj.metadata!.name!;
    const spec = this.subnetSpec(name);
    if (spec && this.externalSubnets().has(name)) await ensureSubnet({ client: this.opts.client, taskQueue: this.opts.taskQueue }, spec);
  }

  private async driveGateway(obj: KubeOvnObject): Promise<void> {
    const spec = obj.spec ?? {};
    const name = obj.metadata!.name!;
    if (obj.metadata?.deletionTimestamp) return void (await this.cancel(workflowIds.gateway(name)));
    const externalSubnet = ((spec.externalSubnets as string[] | undefined) ?? [])[0] ?? DEFAULT_EXTERNAL_SUBNET;
    const internalCidr = this.subnetSpec(String(spec.subnet ?? ''))?.cidrBlock;
    await ensureGateway({ client: this.opts.client, taskQueue: this.opts.taskQueue }, { name, externalSubnet, lanIp: spec.lanIp as string | undefined, internalCidr });
    const subnet = this.subnetSpec(externalSubnet);
    if (subnet) await ensureSubnet({ client: this.opts.client, taskQueue: this.opts.taskQueue }, subnet);
  }

  /** Copies each external subnet's IPAM usage into its Subnet status (Kube-OVN's fields). */
  private async publishSubnetUsage(): Promise<void> {
    for (const name of this.externalSubnets()) {
      if (!this.informers.get('subnet')?.get(name)) continue;
      const state = await subnetState({ client: this.opts.client }, name).catch(() => null);
      if (!state) continue;
      await this.api.patchClusterCustomObjectStatus({ ...crd('subnet'), name, body: { status: state.usage } }, mergePatch);
    }
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { kubeconfig: { type: 'string' }, address: { type: 'string' }, namespace: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    console.log('usage: bridge [--kubeconfig FILE] [--address host:port] [--namespace default]\nWatches kubeovn.io resources and drives natflow workflows.');
    return;
  }
  const kubeConfig = new KubeConfig();
  if (values.kubeconfig) kubeConfig.loadFromFile(values.kubeconfig);
  else kubeConfig.loadFromDefault();
  const temporal = await connectTemporal(temporalTarget({ address: values.address, namespace: values.namespace }), { worker: false });
  const bridge = new KubeBridge({ kubeConfig, client: temporal.client });
  await bridge.start();
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => void bridge.stop().then(temporal.close).then(() => process.exit(0)));
}

if (isMainModule(import.meta.url)) {
  await main();
}
