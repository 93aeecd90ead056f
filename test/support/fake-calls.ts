// A recording fake of a set of activities (e.g. `WorkflowCallActivities`) for the workflow unit
// tier: every call records `name:start` and `name:end` in one ordered list, and its arguments;
// each test scripts what a call does (another answer, a delay, failures) on top of the answers
// the test file gives as defaults, and may change that script while the workflow runs.
import type { KubeActivities, WorkflowCallActivities } from '../../domain/workflow-api.js';

type AsyncFn = (...args: any[]) => Promise<unknown>;

/** What one activity does, instead of (or on the way to) its default answer. */
export interface CallScript<F extends AsyncFn> {
  /** Answers with this instead of the default answer. */
  answer?: F;
  /** Waits this long before answering (or failing). */
  delayMs?: number;
  /** Waits for this before answering (or failing): a gate the test opens (see `gate`). */
  until?: Promise<unknown>;
  /** Throws this instead of answering... */
  failure?: Error;
  /** ...on the first `failures` calls only (every call when unset). */
  failures?: number;
}

export type CallScripts<A> = { [K in keyof A]?: A[K] extends AsyncFn ? CallScript<A[K]> : never };

export class FakeCalls<A extends { [K in keyof A]: AsyncFn }> {
  /** Every call's start and end, in order: `allocateAddress:start`, `allocateAddress:end`, ... */
  readonly events: string[] = [];
  /** The arguments of every call, by activity, in order. */
  readonly args: { [K in keyof A]?: Parameters<A[K]>[] } = {};
  private readonly failed = new Map<keyof A, number>();

  /** `answers`: what each served activity answers by default; only these are served. */
  constructor(
    private readonly answers: Partial<A>,
    private readonly scripts: CallScripts<A> = {},
  ) {}

  /** Changes what `name` does from its next call on (an empty script: back to the default answer). */
  script<K extends keyof A>(name: K, script: CallScripts<A>[K]): this {
    this.scripts[name] = script;
    return this;
  }

  /**
   * Also serves the calls `build` makes out of the served ones (e.g. `combinedCalls`): each is
   * recorded as a call, and so is every served call it makes, with its script.
   */
  alsoServe(build: (served: A) => Partial<A>): this {
    Object.assign(this.answers, build(this.activities() as A));
    return this;
  }

  /** The names of the calls started so far, in order. */
  started(): string[] {
    return this.events.filter((e) => e.endsWith(':start')).map((e) => e.slice(0, -':start'.length));
  }

  /** The activities for a worker: each default answer behind its script, every call recorded. */
  activities(): Partial<A> {
    const served = Object.keys(this.answers) as (keyof A & string)[];
    return Object.fromEntries(served.map((name) => [name, (...args: Parameters<A[typeof name]>) => this.call(name, args)])) as Partial<A>;
  }

  private async call<K extends keyof A & string>(name: K, args: Parameters<A[K]>): Promise<unknown> {
    this.events.push(`${name}:start`);
    (this.args[name] ??= []).push(args);
    try {
      const script: CallScript<A[K]> = this.scripts[name] ?? {};
      if (script.delayMs) await new Promise((r) => setTimeout(r, script.delayMs));
      await script.until;
      if (script.failure) {
        const failed = this.failed.get(name) ?? 0;
        if (script.failures === undefined || failed < script.failures) {
          this.failed.set(name, failed + 1);
          throw script.failure;
        }
      }
      return await (script.answer ?? this.answers[name]!)(...args);
    } finally {
      this.events.push(`${name}:end`);
    }
  }
}

/** A gate for `CallScript.until`: calls wait at it until the test opens it. */
export function gate(): { closed: Promise<void>; open: () => void } {
  let open!: () => void;
  const closed = new Promise<void>((resolve) => (open = resolve));
  return { closed, open };
}

/** The kube calls of a resource from the cluster, recorded: its object exists and is not being deleted. */
export const fakeKube = () =>
  new FakeCalls<KubeActivities>({
    kubeAdopt: async () => ({ exists: true, deleting: false }),
    kubePublishStatus: async () => undefined,
    kubeWriteNat: async () => undefined,
    kubeRelease: async () => undefined,
  });

/** The statuses written so far (`kubePublishStatus`), each as `phase/reason` of its Ready condition. */
export const statusesWritten = (kube: FakeCalls<KubeActivities>) =>
  (kube.args.kubePublishStatus ?? []).map(([ref]) => `${ref.status.phase}/${(ref.status.conditions as { type: string; reason: string }[]).find((c) => c.type === 'Ready')?.reason}`);

/** A NAT rule's calls where everything works: EIP e1 (172.18.0.9 on gw1) is ready and free, every rule applies and comes off. */
export const workingRuleCalls = (): Partial<WorkflowCallActivities> => ({
  eipForRule: async () => ({ workflowId: 'natflow/eip/e1/u', ready: true, reason: '', gateway: 'gw1' }),
  claimEip: async () => ({ address: '172.18.0.9', gateway: 'gw1' }),
  unclaimEip: async () => undefined,
  setGatewayRule: async () => undefined,
  removeGatewayRule: async () => ({ applied: true }),
  removeGatewayRuleEverywhere: async () => undefined,
});
