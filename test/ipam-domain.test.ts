// The allocator's rules, without a server: what an operator reads in the Subnet status.
import { describe, expect, it } from 'vitest';
import { Ipam } from '../domain/ipam.js';
import { NatflowError, Reason } from '../domain/errors.js';

const subnet = { name: 'ext', cidrBlock: '172.18.0.0/24', gateway: '172.18.0.1', excludeIps: ['172.18.0.250..172.18.0.254'] };

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof NatflowError) return err.reason;
    throw err;
  }
  throw new Error('expected a NatflowError');
}

describe('IPAM allocator', () => {
  it('hands out the first free address, skipping network, gateway and excludeIps', () => {
    const ipam = new Ipam(subnet);
    expect(ipam.allocate({ owner: 'a' })).toEqual({ owner: 'a', address: '172.18.0.2', prefixLength: 24 });
    expect(ipam.usage()).toEqual({
      v4usingIPs: 1,
      v4availableIPs: 254 - 1 - 5 - 1,
      v4usingIPrange: '172.18.0.2',
      v4availableIPrange: '172.18.0.3-172.18.0.249',
    });
  });

  it('is idempotent per owner and honours a requested free address', () => {
    const ipam = new Ipam(subnet);
    expect(ipam.allocate({ owner: 'a', requested: '172.18.0.40' }).address).toBe('172.18.0.40');
    expect(ipam.allocate({ owner: 'a', requested: '172.18.0.40' }).address).toBe('172.18.0.40');
    expect(ipam.allocate({ owner: 'a' }).address).toBe('172.18.0.40');
    expect(ipam.usage().v4usingIPs).toBe(1);
  });

  it('refuses taken, outside, reserved and malformed addresses, changing nothing', () => {
    const ipam = new Ipam(subnet);
    ipam.allocate({ owner: 'a', requested: '172.18.0.40' });
    expect(reasonOf(() => ipam.allocate({ owner: 'b', requested: '172.18.0.40' }))).toBe(Reason.AddressTaken);
    expect(reasonOf(() => ipam.allocate({ owner: 'b', requested: '10.0.0.1' }))).toBe(Reason.AddressOutOfRange);
    expect(reasonOf(() => ipam.allocate({ owner: 'b', requested: '172.18.0.1' }))).toBe(Reason.AddressReserved);
    expect(reasonOf(() => ipam.allocate({ owner: 'b', requested: '172.18.0.252' }))).toBe(Reason.AddressReserved);
    expect(reasonOf(() => ipam.allocate({ owner: 'b', requested: '172.18.0.x' }))).toBe(Reason.InvalidSpec);
    expect(reasonOf(() => ipam.allocate({ owner: 'a', requested: '172.18.0.41' }))).toBe(Reason.OwnerHoldsOtherAddress);
    expect(ipam.allocations()).toEqual({ a: '172.18.0.40' });
  });

  it('releases idempotently and reports exhaustion clearly', () => {
    const ipam = new Ipam({ name: 'tiny', cidrBlock: '10.9.0.0/30', gateway: '10.9.0.1', excludeIps: [] });
    expect(ipam.allocate({ owner: 'a' }).address).toBe('10.9.0.2');
    expect(reasonOf(() => ipam.allocate({ owner: 'b' }))).toBe(Reason.SubnetExhausted);
    expect(ipam.release('a')).toBe('10.9.0.2');
    expect(ipam.release('a')).toBeNull();
    expect(ipam.allocate({ owner: 'b' }).address).toBe('10.9.0.2');
  });

  it('survives a round trip through its saved allocations (continue-as-new)', () => {
    const ipam = new Ipam(subnet);
    ['a', 'b', 'c'].forEach((owner) => ipam.allocate({ owner }));
    ipam.release('b');
    const again = new Ipam(subnet, ipam.allocations());
    expect(again.usage()).toEqual(ipam.usage());
    expect(again.allocate({ owner: 'd' }).address).toBe('172.18.0.3');
  });

  it('rejects a subnet whose gateway is outside its CIDR', () => {
    expect(reasonOf(() => new Ipam({ ...subnet, gateway: '10.0.0.1' }))).toBe(Reason.InvalidSpec);
  });
});
