// Concurrent callers with the same key share one run of a task, without
// ever being handed a result older than their own arrival.
//
// The rule (read-your-writes): a caller only shares a run that STARTED AFTER
// the caller arrived. A client that made a booking and then asks for the seat
// map must see its booking; a query that was already running when it asked
// may have read the database before the booking committed. So a caller that
// arrives while a run for its key is in flight does not join it: it waits
// for the NEXT run, which starts when the current one ends and is shared by
// everyone who arrived during the current one. At most two runs per key are
// ever pending: one running, one queued. A failed run fails every caller
// that shared it; the queued run starts all the same.

interface Flight<T> {
  /** Settles when the running task does, never rejects. */
  done: Promise<void>;
  /** The run that callers arriving now will share; starts once `done` settles. */
  next: Promise<T> | undefined;
}

export class SingleFlight<T> {
  private readonly flights = new Map<string, Flight<T>>();
  /** Tasks started: for tests and metrics. */
  runs = 0;
  /** Callers that arrived while a run for their key was in flight, and so waited for the next one. */
  waits = 0;

  run(key: string, task: () => Promise<T>): Promise<T> {
    const flight = this.flights.get(key);
    if (!flight) return this.start(key, task);
    this.waits += 1;
    flight.next ??= flight.done.then(() => this.start(key, task));
    return flight.next;
  }

  private start(key: string, task: () => Promise<T>): Promise<T> {
    this.runs += 1;
    // A task that throws before its promise exists still fails only its callers.
    const result = new Promise<T>((resolve) => resolve(task()));
    const flight: Flight<T> = { done: result.then(noop, noop), next: undefined };
    this.flights.set(key, flight);
    // Registered before any `next` can chain on `done`, so it runs first:
    // with a queued run, the key stays taken until that run replaces it.
    void flight.done.then(() => {
      if (this.flights.get(key) === flight && flight.next === undefined) this.flights.delete(key);
    });
    return result;
  }
}

function noop(): void {}
