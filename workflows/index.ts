// Every workflow type the control worker runs (the bundle's entry point).
export { eipWorkflow, eipWorkflowV2, eipWorkflowV3 } from './eip.js';
export { gatewayWorkflow } from './gateway.js';
export { ipamWorkflow } from './ipam.js';
export { dnatWorkflow, dnatWorkflowV2, fipWorkflow, fipWorkflowV2, snatWorkflow, snatWorkflowV2 } from './nat-rule.js';
export { auditWorkflow } from './audit.js';
