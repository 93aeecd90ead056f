// A deliberately incompatible EIP workflow, bundled only by the replay test to prove the replay
// harness detects non-determinism: it allocates BEFORE asking whether the gateway is ready —
// exactly the order that leaked IPs in Kube-OVN — so its commands differ from every recorded
// EIP history at its first activity.
import * as wf from '@temporalio/workflow';
import type { WorkflowCallActivities } from '../../domain/workflow-api.js';
import type { EipInput } from '../../domain/eip.js';
import { searchAttributes } from '../../domain/search-attributes.js';

const control = wf.proxyActivities<WorkflowCallActivities>({ startToCloseTimeout: '60s' });

export async function eipWorkflow(input: EipInput): Promise<void> {
  const subnet = input.spec.externalSubnet || 'ovn-vpc-external-network';
  wf.upsertSearchAttributes(searchAttributes({ kind: 'eip', name: input.resource.name, gateway: input.spec.natGwDp, subnet: input.spec.externalSubnet ?? '' }));
  wf.upsertSearchAttributes(searchAttributes({ gateway: input.spec.natGwDp, subnet }));
  await control.allocateAddress({ subnet, owner: wf.workflowInfo().workflowId });
  await control.gatewayReadiness(input.spec.natGwDp);
}
