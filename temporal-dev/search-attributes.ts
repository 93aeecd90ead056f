/**
 * natflow's custom search attributes (all Keyword). Pure data: imported by workflow code,
 * so this file must import nothing but `@temporalio/common`.
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Name → type, in the form the `temporal` CLI / operator service use (`--search-attribute Name=Keyword`). */
export const NATFLOW_SEARCH_ATTRIBUTES = {
  NatflowKind: 'Keyword',
  NatflowName: 'Keyword',
  NatflowGateway: 'Keyword',
  NatflowSubnet: 'Keyword',
  NatflowPhase: 'Keyword',
} as const satisfies Record<string, 'Keyword'>;

export type NatflowSearchAttributeName = keyof typeof NATFLOW_SEARCH_ATTRIBUTES;

/** Typed keys, for `upsertSearchAttributes` / `typedSearchAttributes` in workflows and the client. */
export const NatflowKind = defineSearchAttributeKey('NatflowKind', SearchAttributeType.KEYWORD);
export const NatflowName = defineSearchAttributeKey('NatflowName', SearchAttributeType.KEYWORD);
export const NatflowGateway = defineSearchAttributeKey('NatflowGateway', SearchAttributeType.KEYWORD);
export const NatflowSubnet = defineSearchAttributeKey('NatflowSubnet', SearchAttributeType.KEYWORD);
export const NatflowPhase = defineSearchAttributeKey('NatflowPhase', SearchAttributeType.KEYWORD);

/** The typed keys by name. */
export const NATFLOW_SEARCH_ATTRIBUTE_KEYS = {
  NatflowKind,
  NatflowName,
  NatflowGateway,
  NatflowSubnet,
  NatflowPhase,
} as const satisfies Record<NatflowSearchAttributeName, { name: string; type: typeof SearchAttributeType.KEYWORD }>;

/** The typed keys as a list (the form `TestWorkflowEnvironment.createLocal({ server: { searchAttributes } })` takes). */
export const NATFLOW_SEARCH_ATTRIBUTE_KEY_LIST = Object.values(NATFLOW_SEARCH_ATTRIBUTE_KEYS);
