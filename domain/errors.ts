// Reasons used in status conditions and in non-retryable failures. One list, so that a
// condition's reason and the failure type an activity throws are the same word.
export const Reason = {
  InvalidSpec: 'InvalidSpec',
  AddressTaken: 'AddressTaken',
  AddressOutOfRange: 'AddressOutOfRange',
  AddressReserved: 'AddressReserved',
  SubnetExhausted: 'SubnetExhausted',
  SubnetNotFound: 'SubnetNotFound',
  OwnerHoldsOtherAddress: 'OwnerHoldsOtherAddress',
  GatewayNotFound: 'GatewayNotFound',
  GatewayNotReady: 'GatewayNotReady',
  EipNotFound: 'EipNotFound',
  EipNotReady: 'EipNotReady',
  EipInUse: 'EipInUse',
  DuplicateDnat: 'DuplicateDnat',
  StaleRequest: 'StaleRequest',
  /** An entity workflow about to continue as new: send the request again in a moment. */
  Draining: 'Draining',
  /** The control worker running a call is shutting down: the next one makes it again (retryable). */
  WorkerStopping: 'WorkerStopping',
  Ready: 'Ready',
  Deleting: 'Deleting',
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

/** An error whose reason is shown to the user as-is; never retried. */
export class NatflowError extends Error {
  constructor(
    readonly reason: Reason,
    message: string,
  ) {
    super(message);
    this.name = 'NatflowError';
  }
}
