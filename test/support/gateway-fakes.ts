// The gateway tests' fake gateway: what the agent's commands see of one gateway, for the workflow
// tier (test/gateway-workflow.test.ts, test/gateway-handover.test.ts), where the agent's real
// activities (worker/agent.ts) run against it.
import type { CommandRunner, RunOptions, RunResult } from '../../activities/exec.js';
import { ownerOf } from '../../domain/nat-rules.js';
import { parseNatTable } from '../../domain/nat-table.js';
import { FakeCommands } from './fake-commands.js';

/** The external interface of the fake gateway. */
export const EXT = 'net1';

/** A gateway's network state: its nat table and conntrack (FakeCommands) and the EIP addresses on its external interface. */
export class FakeGateway implements CommandRunner {
  readonly nat = new FakeCommands();
  readonly addresses = new Map<string, number>();
  /** While set, each iptables-restore waits for it (a busy gateway); `restoresHeld` counts those waiting. */
  restoreGate: Promise<void> | null = null;
  restoresHeld = 0;

  async run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    if (cmd === 'iptables-restore' && this.restoreGate) {
      this.restoresHeld++;
      await this.restoreGate;
      this.restoresHeld--;
    }
    const ok = (stdout = ''): RunResult => ({ stdout, stderr: '', code: 0 });
    const line = args.join(' ');
    if (cmd === 'ip' && line === `-j -4 addr show dev ${EXT}`) {
      return ok(JSON.stringify([{ addr_info: [...this.addresses].map(([local, prefixlen]) => ({ family: 'inet', local, prefixlen, label: `${EXT}:eip` })) }]));
    }
    if (cmd === 'ip' && line === '-batch -') {
      // Each line an `ip addr replace|del <cidr> ...`, as reconcileEipAddresses writes them.
      for (const command of (opts.input ?? '').split('\n').filter(Boolean)) {
        const [addr, verb, cidr = ''] = command.split(' ');
        if (addr !== 'addr' || (verb !== 'replace' && verb !== 'del')) throw new Error(`the fake gateway does not model \`ip ${command}\``);
        const [address = '', prefix] = cidr.split('/');
        if (verb === 'replace') this.addresses.set(address, Number(prefix));
        else this.addresses.delete(address);
      }
      return ok();
    }
    if (cmd === 'arping') return ok('Usage: arping [-AbDfhqUV] (iputils)');
    return this.nat.run(cmd, args, opts);
  }

  /** The owners of the tagged rules in the nat table, sorted, once each. */
  owners(): string[] {
    return [...new Set(parseNatTable(this.nat.save()).rules.flatMap((r) => ownerOf(r.spec) ?? []))].sort();
  }
}
