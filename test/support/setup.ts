// Keeps the SDK's worker lifecycle chatter out of test output; warnings and errors still show.
import { DefaultLogger, Runtime } from '@temporalio/worker';

Runtime.install({ logger: new DefaultLogger('WARN') });

// Each parallel test worker gets lab namespaces of its own (see temporal-dev/lab.ts labPrefix):
// two files that both use the examples' gateway gw1 would otherwise share, and tear down, nf-gw1.
process.env.NATFLOW_LAB_PREFIX = `nf${process.env.VITEST_POOL_ID ?? ''}`;
