// Signals shared by several workflow types.
import { defineSignal } from '@temporalio/workflow';

/** "Look at your gateway again": it became ready, or it is being deleted. */
export const gatewayChangedSignal = defineSignal('gatewayChanged');

/** "Look at your EIP again": an EIP became ready. */
export const eipChangedSignal = defineSignal('eipChanged');
