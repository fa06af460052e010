/**
 * A function to await in a long loop of synchronous calls on the main thread: every `every`th
 * call it lets the event loop run (the seal workers' results, their next files, timers), else
 * it returns undefined and costs no promise.
 */
export function breather(every = 256): () => Promise<void> | undefined {
  let n = 0;
  return () => (++n % every === 0 ? new Promise((resolve) => setImmediate(resolve)) : undefined);
}
