// The first job: tasks, an actor and put. Run it with
//   tray up cluster-configs/local.yaml && tray submit examples/hello.ts -- 8
import { remote, get, put, getRuntimeContext } from "tray";

// A task: any function. `.remote()` runs it on some worker and returns an ObjectRef.
const square = remote((x: number) => x * x);

// A task that takes a large object by reference: it is read from the node's shared
// memory store, not copied through messages.
const sum = remote((xs: Float64Array) => xs.reduce((a, b) => a + b, 0));

// An actor: a class whose instance lives in its own worker process and keeps state.
const Counter = remote(
  class Counter {
    value = 0;
    increment(by = 1) {
      this.value += by;
      return this.value;
    }
  },
);

export default async function main(args: string[]) {
  const n = Number(args[0] ?? 4);
  const squares = await get(Array.from({ length: n }, (_, i) => square.remote(i)));
  console.log(`squares of 0..${n - 1}:`, squares);

  const counter = Counter.remote();
  await get(counter.increment.remote());
  console.log("counter after +1 and +5:", await get(counter.increment.remote(5)));

  const big = put(Float64Array.from({ length: 1_000_000 }, (_, i) => i));
  console.log("sum of 0..999999 computed remotely:", await get(sum.remote(big)));

  console.log(`ran on node ${getRuntimeContext().nodeId.slice(0, 8)} as job ${getRuntimeContext().jobId}`);
  return { squares, counter: 6 };
}
