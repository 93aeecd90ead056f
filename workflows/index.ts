// Every workflow type the control worker runs (the bundle's entry point).
export { eipWorkflow, eipWorkflowV2, eipWorkflowV3, eipWorkflowV4, eipWorkflowV5, eipWorkflowV6 } from './eip.js';
export { gatewayWorkflow } from './gateway.js';
export { ipamWorkflow } from './ipam.js';
export { dnatWorkflow, dnatWorkflowV2, dnatWorkflowV3, dnatWorkflowV4, dnatWorkflowV5, dnatWorkflowV6, fipWorkflow, fipWorkflowV2, fipWorkflowV3, fipWorkflowV4, fipWorkflowV5, fipWorkflowV6, snatWorkflow, snatWorkflowV2, snatWorkflowV3, snatWorkflowV4, snatWorkflowV5, snatWorkflowV6 } from './nat-rule.js';
export { auditWorkflow } from './audit.js';
