/**
 * Counts of live OpenSSL objects owned by the data path (each freed exactly once). Leak tests compare them before
 * and after; they are per thread, like the objects' owners.
 */
export const liveTlsObjects = { contexts: 0, connections: 0 };
