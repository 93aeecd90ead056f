// Every workflow type the control worker runs (the bundle's entry point).
export { eipWorkflow } from './eip.js';
export { gatewayWorkflow } from './gateway.js';
export { ipamWorkflow } from './ipam.js';
export { dnatWorkflow, fipWorkflow, snatWorkflow } from './nat-rule.js';
export { auditWorkflow } from './audit.js';
