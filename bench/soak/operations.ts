// The soak's random operations through the Kubernetes API, and the model of what it asked for:
// which objects it created (and with what spec), which it deleted, which carry a spec that
// natflow must refuse with a given reason. The model depends only on the operations done, so
// the same seed gives the same operations; the checks (converge.ts) read it with the API's state.
import { Reason } from '../../domain/errors.js';
import type { KubeKind } from '../../domain/kube.js';
import type { Rng } from './prng.js';
import type { KubeApi, Spec } from './kube-api.js';

export type ResourceKind = 'eip' | 'fip' | 'dnat' | 'snat';
export const RESOURCE_KINDS: ResourceKind[] = ['eip', 'fip', 'dnat', 'snat'];

export interface ModelObject {
  kind: ResourceKind;
  name: string;
  spec: Spec;
  /** The reason natflow must refuse it with (a bad spec), when it must. */
  refusedWith?: string;
  /** An EIP asking for a fixed address: Ready, or refused as taken when another EIP holds it. */
  fixedIp?: string;
  deleted: boolean;
}

export const OPERATIONS = {
  'create-eip': 16,
  'create-fip': 11,
  'create-dnat': 10,
  'create-snat': 6,
  delete: 15,
  'spec-change': 8,
  'create-delete-race': 8,
  'eip-delete-in-use': 3,
  'bad-spec': 5,
  'gateway-delete-recreate': 0.6,
};
export type Operation = keyof typeof OPERATIONS;

const VM_IPS = ['10.0.1.10', '10.0.1.11'];
/** Mostly the lab's VMs (probes can tell them apart), sometimes an address with no VM behind it. */
const internalIp = (rng: Rng) => (rng.chance(0.85) ? rng.pick(VM_IPS) : `10.0.1.${rng.int(20, 40)}`);
/** A small port range, so that duplicate DNATs (same EIP, protocol and port) happen. */
const externalPort = (rng: Rng) => String(rng.int(8000, 8011));
const SNAT_SOURCES = ['10.0.1.0/24', '10.0.1.10/32', '10.0.1.11', '10.0.1.0/25', '10.0.1.128/25'];
/** Fixed EIP addresses are asked from the top of the lab's /24: the allocator hands out from the bottom. */
const fixedIp = (rng: Rng) => `172.18.0.${rng.int(244, 250)}`;
/** Live objects above which creates give way to deletes. */
const MAX_LIVE = 70;

export class Driver {
  readonly objects = new Map<string, ModelObject>();
  readonly counts: Record<string, number> = {};
  /** Refusals by the API that were expected (bad specs the CRDs catch). */
  readonly apiRefusals: string[] = [];
  /** Operations whose outcome was wrong or that could not be done: each a failure of the run. */
  readonly failures: string[] = [];
  /** The gateway object was deleted and is not back (its delete did not complete in time). */
  gatewayDown = false;
  private serial = 0;

  constructor(
    private readonly rng: Rng,
    private readonly api: KubeApi,
    private readonly gateway: string,
    private readonly applyGateway: () => Promise<void>,
    private readonly log: (msg: string) => void,
    private readonly gatewayGoneTimeoutMs = 90_000,
  ) {}

  private key = (kind: ResourceKind, name: string) => `${kind}/${name}`;
  live(kind?: ResourceKind): ModelObject[] {
    return [...this.objects.values()].filter((o) => !o.deleted && (!kind || o.kind === kind));
  }
  private count(what: string): void {
    this.counts[what] = (this.counts[what] ?? 0) + 1;
  }
  private name(prefix: string): string {
    return `${prefix}${++this.serial}`;
  }
  /** Live rules naming an EIP. */
  usersOf(eip: string): ModelObject[] {
    return this.live().filter((o) => o.kind !== 'eip' && o.spec.eip === eip);
  }

  private async create(kind: ResourceKind, name: string, spec: Spec, extra: Partial<ModelObject> = {}): Promise<boolean> {
    const answer = await this.api.create(kind, name, spec);
    if (!answer.ok) {
      this.failures.push(`create ${kind} ${name} ${JSON.stringify(spec)} refused by the API: ${answer.code} ${answer.message}`);
      return false;
    }
    this.objects.set(this.key(kind, name), { kind, name, spec, deleted: false, ...extra });
    return true;
  }

  private async remove(o: ModelObject): Promise<void> {
    o.deleted = true; // asked for, whatever the answer: a lost answer is retried until it is one
    const answer = await this.api.del(o.kind, o.name);
    if (!answer.ok) this.failures.push(`delete ${o.kind} ${o.name} refused by the API: ${answer.code} ${answer.message}`);
  }

  /** An EIP for a new rule: mostly a good live one, sometimes any live one, one being deleted, or none. */
  private eipForRule(): string {
    const good = this.live('eip').filter((o) => !o.refusedWith);
    const r = this.rng.next();
    if (good.length > 0 && r < 0.85) return this.rng.pick(good).name;
    const all = [...this.objects.values()].filter((o) => o.kind === 'eip');
    if (all.length > 0 && r < 0.97) return this.rng.pick(all).name;
    return this.name('no-such-eip-');
  }

  /**
   * Picks and runs operation `index` of `total`; returns its name. The gateway is deleted only in
   * the first 70% of them, so that the end state is a full gateway again.
   */
  async step(index: number, total: number): Promise<Operation> {
    const weights = { ...OPERATIONS };
    const live = this.live();
    if (this.live('eip').length === 0) return this.run('create-eip');
    if (live.length > MAX_LIVE) for (const k of ['create-eip', 'create-fip', 'create-dnat', 'create-snat'] as const) weights[k] /= 4;
    if (this.gatewayDown || index >= total * 0.7) weights['gateway-delete-recreate'] = 0;
    return this.run(this.rng.weighted(weights));
  }

  private async run(op: Operation): Promise<Operation> {
    this.count(op);
    const rng = this.rng;
    switch (op) {
      case 'create-eip': {
        if (rng.chance(0.1)) {
          const ip = fixedIp(rng);
          await this.create('eip', this.name('e'), { natGwDp: this.gateway, v4ip: ip }, { fixedIp: ip });
        } else {
          await this.create('eip', this.name('e'), { natGwDp: this.gateway, ...(rng.chance(0.3) && { externalSubnet: 'ovn-vpc-external-network' }) });
        }
        break;
      }
      case 'create-fip':
        await this.create('fip', this.name('f'), { eip: this.eipForRule(), internalIp: internalIp(rng) });
        break;
      case 'create-dnat':
        await this.create('dnat', this.name('d'), this.dnatSpec(this.eipForRule()));
        break;
      case 'create-snat':
        await this.create('snat', this.name('s'), { eip: this.eipForRule(), internalCIDR: rng.pick(SNAT_SOURCES) });
        break;
      case 'delete': {
        const live = this.live();
        if (live.length > 0) await this.remove(rng.pick(live));
        break;
      }
      case 'spec-change':
        await this.specChange();
        break;
      case 'create-delete-race': {
        // Kube-OVN's race: the delete arrives 0–50 ms after the create.
        const kind = rng.pick(['eip', 'fip', 'fip', 'dnat', 'snat'] as const);
        const name = this.name(`race-${kind}-`);
        const spec: Spec = kind === 'eip' ? { natGwDp: this.gateway } : kind === 'fip' ? { eip: this.eipForRule(), internalIp: internalIp(rng) } : kind === 'dnat' ? this.dnatSpec(this.eipForRule()) : { eip: this.eipForRule(), internalCIDR: rng.pick(SNAT_SOURCES) };
        const pause = rng.int(0, 50);
        if (await this.create(kind, name, spec)) {
          await new Promise((r) => setTimeout(r, pause));
          await this.remove(this.objects.get(this.key(kind, name))!);
        }
        break;
      }
      case 'eip-delete-in-use': {
        const inUse = this.live('eip').filter((e) => this.usersOf(e.name).length > 0);
        if (inUse.length > 0) await this.remove(rng.pick(inUse));
        else this.count('eip-delete-in-use (none in use)');
        break;
      }
      case 'bad-spec':
        await this.badSpec();
        break;
      case 'gateway-delete-recreate':
        await this.gatewayDeleteRecreate();
        break;
    }
    return op;
  }

  private dnatSpec(eip: string): Spec {
    const rng = this.rng;
    return { eip, protocol: rng.chance(0.8) ? 'tcp' : 'udp', externalPort: externalPort(rng), internalIp: internalIp(rng), internalPort: rng.pick(['80', '8080', '9090']) };
  }

  private async specChange(): Promise<void> {
    const rules = this.live().filter((o) => o.kind !== 'eip' && !o.refusedWith);
    if (rules.length === 0) return;
    const o = this.rng.pick(rules);
    let change: Spec;
    if (o.kind === 'fip') change = { internalIp: o.spec.internalIp === VM_IPS[0] ? VM_IPS[1]! : VM_IPS[0]! }; // the FIP moves to the other VM
    else if (o.kind === 'dnat') change = this.rng.chance(0.5) ? { internalPort: this.rng.pick(['80', '8080', '9090']) } : { internalIp: internalIp(this.rng) };
    else change = { internalCIDR: this.rng.pick(SNAT_SOURCES) };
    const answer = await this.api.patchSpec(o.kind, o.name, change);
    if (answer.ok) Object.assign(o.spec, change);
    else this.failures.push(`spec change of ${o.kind} ${o.name} ${JSON.stringify(change)} refused by the API: ${answer.code} ${answer.message}`);
  }

  /** A spec natflow must refuse with a clear condition, or one the CRDs must refuse outright. */
  private async badSpec(): Promise<void> {
    const variant = this.rng.pick(['eip-out-of-range', 'eip-no-gateway', 'fip-no-eip', 'fip-outside-vpc', 'snat-too-wide', 'dnat-no-port', 'api:fip-bad-ip', 'api:dnat-sctp', 'api:eip-move'] as const);
    this.count(`bad-spec ${variant}`);
    const name = this.name('bad-');
    switch (variant) {
      case 'eip-out-of-range':
        return void (await this.create('eip', name, { natGwDp: this.gateway, v4ip: '10.9.9.9' }, { refusedWith: Reason.AddressOutOfRange }));
      case 'eip-no-gateway':
        return void (await this.create('eip', name, { natGwDp: 'no-such-gw' }, { refusedWith: Reason.GatewayNotFound }));
      case 'fip-no-eip':
        return void (await this.create('fip', name, { eip: `no-such-eip-${name}`, internalIp: VM_IPS[0]! }, { refusedWith: Reason.EipNotFound }));
      case 'fip-outside-vpc':
        return void (await this.create('fip', name, { eip: this.eipForRule(), internalIp: '192.168.7.7' }, { refusedWith: Reason.InvalidSpec }));
      case 'snat-too-wide':
        return void (await this.create('snat', name, { eip: this.eipForRule(), internalCIDR: '10.0.0.0/16' }, { refusedWith: Reason.InvalidSpec }));
      case 'dnat-no-port':
        return void (await this.create('dnat', name, { ...this.dnatSpec(this.eipForRule()), internalPort: '' }, { refusedWith: Reason.InvalidSpec }));
      case 'api:fip-bad-ip':
        return this.mustRefuse(() => this.api.create('fip', name, { eip: this.eipForRule(), internalIp: '10.0.1' }), `fip ${name} internalIp 10.0.1`, 'fip', name);
      case 'api:dnat-sctp':
        return this.mustRefuse(() => this.api.create('dnat', name, { ...this.dnatSpec(this.eipForRule()), protocol: 'sctp' }), `dnat ${name} protocol sctp`, 'dnat', name);
      case 'api:eip-move': {
        const eips = this.live('eip').filter((e) => e.spec.natGwDp === this.gateway);
        if (eips.length === 0) return;
        return this.mustRefuse(() => this.api.patchSpec('eip', eips[0]!.name, { natGwDp: 'elsewhere' }), `eip ${eips[0]!.name} natGwDp change`);
      }
    }
  }

  /** The CRDs' validation must refuse it (422); if the API took it, the run fails (and a created object is removed). */
  private async mustRefuse(attempt: () => Promise<{ ok: boolean; code?: number; message?: string }>, what: string, kind?: KubeKind, name?: string): Promise<void> {
    const answer = await attempt();
    if (!answer.ok && answer.code === 422) {
      this.apiRefusals.push(what);
      return;
    }
    this.failures.push(`${what}: expected the API to refuse it (422), got ${answer.ok ? 'accepted' : `${answer.code} ${answer.message}`}`);
    if (answer.ok && kind && name) await this.api.del(kind, name);
  }

  /**
   * The gateway deleted while in use: it is held (everything stays applied) until no EIP names it,
   * so everything on it is deleted too, a moment later and in random order; once the object is
   * gone it is created again, and the operations after this one fill it again.
   */
  private async gatewayDeleteRecreate(): Promise<void> {
    const t0 = Date.now();
    this.log(`deleting vpc-nat-gw ${this.gateway} while in use, then everything on it; it is created again once gone`);
    const answer = await this.api.del('vpc-nat-gw', this.gateway);
    if (!answer.ok) this.failures.push(`delete vpc-nat-gw ${this.gateway} refused: ${answer.code} ${answer.message}`);
    this.gatewayDown = true;
    await new Promise((r) => setTimeout(r, this.rng.int(0, 2000)));
    const onIt = this.live().filter((o) => (o.kind === 'eip' ? o.spec.natGwDp === this.gateway : true));
    for (const o of this.rng.shuffle(onIt)) await this.remove(o);
    if (await this.recreateGateway(this.gatewayGoneTimeoutMs)) this.log(`gateway ${this.gateway} deleted (with ${onIt.length} objects) and created again in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }

  /** After the operations: a gateway whose delete did not complete in time is drained again and created again. */
  async finish(): Promise<void> {
    if (!this.gatewayDown) return;
    for (const o of this.live().filter((x) => (x.kind === 'eip' ? x.spec.natGwDp === this.gateway : true))) await this.remove(o);
    await this.recreateGateway(this.gatewayGoneTimeoutMs);
  }

  /** Creates the gateway again once its old object is gone; false if it is not gone in time. */
  async recreateGateway(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while ((await this.api.get('vpc-nat-gw', this.gateway)) !== null) {
      if (Date.now() > deadline) {
        this.failures.push(`vpc-nat-gw ${this.gateway}: deleted, its users deleted, and still there after ${timeoutMs / 1000} s`);
        return false;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    await this.applyGateway();
    this.gatewayDown = false;
    return true;
  }
}
