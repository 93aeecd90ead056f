// One IPAM workflow per external subnet: the single writer of that subnet's allocations.
// Allocate and release are updates, so concurrent callers are serialised by Temporal with no
// extra database, and every allocation is an event an operator can read in the Web UI.
import * as wf from '@temporalio/workflow';
import { Ipam, type Allocation, type AllocateRequest, type Allocations } from '../domain/ipam.js';
import type { SubnetSpec, SubnetUsage } from '../domain/subnet.js';
import { domainCall } from './failures.js';
import { searchAttributes } from './search-attributes.js';

export interface IpamInput {
  subnet: SubnetSpec;
  allocations?: Allocations;
  /** Continue-as-new once history is this long (the server's suggestion also counts). */
  maxHistoryLength?: number;
}

export interface IpamState {
  subnet: SubnetSpec;
  usage: SubnetUsage;
  allocations: Allocations;
}

export const allocateUpdate = wf.defineUpdate<Allocation, [AllocateRequest]>('allocate');
export const releaseUpdate = wf.defineUpdate<string | null, [{ owner: string }]>('release');
export const ipamStateQuery = wf.defineQuery<IpamState>('state');

export async function ipamWorkflow(input: IpamInput): Promise<void> {
  const ipam = domainCall(() => new Ipam(input.subnet, input.allocations));
  wf.upsertSearchAttributes(searchAttributes({ kind: 'subnet', name: input.subnet.name, subnet: input.subnet.name }));

  wf.setHandler(ipamStateQuery, () => ({ subnet: ipam.spec, usage: ipam.usage(), allocations: ipam.allocations() }));
  // Validators reject bad requests before anything is written to history.
  wf.setHandler(allocateUpdate, (req) => domainCall(() => ipam.allocate(req)), {
    validator: (req) => domainCall(() => ipam.check(req)),
  });
  wf.setHandler(releaseUpdate, ({ owner }) => ipam.release(owner), {
    validator: (req) => {
      if (typeof req?.owner !== 'string' || !req.owner) throw new Error('release needs an owner');
    },
  });

  const maxHistory = input.maxHistoryLength ?? 10_000;
  await wf.condition(() => wf.workflowInfo().continueAsNewSuggested || wf.workflowInfo().historyLength >= maxHistory);
  // Handlers are synchronous, but wait anyway so no accepted update is cut off by the new run.
  await wf.condition(wf.allHandlersFinished);
  await wf.continueAsNew<typeof ipamWorkflow>({ ...input, allocations: ipam.allocations() });
}
