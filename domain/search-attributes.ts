// natflow's custom search attributes (all Keyword), so operators can filter the Web UI, e.g.
// `NatflowGateway = "gw1" AND NatflowPhase = "WaitingForGateway"`. Workflows set them; the
// dev server registers them; clients find resources by them.
import { defineSearchAttributeKey, SearchAttributeType, type SearchAttributePair } from '@temporalio/common';

const keyword = (name: string) => defineSearchAttributeKey(name, SearchAttributeType.KEYWORD);
const KEYS = {
  kind: keyword('NatflowKind'),
  name: keyword('NatflowName'),
  gateway: keyword('NatflowGateway'),
  subnet: keyword('NatflowSubnet'),
  phase: keyword('NatflowPhase'),
  /** The EIP a NAT rule uses: an EIP that becomes ready wakes only the rules waiting for it. */
  eip: keyword('NatflowEip'),
};

/** The typed keys (the form `TestWorkflowEnvironment.createLocal({ server: { searchAttributes } })` takes). */
export const NATFLOW_SEARCH_ATTRIBUTE_KEYS = Object.values(KEYS);

export type NatflowAttributes = Partial<Record<keyof typeof KEYS, string>>;

/** The pairs for `upsertSearchAttributes` / `typedSearchAttributes`: only the attributes given. */
export function searchAttributes(attrs: NatflowAttributes): SearchAttributePair[] {
  return (Object.keys(KEYS) as (keyof typeof KEYS)[]).filter((k) => attrs[k] !== undefined).map((k) => ({ key: KEYS[k], value: attrs[k]! }));
}
