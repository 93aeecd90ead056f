// The chaos soak (issue 11): the full stack as separate processes, N random operations through
// the Kubernetes API while natflow's processes are SIGKILLed and the servers restarted, then
// convergence, traffic probes and the audit as the oracle.
//
//   npm run soak -- --ops 300 --kills 5 --restarts 1 --seed 42 [--no-audit] [--keep]
//
// It brings up, in a temp dir of its own: a Temporal dev server on SQLite and a kube-apiserver +
// etcd (free ports, fixed for the run, so a restart comes back on the same state), a lab gateway
// (`--gateway`, default gwsoak), the Subnets and VpcNatGateway of the examples (renamed), and as
// child processes the control worker, the gateway agent and the bridge. Everything random comes
// from `--seed` (printed; the same seed gives the same operations and faults at the same points).
// The last line is `SOAK-RESULT <json>`; the exit code is 0 when everything passed, 1 if not.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { KubernetesObject } from '@kubernetes/client-node';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import { labDown, labUp } from '../temporal-dev/lab.js';
import { applyObjects, readManifests } from '../temporal-dev/kube/apiserver.js';
import { loadKubeConfig } from '../worker/kube-config.js';
import { reservePort } from '../temporal-dev/ports.js';
import { repoRoot } from '../temporal-dev/provision.js';
import { connectTemporal, temporalTarget, type TemporalConnections } from '../worker/connection.js';
import { runAudit, type AuditOutcome } from './soak/audit.js';
import { badlyEnded, evaluate, type Verdict } from './soak/converge.js';
import { FaultInjector, planFaults, type ProcessName } from './soak/faults.js';
import { KubeApi } from './soak/kube-api.js';
import { Driver } from './soak/operations.js';
import { createRng } from './soak/prng.js';
import { probe, type ProbeResult } from './soak/probes.js';
import { KubeServer, Supervised, TemporalServer } from './soak/processes.js';
import { labGarp } from '../temporal-dev/garp.js';
import { Teardown } from './teardown.js';

const { values } = parseArgs({
  options: {
    ops: { type: 'string', default: '300' },
    kills: { type: 'string', default: '5' },
    restarts: { type: 'string', default: '1' },
    seed: { type: 'string' },
    'no-audit': { type: 'boolean' },
    gateway: { type: 'string', default: 'gwsoak' },
    'converge-timeout': { type: 'string', default: '300' },
    probes: { type: 'string', default: '4' },
    'op-pause-ms': { type: 'string', default: '150' },
    keep: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log(`usage: npm run soak -- [--ops N] [--kills K] [--restarts R] [--seed S] [--no-audit] [--gateway gwsoak]
  [--converge-timeout SECONDS] [--probes PER_KIND] [--op-pause-ms MAX] [--keep (keep the temp dir: logs, databases; a failed run always keeps it)]`);
  process.exit(0);
}
const num = (name: keyof typeof values, min: number) => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: an integer >= ${min}`);
  return n;
};
const OPS = num('ops', 1);
const KILLS = num('kills', 0);
const RESTARTS = num('restarts', 0);
const SEED = values.seed !== undefined ? num('seed', 0) : Math.floor(Math.random() * 2 ** 31);
const GATEWAY = values.gateway!;
const CONVERGE_MS = num('converge-timeout', 1) * 1000;
const PROBES = num('probes', 0);
const OP_PAUSE_MS = num('op-pause-ms', 0);
const SUBNET = DEFAULT_EXTERNAL_SUBNET;
/** The issue's bar for convergence after the last fault (reported beside the verdict, which is about correctness). */
const CONVERGENCE_BAR_S = 60;
/** How long an audit that could not check everything (exit 2, no findings) is asked again. */
const AUDIT_RETRY_MS = 90_000;

const t0 = Date.now();
const seconds = (ms: number) => (ms / 1000).toFixed(1);
const log = (msg: string) => console.log(`[soak ${seconds(Date.now() - t0).padStart(6)} s] ${msg}`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const replay = `npm run soak -- --ops ${OPS} --kills ${KILLS} --restarts ${RESTARTS} --seed ${SEED}${values['no-audit'] ? ' --no-audit' : ''}`;
console.log(`natflow chaos soak: seed ${SEED} (replay: ${replay})`);

// --- the stack, and its teardown on every path ------------------------------------------------

const scratch = await mkdtemp(path.join(os.tmpdir(), 'natflow-soak-'));
const temporal = new TemporalServer({ port: await reservePort(), uiPort: await reservePort(), dbFile: path.join(scratch, 'temporal.sqlite') });
const kube = new KubeServer({ dataDir: path.join(scratch, 'kube'), port: await reservePort() });
const children = new Map<ProcessName, Supervised>();
let client: TemporalConnections['client'] | undefined;
let closeClient: (() => Promise<void>) | undefined;
let labIsUp = false;

/** 0 once the soak passed: a failed run keeps its temp dir (logs, databases) to be looked into. */
let exitCode = 1;
// Each step undoes what is set up here or in soak(); they run latest first (bench/teardown.ts),
// each even when one before it failed, at the end or on Ctrl-C.
const teardown = new Teardown((line) => console.error(`[soak] ${line}`));
teardown.add('remove the temp dir', async () => (values.keep || exitCode !== 0 ? log(`kept ${scratch}`) : rm(scratch, { recursive: true, force: true })));
teardown.add('stop the Temporal server', () => temporal.stop());
teardown.add('stop kube-apiserver', () => kube.stop());
teardown.add('take the lab down', async () => labIsUp && labDown(GATEWAY));
teardown.add('close the Temporal client', async () => closeClient?.());
for (const name of ['control', 'agent', 'bridge'] as const) teardown.add(`stop ${name}`, async () => children.get(name)?.stop());
teardown.onInterrupt(log);

interface Result {
  seed: number;
  replay: string;
  pass: boolean;
  ops: Record<string, number>;
  faults: Record<string, number>;
  unexpectedExits: Record<string, string[]>;
  converged: boolean;
  convergedAfterLastFaultS: number | null;
  convergedAfterLastOpS: number | null;
  problems: string[];
  failures: string[];
  badlyEnded: string[];
  stats: Verdict['stats'] | null;
  probes: { passed: number; total: number; failed: string[] };
  audit: { ran: boolean; exitCode?: number; findings: number; findingsByKind: Record<string, number>; unchecked: string[]; error?: string; samples: string[] };
  runtimeS: number;
}

try {
  exitCode = await soak();
} catch (err) {
  console.error(`[soak] failed: ${(err as Error).stack ?? err}`);
  for (const child of children.values()) console.error(`--- ${child.name} log (tail) ---\n${await child.logTail()}`);
} finally {
  await teardown.run();
}
process.exit(exitCode);

async function soak(): Promise<number> {
  const rng = createRng(SEED);
  log(`temp dir ${scratch}; starting kube-apiserver + etcd and the Temporal dev server`);
  await kube.start();
  await temporal.start();
  const lab = await labUp(GATEWAY);
  labIsUp = true;
  log(`Temporal at ${temporal.address}; kubeconfig ${kube.kubeconfigPath}; lab gateway ${GATEWAY} (${lab.gatewayNs})`);

  const address = ['--address', temporal.address];
  const logFile = (name: string) => path.join(scratch, `${name}.log`);
  const add = (name: ProcessName, script: string, args: string[]) => children.set(name, new Supervised(name, script, args, logFile(name), log));
  add('control', 'worker/control.ts', [...address, '--kubeconfig', kube.kubeconfigPath]);
  add('agent', 'worker/agent.ts', [...address, '--gateway', GATEWAY, '--netns', lab.gatewayNs, '--external-interface', lab.externalInterface, '--vpc-interface', lab.vpcInterface, '--garp', labGarp()]);
  add('bridge', 'starter/bridge.ts', [...address, '--kubeconfig', kube.kubeconfigPath]);
  for (const child of children.values()) child.start();

  // The network as the examples declare it, the VpcNatGateway renamed to the soak's lab gateway.
  const api = new KubeApi(kube.kubeconfigPath);
  const kc = loadKubeConfig(kube.kubeconfigPath);
  const network = (await readManifests(path.join(repoRoot(), 'deploy', 'examples'))).filter((o) => o.kind === 'Subnet' || o.kind === 'VpcNatGateway');
  for (const o of network) if (o.kind === 'VpcNatGateway') o.metadata!.name = GATEWAY;
  const apply = (objects: KubernetesObject[]) => api.retried('apply', () => applyObjects(kc, structuredClone(objects)));
  await apply(network);
  const gatewayReady = async (timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while ((await api.get('vpc-nat-gw', GATEWAY))?.status?.ready !== true) {
      if (Date.now() > deadline) throw new Error(`vpc-nat-gw ${GATEWAY} not Ready within ${timeoutMs / 1000} s`);
      await sleep(500);
    }
  };
  await gatewayReady(180_000);
  log(`stack up: control worker, agent and bridge running, gateway ${GATEWAY} Ready (${seconds(Date.now() - t0)} s)`);

  // --- operations and faults -------------------------------------------------------------------
  const plan = planFaults(rng, OPS, KILLS, RESTARTS);
  const faults = new FaultInjector(
    plan,
    {
      kill: (name) => children.get(name)!.kill(),
      start: (name) => children.get(name)!.start(),
      restart: (server, downMs, hard) => (server === 'temporal' ? temporal.restart(downMs, hard) : kube.restart(downMs, hard)),
    },
    log,
    t0,
  );
  const driver = new Driver(rng, api, GATEWAY, () => apply(network.filter((o) => o.kind === 'VpcNatGateway')).then(() => undefined), log);
  const opsStart = Date.now();
  for (let i = 0; i < OPS; i++) {
    faults.fire(i);
    await driver.step(i, OPS);
    if ((i + 1) % 50 === 0 || i + 1 === OPS) log(`${i + 1}/${OPS} operations; ${driver.live().length} live objects; ${driver.failures.length} failures`);
    await sleep(rng.int(0, OP_PAUSE_MS));
  }
  faults.fire(OPS); // the last kill, after the last operation
  await Promise.all(faults.done);
  await driver.finish();
  const lastOpAt = Date.now();
  log(`operations done in ${seconds(lastOpAt - opsStart)} s; every fault recovered; waiting for convergence (at most ${CONVERGE_MS / 1000} s)`);

  // --- convergence -----------------------------------------------------------------------------
  const temporalClient = await connectTemporal(temporalTarget({ address: temporal.address }), { worker: false });
  client = temporalClient.client;
  closeClient = temporalClient.close;
  const check = () =>
    evaluate({ api, driver, gateway: GATEWAY, netns: lab.gatewayNs, client: client!, subnet: SUBNET }).catch((err: Error): Verdict => ({ problems: [`the check itself failed: ${err.message}`], stats: null as never }));
  const deadline = Date.now() + CONVERGE_MS;
  let verdict = await check();
  let convergedAt: number | null = null;
  let lastShown = Date.now();
  for (;;) {
    if (verdict.problems.length === 0) {
      convergedAt ??= Date.now();
      await sleep(2000);
      verdict = await check(); // and it stays so
      if (verdict.problems.length === 0) break;
      log(`converged, then not any more: ${verdict.problems[0]}`);
      convergedAt = null;
    }
    if (Date.now() > deadline) break;
    if (Date.now() - lastShown > 10_000) {
      lastShown = Date.now();
      log(`not converged yet: ${verdict.problems.length} problems, e.g. ${verdict.problems[0]}`);
    }
    await sleep(2000);
    verdict = await check();
  }
  // The last fault's end (its process or server back), or the start of the operations when there was none.
  const lastFault = Math.max(faults.lastRecoveredAt, opsStart);
  if (convergedAt) log(`converged ${seconds(convergedAt - lastFault)} s after the last fault (${seconds(convergedAt - lastOpAt)} s after the last operation)`);
  else log(`NOT converged within ${CONVERGE_MS / 1000} s: ${verdict.problems.length} problems`);
  const ended = await badlyEnded(client);

  // --- traffic and the audit -------------------------------------------------------------------
  const probes: ProbeResult[] = PROBES > 0 ? await probe(api, lab, createRng(SEED ^ 0x5eed), PROBES) : [];
  let audit: AuditOutcome | undefined;
  if (!values['no-audit']) {
    // Exit 2 with nothing found: something could not be checked yet (a gateway in its rebuild
    // window after being created again, say); asked again a few times before it counts.
    const auditDeadline = Date.now() + AUDIT_RETRY_MS;
    for (let attempt = 1; ; attempt++) {
      log(`running natflow audit${attempt > 1 ? ` (attempt ${attempt})` : ''}`);
      audit = await runAudit(temporal.address);
      if (!(audit.exitCode === 2 && !audit.error && audit.findings.length === 0) || Date.now() > auditDeadline) break;
      log(`audit: could not check everything yet (${audit.unchecked.map((u) => u.what).join('; ')}); again in 15 s`);
      await sleep(15_000);
    }
  }

  // --- the report ------------------------------------------------------------------------------
  const byKind: Record<string, number> = {};
  for (const f of audit?.findings ?? []) byKind[f.kind] = (byKind[f.kind] ?? 0) + 1;
  const unexpectedExits = Object.fromEntries([...children].map(([name, c]) => [name, c.unexpectedExits]));
  const result: Result = {
    seed: SEED,
    replay,
    pass: false,
    ops: driver.counts,
    faults: faults.counts,
    unexpectedExits,
    converged: convergedAt !== null,
    convergedAfterLastFaultS: convergedAt ? Number(seconds(convergedAt - lastFault)) : null,
    convergedAfterLastOpS: convergedAt ? Number(seconds(convergedAt - lastOpAt)) : null,
    problems: verdict.problems,
    failures: driver.failures,
    badlyEnded: ended,
    stats: verdict.stats,
    probes: { passed: probes.filter((p) => p.ok).length, total: probes.length, failed: probes.filter((p) => !p.ok).map((p) => `${p.what}: ${p.detail}`) },
    audit: audit
      ? { ran: true, exitCode: audit.exitCode, findings: audit.findings.length, findingsByKind: byKind, unchecked: audit.unchecked.map((u) => `${u.what}: ${u.why}`), error: audit.error, samples: audit.findings.slice(0, 10).map((f) => `${f.kind} ${f.resource}: expected ${f.expected}, found ${f.found}`) }
      : { ran: false, findings: 0, findingsByKind: {}, unchecked: [], samples: [] },
    runtimeS: 0,
  };
  const auditClean = !audit || (audit.exitCode === 0 && !audit.error && audit.findings.length === 0);
  result.pass = result.converged && result.failures.length === 0 && ended.length === 0 && result.probes.failed.length === 0 && auditClean;
  result.runtimeS = Number(seconds(Date.now() - t0));
  printReport(result, faults.events, driver.apiRefusals.length, api.retries);
  if (!result.pass) for (const child of children.values()) console.log(`--- ${child.name} log (tail) ---\n${await child.logTail()}`);
  console.log(`SOAK-RESULT ${JSON.stringify(result)}`);
  return result.pass ? 0 : 1;
}

function printReport(r: Result, events: string[], apiRefusals: number, apiRetries: number): void {
  const list = (counts: Record<string, number>) =>
    Object.entries(counts)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, n]) => `${k} ${n}`)
      .join(', ') || 'none';
  const total = (counts: Record<string, number>, filter = (_: string) => true) => Object.entries(counts).filter(([k]) => filter(k)).reduce((s, [, n]) => s + n, 0);
  const lines = [
    '',
    `=== natflow chaos soak: ${r.pass ? 'PASS' : 'FAIL'} (seed ${r.seed}; ${r.runtimeS} s) ===`,
    `replay:       ${r.replay}`,
    `operations:   ${total(r.ops, (k) => !k.includes(' '))} (${list(Object.fromEntries(Object.entries(r.ops).filter(([k]) => !k.startsWith('bad-spec '))))})`,
    `bad specs:    ${list(Object.fromEntries(Object.entries(r.ops).filter(([k]) => k.startsWith('bad-spec ')).map(([k, n]) => [k.slice(9), n])))}; ${apiRefusals} refused by the API as expected`,
    `kills:        ${list(Object.fromEntries(Object.entries(r.faults).filter(([k]) => k.startsWith('kill ')).map(([k, n]) => [k.slice(5), n])))} (SIGKILL, each started again after a pause)`,
    `restarts:     ${list(Object.fromEntries(Object.entries(r.faults).filter(([k]) => k.startsWith('restart ')).map(([k, n]) => [k.slice(8), n])))} (same state, same port); ${apiRetries} API calls retried meanwhile`,
    `own exits:    ${Object.entries(r.unexpectedExits).map(([k, v]) => `${k} ${v.length}${v.length ? ` (${v.join(', ')})` : ''}`).join(', ')}`,
    `convergence:  ${r.converged ? `converged ${r.convergedAfterLastFaultS} s after the last fault (${r.convergedAfterLastOpS} s after the last operation); the bar of ${CONVERGENCE_BAR_S} s ${r.convergedAfterLastFaultS! <= CONVERGENCE_BAR_S ? 'met' : 'MISSED'}` : `NOT converged (${r.problems.length} problems)`}`,
    r.stats ? `objects:      ${r.stats.live} live (${r.stats.ready} Ready, ${r.stats.refused} with the expected non-Ready condition: ${list(r.stats.reasons)}), ${r.stats.deletedGone} deleted and gone, ${r.stats.held} deleted EIPs held by their Ready users; gateway: ${r.stats.gatewayRules} rule owners, ${r.stats.gatewayAddresses} addresses` : 'objects:      (not read)',
    `workflows:    ${r.badlyEnded.length} failed, terminated or timed out`,
    `probes:       ${r.probes.passed}/${r.probes.total} answered by the right VM`,
    `audit:        ${r.audit.ran ? `exit ${r.audit.exitCode}; ${r.audit.findings} findings (${list(r.audit.findingsByKind)}); ${r.audit.unchecked.length} unchecked${r.audit.error ? `; ERROR ${r.audit.error}` : ''}` : 'not run (--no-audit)'}`,
    `op failures:  ${r.failures.length}`,
  ];
  const detail = (title: string, items: string[]) => items.length && lines.push(`${title}:`, ...items.slice(0, 40).map((x) => `  - ${x}`), ...(items.length > 40 ? [`  ... and ${items.length - 40} more`] : []));
  detail('faults', events);
  detail('not converged', r.problems);
  detail('operation failures', r.failures);
  detail('badly ended workflows', r.badlyEnded);
  detail('failed probes', r.probes.failed);
  detail('audit findings (first 10)', r.audit.samples);
  detail('audit unchecked', r.audit.unchecked);
  console.log(lines.join('\n'));
}
