// The allocator behind a subnet's IPAM workflow: pure, so the workflow's state transitions are
// plain function calls and every rule here is unit-testable without a server.
import { NatflowError, Reason } from './errors.js';
import type { HistoryLimits } from './history-limits.js';
import { cidrContains, formatIPv4, formatRanges, parseIPv4 } from './ip.js';
import { isAssignable, isReserved, parseSubnet, type ParsedSubnet, type SubnetSpec, type SubnetUsage } from './subnet.js';

export interface AllocateRequest {
  /** Who holds the address: the owning resource's workflow ID (name + uid). */
  owner: string;
  /** A specific address (Kube-OVN `spec.v4ip`), or none for the next free one. */
  requested?: string;
}

export interface Allocation {
  owner: string;
  address: string;
  prefixLength: number;
}

/** What survives continue-as-new: owner → address. */
export type Allocations = Record<string, string>;

/** A newer Subnet spec not taken (yet): taking it would strand allocations, which are never dropped. */
export interface PendingSpec {
  spec: SubnetSpec;
  generation: number;
  /** Why it waits: the allocations it would leave outside the CIDR or reserved. */
  reason: string;
}

/** An IPAM workflow's input: its subnet, and on continue-as-new everything it carries. */
export interface IpamInput {
  subnet: SubnetSpec;
  allocations?: Allocations;
  /** The Subnet generation `subnet` comes from (0: not from Kubernetes). */
  generation?: number;
  pendingSpec?: PendingSpec;
  /** Continue-as-new once history is this long (the last release's only limit; also `limits.events`). */
  maxHistoryLength?: number;
  /** Lower history limits (tests); see workflows/history-budget.ts. */
  limits?: Partial<HistoryLimits>;
}

/** What an IPAM workflow answers about itself without its allocations: small at any subnet size. */
export interface IpamSummary {
  subnet: SubnetSpec;
  usage: SubnetUsage;
  observedGeneration: number;
  pendingSpec?: PendingSpec;
}

/** What an IPAM workflow answers when asked: its subnet, Kube-OVN's usage fields, every allocation. */
export interface IpamState extends IpamSummary {
  allocations: Allocations;
}

/** At most this many stranded allocations are named in a refusal. */
const NAMED_IN_REASON = 5;

export class Ipam {
  private subnet: ParsedSubnet;
  /** The Subnet generation of the spec in force. */
  private generation: number;
  /** A newer spec that would strand allocations: new ones must fit it too, so that it can be taken once they are released. */
  private waiting: { pending: PendingSpec; parsed: ParsedSubnet | null } | null = null;
  private readonly byOwner = new Map<string, number>();
  private readonly byAddress = new Map<number, string>();
  /**
   * No address below it is free to hand out: the first-free search starts there, so that a burst
   * of allocations is not quadratic in the subnet's use. Back to the start when the spec in force
   * or the waiting one changes; lowered by a release.
   */
  private freeFrom: number;

  constructor(spec: SubnetSpec, allocations: Allocations = {}, carried: { generation?: number; pendingSpec?: PendingSpec } = {}) {
    this.subnet = parseSubnet(spec);
    this.freeFrom = this.subnet.cidr.first;
    this.generation = carried.generation ?? 0;
    for (const [owner, address] of Object.entries(allocations)) this.hold(owner, parseIPv4(address));
    if (carried.pendingSpec) this.propose(carried.pendingSpec.spec, carried.pendingSpec.generation);
  }

  get spec(): SubnetSpec {
    return this.subnet.spec;
  }

  /** Its spec, usage and any waiting spec: what the bridge compares and publishes. */
  summary(): IpamSummary {
    return { subnet: this.spec, usage: this.usage(), observedGeneration: this.generation, ...(this.waiting && { pendingSpec: this.waiting.pending }) };
  }

  /** Everything a next run needs (continue-as-new). */
  carried(): Pick<IpamInput, 'subnet' | 'allocations' | 'generation' | 'pendingSpec'> {
    return { subnet: this.spec, allocations: this.allocations(), generation: this.generation, ...(this.waiting && { pendingSpec: this.waiting.pending }) };
  }

  /**
   * A new spec for the subnet (ignored unless `generation` is newer than the one in force):
   * taken when every allocation is still assignable in it; otherwise the current one stays and
   * the new one waits (`pendingSpec` in the summary) until the allocations that do not fit are
   * released. A spec that does not parse waits too, with its error as the reason.
   */
  propose(spec: SubnetSpec, generation: number): void {
    if (generation <= this.generation) return;
    this.freeFrom = this.subnet.cidr.first; // what may be handed out changes with the waiting spec
    let parsed: ParsedSubnet;
    try {
      parsed = parseSubnet(spec);
    } catch (err) {
      if (!(err instanceof NatflowError)) throw err;
      this.waiting = { pending: { spec, generation, reason: err.message }, parsed: null };
      return;
    }
    const stranded = [...this.byAddress].filter(([address]) => !isAssignable(parsed, address));
    if (stranded.length === 0) {
      this.subnet = parsed;
      this.freeFrom = parsed.cidr.first;
      this.generation = generation;
      this.waiting = null;
      return;
    }
    const named = stranded.slice(0, NAMED_IN_REASON).map(([address, owner]) => `${formatIPv4(address)} (${owner})`);
    const more = stranded.length > NAMED_IN_REASON ? ` and ${stranded.length - NAMED_IN_REASON} more` : '';
    const reason = `${stranded.length} allocation(s) would be outside ${spec.cidrBlock} or reserved: ${named.join(', ')}${more}; the spec is taken once they are released`;
    this.waiting = { pending: { spec, generation, reason }, parsed };
  }

  /** Checks a request without changing anything (the update validator calls this). */
  check(req: AllocateRequest): void {
    this.pick(req);
  }

  /** Idempotent per owner: a retried allocation returns the address the owner already holds. */
  allocate(req: AllocateRequest): Allocation {
    const address = this.pick(req);
    if (!this.byOwner.has(req.owner)) this.hold(req.owner, address);
    return { owner: req.owner, address: formatIPv4(address), prefixLength: this.subnet.cidr.prefixLength };
  }

  /** Idempotent: releasing what is not held is a no-op that returns null. A waiting spec that now fits is taken. */
  release(owner: string): string | null {
    const address = this.byOwner.get(owner);
    if (address === undefined) return null;
    this.byOwner.delete(owner);
    this.byAddress.delete(address);
    this.freeFrom = Math.min(this.freeFrom, address);
    if (this.waiting?.parsed && !isAssignable(this.waiting.parsed, address)) this.propose(this.waiting.pending.spec, this.waiting.pending.generation);
    return formatIPv4(address);
  }

  allocations(): Allocations {
    return Object.fromEntries([...this.byOwner].map(([owner, address]) => [owner, formatIPv4(address)]));
  }

  usage(): SubnetUsage {
    const using = [...this.byAddress.keys()].sort((a, b) => a - b);
    const available: number[] = [];
    for (let a = this.subnet.cidr.first; a <= this.subnet.cidr.last; a++) {
      if (!isReserved(this.subnet, a) && !this.byAddress.has(a)) available.push(a);
    }
    return {
      v4usingIPs: using.length,
      v4availableIPs: available.length,
      v4usingIPrange: formatRanges(using),
      v4availableIPrange: formatRanges(available),
    };
  }

  private pick(req: AllocateRequest): number {
    if (typeof req?.owner !== 'string' || req.owner.length === 0) {
      throw new NatflowError(Reason.InvalidSpec, 'an allocation needs an owner');
    }
    const held = this.byOwner.get(req.owner);
    if (req.requested === undefined || req.requested === '') {
      return held ?? this.firstFree();
    }
    const wanted = this.parseRequested(req.requested);
    if (held !== undefined && held !== wanted) {
      throw new NatflowError(
        Reason.OwnerHoldsOtherAddress,
        `${req.owner} already holds ${formatIPv4(held)}; release it before asking for ${req.requested}`,
      );
    }
    const holder = this.byAddress.get(wanted);
    if (holder !== undefined && holder !== req.owner) {
      throw new NatflowError(Reason.AddressTaken, `${req.requested} is already allocated in subnet ${this.spec.name}`);
    }
    return wanted;
  }

  private parseRequested(requested: string): number {
    let wanted: number;
    try {
      wanted = parseIPv4(requested, 'requested address');
    } catch (err) {
      throw new NatflowError(Reason.InvalidSpec, (err as Error).message);
    }
    if (!cidrContains(this.subnet.cidr, wanted)) {
      throw new NatflowError(
        Reason.AddressOutOfRange,
        `${requested} is outside subnet ${this.spec.name} (${this.spec.cidrBlock})`,
      );
    }
    if (isReserved(this.subnet, wanted)) {
      throw new NatflowError(
        Reason.AddressReserved,
        `${requested} is reserved in subnet ${this.spec.name} (network, broadcast, gateway or excludeIps)`,
      );
    }
    if (!this.fitsWaiting(wanted)) {
      throw new NatflowError(Reason.AddressReserved, `${requested} is outside or reserved in the new spec of subnet ${this.spec.name}, which waits to be taken`);
    }
    return wanted;
  }

  /** Whether an address can also be kept under a waiting spec (always, when none waits). */
  private fitsWaiting(address: number): boolean {
    return !this.waiting?.parsed || isAssignable(this.waiting.parsed, address);
  }

  private firstFree(): number {
    for (let a = this.freeFrom; a <= this.subnet.cidr.last; a++) {
      if (!isReserved(this.subnet, a) && !this.byAddress.has(a) && this.fitsWaiting(a)) return (this.freeFrom = a);
    }
    throw new NatflowError(Reason.SubnetExhausted, `subnet ${this.spec.name} has no free address left`);
  }

  private hold(owner: string, address: number): void {
    this.byOwner.set(owner, address);
    this.byAddress.set(address, owner);
  }
}
