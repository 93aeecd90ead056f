// How every natflow process (workers, bridge, CLI, main job) reaches Temporal: flags win, then
// the environment, then the local dev server.
import { Client, Connection, type ClientPlugin, type ConnectionPlugin } from '@temporalio/client';
import { NativeConnection, type NativeConnectionPlugin, type WorkerPlugin } from '@temporalio/worker';
import { withPayloadCodec } from './payload-codec.js';
import { withUpdateAdmission } from './update-admission.js';

/**
 * What every natflow client and worker needs, carried by its connection (client or native): the
 * SDK gives a connection's plugins to every Client and Worker made with it — the control worker,
 * the gateway agent, the bridge, the CLI, the tests' clients — and replay workers take it too.
 * Clients get the payload codec and update admission, workers the codec.
 */
export const natflowPlugin: ClientPlugin & ConnectionPlugin & NativeConnectionPlugin & WorkerPlugin = {
  name: 'natflow',
  configureClient: (options) => withUpdateAdmission(withPayloadCodec(options)),
  configureWorker: (options) => withPayloadCodec(options),
  configureReplayWorker: (options) => withPayloadCodec(options),
};

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

/** A client connection, and with `worker` a worker's native connection, to the same target, both with natflow's plugin. */
export async function connectTemporal(target: TemporalTarget): Promise<TemporalConnections>;
export async function connectTemporal(target: TemporalTarget, opts: { worker: false }): Promise<Omit<TemporalConnections, 'nativeConnection'>>;
export async function connectTemporal(target: TemporalTarget, opts: { worker?: boolean } = {}): Promise<Partial<TemporalConnections>> {
  const nativeConnection = opts.worker === false ? undefined : await NativeConnection.connect({ address: target.address, plugins: [natflowPlugin] });
  const connection = await Connection.connect({ address: target.address, plugins: [natflowPlugin] });
  return {
    nativeConnection,
    client: new Client({ connection, namespace: target.namespace }),
    async close() {
      await connection.close();
      await nativeConnection?.close();
    },
  };
}
