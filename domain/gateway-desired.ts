// A gateway's desired EIP addresses and NAT rules, with what changed since its agent last applied
// them. A batch of changes costs the gateway what it changed, not what it holds: at a few thousand
// rules a diff of everything on every batch made each workflow task, and the replay of a run's
// history (every batch again), cost seconds, until a replay outlasted the workflow task timeout
// and the gateway wedged (5,000 EIP+FIP pairs).
import type { EipAddress } from './gateway.js';
import type { NatRule } from './nat-rules.js';

export interface GatewayHolding {
  eips: Record<string, EipAddress>;
  rules: Record<string, NatRule>;
}

/** What an apply sends: addresses to add and take off, rules to add and owners whose rules come off. */
export interface GatewayChange {
  eips: { add: EipAddress[]; remove: string[] };
  rules: { add: NatRule[]; removeOwners: string[] };
  /** The owners it looked at (all of them on a restore), and what they desired then. */
  touched: { eips: string[]; rules: string[] };
  holding: GatewayHolding;
  /** From nothing: everything desired is in `add`. */
  restore: boolean;
}

export const sameAddress = (a: EipAddress | undefined, b: EipAddress | undefined) => a !== undefined && b !== undefined && a.address === b.address && a.prefixLength === b.prefixLength;
export const sameRule = (a: NatRule | undefined, b: NatRule | undefined) => a !== undefined && b !== undefined && (a === b || JSON.stringify(a) === JSON.stringify(b));

export class GatewayDesired {
  /** Address → the owners desiring it (one, since a bind of a held address is refused). */
  private readonly holders = new Map<string, Set<string>>();
  private changedEips = new Set<string>();
  private changedRules = new Set<string>();

  /** `holding`'s records are the desired state itself (the gateway's state query shows them). */
  constructor(private readonly holding: GatewayHolding) {
    for (const [owner, eip] of Object.entries(holding.eips)) this.hold(eip.address, owner);
  }

  /** Whether some owner desires `address`. */
  desires(address: string): boolean {
    return this.holders.has(address);
  }

  /** Another owner desiring `address`, if any. */
  holderOtherThan(address: string, owner: string): string | undefined {
    return [...(this.holders.get(address) ?? [])].find((o) => o !== owner);
  }

  bind(owner: string, eip: EipAddress): void {
    this.unbind(owner);
    this.holding.eips[owner] = eip;
    this.hold(eip.address, owner);
  }

  unbind(owner: string): void {
    const held = this.holding.eips[owner];
    this.changedEips.add(owner);
    if (!held) return;
    delete this.holding.eips[owner];
    const owners = this.holders.get(held.address);
    owners?.delete(owner);
    if (owners?.size === 0) this.holders.delete(held.address);
  }

  setRule(rule: NatRule): void {
    this.holding.rules[rule.owner] = rule;
    this.changedRules.add(rule.owner);
  }

  removeRule(owner: string): void {
    delete this.holding.rules[owner];
    this.changedRules.add(owner);
  }

  /** Nothing desired any more (a gateway being deleted). */
  clear(): void {
    for (const owner of Object.keys(this.holding.eips)) this.unbind(owner);
    for (const owner of Object.keys(this.holding.rules)) this.removeRule(owner);
  }

  /**
   * The change from `applied` (what the agent holds) to the desired state, and the changes since
   * forgotten: from the owners changed since the last call, or everything from nothing when
   * `applied` is null (a restore). `applied` is what the previous change's `holding` made it.
   */
  takeChange(applied: GatewayHolding | null): GatewayChange {
    const restore = applied === null;
    const from = applied ?? { eips: {}, rules: {} };
    const eipOwners = restore ? Object.keys(this.holding.eips) : [...this.changedEips];
    const ruleOwners = restore ? Object.keys(this.holding.rules) : [...this.changedRules];
    this.changedEips = new Set();
    this.changedRules = new Set();
    const change: GatewayChange = { eips: { add: [], remove: [] }, rules: { add: [], removeOwners: [] }, touched: { eips: eipOwners, rules: ruleOwners }, holding: { eips: {}, rules: {} }, restore };
    const removed = new Set<string>();
    for (const owner of eipOwners) {
      const [was, want] = [from.eips[owner], this.holding.eips[owner]];
      if (want) change.holding.eips[owner] = want;
      if (sameAddress(was, want)) continue;
      if (want) change.eips.add.push(want);
      // An address another owner now desires stays on the interface.
      if (was && was.address !== want?.address && !this.holders.has(was.address)) removed.add(was.address);
    }
    change.eips.remove = [...removed];
    for (const owner of ruleOwners) {
      const [was, want] = [from.rules[owner], this.holding.rules[owner]];
      if (want) change.holding.rules[owner] = want;
      if (sameRule(was, want)) continue;
      if (was) change.rules.removeOwners.push(owner);
      if (want) change.rules.add.push(want);
    }
    return change;
  }

  private hold(address: string, owner: string): void {
    const owners = this.holders.get(address) ?? new Set<string>();
    owners.add(owner);
    this.holders.set(address, owners);
  }
}

/** What the agent holds once `change` is applied on top of `applied` (updated in place; null: a restore from nothing). */
export function holdingAfter(applied: GatewayHolding | null, change: GatewayChange): GatewayHolding {
  if (change.restore || applied === null) return change.holding;
  for (const owner of change.touched.eips) {
    const eip = change.holding.eips[owner];
    if (eip) applied.eips[owner] = eip;
    else delete applied.eips[owner];
  }
  for (const owner of change.touched.rules) {
    const rule = change.holding.rules[owner];
    if (rule) applied.rules[owner] = rule;
    else delete applied.rules[owner];
  }
  return applied;
}
