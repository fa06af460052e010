#pragma once
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>

Napi::Function InitInotify(Napi::Env env);
Napi::Value ScanDir(const Napi::CallbackInfo& info);
Napi::Value GearCut(const Napi::CallbackInfo& info);
Napi::Value DropCache(const Napi::CallbackInfo& info);
Napi::Value PageOffset(const Napi::CallbackInfo& info);
Napi::Value GcmSeal(const Napi::CallbackInfo& info);
Napi::Value GcmOpen(const Napi::CallbackInfo& info);
Napi::Value HmacSha256(const Napi::CallbackInfo& info);

// Throws an Error carrying `errno` (negative, as Node does) and a message with strerror.
inline void ThrowErrno(Napi::Env env, int err, const char* syscall) {
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + ": " + std::strerror(err));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
}
