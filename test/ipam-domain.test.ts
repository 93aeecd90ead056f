// The allocator's rules, without a server: what an operator reads in the Subnet status.
import fc from 'fast-check';
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

  describe('a new Subnet spec', () => {
    it('is taken when every allocation still fits it', () => {
      const ipam = new Ipam(subnet, { a: '172.18.0.40' });
      ipam.propose({ ...subnet, excludeIps: ['172.18.0.100..172.18.0.254'] }, 2);
      expect(ipam.summary()).toMatchObject({ subnet: { excludeIps: ['172.18.0.100..172.18.0.254'] }, observedGeneration: 2 });
      expect(ipam.summary().pendingSpec).toBeUndefined();
      expect(ipam.usage().v4availableIPs).toBe(98 - 1); // .2-.99, one of them held
    });

    it('that would strand an allocation waits, says why, keeps every allocation, and is taken once it is released', () => {
      const ipam = new Ipam(subnet, { a: '172.18.0.2', b: '172.18.0.40' }, { generation: 1 });
      const narrower = { ...subnet, excludeIps: ['172.18.0.30..172.18.0.254'] };
      ipam.propose(narrower, 2);
      expect(ipam.summary()).toMatchObject({ subnet, observedGeneration: 1, pendingSpec: { spec: narrower, generation: 2 } });
      expect(ipam.summary().pendingSpec?.reason).toMatch(/^1 allocation\(s\) would be outside 172\.18\.0\.0\/24 or reserved: 172\.18\.0\.40 \(b\)/);
      expect(ipam.allocations()).toEqual({ a: '172.18.0.2', b: '172.18.0.40' });
      // Meanwhile nothing is handed out that the waiting spec would not keep.
      expect(reasonOf(() => ipam.allocate({ owner: 'c', requested: '172.18.0.50' }))).toBe(Reason.AddressReserved);
      const again = new Ipam(subnet, ipam.allocations(), ipam.carried()); // across continue-as-new
      expect(again.summary().pendingSpec?.spec).toEqual(narrower);
      again.release('b');
      expect(again.summary()).toMatchObject({ subnet: narrower, observedGeneration: 2 });
      expect(again.summary().pendingSpec).toBeUndefined();
    });

    it('that does not parse waits with its error; an older generation is ignored', () => {
      const ipam = new Ipam(subnet, {}, { generation: 3 });
      ipam.propose({ ...subnet, cidrBlock: '172.18.0.0/33' }, 4);
      expect(ipam.summary().pendingSpec?.reason).toMatch(/cidrBlock "172\.18\.0\.0\/33" is not a CIDR block/);
      ipam.propose({ ...subnet, gateway: '172.18.0.9' }, 3);
      expect(ipam.spec).toEqual(subnet);
      ipam.propose(subnet, 5); // back to a spec that fits: taken, nothing waits any more
      expect(ipam.summary()).toMatchObject({ observedGeneration: 5 });
      expect(ipam.summary().pendingSpec).toBeUndefined();
    });
  });

  it('hands out the first free address after any sequence of allocations, releases and specs (its search starts past what is known taken)', () => {
    const specs = [subnet, { ...subnet, cidrBlock: '172.18.0.0/25' }, { ...subnet, excludeIps: ['172.18.0.2..172.18.0.9'] }, { ...subnet, cidrBlock: '172.18.0.0/26' }, { name: 'ext', cidrBlock: '172.18.0.64/26', gateway: '172.18.0.65', excludeIps: [] }];
    const step = fc.oneof(
      fc.record({ allocate: fc.integer({ min: 0, max: 40 }), requested: fc.option(fc.integer({ min: 0, max: 140 }), { nil: undefined }) }),
      fc.record({ release: fc.integer({ min: 0, max: 40 }) }),
      fc.record({ propose: fc.integer({ min: 0, max: specs.length - 1 }) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 120, size: 'max' }), (steps) => {
        const ipam = new Ipam(subnet);
        let generation = 1;
        for (const s of steps) {
          if ('release' in s) ipam.release(`o${s.release}`);
          else if ('propose' in s) ipam.propose(specs[s.propose]!, ++generation);
          else {
            const owner = `o${s.allocate}`;
            const request = s.requested === undefined ? { owner } : { owner, requested: `172.18.0.${s.requested}` };
            // The reference: an allocator fresh from the same allocations searches from the subnet's start.
            const fresh = new Ipam(ipam.spec, ipam.allocations(), ipam.carried());
            const outcome = (i: Ipam) => {
              try {
                return i.allocate(request).address;
              } catch (err) {
                return (err as NatflowError).reason;
              }
            };
            expect(outcome(ipam)).toBe(outcome(fresh));
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});
