/**
 * A throwaway Temporal dev server (in-memory, random port) for tests, using the provisioned
 * `temporal` CLI (never the SDK's download, which needs the internet) and with natflow's
 * search attributes registered.
 */
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll } from 'vitest';
import { findOrProvisionTemporalCli } from '../../temporal-dev/provision.js';
import { reservePort } from '../../temporal-dev/ports.js';
import { NATFLOW_SEARCH_ATTRIBUTE_KEYS } from '../../domain/search-attributes.js';
import { payloadCodecPlugin } from '../../worker/payload-codec.js';

export async function createTestEnv(): Promise<TestWorkflowEnvironment> {
  return TestWorkflowEnvironment.createLocal({
    plugins: [payloadCodecPlugin], // the env's client, connections and the workers made on them encode as natflow's do
    server: {
      executable: { type: 'existing-path', path: await findOrProvisionTemporalCli() },
      searchAttributes: NATFLOW_SEARCH_ATTRIBUTE_KEYS,
      ip: '127.0.0.1',
      port: await reservePort(), // the SDK's own pick is a free port that another test's server may take first
      // Tests assert behaviour; the server's own errors (e.g. updates aborted by continue-as-new, which the client retries) are noise here.
      log: { format: 'pretty', level: 'never' },
    },
  });
}

/**
 * One test server for the calling suite (call it in its `describe`): started before its tests,
 * torn down after them. The returned function gives the server once it runs.
 */
export function useTestEnv(): () => TestWorkflowEnvironment {
  let env: TestWorkflowEnvironment | undefined;
  beforeAll(async () => {
    env = await createTestEnv();
  });
  afterAll(async () => {
    await env?.teardown();
  });
  return () => {
    if (!env) throw new Error('the test server is not running (useTestEnv() belongs in a describe, used from its tests)');
    return env;
  };
}
