// The FastCDC cut-point search of src/repo/chunker.ts, in C++ for speed (the hot loop of a
// backup). It must cut exactly where the TypeScript reference cuts; a test compares them.
#include "addon.h"

#include <cstdint>

// gearCut(data, start, end, min, avg, max, maskS, maskL, eof, gear) -> length or -1
Napi::Value GearCut(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 10 || !info[0].IsTypedArray() || !info[9].IsTypedArray()) {
    Napi::TypeError::New(env, "gearCut(data, start, end, min, avg, max, maskS, maskL, eof, gear)").ThrowAsJavaScriptException();
    return env.Null();
  }
  Napi::Uint8Array data = info[0].As<Napi::Uint8Array>();
  const size_t start = info[1].As<Napi::Number>().Int64Value();
  const size_t end = info[2].As<Napi::Number>().Int64Value();
  const size_t min = info[3].As<Napi::Number>().Int64Value();
  const size_t avg = info[4].As<Napi::Number>().Int64Value();
  const size_t max = info[5].As<Napi::Number>().Int64Value();
  const uint32_t maskS = info[6].As<Napi::Number>().Uint32Value();
  const uint32_t maskL = info[7].As<Napi::Number>().Uint32Value();
  const bool eof = info[8].As<Napi::Boolean>().Value();
  Napi::Uint32Array gear = info[9].As<Napi::Uint32Array>();
  if (end > data.ElementLength() || start > end || gear.ElementLength() != 256) {
    Napi::RangeError::New(env, "gearCut: range outside the buffer, or gear table not 256 entries").ThrowAsJavaScriptException();
    return env.Null();
  }
  const uint8_t* p = data.Data() + start;
  const uint32_t* g = gear.Data();
  const size_t n = end - start;
  if (n <= min) return Napi::Number::New(env, eof ? static_cast<double>(n) : -1);
  const size_t normal = n < avg ? n : avg;
  const size_t limit = n < max ? n : max;
  uint32_t fp = 0;
  size_t i = min;
  for (; i < normal; i++) {
    fp = (fp << 1) + g[p[i]];
    if ((fp & maskS) == 0) return Napi::Number::New(env, static_cast<double>(i + 1));
  }
  for (; i < limit; i++) {
    fp = (fp << 1) + g[p[i]];
    if ((fp & maskL) == 0) return Napi::Number::New(env, static_cast<double>(i + 1));
  }
  if (limit == max || eof) return Napi::Number::New(env, static_cast<double>(limit));
  return Napi::Number::New(env, -1);
}
