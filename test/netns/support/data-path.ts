/** Data-plane worker threads of a test agent: two, so the connections of one test land on both. */
export const TEST_WORKERS = 2;

/** Each worker throttles its own log lines: a line logged "once per interval" shows at most this many times. */
export const LOGGERS_PER_NODE = TEST_WORKERS;
