// The inotify reader: a thread that drains the inotify fd as fast as the kernel fills it
// and hands the raw event bytes to JavaScript in batches. Policy lives in TypeScript
// (src/watcher/); this file only moves bytes and counts them.
#include "addon.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

// Above this many undelivered bytes (JavaScript starved), the thread stops reading so that
// memory stays bounded; the kernel queue then fills and reports IN_Q_OVERFLOW honestly.
constexpr size_t kMaxPendingBytes = 64u << 20;
constexpr size_t kReadBufferBytes = 256u << 10;

struct Reader {
  int fd = -1;
  int wakeFd = -1;
  std::thread thread;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint8_t> pending;  // raw struct inotify_event records, in kernel order
  bool scheduled = false;        // a delivery to JavaScript is queued
  bool paused = false;
  bool stopping = false;
  int readErrno = 0;
  std::atomic<double> events{0}, batches{0}, overflows{0}, reads{0};
  Napi::ThreadSafeFunction tsfn;

  void Wake() {
    uint64_t one = 1;
    ssize_t ignored = write(wakeFd, &one, sizeof one);
    (void)ignored;
  }

  void Run(std::shared_ptr<Reader> self) {
    std::vector<uint8_t> buf(kReadBufferBytes);
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stopping || (!paused && pending.size() < kMaxPendingBytes); });
        if (stopping) return;
      }
      struct pollfd fds[2] = {{fd, POLLIN, 0}, {wakeFd, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        Fail(self, errno);
        return;
      }
      if (fds[1].revents & POLLIN) {
        uint64_t v;
        ssize_t ignored = read(wakeFd, &v, sizeof v);
        (void)ignored;
      }
      if (!(fds[0].revents & POLLIN)) continue;
      bool schedule = false;
      {
        // Read under the lock so that once Pause() returns, nothing more is read.
        std::lock_guard<std::mutex> lock(mu);
        if (paused || stopping) continue;
        ssize_t n = read(fd, buf.data(), buf.size());
        if (n < 0) {
          if (errno == EAGAIN || errno == EINTR) continue;
          readErrno = errno;
        } else {
          Count(buf.data(), static_cast<size_t>(n));
          pending.insert(pending.end(), buf.begin(), buf.begin() + n);
        }
        if (!scheduled) schedule = scheduled = true;
      }
      if (schedule) Deliver(self);
      if (readErrno != 0) return;
    }
  }

  void Count(const uint8_t* p, size_t n) {
    reads = reads + 1;
    size_t off = 0;
    double evs = 0, ovf = 0;
    while (off + sizeof(struct inotify_event) <= n) {
      auto* ev = reinterpret_cast<const struct inotify_event*>(p + off);
      evs++;
      if (ev->mask & IN_Q_OVERFLOW) ovf++;
      off += sizeof(struct inotify_event) + ev->len;
    }
    events = events + evs;
    overflows = overflows + ovf;
  }

  void Fail(const std::shared_ptr<Reader>& self, int err) {
    {
      std::lock_guard<std::mutex> lock(mu);
      readErrno = err;
      scheduled = true;
    }
    Deliver(self);
  }

  // Runs the JavaScript callback on the main thread with everything read so far.
  void Deliver(std::shared_ptr<Reader> self) {
    tsfn.NonBlockingCall([self](Napi::Env env, Napi::Function cb) {
      std::vector<uint8_t> data;
      int err;
      {
        std::lock_guard<std::mutex> lock(self->mu);
        data.swap(self->pending);
        self->scheduled = false;
        err = self->readErrno;
      }
      self->cv.notify_all();
      if (env == nullptr || cb.IsEmpty()) return;
      self->batches = self->batches + 1;
      Napi::Value buffer = Napi::Buffer<uint8_t>::Copy(env, data.data(), data.size());
      cb.Call({buffer, Napi::Number::New(env, -err)});
    });
  }
};

class Inotify : public Napi::ObjectWrap<Inotify> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Inotify",
                       {InstanceMethod("addWatch", &Inotify::AddWatch),
                        InstanceMethod("rmWatch", &Inotify::RmWatch),
                        InstanceMethod("pause", &Inotify::Pause),
                        InstanceMethod("resume", &Inotify::Resume),
                        InstanceMethod("stats", &Inotify::Stats),
                        InstanceMethod("close", &Inotify::Close)});
  }

  // new Inotify(onBatch: (events: Buffer, negErrno: number) => void)
  explicit Inotify(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Inotify>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) {
      Napi::TypeError::New(env, "Inotify(onBatch): a callback is required").ThrowAsJavaScriptException();
      return;
    }
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) {
      ThrowErrno(env, errno, "inotify_init1");
      return;
    }
    int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake < 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, err, "eventfd");
      return;
    }
    r_ = std::make_shared<Reader>();
    r_->fd = fd;
    r_->wakeFd = wake;
    r_->tsfn = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "phoenix-inotify", 0, 1);
    r_->thread = std::thread(&Reader::Run, r_.get(), r_);
  }

  ~Inotify() override { Stop(); }

 private:
  std::shared_ptr<Reader> r_;

  // addWatch(path: Buffer, mask: number): wd >= 0, or -errno
  Napi::Value AddWatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!r_ || !info[0].IsBuffer() || !info[1].IsNumber()) {
      Napi::TypeError::New(env, "addWatch(path: Buffer, mask: number) on an open Inotify").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto buf = info[0].As<Napi::Buffer<char>>();
    std::string path(buf.Data(), buf.Length());
    uint32_t mask = info[1].As<Napi::Number>().Uint32Value();
    int wd = inotify_add_watch(r_->fd, path.c_str(), mask);
    return Napi::Number::New(env, wd >= 0 ? wd : -errno);
  }

  // rmWatch(wd): 0 or -errno (EINVAL when the kernel already dropped the watch)
  Napi::Value RmWatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!r_) return Napi::Number::New(env, -EBADF);
    int rc = inotify_rm_watch(r_->fd, info[0].As<Napi::Number>().Int32Value());
    return Napi::Number::New(env, rc == 0 ? 0 : -errno);
  }

  Napi::Value Pause(const Napi::CallbackInfo& info) {
    if (r_) {
      std::lock_guard<std::mutex> lock(r_->mu);
      r_->paused = true;
    }
    return info.Env().Undefined();
  }

  Napi::Value Resume(const Napi::CallbackInfo& info) {
    if (r_) {
      {
        std::lock_guard<std::mutex> lock(r_->mu);
        r_->paused = false;
      }
      r_->cv.notify_all();
      r_->Wake();
    }
    return info.Env().Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!r_) return o;
    size_t pendingBytes;
    {
      std::lock_guard<std::mutex> lock(r_->mu);
      pendingBytes = r_->pending.size();
    }
    o.Set("events", r_->events.load());
    o.Set("batches", r_->batches.load());
    o.Set("overflows", r_->overflows.load());
    o.Set("reads", r_->reads.load());
    o.Set("pendingBytes", static_cast<double>(pendingBytes));
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Stop();
    return info.Env().Undefined();
  }

  void Stop() {
    if (!r_) return;
    {
      std::lock_guard<std::mutex> lock(r_->mu);
      r_->stopping = true;
    }
    r_->cv.notify_all();
    r_->Wake();
    if (r_->thread.joinable()) r_->thread.join();
    close(r_->fd);
    close(r_->wakeFd);
    r_->tsfn.Release();
    r_.reset();
  }
};

}  // namespace

Napi::Function InitInotify(Napi::Env env) { return Inotify::Init(env); }
