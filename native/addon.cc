#include "addon.h"

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Inotify", InitInotify(env));
  exports.Set("scanDir", Napi::Function::New(env, ScanDir, "scanDir"));
  exports.Set("gearCut", Napi::Function::New(env, GearCut, "gearCut"));
  exports.Set("dropCache", Napi::Function::New(env, DropCache, "dropCache"));
  exports.Set("pageOffset", Napi::Function::New(env, PageOffset, "pageOffset"));
  exports.Set("gcmSeal", Napi::Function::New(env, GcmSeal, "gcmSeal"));
  exports.Set("gcmOpen", Napi::Function::New(env, GcmOpen, "gcmOpen"));
  exports.Set("hmacSha256", Napi::Function::New(env, HmacSha256, "hmacSha256"));
  return exports;
}

NODE_API_MODULE(phoenix_native, Init)
