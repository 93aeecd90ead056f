// The FIP/DNAT/SNAT specs as natflow reads them: every manifest Kube-OVN accepts (its CRDs now
// check formats; deploy/crds) becomes the same gateway rule, and a bad field is refused up front
// with a message that names the object.
import { describe, expect, it } from 'vitest';
import { natRuleFor, validateNatSpec, type NatInput } from '../domain/nat-resources.js';

const input = <K extends NatInput['kind']>(kind: K, spec: NatInput<K>['spec']): NatInput => ({ kind, resource: { name: `${kind}-x`, uid: 'u1', generation: 1 }, spec }) as NatInput;

describe('NAT resource specs', () => {
  it('reads Kube-OVN string fields as Kube-OVN does: ports "+8080" and "08080", protocol in any case, a bare SNAT address as /32', () => {
    const dnat = input('dnat', { eip: 'e', protocol: 'TCP', externalPort: '+8080', internalIp: '10.0.1.11', internalPort: '080' });
    expect(validateNatSpec(dnat)).toBe('e');
    expect(natRuleFor(dnat, '172.18.0.5')).toEqual({ kind: 'dnat', owner: 'u1', eip: '172.18.0.5', protocol: 'tcp', externalPort: 8080, internalIp: '10.0.1.11', internalPort: 80 });
    const snat = input('snat', { eip: 'e', internalCIDR: '10.0.1.7' });
    expect(validateNatSpec(snat)).toBe('e');
    expect(natRuleFor(snat, '172.18.0.5')).toMatchObject({ internalCidr: '10.0.1.7/32' });
  });

  it('refuses every bad field before anything is taken, naming the object and the field', () => {
    const problems = [
      input('fip', { eip: 'e', internalIp: '10.0.1.300' }),
      input('fip', { eip: 'E!', internalIp: '10.0.1.3' }),
      input('dnat', { eip: 'e', protocol: 'sctp', externalPort: '80', internalIp: '10.0.1.3', internalPort: '80' }),
      input('dnat', { eip: 'e', protocol: 'tcp', externalPort: '70000', internalIp: '10.0.1.3', internalPort: '80' }),
      input('snat', { eip: 'e', internalCIDR: '10.0.1.0/33' }),
    ].map((i) => {
      try {
        validateNatSpec(i);
        return 'accepted';
      } catch (err) {
        return (err as Error).message;
      }
    });
    expect(problems).toEqual([
      'fip fip-x: spec.internalIp "10.0.1.300" is not an IPv4 address (a.b.c.d)',
      expect.stringMatching(/^fip fip-x: spec\.eip "E!" is not a valid name/),
      'dnat dnat-x: spec.protocol "sctp" must be tcp or udp',
      'dnat dnat-x: spec.externalPort 70000 is not a port (an integer from 1 to 65535)',
      expect.stringMatching(/^snat snat-x: spec\.internalCIDR "10\.0\.1\.0\/33" is not an IPv4 CIDR block/),
    ]);
  });
});
