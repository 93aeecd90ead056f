// Status conditions in Kube-OVN's shape (type, status, reason, message, lastUpdateTime,
// lastTransitionTime, observedGeneration). Time is passed in: workflows use their own clock.
import { Reason } from './errors.js';

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastUpdateTime: string;
  lastTransitionTime: string;
  observedGeneration: number;
}

export type ConditionInput = Pick<Condition, 'type' | 'status' | 'reason' | 'message'>;

/** Replaces the condition of the same type; its transition time moves only when its status does. */
export function setCondition(
  conditions: Condition[],
  input: ConditionInput,
  now: Date,
  observedGeneration: number,
): Condition[] {
  const previous = conditions.find((c) => c.type === input.type);
  const stamp = now.toISOString();
  const next: Condition = {
    ...input,
    lastUpdateTime: stamp,
    lastTransitionTime: previous && previous.status === input.status ? previous.lastTransitionTime : stamp,
    observedGeneration,
  };
  return [...conditions.filter((c) => c.type !== input.type), next];
}

/** A resource's status as Kube-OVN shows it: its phase, whether it is Ready, the Ready condition. */
export interface PhasedStatus {
  phase: string;
  ready: boolean;
  conditions: Condition[];
  observedGeneration: number;
}

/** `from` in `phase`, its Ready condition `condition` as of `now`: how every resource shows a phase. */
export function withPhase<S extends PhasedStatus>(from: S, phase: S['phase'], condition: Omit<ConditionInput, 'type'>, now: Date, observedGeneration: number): S {
  return { ...from, phase, ready: phase === 'Ready', observedGeneration, conditions: setCondition(from.conditions, { type: 'Ready', ...condition }, now, observedGeneration) };
}

/** What a resource's first call takes to make it Ready: the status fields it fills, and its Ready condition's message. */
export interface ReadyChange {
  fields: Record<string, string>;
  message: string;
}
export const eipReady = (address: string, gateway: string): ReadyChange => ({ fields: { ip: address, natGwDp: gateway }, message: `${address} is bound on ${gateway}` });
export const natRuleReady = (target: { address: string; gateway: string }): ReadyChange => ({ fields: { v4ip: target.address, natGwDp: target.gateway }, message: `applied on ${target.gateway}` });

/** The Ready condition `change` makes. */
export const readyCondition = (change: ReadyChange) => ({ status: 'True', reason: Reason.Ready, message: change.message }) as const;

/** `before` made Ready by `change` as of `now`: what a first call writes, and what its workflow then shows. */
export const readyStatus = <S extends PhasedStatus>(before: S, change: ReadyChange, now: Date, observedGeneration: number): S =>
  withPhase({ ...before, ...change.fields }, 'Ready', readyCondition(change), now, observedGeneration);

/** When a status's Ready condition was last set. */
export const readySince = (status: PhasedStatus): Date | undefined => {
  const stamp = status.conditions.find((c) => c.type === 'Ready')?.lastUpdateTime;
  return stamp === undefined ? undefined : new Date(stamp);
};

/** The same status, whatever the order of its fields. */
export function sameStatus(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}
const canonical = (value: unknown): string =>
  JSON.stringify(value, (_, v: unknown) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))) : v));
