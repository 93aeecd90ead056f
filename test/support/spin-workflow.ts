// A workflow that computes without yielding for a while (a loop of `rounds`), for the sandbox timeout's test.
export async function spinWorkflow(rounds: number): Promise<number> {
  let x = 0;
  for (let i = 0; i < rounds; i++) x = (x * 31 + i) % 1_000_003;
  return x;
}
