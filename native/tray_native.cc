// tray's optional native helpers for large objects (Node-API, so one build serves every Node
// version from 20 on). Built by scripts/build.mjs when a C++ compiler is present; without it
// tray falls back to plain reads and writes (src/runtime/native.ts says which path is live).
//
//   map(path, size, mode, pin?)  -> ArrayBuffer over the file's pages, mapped lazily
//       mode 0: private copy-on-write (a reader's `get`: no copy at all, and a value the user
//               writes to never changes the stored object)
//       mode 1: shared and writable (a warm store file an agent keeps ready for a transfer
//               from another node to land in: one copy, straight into the file's pages)
//     `pin`, when given, is a hard link to the file that this mapping owns: it is unlinked
//     when the mapping goes, so the store can tell a file somebody still maps (link count
//     above 1) from one it may recycle.
//   mapShared(path or fd, size) -> an opaque handle (External) over the file's pages, shared
//       and writable: what an agent keeps of a warm store file, and a writer of its own
//       (src/runtime/write-mappings.ts). Not an ArrayBuffer on purpose: V8
//       counts an ArrayBuffer's bytes as external memory, and each 100 MB warm file then started
//       a garbage collection in the agent (~40 ms of it per transfer, during the transfer).
//       The handle works wherever an ArrayBuffer mapping does below; mappingSize(h) is its size,
//       copyInto(h, offset, bytes) writes into it.
//   populate(arrayBuffer, offset, length, callback(err), yieldTo?)
//       faults in a slice of a shared mapping on libuv's thread pool (the store warms a file
//       a few MiB at a time, between transfers, so a transfer later pays no page faults;
//       with yieldTo, a writer's populate waits while that file, the store's busy mark, exists)
//   unmap(arrayBuffer, inBackground?) -> detaches it and unmaps now (or on a thread of its own),
//                                   instead of at garbage collection
//   sendFile(fd, path, offset, length, stallMs, callback(err, sent))
//       the file's bytes into a connected socket with sendfile(2) on libuv's thread pool:
//       the kernel moves page-cache pages into the socket, no copy through JavaScript memory
//   recvInto(fd, arrayBuffer, offset, length, stallMs, callback(err, got))
//       exactly `length` bytes of a socket into a buffer (a mapped store file), on the thread
//       pool: a transfer split in ranges is received by several cores at once
//   writeNow(fd, bytes) -> bytes written (maybe fewer), or -errno (-EAGAIN: the socket is full)
//       one write(2) of a small frame, here and now: Node's stream write costs a few µs of
//       JavaScript per message (write wraps, callbacks), which a one-at-a-time round trip pays
//       on both ends
//   spinReadable(fd, maxUs) -> whether the socket became readable within maxUs µs of polling
//       (spin, then block: a one-at-a-time caller and callee stay awake for each other)
//   socketBuffers(fd, sndbuf, rcvbuf)
//       larger socket buffers for bulk transfers (fewer wake-ups per 100 MB)
#include <node_api.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

struct Mapping {
  void* ptr;
  size_t len;
  std::string pin;
  bool mapped;
};

// Live mappings by address, for unmap(). Finalizers may run off the JavaScript thread.
std::mutex liveLock;
std::unordered_map<void*, Mapping*> live;

// Marks a mapping unmapped (and forgets its address) if it still was mapped: true when the
// caller now owns the munmap. Once only, whoever comes first: unmap() or the finalizer.
bool claim(Mapping* m) {
  std::lock_guard<std::mutex> g(liveLock);
  if (!m->mapped) return false;
  m->mapped = false;
  live.erase(m->ptr);  // a handle's address is not in `live`: nothing to erase then
  return true;
}

// V8 may run this on a background thread (it sweeps array buffers concurrently). The munmap
// (~5 ms for 100 MB) happens outside the lock, so a map() on the main thread never waits for it.
void releaseMapping(napi_env, void*, void* hint) {
  Mapping* m = static_cast<Mapping*>(hint);
  if (claim(m)) munmap(m->ptr, m->len);
  if (!m->pin.empty()) unlink(m->pin.c_str());
  delete m;
}

// A handle of mapShared: unmapped by unmap(), or at the latest when it is collected.
void releaseShared(napi_env, void* data, void*) {
  Mapping* m = static_cast<Mapping*>(data);
  if (claim(m)) munmap(m->ptr, m->len);
  delete m;
}

napi_value throwErrno(napi_env env, const std::string& what, int err) {
  std::string msg = what + ": " + strerror(err);
  const char* code = err == ENOENT ? "ENOENT" : err == ENOMEM ? "ENOMEM" : nullptr;
  napi_throw_error(env, code, msg.c_str());
  return nullptr;
}

bool getString(napi_env env, napi_value v, std::string* out) {
  size_t n = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &n) != napi_ok) return false;
  out->assign(n, '\0');
  return napi_get_value_string_utf8(env, v, &(*out)[0], n + 1, &n) == napi_ok;
}

// The file mapped readable and writable (shared, or private copy-on-write), or nullptr after
// throwing (code ENOENT when it is gone).
void* mapFile(napi_env env, const std::string& file, size_t len, bool shared) {
  int fd = open(file.c_str(), shared ? O_RDWR : O_RDONLY);
  if (fd < 0) {
    throwErrno(env, file, errno);
    return nullptr;
  }
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, shared ? MAP_SHARED : MAP_PRIVATE, fd, 0);
  const int err = errno;
  close(fd);
  if (p != MAP_FAILED) return p;
  throwErrno(env, "mmap " + file, err);
  return nullptr;
}

// A Uint8Array argument's bytes.
bool uint8ArrayOf(napi_env env, napi_value v, void** data, size_t* n) {
  napi_typedarray_type type;
  napi_value ab;
  size_t off = 0;
  return napi_get_typedarray_info(env, v, &type, n, data, &ab, &off) == napi_ok && type == napi_uint8_array;
}

napi_value Map(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  std::string file, pin;
  double size = 0;
  int32_t mode = 0;
  if (argc < 3 || !getString(env, argv[0], &file) || napi_get_value_double(env, argv[1], &size) != napi_ok ||
      napi_get_value_int32(env, argv[2], &mode) != napi_ok || size <= 0) {
    napi_throw_type_error(env, nullptr, "map(path, size > 0, mode, pin?)");
    return nullptr;
  }
  if (argc > 3) {
    napi_valuetype t;
    napi_typeof(env, argv[3], &t);
    if (t == napi_string) getString(env, argv[3], &pin);
  }
  const size_t len = static_cast<size_t>(size);
  void* p = mapFile(env, file, len, mode == 1);
  if (!p) return nullptr;
  Mapping* m = new Mapping{p, len, pin, true};
  {
    std::lock_guard<std::mutex> g(liveLock);
    live[p] = m;
  }
  napi_value ab;
  if (napi_create_external_arraybuffer(env, p, len, releaseMapping, m, &ab) != napi_ok) {
    {
      std::lock_guard<std::mutex> g(liveLock);
      live.erase(p);
    }
    munmap(p, len);
    delete m;  // the pin stays with the caller, who still has to remove it
    napi_throw_error(env, nullptr, "this Node.js does not accept external ArrayBuffers");
    return nullptr;
  }
  return ab;
}

napi_value MapShared(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  std::string file;
  double size = 0, fd = -1;
  napi_valuetype t = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &t);
  const bool byFd = t == napi_number && napi_get_value_double(env, argv[0], &fd) == napi_ok && fd >= 0;
  if (argc < 2 || (!byFd && !getString(env, argv[0], &file)) || napi_get_value_double(env, argv[1], &size) != napi_ok || size <= 0) {
    napi_throw_type_error(env, nullptr, "mapShared(path or fd, size > 0)");
    return nullptr;
  }
  const size_t len = static_cast<size_t>(size);
  void* p = nullptr;
  if (byFd) {
    // An fd the caller opened and keeps (it checks the file's identity and link count on it).
    p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<int>(fd), 0);
    if (p == MAP_FAILED) return throwErrno(env, "mmap", errno);
  } else {
    p = mapFile(env, file, len, true);
  }
  if (!p) return nullptr;
  Mapping* m = new Mapping{p, len, std::string(), true};
  napi_value h;
  if (napi_create_external(env, m, releaseShared, nullptr, &h) != napi_ok) {
    munmap(p, len);
    delete m;
    napi_throw_error(env, nullptr, "could not make a mapping handle");
    return nullptr;
  }
  return h;
}

enum class Memory { None, Gone, Live };

// The memory behind a handle of mapShared, or behind an ArrayBuffer (with `mappedOnly`, only
// one of map()'s): None when `v` is neither, Gone when it is no longer mapped.
Memory memoryState(napi_env env, napi_value v, bool mappedOnly, char** ptr, size_t* len) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return Memory::None;
  if (t == napi_external) {
    void* data = nullptr;
    if (napi_get_value_external(env, v, &data) != napi_ok || !data) return Memory::None;
    Mapping* m = static_cast<Mapping*>(data);
    std::lock_guard<std::mutex> g(liveLock);
    if (!m->mapped) return Memory::Gone;
    *ptr = static_cast<char*>(m->ptr);
    *len = m->len;
    return Memory::Live;
  }
  void* data = nullptr;
  if (napi_get_arraybuffer_info(env, v, &data, len) != napi_ok) return Memory::None;
  if (mappedOnly) {
    std::lock_guard<std::mutex> g(liveLock);
    if (live.find(data) == live.end()) return Memory::Gone;
  }
  *ptr = static_cast<char*>(data);
  return Memory::Live;
}

bool memoryOf(napi_env env, napi_value v, bool mappedOnly, char** ptr, size_t* len) {
  return memoryState(env, v, mappedOnly, ptr, len) == Memory::Live;
}

napi_value MappingSize(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  char* p = nullptr;
  size_t len = 0;
  if (argc < 1 || !memoryOf(env, argv[0], false, &p, &len)) {
    napi_throw_type_error(env, nullptr, "mappingSize(handle): not a live mapping");
    return nullptr;
  }
  napi_value out;
  napi_create_double(env, static_cast<double>(len), &out);
  return out;
}

// copyInto(handle, offset, bytes): bytes already read by JavaScript into the mapping.
napi_value CopyInto(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  char* p = nullptr;
  size_t len = 0, n = 0;
  double off = 0;
  void* src = nullptr;
  if (argc < 3 || !memoryOf(env, argv[0], false, &p, &len) || napi_get_value_double(env, argv[1], &off) != napi_ok ||
      !uint8ArrayOf(env, argv[2], &src, &n) || off < 0 || off + static_cast<double>(n) > static_cast<double>(len)) {
    napi_throw_type_error(env, nullptr, "copyInto(mapping, offset, uint8Array) within the mapping");
    return nullptr;
  }
  if (n) memcpy(p + static_cast<size_t>(off), src, n);
  return nullptr;
}

// One piece of work on libuv's thread pool with a JavaScript callback (W has `work`, `callback`).
template <typename W>
void queueWork(napi_env env, W* w, napi_value callback, const char* name, napi_async_execute_callback execute, napi_async_complete_callback complete) {
  napi_create_reference(env, callback, 1, &w->callback);
  napi_value n;
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &n);
  napi_create_async_work(env, nullptr, n, execute, complete, w, &w->work);
  napi_queue_async_work(env, w->work);
}

// Back on the JavaScript thread: call back with (args[0], args[1]) and free the work.
template <typename W>
void callBack(napi_env env, W* w, napi_value args[2]) {
  napi_value cb, recv;
  napi_get_reference_value(env, w->callback, &cb);
  napi_get_undefined(env, &recv);
  napi_call_function(env, recv, cb, 2, args, nullptr);
  napi_delete_reference(env, w->callback);
  napi_delete_async_work(env, w->work);
  delete w;
}

struct PopulateWork {
  napi_async_work work;
  napi_ref callback;
  napi_ref mapping;  // keeps a handle from being collected (and unmapped) meanwhile
  char* ptr;
  size_t len;
  int err;
  std::string yieldTo;  // while this file exists, wait before each chunk (see populate below)
};

// A populate that stands aside waits at most this long in all, then goes on regardless.
constexpr int kYieldMaxMs = 2000;
constexpr size_t kYieldChunk = 8u << 20;

void populateExecute(napi_env, void* data) {
  PopulateWork* w = static_cast<PopulateWork*>(data);
#ifdef MADV_POPULATE_WRITE
  int waitedMs = 0;
  for (size_t off = 0; off < w->len;) {
    const size_t n = w->yieldTo.empty() ? w->len : std::min(kYieldChunk, w->len - off);
    while (!w->yieldTo.empty() && waitedMs < kYieldMaxMs && access(w->yieldTo.c_str(), F_OK) == 0) {
      usleep(2000);
      waitedMs += 2;
    }
    if (madvise(w->ptr + off, n, MADV_POPULATE_WRITE) != 0) {
      // EINVAL: a kernel before 5.14. Nothing else is tried there: touching the pages by hand
      // would write into a parked file a writer may have taken meanwhile (and fault past its
      // new end); the pages are then faulted in on first use, as without warming.
      if (errno != EINVAL) w->err = errno;
      return;
    }
    off += n;
  }
#else
  (void)w;
#endif
}

void populateComplete(napi_env env, napi_status, void* data) {
  PopulateWork* w = static_cast<PopulateWork*>(data);
  napi_value args[2];
  if (w->err) {
    napi_value msg;
    napi_create_string_utf8(env, strerror(w->err), NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, nullptr, msg, &args[0]);
  } else {
    napi_get_null(env, &args[0]);
  }
  napi_get_undefined(env, &args[1]);
  napi_delete_reference(env, w->mapping);
  callBack(env, w, args);
}

// populate(arrayBuffer, offset, length, callback(err), yieldTo?): fault in a slice of a shared
// mapping (mode 1) on the thread pool. The store warms a file a few MiB at a time this way, so
// the warming can stand aside whenever a transfer runs (see ObjectStore.prefault). A writer
// process cannot see the store's transfers: it names the file the store keeps while they run
// (yieldTo), and the populate waits, 8 MiB at a time, while that file exists.
napi_value Populate(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  const char* usage = "populate(mapping, offset, length, callback) within the buffer";
  char* data = nullptr;
  size_t len = 0;
  double off = 0, n = 0;
  napi_valuetype cbType = napi_undefined;
  if (argc >= 4) napi_typeof(env, argv[3], &cbType);
  const Memory mem = argc >= 4 ? memoryState(env, argv[0], true, &data, &len) : Memory::None;
  if (mem == Memory::None || napi_get_value_double(env, argv[1], &off) != napi_ok || napi_get_value_double(env, argv[2], &n) != napi_ok ||
      cbType != napi_function || off < 0 || n <= 0) {
    napi_throw_type_error(env, nullptr, usage);
    return nullptr;
  }
  if (mem == Memory::Gone) {
    napi_throw_error(env, nullptr, "populate: not a live mapping");
    return nullptr;
  }
  if (off + n > static_cast<double>(len)) {
    napi_throw_type_error(env, nullptr, usage);
    return nullptr;
  }
  std::string yieldTo;
  napi_valuetype yt = napi_undefined;
  if (argc >= 5) napi_typeof(env, argv[4], &yt);
  if (yt == napi_string && !getString(env, argv[4], &yieldTo)) {
    napi_throw_type_error(env, nullptr, usage);
    return nullptr;
  }
  PopulateWork* w = new PopulateWork{nullptr, nullptr, nullptr, data + static_cast<size_t>(off), static_cast<size_t>(n), 0, yieldTo};
  napi_create_reference(env, argv[0], 1, &w->mapping);
  queueWork(env, w, argv[3], "tray.populate", populateExecute, populateComplete);
  return nullptr;
}

// Tearing down 100 MB of page tables takes ~5 ms: off this thread when asked. The address
// range stays mapped until then, so no new mapping can land on it early.
void unmapRange(void* p, size_t n, bool inBackground) {
  if (inBackground) std::thread([p, n]() { munmap(p, n); }).detach();
  else munmap(p, n);
}

napi_value Unmap(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  void* data = nullptr;
  size_t len = 0;
  bool later = false;
  napi_valuetype t = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &t);
  if (argc > 1) napi_get_value_bool(env, argv[1], &later);
  if (t == napi_external) {
    void* h = nullptr;
    napi_get_value_external(env, argv[0], &h);
    Mapping* m = static_cast<Mapping*>(h);
    if (m && claim(m)) unmapRange(m->ptr, m->len, later);  // the handle's finalizer frees `m`, not this
    return nullptr;
  }
  if (argc < 1 || napi_get_arraybuffer_info(env, argv[0], &data, &len) != napi_ok) {
    napi_throw_type_error(env, nullptr, "unmap(mapping, inBackground?)");
    return nullptr;
  }
  void* p = nullptr;
  size_t n = 0;
  {
    std::lock_guard<std::mutex> g(liveLock);
    auto it = live.find(data);
    if (it == live.end()) return nullptr;  // not ours, or already unmapped
    Mapping* m = it->second;
    live.erase(it);
    p = m->ptr;
    n = m->len;
    m->mapped = false;  // the finalizer still runs (maybe right inside the detach): it only removes the pin
  }
  unmapRange(p, n, later);
  // No JavaScript ran in between; from here a view of it throws instead of touching unmapped memory.
  napi_detach_arraybuffer(env, argv[0]);
  return nullptr;
}

// After a socket call on a non-blocking socket failed: 0 to try again (EINTR, or the socket is
// ready after waiting for `events`), else the errno to give up with.
int retryOrFail(int sock, short events, int stallMs, short fatal) {
  if (errno == EINTR) return 0;
  if (errno != EAGAIN) return errno;
  struct pollfd p = {sock, events, 0};
  int r = poll(&p, 1, stallMs);
  if (r == 0) return ETIMEDOUT;
  if (r < 0) return errno == EINTR ? 0 : errno;
  return (p.revents & fatal) ? EPIPE : 0;
}

// A callback's first argument: null, or an Error with the errno's text and a code JavaScript
// can tell apart (ENOENT, ETIMEDOUT, EPIPE: the peer closed or reset; EIO: anything else).
void errorOrNull(napi_env env, int err, napi_value* out) {
  if (!err) {
    napi_get_null(env, out);
    return;
  }
  const char* code = err == ENOENT ? "ENOENT" : err == ETIMEDOUT ? "ETIMEDOUT" : err == EPIPE || err == ECONNRESET ? "EPIPE" : "EIO";
  napi_value msg, c;
  napi_create_string_utf8(env, err == EPIPE ? "the peer closed the connection" : strerror(err), NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c);
  napi_create_error(env, c, msg, out);
}

// One socket transfer on the thread pool: sendFile (file -> socket) or recvInto (socket ->
// buffer). `sock` is our own dup of the socket: it stays valid whatever JavaScript does meanwhile.
struct SocketWork {
  napi_async_work work;
  napi_ref callback;
  napi_ref buffer;   // recvInto: keeps the destination alive until we are done with it
  int sock;
  std::string file;  // sendFile: the file to send
  char* dest;        // recvInto: where the bytes go
  int64_t offset;
  int64_t length;
  int64_t moved;
  int stallMs;
  int err;
};

void sendExecute(napi_env, void* data) {
  SocketWork* w = static_cast<SocketWork*>(data);
  int fd = open(w->file.c_str(), O_RDONLY);
  if (fd < 0) {
    w->err = errno;
    return;
  }
  off_t off = w->offset;
  while (w->moved < w->length) {
    ssize_t n = sendfile(w->sock, fd, &off, static_cast<size_t>(w->length - w->moved));
    if (n > 0) {
      w->moved += n;
      continue;
    }
    if (n == 0) {  // the file is shorter than promised
      w->err = EIO;
      break;
    }
    // Node keeps its sockets non-blocking: wait until the peer has read some.
    if (int e = retryOrFail(w->sock, POLLOUT, w->stallMs, POLLERR | POLLHUP | POLLNVAL)) {
      w->err = e;
      break;
    }
  }
  close(fd);
}

void recvExecute(napi_env, void* data) {
  SocketWork* w = static_cast<SocketWork*>(data);
  while (w->moved < w->length) {
    ssize_t n = read(w->sock, w->dest + w->moved, static_cast<size_t>(w->length - w->moved));
    if (n > 0) {
      w->moved += n;
      continue;
    }
    if (n == 0) {  // the peer closed before the whole range came
      w->err = EPIPE;
      break;
    }
    if (int e = retryOrFail(w->sock, POLLIN, w->stallMs, POLLERR | POLLNVAL)) {
      w->err = e;
      break;
    }
  }
}

void socketComplete(napi_env env, napi_status, void* data) {
  SocketWork* w = static_cast<SocketWork*>(data);
  close(w->sock);
  if (w->buffer) napi_delete_reference(env, w->buffer);
  napi_value args[2];
  errorOrNull(env, w->err, &args[0]);
  napi_create_double(env, static_cast<double>(w->moved), &args[1]);
  callBack(env, w, args);
}

// The arguments sendFile and recvInto share: (fd, <what>, offset, length, stallMs, callback).
// Fills `w` (with its own dup of the socket) or throws `usage` and returns false.
bool socketArgs(napi_env env, napi_value argv[6], size_t argc, SocketWork* w, const char* usage) {
  int32_t sock = -1, stall = 0;
  double offset = 0, length = 0;
  napi_valuetype cbType = napi_undefined;
  if (argc == 6) napi_typeof(env, argv[5], &cbType);
  if (argc < 6 || napi_get_value_int32(env, argv[0], &sock) != napi_ok || napi_get_value_double(env, argv[2], &offset) != napi_ok ||
      napi_get_value_double(env, argv[3], &length) != napi_ok || napi_get_value_int32(env, argv[4], &stall) != napi_ok ||
      cbType != napi_function || sock < 0 || offset < 0 || length < 0) {
    napi_throw_type_error(env, nullptr, usage);
    return false;
  }
  w->offset = static_cast<int64_t>(offset);
  w->length = static_cast<int64_t>(length);
  w->stallMs = stall > 0 ? stall : 30000;
  w->sock = dup(sock);
  if (w->sock < 0) {
    throwErrno(env, "dup", errno);
    return false;
  }
  return true;
}

napi_value SendFile(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  const char* usage = "sendFile(fd, path, offset, length, stallMs, callback)";
  SocketWork* w = new SocketWork{};
  if (argc < 2 || !getString(env, argv[1], &w->file)) {
    delete w;
    napi_throw_type_error(env, nullptr, usage);
    return nullptr;
  }
  if (!socketArgs(env, argv, argc, w, usage)) {
    delete w;
    return nullptr;
  }
  queueWork(env, w, argv[5], "tray.sendFile", sendExecute, socketComplete);
  return nullptr;
}

// recvInto(fd, arrayBuffer, offset, length, stallMs, callback(err, got)): read exactly `length`
// bytes of a connected socket into the buffer at `offset`, on the thread pool. The caller has
// stopped Node's own reading of that socket and keeps the buffer mapped until the callback.
napi_value RecvInto(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  const char* usage = "recvInto(fd, arrayBuffer or mapping, offset, length, stallMs, callback) within the buffer";
  char* data = nullptr;
  size_t len = 0;
  double offset = 0, length = 0;
  // Checked before socketArgs dups the socket: the range must lie within the buffer.
  if (argc < 6 || !memoryOf(env, argv[1], false, &data, &len) || napi_get_value_double(env, argv[2], &offset) != napi_ok ||
      napi_get_value_double(env, argv[3], &length) != napi_ok || offset + length > static_cast<double>(len)) {
    napi_throw_type_error(env, nullptr, usage);
    return nullptr;
  }
  SocketWork* w = new SocketWork{};
  if (!socketArgs(env, argv, argc, w, usage)) {
    delete w;
    return nullptr;
  }
  w->dest = data + w->offset;
  napi_create_reference(env, argv[1], 1, &w->buffer);
  queueWork(env, w, argv[5], "tray.recvInto", recvExecute, socketComplete);
  return nullptr;
}

napi_value SocketBuffers(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t fd = -1, snd = 0, rcv = 0;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &snd) != napi_ok ||
      napi_get_value_int32(env, argv[2], &rcv) != napi_ok) {
    napi_throw_type_error(env, nullptr, "socketBuffers(fd, sndbuf, rcvbuf)");
    return nullptr;
  }
  // Best effort: the kernel caps both at net.core.[wr]mem_max.
  if (snd > 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd);
  if (rcv > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  return nullptr;
}

napi_value WriteNow(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t fd = -1;
  void* data = nullptr;
  size_t n = 0;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 || !uint8ArrayOf(env, argv[1], &data, &n)) {
    napi_throw_type_error(env, nullptr, "writeNow(fd, uint8Array)");
    return nullptr;
  }
  ssize_t w;
  do {
    w = write(fd, data, n);
  } while (w < 0 && errno == EINTR);
  napi_value out;
  napi_create_int64(env, w < 0 ? -static_cast<int64_t>(errno) : static_cast<int64_t>(w), &out);
  return out;
}

void define(napi_env env, napi_value exports, const char* name, napi_callback fn) {
  napi_value f;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, nullptr, &f);
  napi_set_named_property(env, exports, name, f);
}

// spinReadable(fd, maxUs) -> true once the socket has bytes to read (or is closed), false after
// maxUs: the bounded poll of src/protocol/quick-peer.ts.
napi_value SpinReadable(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t fd = -1, maxUs = 0;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &maxUs) != napi_ok || fd < 0) {
    napi_throw_type_error(env, nullptr, "spinReadable(fd, maxUs)");
    return nullptr;
  }
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  bool ready = false;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 0) > 0) {
      ready = true;  // bytes, or the peer hung up: the event loop handles either
      break;
    }
    // Polite: another runnable process on this CPU goes first (the spinner stays runnable,
    // so the peer's write still needs no wake-up); alone here, this returns at once.
    sched_yield();
    clock_gettime(CLOCK_MONOTONIC, &t);
    if ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 >= maxUs) break;
  }
  napi_value out;
  napi_get_boolean(env, ready, &out);
  return out;
}

}  // namespace

NAPI_MODULE_INIT() {
  define(env, exports, "map", Map);
  define(env, exports, "mapShared", MapShared);
  define(env, exports, "mappingSize", MappingSize);
  define(env, exports, "copyInto", CopyInto);
  define(env, exports, "populate", Populate);
  define(env, exports, "unmap", Unmap);
  define(env, exports, "sendFile", SendFile);
  define(env, exports, "recvInto", RecvInto);
  define(env, exports, "socketBuffers", SocketBuffers);
  define(env, exports, "writeNow", WriteNow);
  define(env, exports, "spinReadable", SpinReadable);
  return exports;
}
