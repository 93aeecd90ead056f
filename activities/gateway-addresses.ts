// The gateway agent's EIP addresses: the EIPs live as extra addresses on the gateway's external
// interface. natflow marks each address it owns with the interface label `<if>:eip`, so that it
// can always tell its own addresses from the gateway's (which it must never touch) and clean up
// after any partial apply by reading the interface, with no state of its own.
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import ipaddr from 'ipaddr.js';
import { spawnRunner, type CommandRunner, type RunOptions } from './exec.js';

import { validateEipAddresses, type EipAddress } from '../domain/gateway.js';
import { InvalidAddressError } from '../domain/ip.js';

export interface AddressActivitiesConfig {
  /** Network namespace of the gateway (the local lab); unset when the agent runs inside it (a pod). */
  netns?: string;
  /** The gateway's external interface, `net1` in Kube-OVN's gateway pod. */
  externalInterface: string;
  /** Where best-effort problems (a failed ARP announcement) are reported; the activity log by default. */
  warn?: (message: string) => void;
  /** Runs ip and arping; real processes by default. */
  runner?: CommandRunner;
  /**
   * The ARP announcer (worker/garp): one process announces a whole batch of addresses. Unset,
   * arping announces them, a process each (~7 ms of CPU each: 7 of the agent's 9.6 CPU seconds in
   * a 1,000-pair burst).
   */
  garp?: string;
}

export interface AddressActivities {
  /**
   * Makes the labelled addresses on the external interface exactly `desired`: adds the missing
   * ones, removes the labelled ones not desired, and never touches an unlabelled address.
   * Idempotent. Results are `address/prefix` strings. Added addresses are announced with a
   * gratuitous ARP right after it returns (see `announced`).
   */
  reconcileEipAddresses(desired: EipAddress[]): Promise<{ added: string[]; removed: string[] }>;
  /** Adds `add` and removes the addresses in `remove`; every other labelled address stays. Reads the interface once. */
  changeEipAddresses(change: { add: EipAddress[]; remove: string[] }): Promise<{ added: string[]; removed: string[] }>;
  /** Resolves once no announcement is waiting or being sent (each sent, or failed with a warning). */
  announced(): Promise<void>;
  /** The EIP addresses (labelled ones) currently on the interface, as `address/prefix`. */
  listEipAddresses(): Promise<string[]>;
  /** Every IPv4 address on the interface; `eip`: labelled as natflow's. */
  listAddresses(): Promise<{ address: string; prefixLength: number; eip: boolean }[]>;
}

interface InterfaceAddress {
  local: string;
  prefixlen: number;
  label?: string;
}

// Address labels share the kernel's interface name limit (IFNAMSIZ - 1) and must start with
// the interface name, so `<if>:eip` needs an interface name of at most 11 characters.
const MAX_LABEL_LENGTH = 15;
/**
 * ARP announcements running at once. Each arping spends ~70 ms in the kernel closing its packet
 * socket, next to no CPU; a burst of a thousand EIPs must not fork a thousand processes at once.
 */
const ANNOUNCE_PARALLEL = 16;
/** Addresses one announcer process is given at most (its command line stays far below the kernel's limit). */
const GARP_BATCH = 512;

export function createAddressActivities(cfg: AddressActivitiesConfig): AddressActivities {
  const dev = cfg.externalInterface;
  const label = `${dev}:eip`;
  if (!/^[A-Za-z0-9_.-]+$/.test(dev) || label.length > MAX_LABEL_LENGTH) {
    throw new Error(
      `invalid external interface ${JSON.stringify(dev)}: needs a plain interface name of at most ` +
        `${MAX_LABEL_LENGTH - ':eip'.length} characters, so that the address label ${JSON.stringify(label)} fits in ${MAX_LABEL_LENGTH}`,
    );
  }
  const runner = cfg.runner ?? spawnRunner;
  const run = (cmd: string, args: string[], more: Omit<RunOptions, 'netns'> = {}) => runner.run(cmd, args, { netns: cfg.netns, ...more });
  /** Address changes in one `ip -batch` process: a burst of EIPs costs one process, not one per address. */
  const ipBatch = async (commands: string[]) => {
    if (commands.length > 0) await run('ip', ['-batch', '-'], { input: commands.join('\n') + '\n' });
  };
  let arping: Promise<ArpingFlavor> | undefined;
  // Announcements are sent after the change is answered, not before: an address is in use as soon
  // as it is on the interface, and a neighbour that never saw it asks for it by ARP anyway; the
  // announcement only corrects a stale entry (an EIP moved from another gateway), best effort.
  // Awaited, they made every address change of a burst wait ~70 ms per 16 addresses, and the
  // gateway applies one change at a time (1,000 EIP+FIP pairs: 49 address changes of 466 ms on
  // average, 23 s of the burst's 55 s).
  /** Addresses waiting for their announcement, each with where its warnings go (the call that added it). */
  const toAnnounce = new Map<string, Warn>();
  /**
   * Announcements being sent, by address. An address removed waits for its own: a gratuitous ARP
   * sent after it went (an EIP moving to another gateway) would pull its traffic back here.
   */
  const sending = new Map<string, Promise<void>>();
  let workers = 0;
  let idle: { promise: Promise<void>; resolve: () => void } | undefined;
  // With the announcer, one process takes what is waiting; with arping, 16 take an address each.
  const [parallel, batchSize] = cfg.garp ? [1, GARP_BATCH] : [ANNOUNCE_PARALLEL, 1];
  /** The next addresses to announce, taken off the waiting ones. */
  function nextBatch(): [string, Warn][] {
    const batch = [...take(toAnnounce.entries(), batchSize)];
    for (const [address] of batch) toAnnounce.delete(address);
    return batch;
  }
  function announceSoon(addresses: string[]): void {
    const warn = cfg.warn ?? activityWarner();
    for (const address of addresses) toAnnounce.set(address, warn);
    const more = Math.min(parallel - workers, toAnnounce.size);
    for (let i = 0; i < more; i++) {
      workers++;
      void (async () => {
        try {
          for (let batch = nextBatch(); batch.length > 0; batch = nextBatch()) {
            const sent = announce(batch).catch(() => undefined); // a warning that failed to log fails nothing
            for (const [address] of batch) sending.set(address, sent);
            await sent;
            for (const [address] of batch) if (sending.get(address) === sent) sending.delete(address);
          }
        } finally {
          if (--workers === 0) {
            const waiting = idle;
            idle = undefined;
            waiting?.resolve();
          }
        }
      })();
    }
  }
  /** Addresses about to be removed: not announced if still waiting, and an announcement under way ends first. */
  async function withdraw(addresses: string[]): Promise<void> {
    for (const address of addresses) toAnnounce.delete(address);
    await Promise.all(addresses.map((address) => sending.get(address)));
  }

  async function readAddresses(): Promise<InterfaceAddress[]> {
    const { stdout } = await run('ip', ['-j', '-4', 'addr', 'show', 'dev', dev]);
    const links = JSON.parse(stdout) as { addr_info?: (InterfaceAddress & { family?: string })[] }[];
    return links.flatMap((l) => l.addr_info ?? []).filter((a) => a.family === undefined || a.family === 'inet');
  }

  const ours = (addrs: InterfaceAddress[]) => addrs.filter((a) => a.label === label);

  /** Makes the labelled addresses exactly `desired`, from `current`, what the interface has now. */
  async function reconcile(desired: EipAddress[], current: InterfaceAddress[]): Promise<{ added: string[]; removed: string[] }> {
    // Everything is validated before the first command, so bad input changes nothing.
    const wanted = validateDesired(desired);
    const wantedCidrs = new Set(wanted.map(cidr));

    const conflicts = current.filter((a) => a.label !== label && wanted.some((w) => w.address === a.local));
    if (conflicts.length > 0) {
      throw ApplicationFailure.nonRetryable(
        `EIP address ${conflicts.map((a) => a.local).join(', ')} is already on ${dev} without the ` +
          `${label} label (the gateway's own address or someone else's); natflow will not take it over`,
        'EipAddressConflict',
      );
    }

    const removed = ours(current).map(cidr).filter((c) => !wantedCidrs.has(c));
    await withdraw(removed.map((c) => c.split('/')[0]!));
    await ipBatch(removed.map((c) => `addr del ${c} dev ${dev}`));
    // Re-read after removing: were promote_secondaries ever off, deleting the first address
    // of a subnet would flush the others with it, and they must be added back in this pass.
    if (removed.length > 0) current = await readAddresses();

    const present = new Set(ours(current).map(cidr));
    const toAdd = wanted.filter((w) => !present.has(cidr(w)));
    await ipBatch(toAdd.map((w) => `addr replace ${cidr(w)} dev ${dev} label ${label}`));
    // Best effort: neighbours that cached another MAC for this address (an EIP moved from
    // another gateway) learn the new one now instead of after their entries expire.
    announceSoon(toAdd.map((w) => w.address));

    return { added: sortCidrs(toAdd.map(cidr)), removed: sortCidrs(removed) };
  }

  async function announce(batch: [string, Warn][]): Promise<void> {
    if (!cfg.garp) {
      for (const [address, warn] of batch) await announceWithArping(address, warn);
      return;
    }
    try {
      await run(cfg.garp, [dev, ...batch.map(([address]) => address)]);
    } catch (err) {
      for (const [address, warn] of batch) warn(`EIP ${address} added on ${dev} but the ARP announcement failed: ${(err as Error).message}`);
    }
  }

  async function announceWithArping(address: string, warn: Warn): Promise<void> {
    arping ??= detectArping(runner);
    const flavor = await arping;
    if (flavor.kind === 'unavailable') {
      warn(`EIP ${address} added on ${dev} but not announced: arping is unavailable (${flavor.reason})`);
      return;
    }
    try {
      if (flavor.kind === 'habets') {
        // Habets' arping sends the interface's primary address as sender unless told with -S,
        // which would not update anyone's entry for the EIP. It exits 1 when nothing answers,
        // which is always the case for an announcement; -w 0: it sends, and waits for no answer.
        await run('arping', ['-q', '-U', '-c', '1', '-w', '0', '-i', dev, '-S', address, address], { allowExitCodes: [1] });
      } else {
        // iputils/busybox: -U already uses the target as the sender address.
        await run('arping', ['-q', '-U', '-c', '1', '-I', dev, address]);
      }
    } catch (err) {
      warn(`EIP ${address} added on ${dev} but the ARP announcement failed: ${(err as Error).message}`);
    }
  }

  return {
    announced() {
      if (workers === 0) return Promise.resolve();
      if (!idle) {
        let resolve!: () => void;
        idle = { promise: new Promise<void>((r) => (resolve = r)), resolve };
      }
      return idle.promise;
    },

    async listAddresses() {
      return (await readAddresses()).map((a) => ({ address: a.local, prefixLength: a.prefixlen, eip: a.label === label }));
    },

    async listEipAddresses() {
      return sortCidrs(ours(await readAddresses()).map(cidr));
    },

    async reconcileEipAddresses(desired) {
      return reconcile(desired, await readAddresses());
    },

    async changeEipAddresses({ add, remove }) {
      // The gateway workflow sends one address change at a time, so this read-then-write is not raced.
      const current = await readAddresses();
      const changed = new Set([...remove, ...add.map((a) => a.address)]);
      const kept = ours(current).filter((a) => !changed.has(a.local)).map((a) => ({ address: a.local, prefixLength: a.prefixlen }));
      return reconcile([...kept, ...add], current);
    },
  };
}

/** Where an address's warnings go: the log of the call that added it. */
type Warn = (message: string) => void;

function* take<T>(items: Iterable<T>, count: number): Generator<T> {
  if (count <= 0) return;
  for (const item of items) {
    yield item;
    if (--count === 0) return;
  }
}

function cidr(a: EipAddress | InterfaceAddress): string {
  return 'address' in a ? `${a.address}/${a.prefixLength}` : `${a.local}/${a.prefixlen}`;
}

// Numeric order, so results do not depend on the kernel's address order (stable for callers
// that compare or record them).
function sortCidrs(cidrs: string[]): string[] {
  const key = (c: string) => {
    const [address, prefix] = c.split('/');
    return ipaddr.IPv4.parse(address!).toByteArray().reduce((n, b) => n * 256 + b, 0) * 64 + Number(prefix);
  };
  return cidrs.sort((a, b) => key(a) - key(b));
}

// Bad input (domain/gateway.ts) becomes one non-retryable failure before the first command.
function validateDesired(desired: EipAddress[]): EipAddress[] {
  try {
    return validateEipAddresses(desired);
  } catch (err) {
    if (err instanceof InvalidAddressError) throw ApplicationFailure.nonRetryable(err.message, 'InvalidEipAddress');
    throw err;
  }
}

type ArpingFlavor = { kind: 'iputils' } | { kind: 'habets' } | { kind: 'unavailable'; reason: string };

// Two incompatible arpings exist: iputils' (and busybox's, same options) and Thomas Habets'
// (Debian's `arping` package, installed here). Only their help text tells them apart.
async function detectArping(runner: CommandRunner): Promise<ArpingFlavor> {
  try {
    const { stdout, stderr } = await runner.run('arping', ['--help'], { allowExitCodes: [1, 2, 64] });
    return /Habets/.test(stdout + stderr) ? { kind: 'habets' } : { kind: 'iputils' };
  } catch (err) {
    return { kind: 'unavailable', reason: (err as Error).message };
  }
}

/** Warnings to the log of the activity running now, also once it has ended (announcements come after it). */
function activityWarner(): (message: string) => void {
  try {
    const log = Context.current().log;
    return (message) => log.warn(message);
  } catch {
    return (message) => console.warn(message); // not inside an activity (a script or a test)
  }
}
