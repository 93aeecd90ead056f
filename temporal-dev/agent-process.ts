// A lab gateway's agent in a process of its own, as a gateway pod runs it: its commands (ip,
// arping, iptables-restore, conntrack) are forked from a small process, not from the control
// worker's (forking a 1.3 GB process per command cost the control process a fifth of its CPU
// in a burst), and its work leaves the control worker's event loop.
import { spawn } from 'node:child_process';
import { cpuSecondsOf, peakRssOf, tiedToParent, terminate } from './child-process.js';
import { repoRoot } from './provision.js';
import type { LabTopology } from '../domain/lab.js';
import { labGarp } from './garp.js';

export interface AgentProcess {
  /** Its peak resident memory so far, in bytes (the kernel's high-water mark), while it runs. */
  peakRss(): number | undefined;
  /** Its CPU time so far, with the commands it ran, in seconds, while it runs. */
  cpuSeconds(): number | undefined;
  /** SIGTERM (its worker drains), SIGKILL if it has not exited in time. */
  stop(): Promise<void>;
}

/** Starts `worker/agent.ts` for the lab gateway against the Temporal server at `address`; it dies with this process. */
export function startAgentProcess(address: string, gateway: string, topology: Pick<LabTopology, 'gatewayNs' | 'externalInterface' | 'vpcInterface'>): AgentProcess {
  const args = ['--import', 'tsx', 'worker/agent.ts', '--address', address, '--gateway', gateway, '--netns', topology.gatewayNs, '--external-interface', topology.externalInterface, '--vpc-interface', topology.vpcInterface, '--garp', labGarp()];
  const [cmd, argv] = tiedToParent(process.execPath, args, 'KILL');
  const child = spawn(cmd, argv, { cwd: repoRoot(), stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { peakRss: () => peakRssOf(child.pid), cpuSeconds: () => cpuSecondsOf(child.pid), stop: () => terminate(child, exited, () => child.exitCode !== null || child.signalCode !== null) };
}
