// A gateway's desired state, pure: the change it sends its agent is computed from what changed
// since the last apply, and must be exactly the change a diff of everything would send (the
// gateway's behaviour before, and what its agent must end up holding), whatever the sequence of
// binds, unbinds, rules set and removed, applies and restores.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { EipAddress } from '../domain/gateway.js';
import { GatewayDesired, holdingAfter, sameAddress, type GatewayHolding } from '../domain/gateway-desired.js';
import { ruleDiff, type NatRule } from '../domain/nat-rules.js';

type Op =
  | { op: 'bind'; owner: string; address: string; prefixLength: number }
  | { op: 'unbind'; owner: string }
  | { op: 'setRule'; owner: string; internalIp: string }
  | { op: 'removeRule'; owner: string }
  | { op: 'clear' }
  | { op: 'apply'; restore: boolean };

const owner = fc.constantFrom('a', 'b', 'c', 'd');
const address = fc.constantFrom('172.18.0.10', '172.18.0.11', '172.18.0.12');
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('bind' as const), owner, address, prefixLength: fc.constantFrom(24, 32) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('unbind' as const), owner }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('setRule' as const), owner, internalIp: fc.constantFrom('10.0.1.1', '10.0.1.2') }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('removeRule' as const), owner }) },
  { weight: 1, arbitrary: fc.constant({ op: 'clear' as const }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('apply' as const), restore: fc.boolean() }) },
);

/** The change of a diff of everything, as the gateway computed it before. */
function fullChange(from: GatewayHolding, to: GatewayHolding) {
  const kept = new Set(Object.values(to.eips).map((a) => a.address));
  const rules = ruleDiff(from.rules, to.rules);
  return {
    eips: {
      add: Object.entries(to.eips).filter(([o, a]) => !sameAddress(from.eips[o], a)).map(([, a]) => a),
      remove: [...new Set(Object.entries(from.eips).filter(([o, a]) => to.eips[o]?.address !== a.address && !kept.has(a.address)).map(([, a]) => a.address))],
    },
    rules: { add: rules.add, removeOwners: rules.removeOwners },
  };
}

const sorted = <T>(items: T[]) => [...items].map((i) => JSON.stringify(i)).sort();
const copy = (h: GatewayHolding): GatewayHolding => structuredClone(h);

describe('GatewayDesired', () => {
  it('sends exactly what a diff of everything would, and the agent ends up holding what was desired', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60, size: 'max' }), (ops) => {
        const state: GatewayHolding = { eips: {}, rules: {} };
        const desired = new GatewayDesired(state);
        let applied: GatewayHolding | null = null;
        for (const o of ops) {
          if (o.op === 'bind') {
            if (desired.holderOtherThan(o.address, o.owner)) continue; // the gateway refuses it
            desired.bind(o.owner, { address: o.address, prefixLength: o.prefixLength });
          } else if (o.op === 'unbind') desired.unbind(o.owner);
          else if (o.op === 'setRule') desired.setRule({ kind: 'fip', owner: o.owner, eip: '172.18.0.10', internalIp: o.internalIp });
          else if (o.op === 'removeRule') desired.removeRule(o.owner);
          else if (o.op === 'clear') desired.clear();
          else {
            const restore = o.restore || applied === null;
            const expected = fullChange(restore ? { eips: {}, rules: {} } : copy(applied!), state);
            const change = desired.takeChange(restore ? null : applied);
            expect(sorted(change.eips.add)).toEqual(sorted(expected.eips.add));
            expect(sorted(change.eips.remove)).toEqual(sorted(expected.eips.remove));
            expect(sorted(change.rules.add)).toEqual(sorted(expected.rules.add));
            expect(sorted(change.rules.removeOwners)).toEqual(sorted(expected.rules.removeOwners));
            applied = copy(holdingAfter(restore ? null : applied, change));
            expect(applied).toEqual(state);
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('looks only at the owners changed since the last apply', () => {
    const state: GatewayHolding = { eips: {}, rules: {} };
    for (let i = 0; i < 1000; i++) {
      state.eips[`e${i}`] = { address: `172.18.${i >> 8}.${i & 255}`, prefixLength: 16 };
      state.rules[`r${i}`] = { kind: 'fip', owner: `r${i}`, eip: `172.18.${i >> 8}.${i & 255}`, internalIp: '10.0.1.1' } satisfies NatRule;
    }
    const desired = new GatewayDesired(state);
    const applied = holdingAfter(null, desired.takeChange(null));
    desired.bind('e1000', { address: '172.18.9.9', prefixLength: 16 });
    desired.removeRule('r3');
    const change = desired.takeChange(applied);
    expect(change.touched).toEqual({ eips: ['e1000'], rules: ['r3'] });
    expect(change.eips.add).toEqual([{ address: '172.18.9.9', prefixLength: 16 } satisfies EipAddress]);
    expect(change.rules.removeOwners).toEqual(['r3']);
    expect(desired.takeChange(holdingAfter(applied, change)).touched).toEqual({ eips: [], rules: [] });
  });

  it('keeps an address on the interface while another owner desires it', () => {
    const state: GatewayHolding = { eips: { a: { address: '172.18.0.10', prefixLength: 24 } }, rules: {} };
    const desired = new GatewayDesired(state);
    const applied = holdingAfter(null, desired.takeChange(null));
    desired.unbind('a');
    desired.bind('b', { address: '172.18.0.10', prefixLength: 24 });
    expect(desired.holderOtherThan('172.18.0.10', 'a')).toBe('b');
    const change = desired.takeChange(applied);
    expect(change.eips.remove).toEqual([]);
    expect(change.eips.add).toEqual([{ address: '172.18.0.10', prefixLength: 24 }]);
  });
});
