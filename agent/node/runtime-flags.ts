/**
 * Node flags the agent process runs with. The proxy moves every byte through short-lived Buffers, whose external
 * memory makes V8 run full collections many times a second; with helper threads those collections take a second
 * core away from the pods the agent serves. On its own thread the collector's cost stays inside the agent's one
 * core (measured with `make bench BENCH=proxy`: about 25% more throughput on a 2-core node).
 */
export const AGENT_NODE_FLAGS = ["--single-threaded-gc"];
