// The allocator behind a subnet's IPAM workflow: pure, so the workflow's state transitions are
// plain function calls and every rule here is unit-testable without a server.
import { NatflowError, Reason } from './errors.js';
import { cidrContains, formatIPv4, formatRanges, parseIPv4 } from './ip.js';
import { isReserved, parseSubnet, type ParsedSubnet, type SubnetSpec, type SubnetUsage } from './subnet.js';

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

/** An IPAM workflow's input: its subnet, and on continue-as-new the allocations it carries. */
export interface IpamInput {
  subnet: SubnetSpec;
  allocations?: Allocations;
  /** Continue-as-new once history is this long (the server's suggestion also counts). */
  maxHistoryLength?: number;
}

/** What an IPAM workflow answers when asked: its subnet, Kube-OVN's usage fields, every allocation. */
export interface IpamState {
  subnet: SubnetSpec;
  usage: SubnetUsage;
  allocations: Allocations;
}

export class Ipam {
  private readonly subnet: ParsedSubnet;
  private readonly byOwner = new Map<string, number>();
  private readonly byAddress = new Map<number, string>();

  constructor(spec: SubnetSpec, allocations: Allocations = {}) {
    this.subnet = parseSubnet(spec);
    for (const [owner, address] of Object.entries(allocations)) this.hold(owner, parseIPv4(address));
  }

  get spec(): SubnetSpec {
    return this.subnet.spec;
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

  /** Idempotent: releasing what is not held is a no-op that returns null. */
  release(owner: string): string | null {
    const address = this.byOwner.get(owner);
    if (address === undefined) return null;
    this.byOwner.delete(owner);
    this.byAddress.delete(address);
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
    return wanted;
  }

  private firstFree(): number {
    for (let a = this.subnet.cidr.first; a <= this.subnet.cidr.last; a++) {
      if (!isReserved(this.subnet, a) && !this.byAddress.has(a)) return a;
    }
    throw new NatflowError(Reason.SubnetExhausted, `subnet ${this.spec.name} has no free address left`);
  }

  private hold(owner: string, address: number): void {
    this.byOwner.set(owner, address);
    this.byAddress.set(address, owner);
  }
}
