// Status conditions in Kube-OVN's shape (type, status, reason, message, lastUpdateTime,
// lastTransitionTime, observedGeneration). Time is passed in: workflows use their own clock.

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
