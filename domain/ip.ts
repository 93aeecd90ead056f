// IPv4 arithmetic on top of ipaddr.js (parsing and validation stay with the library; only the
// integer walk over a range is ours). Pure: used by workflows as well as activities.
import ipaddr from 'ipaddr.js';

export class InvalidAddressError extends Error {}

export interface Cidr {
  network: number;
  prefixLength: number;
  /** First and last address of the block (network and broadcast). */
  first: number;
  last: number;
}

export function parseIPv4(text: string, what = 'address'): number {
  if (typeof text !== 'string' || !ipaddr.IPv4.isValidFourPartDecimal(text)) {
    throw new InvalidAddressError(`${what} ${JSON.stringify(text)} is not an IPv4 address (a.b.c.d)`);
  }
  return ipaddr.IPv4.parse(text).toByteArray().reduce((n, byte) => n * 256 + byte, 0);
}

export function formatIPv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

export function parseCidr(text: string, what = 'CIDR'): Cidr {
  let parsed: [ipaddr.IPv4 | ipaddr.IPv6, number];
  try {
    parsed = ipaddr.parseCIDR(text);
  } catch {
    throw new InvalidAddressError(`${what} ${JSON.stringify(text)} is not a CIDR block (a.b.c.d/n)`);
  }
  const [addr, prefixLength] = parsed;
  if (addr.kind() !== 'ipv4') throw new InvalidAddressError(`${what} ${JSON.stringify(text)} is not IPv4`);
  const size = 2 ** (32 - prefixLength);
  const first = Math.floor(parseIPv4(addr.toString()) / size) * size;
  return { network: first, prefixLength, first, last: first + size - 1 };
}

export function cidrContains(cidr: Cidr, address: number): boolean {
  return address >= cidr.first && address <= cidr.last;
}

export function formatCidr(cidr: Cidr): string {
  return `${formatIPv4(cidr.network)}/${cidr.prefixLength}`;
}

/** Kube-OVN's range notation for a sorted list: "172.18.0.2-172.18.0.9,172.18.0.12". */
export function formatRanges(sorted: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(i === j ? formatIPv4(sorted[i]!) : `${formatIPv4(sorted[i]!)}-${formatIPv4(sorted[j]!)}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** Kube-OVN's `excludeIps` entries: a single address or an inclusive range "a..b". */
export function parseExcludeEntry(entry: string): [number, number] {
  const [from, to] = entry.split('..');
  const start = parseIPv4(from ?? '', 'excludeIps entry');
  const end = to === undefined ? start : parseIPv4(to, 'excludeIps entry');
  if (end < start) throw new InvalidAddressError(`excludeIps entry ${JSON.stringify(entry)} ends before it starts`);
  return [start, end];
}
