/**
 * A throwaway Temporal dev server (in-memory, random port) for tests, using the provisioned
 * `temporal` CLI (never the SDK's download, which needs the internet) and with natflow's
 * search attributes registered.
 */
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { findOrProvisionTemporalCli } from '../../temporal-dev/provision.js';
import { NATFLOW_SEARCH_ATTRIBUTE_KEYS } from '../../domain/search-attributes.js';
import { payloadCodecPlugin } from '../../worker/payload-codec.js';

export async function createTestEnv(): Promise<TestWorkflowEnvironment> {
  return TestWorkflowEnvironment.createLocal({
    plugins: [payloadCodecPlugin], // the env's client, connections and the workers made on them encode as natflow's do
    server: {
      executable: { type: 'existing-path', path: await findOrProvisionTemporalCli() },
      searchAttributes: NATFLOW_SEARCH_ATTRIBUTE_KEYS,
      ip: '127.0.0.1',
      // Tests assert behaviour; the server's own errors (e.g. updates aborted by continue-as-new, which the client retries) are noise here.
      log: { format: 'pretty', level: 'never' },
    },
  });
}
