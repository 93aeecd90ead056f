// How every natflow process (workers, bridge, CLI, main job) reaches Temporal: flags win, then
// the environment, then the local dev server.
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { payloadCodecPlugin } from './payload-codec.js';

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

export interface TemporalConnections {
  /** What workers poll with. */
  nativeConnection: NativeConnection;
  /** What starts, signals and queries workflows (the bridge, the CLI, the workflow-call activities). */
  client: Client;
  close(): Promise<void>;
}

/**
 * A client connection, and with `worker` a worker's native connection, to the same target. Both
 * carry natflow's payload codec: every Client and Worker made with them encodes alike.
 */
export async function connectTemporal(target: TemporalTarget): Promise<TemporalConnections>;
export async function connectTemporal(target: TemporalTarget, opts: { worker: false }): Promise<Omit<TemporalConnections, 'nativeConnection'>>;
export async function connectTemporal(target: TemporalTarget, opts: { worker?: boolean } = {}): Promise<Partial<TemporalConnections>> {
  const nativeConnection = opts.worker === false ? undefined : await NativeConnection.connect({ address: target.address, plugins: [payloadCodecPlugin] });
  const connection = await Connection.connect({ address: target.address, plugins: [payloadCodecPlugin] });
  return {
    nativeConnection,
    client: new Client({ connection, namespace: target.namespace }),
    async close() {
      await connection.close();
      await nativeConnection?.close();
    },
  };
}
