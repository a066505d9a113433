import koffi from "koffi";

/**
 * libuv and V8 entry points of the running node executable, so an epoll fd of ambit's own can be watched by the
 * calling thread's libuv loop. `koffi.load(null)` is dlopen of the main program; node exports libuv and these two
 * C++ symbols. In a worker thread, node::GetCurrentEventLoop(v8::Isolate::GetCurrent()) is the WORKER's loop
 * (uv_default_loop() would be the main thread's), and callbacks run on that thread.
 */
const self = koffi.load(null);

const PollCallback = koffi.proto("void ambit_uv_poll_cb(void *handle, int status, int events)");
const CloseCallback = koffi.proto("void ambit_uv_close_cb(void *handle)");

const raw = {
  isolateGetCurrent: self.func("_ZN2v87Isolate10GetCurrentEv", "void *", []),
  getCurrentEventLoop: self.func("_ZN4node19GetCurrentEventLoopEPN2v87IsolateE", "void *", ["void *"]),
  uv_poll_init: self.func("int uv_poll_init(void *loop, void *handle, int fd)"),
  uv_poll_start: self.func("int uv_poll_start(void *handle, int events, ambit_uv_poll_cb *cb)"),
  uv_poll_stop: self.func("int uv_poll_stop(void *handle)"),
  uv_close: self.func("void uv_close(void *handle, ambit_uv_close_cb *cb)"),
  uv_strerror: self.func("const char *uv_strerror(int err)"),
};

export const UV_READABLE = 1;
export const UV_WRITABLE = 2;

/** sizeof(uv_poll_t) is 160 on x86-64 Linux with libuv 1.4x; 256 leaves room for other builds. */
const POLL_HANDLE_BYTES = 256;

/** Addresses as koffi hands them over: a bigint, opaque to JS. */
export type UvLoop = bigint & { readonly __uvLoop: true };
export type UvPollHandle = bigint & { readonly __uvPoll: true };
export type RegisteredCallback = bigint & { readonly __registered: true };

/** The libuv loop of the calling thread (main thread or worker). */
export function currentLoop(): UvLoop {
  return raw.getCurrentEventLoop(raw.isolateGetCurrent()) as UvLoop;
}

/** Memory for one uv_poll_t, outside the JS heap; free it only after its close callback ran. */
export function allocPollHandle(): UvPollHandle {
  return koffi.alloc("uint8_t", POLL_HANDLE_BYTES) as UvPollHandle;
}

export function freePollHandle(handle: UvPollHandle): void {
  koffi.free(handle);
}

/** A JS function libuv may call at any later time (`events` is UV_READABLE/UV_WRITABLE, `status` < 0 on error). */
export function registerPollCallback(fn: (handle: bigint, status: number, events: number) => void): RegisteredCallback {
  return koffi.register(fn, koffi.pointer(PollCallback)) as RegisteredCallback;
}

export function registerCloseCallback(fn: (handle: bigint) => void): RegisteredCallback {
  return koffi.register(fn, koffi.pointer(CloseCallback)) as RegisteredCallback;
}

/** Frees a registration slot (koffi has 8192); only once libuv can no longer call it. */
export function unregisterCallback(cb: RegisteredCallback): void {
  koffi.unregister(cb);
}

/** uv_poll_init: 0 or a negative libuv error (uvError names it). */
export function pollInit(loop: UvLoop, handle: UvPollHandle, fd: number): number {
  return raw.uv_poll_init(loop, handle, fd);
}

export function pollStart(handle: UvPollHandle, events: number, cb: RegisteredCallback): number {
  return raw.uv_poll_start(handle, events, cb);
}

export function pollStop(handle: UvPollHandle): number {
  return raw.uv_poll_stop(handle);
}

/** uv_close: `cb` runs on a later loop turn; the handle's memory must stay valid until then. */
export function closeHandle(handle: UvPollHandle, cb: RegisteredCallback): void {
  raw.uv_close(handle, cb);
}

/** Text of a negative libuv error code. */
export function uvError(code: number): string {
  return raw.uv_strerror(code);
}
