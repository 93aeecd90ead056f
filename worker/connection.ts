// Where natflow's processes find Temporal: flags win, then the environment, then the local dev server.
export interface TemporalTarget {
  address: string;
  namespace: string;
}

export function temporalTarget(overrides: Partial<TemporalTarget> = {}): TemporalTarget {
  return {
    address: overrides.address ?? process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
    namespace: overrides.namespace ?? process.env.TEMPORAL_NAMESPACE ?? 'default',
  };
}
