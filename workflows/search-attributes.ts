// What natflow's workflows put in their search attributes, so operators can filter the Web UI
// (e.g. `NatflowGateway = "gw1" AND NatflowPhase = "WaitingForGateway"`).
import type { SearchAttributePair } from '@temporalio/common';
import { NatflowGateway, NatflowKind, NatflowName, NatflowPhase, NatflowSubnet } from '../temporal-dev/search-attributes.js';

export interface NatflowAttributes {
  kind?: string;
  name?: string;
  gateway?: string;
  subnet?: string;
  phase?: string;
}

export function searchAttributes(attrs: NatflowAttributes): SearchAttributePair[] {
  const pairs: SearchAttributePair[] = [];
  if (attrs.kind !== undefined) pairs.push({ key: NatflowKind, value: attrs.kind });
  if (attrs.name !== undefined) pairs.push({ key: NatflowName, value: attrs.name });
  if (attrs.gateway !== undefined) pairs.push({ key: NatflowGateway, value: attrs.gateway });
  if (attrs.subnet !== undefined) pairs.push({ key: NatflowSubnet, value: attrs.subnet });
  if (attrs.phase !== undefined) pairs.push({ key: NatflowPhase, value: attrs.phase });
  return pairs;
}
