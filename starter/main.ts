// The main job, one command (`npm start`): the local Temporal dev server with its Web UI, a lab
// NAT gateway in network namespaces, a local kube-apiserver with natflow's CRDs (kubeconfig in
// .natflow/kube/), the kube watcher bridge, the control worker and that gateway's agent, plus
// the lab's external subnet and gateway registered. Ctrl-C stops everything and takes the lab down;
// the workflows live on in the dev server's SQLite file, and the next start restores every
// EIP onto the fresh lab (a new agent instance gets the gateway's whole desired state).
import { parseArgs } from 'node:util';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { labExternalSubnet } from '../domain/lab.js';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import { startDevServer } from '../temporal-dev/dev-server.js';
import { stopOnSignal } from '../worker/process.js';
import { labDown, labUp } from '../temporal-dev/lab.js';
import { startGatewayAgent } from '../worker/agent.js';
import { connectTemporal, temporalTarget } from '../worker/connection.js';
import { createControlWorker } from '../worker/control.js';
import { ensureGateway, ensureSubnet, webUiLink } from './resources.js';
import { KubeBridge } from './bridge.js';
import { AUDIT_SCHEDULE_ID, ensureAuditSchedule } from './audit.js';
import { installCrds, startKubeApiserver } from '../temporal-dev/kube/apiserver.js';
import { loadKubeConfig } from '../worker/kube-config.js';
import { repoRoot } from '../temporal-dev/provision.js';
import path from 'node:path';
import { labGarp } from '../temporal-dev/garp.js';

const { values } = parseArgs({
  options: {
    gateway: { type: 'string', default: 'gw1' },
    'no-kube': { type: 'boolean' },
    'audit-every': { type: 'string', default: '5' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log('usage: npm start [-- --gateway NAME] [-- --no-kube] [-- --audit-every MINUTES (0: paused)]\nStarts the dev server (Web UI), a lab gateway, a kube-apiserver with the CRDs and the bridge (unless --no-kube), the control worker and the agent; Ctrl-C stops all.');
  process.exit(0);
}
const gateway = values.gateway!;
const auditEveryMinutes = Number(values['audit-every']);
if (!Number.isFinite(auditEveryMinutes) || auditEveryMinutes < 0 || (auditEveryMinutes > 0 && auditEveryMinutes < 1)) {
  console.error(`--audit-every ${JSON.stringify(values['audit-every'])} must be 0 (paused) or a number of minutes, at least 1`);
  process.exit(2);
}
// natflow stops its workers itself (below), in order; the SDK's own signal handling would race it.
Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [] });
const log = (msg: string) => console.log(`[natflow] ${msg}`);

const server = await startDevServer();
log(`Temporal dev server at ${server.address}; Web UI ${server.uiUrl}`);
const topology = await labUp(gateway);
log(`lab gateway ${gateway} is up (namespaces ${topology.gatewayNs}, ${topology.clientNs}, ${topology.vmNamespaces.join(', ')})`);

// The cluster side (its data kept in .natflow/kube, like the dev server's in SQLite). The first
// start builds kube-apiserver and etcd from the Go module proxy (cached outside the repo).
const kube = values['no-kube'] ? undefined : await startKubeApiserver({ dataDir: path.join(repoRoot(), '.natflow', 'kube') });
if (kube) {
  await installCrds(kube.kubeconfigPath);
  log(`kube-apiserver at ${kube.server}; kubeconfig ${kube.kubeconfigPath}`);
  log(`try: KUBECONFIG=${kube.kubeconfigPath} ${kube.binaries.kubectl} apply -f deploy/examples/`);
}
const kubeConfig = kube ? loadKubeConfig(kube.kubeconfigPath) : undefined;

const temporal = await connectTemporal(temporalTarget({ address: server.address }));
const { client, nativeConnection } = temporal;
const control = await createControlWorker({ connection: nativeConnection, client, kubeConfig });
const controlRun = control.run();
await ensureSubnet({ client }, labExternalSubnet(DEFAULT_EXTERNAL_SUBNET));
const gatewayWorkflowId = await ensureGateway({ client }, { name: gateway, externalSubnet: DEFAULT_EXTERNAL_SUBNET, lanIp: topology.lanIp, internalCidr: topology.vpcCidr });
const agent = await startGatewayAgent({ gateway, netns: topology.gatewayNs, externalInterface: topology.externalInterface, vpcInterface: topology.vpcInterface, garp: labGarp() }, nativeConnection, client);
log(`control worker and gateway agent (instance ${agent.info.instanceId}) are polling`);
await ensureAuditSchedule({ client }, auditEveryMinutes * 60_000);
log(auditEveryMinutes > 0 ? `audit every ${auditEveryMinutes} min (Schedule ${AUDIT_SCHEDULE_ID}); by hand: npm run natflow -- audit` : `audit Schedule ${AUDIT_SCHEDULE_ID} paused; by hand: npm run natflow -- audit`);
const bridge = kubeConfig ? new KubeBridge({ kubeConfig, client }) : undefined;
await bridge?.start();
if (bridge) log('kube watcher bridge is watching kubeovn.io resources');
log(`gateway workflow: ${webUiLink(server.uiUrl, 'default', gatewayWorkflowId)}`);
log(`try: npm run natflow -- eip create eip1 --gateway ${gateway} --wait`);
log('Ctrl-C stops everything');

/** Stops everything in order: nothing polls or watches any more before the lab and servers go. */
async function shutdown(): Promise<void> {
  log('stopping');
  await bridge?.stop();
  await agent.stop();
  control.shutdown();
  await controlRun;
  await temporal.close();
  await labDown(gateway);
  await kube?.stop();
  await server.stop();
  log('stopped; the lab is down, workflows are kept in the dev server database');
}
stopOnSignal(shutdown);
// A worker that dies takes the main job down with it, cleanly, rather than leaving a half-lab.
controlRun.catch((err) => {
  console.error(err);
  void shutdown().finally(() => process.exit(1));
});
