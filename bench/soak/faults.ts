// The soak's faults, planned from the seed before the first operation: K SIGKILLs of natflow's
// processes (each started again after a short pause) and R restarts of each server, each at an
// operation index, so that a replay kills the same process at the same point of the operations.
import type { Rng } from './prng.js';

export type ProcessName = 'control' | 'agent' | 'bridge';
export type ServerName = 'temporal' | 'kube-apiserver';

export type Fault =
  | { at: number; kind: 'kill'; target: ProcessName; pauseMs: number }
  | { at: number; kind: 'restart'; target: ServerName; downMs: number; hard: boolean };

/**
 * Faults fall between 5% and 85% of the operations, so that they have operations around them;
 * but the last kill comes after the last operation, when the operations have left the most in
 * flight, so that the convergence is timed from a fault with nothing after it.
 */
export function planFaults(rng: Rng, ops: number, kills: number, restarts: number): Fault[] {
  const at = () => rng.int(Math.floor(ops * 0.05), Math.max(0, Math.floor(ops * 0.85) - 1));
  const faults: Fault[] = [];
  // Each process is killed at least once (given three kills or more), the rest at random.
  const targets = rng.shuffle(['control', 'agent', 'bridge'] as const);
  for (let i = 0; i < kills; i++) faults.push({ at: at(), kind: 'kill', target: targets[i] ?? rng.pick(targets), pauseMs: rng.int(200, 4000) });
  for (const target of ['temporal', 'kube-apiserver'] as const) {
    for (let i = 0; i < restarts; i++) faults.push({ at: at(), kind: 'restart', target, downMs: rng.int(500, 4000), hard: rng.chance(0.5) });
  }
  faults.sort((a, b) => a.at - b.at);
  const lastKill = [...faults].reverse().find((f) => f.kind === 'kill');
  if (lastKill) lastKill.at = ops;
  return faults.sort((a, b) => a.at - b.at);
}

export interface FaultTargets {
  kill(target: ProcessName): Promise<void>;
  start(target: ProcessName): void;
  restart(target: ServerName, downMs: number, hard: boolean): Promise<void>;
}

/** Injects faults as the operations reach them; one fault per target at a time (the next waits for the previous one's recovery). */
export class FaultInjector {
  readonly done: Promise<void>[] = [];
  readonly events: string[] = [];
  lastFaultAt = 0;
  lastRecoveredAt = 0;
  readonly counts: Record<string, number> = {};
  private readonly chains = new Map<string, Promise<void>>();

  constructor(
    private readonly plan: Fault[],
    private readonly targets: FaultTargets,
    private readonly log: (msg: string) => void,
    private readonly t0: number,
  ) {}

  /** Fires every fault planned at operation `index` (without waiting for recovery). */
  fire(index: number): void {
    for (const fault of this.plan.filter((f) => f.at === index)) {
      const previous = this.chains.get(fault.target) ?? Promise.resolve();
      const next = previous.then(() => this.inject(fault));
      this.chains.set(fault.target, next);
      this.done.push(next);
    }
  }

  private async inject(fault: Fault): Promise<void> {
    const key = `${fault.kind} ${fault.target}`;
    this.counts[key] = (this.counts[key] ?? 0) + 1;
    this.lastFaultAt = Date.now();
    const stamp = () => `${((Date.now() - this.t0) / 1000).toFixed(1)} s`;
    if (fault.kind === 'kill') {
      await this.targets.kill(fault.target);
      this.event(`${stamp()} op ${fault.at}: SIGKILL ${fault.target}, started again in ${fault.pauseMs} ms`);
      await new Promise((r) => setTimeout(r, fault.pauseMs));
      this.targets.start(fault.target);
    } else {
      this.event(`${stamp()} op ${fault.at}: ${fault.hard ? 'SIGKILL' : 'SIGTERM'} ${fault.target}, down ${fault.downMs} ms, restarted on the same state`);
      await this.targets.restart(fault.target, fault.downMs, fault.hard);
      this.event(`${stamp()} ${fault.target} is back`);
    }
    this.lastRecoveredAt = Date.now();
  }

  private event(msg: string): void {
    this.events.push(msg);
    this.log(msg);
  }
}
