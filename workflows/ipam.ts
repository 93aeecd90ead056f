// One IPAM workflow per external subnet: the single writer of that subnet's allocations.
// Allocate and release are updates, so concurrent callers are serialised by Temporal with no
// extra database, and every allocation is an event an operator can read in the Web UI.
import * as wf from '@temporalio/workflow';
import { Ipam, type AllocateRequest, type IpamInput } from '../domain/ipam.js';
import { searchAttributes } from '../domain/search-attributes.js';
import { allocateUpdate, ipamStateQuery, releaseUpdate, type Fence } from '../domain/workflow-api.js';
import { checkFence, domainCall } from './failures.js';

export async function ipamWorkflow(input: IpamInput): Promise<void> {
  const ipam = domainCall(() => new Ipam(input.subnet, input.allocations));
  wf.upsertSearchAttributes(searchAttributes({ kind: 'subnet', name: input.subnet.name, subnet: input.subnet.name }));

  wf.setHandler(ipamStateQuery, () => ({ subnet: ipam.spec, usage: ipam.usage(), allocations: ipam.allocations() }));
  // Validators reject bad requests before anything is written to history.
  wf.setHandler(allocateUpdate, (req: AllocateRequest) => domainCall(() => ipam.allocate(req)), {
    validator: (req: AllocateRequest, fence?: Fence) => {
      checkFence(fence);
      domainCall(() => ipam.check(req));
    },
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
