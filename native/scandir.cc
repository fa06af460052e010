// scanDir(path): one directory's entries with their lstat, read on a libuv worker thread.
// One round trip per directory instead of one per entry is what lets the scanner keep pace
// with find(1). Records are packed little-endian; src/scanner/native-scan.ts parses them.
#include "addon.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

namespace {

// Record layout (kRecordHeader bytes, then name, then symlink target):
//   u32 nameLen, u32 targetLen, i32 err (0 or errno of lstat/readlink), u32 mode,
//   u32 uid, u32 gid, u32 nlink, u32 reserved,
//   u64 ino, u64 dev, u64 size, i64 mtimeNs, i64 ctimeNs
constexpr size_t kRecordHeader = 72;

template <typename T>
void Put(std::vector<uint8_t>& out, T v) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

class ScanWorker : public Napi::AsyncWorker {
 public:
  ScanWorker(Napi::Env env, std::string path)
      : Napi::AsyncWorker(env), path_(std::move(path)), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int dfd = open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
      err_ = errno;
      return;
    }
    DIR* dir = fdopendir(dfd);
    if (dir == nullptr) {
      err_ = errno;
      close(dfd);
      return;
    }
    std::vector<char> target(4096);
    for (;;) {
      errno = 0;
      struct dirent* de = readdir(dir);
      if (de == nullptr) {
        if (errno != 0) err_ = errno;
        break;
      }
      const char* name = de->d_name;
      if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
      struct stat st {};
      int err = 0;
      ssize_t tlen = 0;
      if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        err = errno;
        if (err == ENOENT) continue;  // vanished between readdir and lstat: it is gone
      } else if (S_ISLNK(st.st_mode)) {
        size_t want = st.st_size > 0 ? static_cast<size_t>(st.st_size) + 1 : 4096;
        if (want > target.size()) target.resize(want);
        tlen = readlinkat(dfd, name, target.data(), target.size());
        if (tlen < 0) {
          err = errno;
          tlen = 0;
        }
      }
      uint32_t nlen = static_cast<uint32_t>(strlen(name));
      Put<uint32_t>(out_, nlen);
      Put<uint32_t>(out_, static_cast<uint32_t>(tlen));
      Put<int32_t>(out_, err);
      Put<uint32_t>(out_, st.st_mode);
      Put<uint32_t>(out_, st.st_uid);
      Put<uint32_t>(out_, st.st_gid);
      Put<uint32_t>(out_, static_cast<uint32_t>(st.st_nlink));
      Put<uint32_t>(out_, 0);
      Put<uint64_t>(out_, st.st_ino);
      Put<uint64_t>(out_, st.st_dev);
      Put<uint64_t>(out_, static_cast<uint64_t>(st.st_size));
      Put<int64_t>(out_, static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec);
      Put<int64_t>(out_, static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec);
      out_.insert(out_.end(), name, name + nlen);
      out_.insert(out_.end(), target.data(), target.data() + tlen);
    }
    closedir(dir);
    static_assert(kRecordHeader == 9 * 4 - 4 + 5 * 8, "record header size");
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0 && out_.empty()) {
      Napi::Error e = Napi::Error::New(env, std::string("scanDir: ") + std::strerror(err_));
      e.Set("errno", Napi::Number::New(env, -err_));
      e.Set("syscall", Napi::String::New(env, "opendir"));
      deferred_.Reject(e.Value());
      return;
    }
    deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(env, out_.data(), out_.size()));
  }

 private:
  std::string path_;
  Napi::Promise::Deferred deferred_;
  std::vector<uint8_t> out_;
  int err_ = 0;
};

}  // namespace

// scanDir(path: Buffer): Promise<Buffer>
Napi::Value ScanDir(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBuffer()) {
    Napi::TypeError::New(env, "scanDir(path: Buffer)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto buf = info[0].As<Napi::Buffer<char>>();
  auto* worker = new ScanWorker(env, std::string(buf.Data(), buf.Length()));
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}
