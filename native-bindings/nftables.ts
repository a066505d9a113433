import koffi from "koffi";
import { NftablesError } from "./errors.js";
import { close, O_CLOEXEC, O_RDONLY, open } from "./libc.js";

const lib = koffi.load("libnftables.so.1");
const NftCtx = koffi.opaque("nft_ctx");
const NftCtxPtr = koffi.pointer(NftCtx);

const nft = {
  ctxNew: lib.func("nft_ctx_new", NftCtxPtr, ["uint32_t"]),
  ctxFree: lib.func("nft_ctx_free", "void", [NftCtxPtr]),
  setOutputFlags: lib.func("nft_ctx_output_set_flags", "void", [NftCtxPtr, "uint32_t"]),
  bufferOutput: lib.func("nft_ctx_buffer_output", "int", [NftCtxPtr]),
  bufferError: lib.func("nft_ctx_buffer_error", "int", [NftCtxPtr]),
  outputBuffer: lib.func("nft_ctx_get_output_buffer", "const char *", [NftCtxPtr]),
  errorBuffer: lib.func("nft_ctx_get_error_buffer", "const char *", [NftCtxPtr]),
  run: lib.func("nft_run_cmd_from_buffer", "int", [NftCtxPtr, "const char *"]),
};

const NFT_CTX_DEFAULT = 0;
/** Without the JSON output flag this libnftables parses input as nft syntax, even when it is JSON. */
const NFT_CTX_OUTPUT_JSON = 1 << 4;

/**
 * libnftables waits on its netlink socket with select(), which aborts the process (glibc: "bit out of range 0 -
 * FD_SETSIZE") when that socket's descriptor is 1024 or more, as it is once the proxy holds a thousand
 * connections. So a few low descriptors are held from start-up and released just before each libnftables call: the
 * kernel hands out the lowest free number, so the netlink socket gets one of them.
 */
const FD_SETSIZE = 1024;
const RESERVED_FDS = 16;
let reserved = reserveLowFds();

function reserveLowFds(): number[] {
  const fds: number[] = [];
  for (let i = 0; i < RESERVED_FDS; i++) {
    const fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= FD_SETSIZE) {
      close(fd);
      break;
    }
    fds.push(fd);
  }
  return fds;
}

function withLowFds<T>(fn: () => T): T {
  for (const fd of reserved) close(fd);
  reserved = [];
  try {
    return fn();
  } finally {
    reserved = reserveLowFds();
  }
}

/** Tries of one document when the kernel answers EINTR. */
const INTERRUPTED_TRIES = 5;

/**
 * Run one nftables JSON document ({"nftables": [...]}) in the calling thread's current network namespace.
 * libnftables sends the whole document as one netlink batch, so it applies atomically or not at all.
 * Returns the parsed JSON output (for list commands), or undefined when there is none.
 *
 * EINTR ("Interrupted system call") means the kernel gave up on the batch or a dump part-way, for instance with a
 * signal pending for this thread (a child process exiting); nothing was applied, and netlink's rule is to try again.
 */
export function runNftJson(document: unknown): unknown {
  const text = JSON.stringify(document);
  for (let attempt = 1; ; attempt++) {
    try {
      return withLowFds(() => runWithContext(text));
    } catch (err) {
      if (
        attempt >= INTERRUPTED_TRIES ||
        !(err instanceof NftablesError) ||
        !/Interrupted system call/.test(err.message)
      ) {
        throw err;
      }
    }
  }
}

function runWithContext(text: string): unknown {
  const ctx = nft.ctxNew(NFT_CTX_DEFAULT);
  if (!ctx) throw new NftablesError("nft_ctx_new returned NULL");
  try {
    nft.setOutputFlags(ctx, NFT_CTX_OUTPUT_JSON);
    nft.bufferOutput(ctx);
    nft.bufferError(ctx);
    const rc = nft.run(ctx, text);
    if (rc !== 0) throw new NftablesError((nft.errorBuffer(ctx) as string | null)?.trim() || `nftables failed (${rc})`);
    const out = (nft.outputBuffer(ctx) as string | null)?.trim();
    return out ? JSON.parse(out) : undefined;
  } finally {
    nft.ctxFree(ctx);
  }
}
