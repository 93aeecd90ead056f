// The external subnet EIPs are allocated from: the fields of Kube-OVN's Subnet that IPAM needs,
// and the status fields it reports usage in.
import { NatflowError, Reason } from './errors.js';
import { InvalidAddressError, cidrContains, parseCidr, parseExcludeEntry, parseIPv4, type Cidr } from './ip.js';
import { validateName } from './names.js';

export const DEFAULT_EXTERNAL_SUBNET = 'ovn-vpc-external-network';

export interface SubnetSpec {
  name: string;
  /** Kube-OVN `spec.cidrBlock` (IPv4 only here). */
  cidrBlock: string;
  /** Kube-OVN `spec.gateway`: the subnet's router, never allocated. */
  gateway: string;
  /** Kube-OVN `spec.excludeIps`: addresses or "a..b" ranges, never allocated. */
  excludeIps: string[];
}

/** Kube-OVN Subnet status usage fields. */
export interface SubnetUsage {
  v4usingIPs: number;
  v4availableIPs: number;
  v4usingIPrange: string;
  v4availableIPrange: string;
}

export interface ParsedSubnet {
  spec: SubnetSpec;
  cidr: Cidr;
  /** Sorted inclusive ranges that are never handed out. */
  reserved: [number, number][];
}

export function parseSubnet(spec: SubnetSpec): ParsedSubnet {
  validateName(spec.name, 'subnet name');
  try {
    const cidr = parseCidr(spec.cidrBlock, 'cidrBlock');
    if (cidr.prefixLength > 30) {
      throw new NatflowError(Reason.InvalidSpec, `cidrBlock ${spec.cidrBlock} is too small to hold EIPs`);
    }
    const gateway = parseIPv4(spec.gateway, 'gateway');
    if (!cidrContains(cidr, gateway)) {
      throw new NatflowError(Reason.InvalidSpec, `gateway ${spec.gateway} is outside cidrBlock ${spec.cidrBlock}`);
    }
    const reserved: [number, number][] = [
      [cidr.first, cidr.first],
      [cidr.last, cidr.last],
      [gateway, gateway],
      ...(spec.excludeIps ?? []).map(parseExcludeEntry),
    ];
    reserved.sort((a, b) => a[0] - b[0]);
    return { spec, cidr, reserved };
  } catch (err) {
    if (err instanceof InvalidAddressError) throw new NatflowError(Reason.InvalidSpec, err.message);
    throw err;
  }
}

export function isReserved(subnet: ParsedSubnet, address: number): boolean {
  return subnet.reserved.some(([from, to]) => address >= from && address <= to);
}

/** May the subnet hand out (or keep handing) this address: inside its CIDR and not reserved? */
export function isAssignable(subnet: ParsedSubnet, address: number): boolean {
  return cidrContains(subnet.cidr, address) && !isReserved(subnet, address);
}

/** The same spec, whatever the order of its excludeIps (what a Subnet edit that changes nothing looks like). */
export function sameSubnetSpec(a: SubnetSpec, b: SubnetSpec): boolean {
  const norm = (s: SubnetSpec) => JSON.stringify([s.name, s.cidrBlock, s.gateway, [...(s.excludeIps ?? [])].sort()]);
  return norm(a) === norm(b);
}
