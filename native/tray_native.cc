// tray's optional native helpers for large objects (Node-API, so one build serves every Node
// version from 20 on). Built by scripts/build.mjs when a C++ compiler is present; without it
// tray falls back to plain reads and writes (src/runtime/native.ts says which path is live).
//
//   map(path, size, mode, pin?)  -> ArrayBuffer over the file's pages
//       mode 0: private copy-on-write, mapped lazily (a reader's `get`: no copy at all, and a
//               value the user writes to never changes the stored object)
//       mode 1: shared and writable, pages populated up front (an agent receiving an object
//               from another node: bytes land in the store file with one copy, no page faults)
//     `pin`, when given, is a hard link to the file that this mapping owns: it is unlinked
//     when the mapping goes, so the store can tell a file somebody still maps (link count
//     above 1) from one it may recycle.
//   mapShared(path, size, callback(err, arrayBuffer), background?)
//       mode 1 on libuv's thread pool: populating 100 MB of pages takes ~10 ms (30 ms and more
//       for fresh ones), kept off the agent's event loop; `background`: on a thread of its own
//       at the lowest CPU priority instead (the store warms its files ahead this way)
//   unmap(arrayBuffer, inBackground?) -> detaches it and unmaps now (or on a thread of its own),
//                                   instead of at garbage collection
//   sendFile(fd, path, offset, length, stallMs, callback(err, sent))
//       the file's bytes into a connected socket with sendfile(2) on libuv's thread pool:
//       the kernel moves page-cache pages into the socket, no copy through JavaScript memory
//   socketBuffers(fd, sndbuf, rcvbuf)
//       larger socket buffers for bulk transfers (fewer wake-ups per 100 MB)
#include <node_api.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
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

void releaseMapping(napi_env, void*, void* hint) {
  Mapping* m = static_cast<Mapping*>(hint);
  {
    std::lock_guard<std::mutex> g(liveLock);
    if (m->mapped) {
      munmap(m->ptr, m->len);
      m->mapped = false;
      live.erase(m->ptr);
    }
  }
  if (!m->pin.empty()) unlink(m->pin.c_str());
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
  const bool shared = mode == 1;
  int fd = open(file.c_str(), shared ? O_RDWR : O_RDONLY);
  if (fd < 0) return throwErrno(env, file, errno);
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, shared ? (MAP_SHARED | MAP_POPULATE) : MAP_PRIVATE, fd, 0);
  const int err = errno;
  close(fd);
  if (p == MAP_FAILED) return throwErrno(env, "mmap " + file, err);
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

struct MapWork {
  napi_async_work work;
  napi_ref callback;
  std::string file;
  size_t len;
  void* ptr;
  int err;
};

void mapExecute(napi_env, void* data) {
  MapWork* w = static_cast<MapWork*>(data);
  int fd = open(w->file.c_str(), O_RDWR);
  if (fd < 0) {
    w->err = errno;
    return;
  }
  void* p = mmap(nullptr, w->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  w->err = p == MAP_FAILED ? errno : 0;
  close(fd);
  w->ptr = p == MAP_FAILED ? nullptr : p;
}

// (err, arrayBuffer) for a finished MapWork.
void mapResult(napi_env env, MapWork* w, napi_value args[2]) {
  napi_get_undefined(env, &args[1]);
  if (w->err) {
    napi_value msg;
    napi_create_string_utf8(env, (w->file + ": " + strerror(w->err)).c_str(), NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, nullptr, msg, &args[0]);
  } else {
    napi_get_null(env, &args[0]);
    Mapping* m = new Mapping{w->ptr, w->len, std::string(), true};
    {
      std::lock_guard<std::mutex> g(liveLock);
      live[w->ptr] = m;
    }
    if (napi_create_external_arraybuffer(env, w->ptr, w->len, releaseMapping, m, &args[1]) != napi_ok) {
      releaseMapping(env, nullptr, m);
      napi_value msg;
      napi_create_string_utf8(env, "this Node.js does not accept external ArrayBuffers", NAPI_AUTO_LENGTH, &msg);
      napi_create_error(env, nullptr, msg, &args[0]);
      napi_get_undefined(env, &args[1]);
    }
  }
}

void mapComplete(napi_env env, napi_status, void* data) {
  MapWork* w = static_cast<MapWork*>(data);
  napi_value args[2];
  mapResult(env, w, args);
  callBack(env, w, args);
}

// Background maps run on a thread of their own at the lowest CPU priority (nice 19): warming
// files ahead must never take a core from a transfer or a task. Their result comes back
// through a thread-safe function.
void mapCallJs(napi_env env, napi_value cb, void*, void* data) {
  MapWork* w = static_cast<MapWork*>(data);
  if (env != nullptr && cb != nullptr) {
    napi_value args[2], recv;
    mapResult(env, w, args);
    napi_get_undefined(env, &recv);
    napi_call_function(env, recv, cb, 2, args, nullptr);
  } else if (w->ptr) {
    munmap(w->ptr, w->len);  // the environment is going away: nobody will take the mapping
  }
  delete w;
}

void queueBackgroundMap(napi_env env, MapWork* w, napi_value callback) {
  napi_threadsafe_function tsfn;
  napi_value name;
  napi_create_string_utf8(env, "tray.mapShared.background", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, callback, nullptr, name, 0, 1, nullptr, nullptr, nullptr, mapCallJs, &tsfn) != napi_ok) {
    delete w;
    napi_throw_error(env, nullptr, "could not start a background map");
    return;
  }
  std::thread([w, tsfn]() {
    setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 19);
    mapExecute(nullptr, w);
    napi_call_threadsafe_function(tsfn, w, napi_tsfn_blocking);
    napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  }).detach();
}

// mapShared(path, size, callback(err, arrayBuffer)): mode 1 of map(), on the thread pool.
napi_value MapShared(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  std::string file;
  double size = 0;
  bool background = false;
  napi_valuetype cbType = napi_undefined;
  if (argc >= 3) napi_typeof(env, argv[2], &cbType);
  if (argc < 3 || !getString(env, argv[0], &file) || napi_get_value_double(env, argv[1], &size) != napi_ok || size <= 0 || cbType != napi_function) {
    napi_throw_type_error(env, nullptr, "mapShared(path, size > 0, callback, background?)");
    return nullptr;
  }
  if (argc > 3) napi_get_value_bool(env, argv[3], &background);
  MapWork* w = new MapWork{nullptr, nullptr, file, static_cast<size_t>(size), nullptr, 0};
  if (background) queueBackgroundMap(env, w, argv[2]);
  else queueWork(env, w, argv[2], "tray.mapShared", mapExecute, mapComplete);
  return nullptr;
}

napi_value Unmap(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  void* data = nullptr;
  size_t len = 0;
  bool later = false;
  if (argc < 1 || napi_get_arraybuffer_info(env, argv[0], &data, &len) != napi_ok) {
    napi_throw_type_error(env, nullptr, "unmap(arrayBuffer, inBackground?)");
    return nullptr;
  }
  if (argc > 1) napi_get_value_bool(env, argv[1], &later);
  {
    std::lock_guard<std::mutex> g(liveLock);
    auto it = live.find(data);
    if (it == live.end()) return nullptr;  // not ours, or already unmapped
    Mapping* m = it->second;
    live.erase(it);
    // Tearing down 100 MB of page tables takes ~5 ms: off this thread when asked. The address
    // range stays reserved until then, so no new mapping can land on it early.
    if (later) {
      void* p = m->ptr;
      size_t n = m->len;
      std::thread([p, n]() { munmap(p, n); }).detach();
    } else {
      munmap(m->ptr, m->len);
    }
    m->mapped = false;  // the finalizer still runs (maybe right inside the detach): it only removes the pin
  }
  // No JavaScript ran in between; from here a view of it throws instead of touching unmapped memory.
  napi_detach_arraybuffer(env, argv[0]);
  return nullptr;
}

struct SendWork {
  napi_async_work work;
  napi_ref callback;
  int sock;  // our own dup of the socket: it stays valid whatever JavaScript does meanwhile
  std::string file;
  int64_t offset;
  int64_t length;
  int64_t sent;
  int stallMs;
  int err;
};

void sendExecute(napi_env, void* data) {
  SendWork* w = static_cast<SendWork*>(data);
  int fd = open(w->file.c_str(), O_RDONLY);
  if (fd < 0) {
    w->err = errno;
    return;
  }
  off_t off = w->offset;
  while (w->sent < w->length) {
    ssize_t n = sendfile(w->sock, fd, &off, static_cast<size_t>(w->length - w->sent));
    if (n > 0) {
      w->sent += n;
      continue;
    }
    if (n == 0) {  // the file is shorter than promised
      w->err = EIO;
      break;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      w->err = errno;
      break;
    }
    // Node keeps its sockets non-blocking: wait until the peer has read some.
    struct pollfd p = {w->sock, POLLOUT, 0};
    int r = poll(&p, 1, w->stallMs);
    if (r == 0) {
      w->err = ETIMEDOUT;
      break;
    }
    if (r < 0 && errno != EINTR) {
      w->err = errno;
      break;
    }
    if (r > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL))) {
      w->err = EPIPE;
      break;
    }
  }
  close(fd);
}

void sendComplete(napi_env env, napi_status, void* data) {
  SendWork* w = static_cast<SendWork*>(data);
  close(w->sock);
  napi_value args[2];
  if (w->err) {
    napi_value msg, code;
    napi_create_string_utf8(env, strerror(w->err), NAPI_AUTO_LENGTH, &msg);
    napi_create_string_utf8(env, w->err == ENOENT ? "ENOENT" : w->err == ETIMEDOUT ? "ETIMEDOUT" : "EIO", NAPI_AUTO_LENGTH, &code);
    napi_create_error(env, code, msg, &args[0]);
  } else {
    napi_get_null(env, &args[0]);
  }
  napi_create_double(env, static_cast<double>(w->sent), &args[1]);
  callBack(env, w, args);
}

napi_value SendFile(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t sock = -1, stall = 0;
  double offset = 0, length = 0;
  std::string file;
  napi_valuetype cbType = napi_undefined;
  if (argc == 6) napi_typeof(env, argv[5], &cbType);
  if (argc < 6 || napi_get_value_int32(env, argv[0], &sock) != napi_ok || !getString(env, argv[1], &file) ||
      napi_get_value_double(env, argv[2], &offset) != napi_ok || napi_get_value_double(env, argv[3], &length) != napi_ok ||
      napi_get_value_int32(env, argv[4], &stall) != napi_ok || cbType != napi_function || sock < 0) {
    napi_throw_type_error(env, nullptr, "sendFile(fd, path, offset, length, stallMs, callback)");
    return nullptr;
  }
  int own = dup(sock);
  if (own < 0) return throwErrno(env, "dup", errno);
  SendWork* w = new SendWork{nullptr, nullptr, own, file, static_cast<int64_t>(offset), static_cast<int64_t>(length), 0, stall > 0 ? stall : 30000, 0};
  queueWork(env, w, argv[5], "tray.sendFile", sendExecute, sendComplete);
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

void define(napi_env env, napi_value exports, const char* name, napi_callback fn) {
  napi_value f;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, nullptr, &f);
  napi_set_named_property(env, exports, name, f);
}

}  // namespace

NAPI_MODULE_INIT() {
  define(env, exports, "map", Map);
  define(env, exports, "mapShared", MapShared);
  define(env, exports, "unmap", Unmap);
  define(env, exports, "sendFile", SendFile);
  define(env, exports, "socketBuffers", SocketBuffers);
  return exports;
}
