// One IPAM workflow per external subnet: the single writer of that subnet's allocations.
// Allocate and release are updates, so concurrent callers are serialised by Temporal with no
// extra database, and every allocation is an event an operator can read in the Web UI.
import * as wf from '@temporalio/workflow';
import { Ipam, type AllocateRequest, type IpamInput } from '../domain/ipam.js';
import { ENTITY_WORKFLOW_TASK_TIMEOUT } from '../domain/names.js';
import { searchAttributes } from '../domain/search-attributes.js';
import type { SubnetSpec } from '../domain/subnet.js';
import { allocateUpdate, ipamRequestsUpdate, ipamStateQuery, ipamUsageQuery, releaseUpdate, subnetSpecSignal, type Fence, type IpamRequest, type SpecChange } from '../domain/workflow-api.js';
import { answer, checkFence, domainCall, drainingRefusal } from './failures.js';
import { HistoryBudget } from './history-budget.js';

/** The last release's only limit: runs it started (replayed without the patch) keep it. */
const LEGACY_MAX_HISTORY = 10_000;

export async function ipamWorkflow(input: IpamInput): Promise<void> {
  // Continue-as-new on a budget of events, signals and updates (the server allows 2,000 updates per run).
  const budgeted = wf.patched('ipam-long-life');
  const ipam = domainCall(() => new Ipam(input.subnet, input.allocations, input));
  const budget = new HistoryBudget({ ...(input.maxHistoryLength !== undefined && { events: input.maxHistoryLength }), ...input.limits });
  wf.upsertSearchAttributes(searchAttributes({ kind: 'subnet', name: input.subnet.name, subnet: input.subnet.name }));

  wf.setHandler(ipamStateQuery, () => ({ ...ipam.summary(), allocations: ipam.allocations() }));
  wf.setHandler(ipamUsageQuery, () => ipam.summary());
  wf.setHandler(subnetSpecSignal, ({ spec, generation }: SpecChange<SubnetSpec>) => {
    budget.countSignal();
    ipam.propose({ ...spec, name: input.subnet.name }, generation); // the name is the workflow's identity
  });
  // Once the budget is spent, new requests are turned away (the caller sends them again, to the
  // next run) so that none is admitted and then cut off by the continue-as-new.
  let draining = false;
  const checkOpen = () => {
    if (draining) throw drainingRefusal(`subnet ${input.subnet.name}`);
  };
  // Validators reject bad requests before anything is written to history.
  wf.setHandler(
    allocateUpdate,
    (req: AllocateRequest) => {
      budget.countUpdate();
      return domainCall(() => ipam.allocate(req));
    },
    {
      validator: (req: AllocateRequest, fence?: Fence) => {
        checkOpen();
        checkFence(fence);
        domainCall(() => ipam.check(req));
      },
    },
  );
  wf.setHandler(
    releaseUpdate,
    ({ owner }) => {
      budget.countUpdate();
      return ipam.release(owner);
    },
    {
      validator: (req) => {
        checkOpen();
        if (typeof req?.owner !== 'string' || !req.owner) throw new Error('release needs an owner');
      },
    },
  );

  // What the control worker sends: concurrent callers' requests coalesced, each answered on its own.
  wf.setHandler(
    ipamRequestsUpdate,
    (requests: IpamRequest[]) => {
      budget.countUpdate();
      return requests.map((request) =>
        answer(() => {
          if ('release' in request) return ipam.release(request.release.owner);
          checkFence(request.fence);
          return domainCall(() => ipam.allocate(request.allocate));
        }),
      );
    },
    {
      validator: (requests: IpamRequest[]) => {
        checkOpen();
        if (!Array.isArray(requests)) throw new Error('a batch is a list of requests');
      },
    },
  );

  await wf.condition(() => (budgeted ? budget.spent() : wf.workflowInfo().continueAsNewSuggested || wf.workflowInfo().historyLength >= (input.maxHistoryLength ?? LEGACY_MAX_HISTORY)));
  draining = budgeted;
  // The handlers are synchronous: an update accepted in this task completed in it. One the server
  // had not delivered yet is aborted as retryable by the continue-as-new, and its caller sends it
  // again to the next run (activities/workflow-calls.ts), so nothing needs draining here.
  await wf.condition(wf.allHandlersFinished);
  await wf.makeContinueAsNewFunc<typeof ipamWorkflow>({ workflowTaskTimeout: ENTITY_WORKFLOW_TASK_TIMEOUT })({ ...input, ...ipam.carried() });
}
