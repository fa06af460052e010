// AES-256-GCM and HMAC-SHA-256 of blobs, on the OpenSSL that Node itself is built on (its headers
// come with Node's; the symbols are the ones the node binary exports, or its libcrypto's).
//
// Why not node:crypto: a blob is sealed and hashed once, whole, and most blobs are small. Node
// builds a cipher object and a stream around it for each one (createCipheriv, createHmac) and
// allocates every output: 3-6 µs a blob before any byte is processed, and a third of the speed
// of the cipher itself on 1 MiB blobs. Here the key schedules are kept per thread, the output goes
// into the caller's buffer, and a call costs what OpenSSL costs.
//
//   gcmSeal(key, nonce, parts, out): out = nonce (12) ‖ ciphertext of parts ‖ tag (16); returns its length
//   gcmOpen(key, sealed, out): the plaintext into out; returns its length, or -1 when the tag does not match
//   hmacSha256(key, data, out): the 32-byte HMAC into out
//
// Buffers are read and written in place (no copy): the caller must not hand a view the call writes
// as well as reads. Arguments are checked here; a wrong call throws a TypeError, never crashes.
#include <openssl/evp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "addon.h"

namespace {

// One direction of AES-256-GCM: its context, and the key whose schedule it holds (the next call
// with the same key only sets the nonce).
struct Gcm {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  unsigned char key[32] = {};
  bool keyed = false;
  ~Gcm() { EVP_CIPHER_CTX_free(ctx); }
};

// OpenSSL's objects for one thread (each Node thread calls only on its own).
struct CipherState {
  EVP_CIPHER* gcm = nullptr;
  EVP_MD* sha256 = nullptr;
  Gcm enc;
  Gcm dec;
  EVP_MD_CTX* inner = nullptr;  // SHA-256 after the key ^ ipad block
  EVP_MD_CTX* outer = nullptr;  // SHA-256 after the key ^ opad block
  EVP_MD_CTX* work = nullptr;
  std::vector<unsigned char> macKey;
  bool macSet = false;
  bool ok = false;

  CipherState() {
    gcm = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
    sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    inner = EVP_MD_CTX_new();
    outer = EVP_MD_CTX_new();
    work = EVP_MD_CTX_new();
    ok = gcm && sha256 && enc.ctx && dec.ctx && inner && outer && work;
  }
  ~CipherState() {
    EVP_MD_CTX_free(inner);
    EVP_MD_CTX_free(outer);
    EVP_MD_CTX_free(work);
    EVP_CIPHER_free(gcm);
    EVP_MD_free(sha256);
  }
};

CipherState& State() {
  thread_local CipherState state;
  return state;
}

bool Bytes(const Napi::Value& v, unsigned char** data, size_t* length) {
  if (!v.IsTypedArray()) return false;
  Napi::TypedArray t = v.As<Napi::TypedArray>();
  if (t.TypedArrayType() != napi_uint8_array) return false;
  Napi::Uint8Array u = t.As<Napi::Uint8Array>();
  *data = u.Data();
  *length = u.ByteLength();
  return true;
}

Napi::Value Fail(Napi::Env env, const char* message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value OpenSslFailed(Napi::Env env, const char* what) {
  Napi::Error::New(env, std::string("OpenSSL failed: ") + what).ThrowAsJavaScriptException();
  return env.Undefined();
}

// Lengths handed to OpenSSL are ints: blobs are at most a few MiB, parts are cut below 1 GiB.
constexpr size_t kStep = size_t{1} << 30;

// Starts a message under `key` and the 12-byte nonce `iv`; the key schedule is made only when
// the key is not the one the context holds.
bool Start(const CipherState& s, Gcm& g, bool encrypt, const unsigned char* key, const unsigned char* iv) {
  const bool same = g.keyed && CRYPTO_memcmp(g.key, key, 32) == 0;
  if (EVP_CipherInit_ex2(g.ctx, same ? nullptr : s.gcm, same ? nullptr : key, iv, encrypt ? 1 : 0, nullptr) != 1) {
    g.keyed = false;
    return false;
  }
  if (!same) {
    memcpy(g.key, key, 32);
    g.keyed = true;
  }
  return true;
}

// Runs `length` bytes of `in` through the cipher into `out` + *at.
bool Update(Gcm& g, unsigned char* out, size_t* at, const unsigned char* in, size_t length) {
  for (size_t done = 0; done < length;) {
    const int n = static_cast<int>(std::min(length - done, kStep));
    int written = 0;
    if (EVP_CipherUpdate(g.ctx, out + *at, &written, in + done, n) != 1) return false;
    *at += static_cast<size_t>(written);
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

Napi::Value GcmSeal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned char *key, *nonce, *out;
  size_t keyLen, nonceLen, outLen;
  if (info.Length() < 4 || !Bytes(info[0], &key, &keyLen) || keyLen != 32 || !Bytes(info[1], &nonce, &nonceLen) ||
      nonceLen != 12 || !info[2].IsArray() || !Bytes(info[3], &out, &outLen)) {
    return Fail(env, "gcmSeal(key: 32 bytes, nonce: 12 bytes, parts: Uint8Array[], out: Uint8Array)");
  }
  Napi::Array parts = info[2].As<Napi::Array>();
  std::vector<std::pair<unsigned char*, size_t>> in(parts.Length());
  size_t total = 0;
  for (uint32_t i = 0; i < parts.Length(); i++) {
    if (!Bytes(parts.Get(i), &in[i].first, &in[i].second)) return Fail(env, "gcmSeal: every part must be a Uint8Array");
    total += in[i].second;
  }
  if (outLen < 12 + total + 16) return Fail(env, "gcmSeal: out is too small (needs 28 bytes more than the parts)");
  CipherState& s = State();
  if (!s.ok) return OpenSslFailed(env, "no AES-256-GCM or SHA-256");
  if (!Start(s, s.enc, true, key, nonce)) return OpenSslFailed(env, "EVP_CipherInit_ex2");
  memmove(out, nonce, 12);
  size_t at = 12;
  for (auto& [data, length] : in) {
    if (!Update(s.enc, out, &at, data, length)) return OpenSslFailed(env, "EVP_CipherUpdate");
  }
  int written = 0;
  if (EVP_CipherFinal_ex(s.enc.ctx, out + at, &written) != 1) return OpenSslFailed(env, "EVP_CipherFinal_ex");
  at += static_cast<size_t>(written);
  if (EVP_CIPHER_CTX_ctrl(s.enc.ctx, EVP_CTRL_GCM_GET_TAG, 16, out + at) != 1) return OpenSslFailed(env, "EVP_CTRL_GCM_GET_TAG");
  return Napi::Number::New(env, static_cast<double>(at + 16));
}

Napi::Value GcmOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned char *key, *sealed, *out;
  size_t keyLen, sealedLen, outLen;
  if (info.Length() < 3 || !Bytes(info[0], &key, &keyLen) || keyLen != 32 || !Bytes(info[1], &sealed, &sealedLen) ||
      !Bytes(info[2], &out, &outLen)) {
    return Fail(env, "gcmOpen(key: 32 bytes, sealed: Uint8Array, out: Uint8Array)");
  }
  if (sealedLen < 28) return Napi::Number::New(env, -1);
  const size_t length = sealedLen - 28;
  if (outLen < length) return Fail(env, "gcmOpen: out is smaller than the plaintext");
  CipherState& s = State();
  if (!s.ok) return OpenSslFailed(env, "no AES-256-GCM or SHA-256");
  if (!Start(s, s.dec, false, key, sealed)) return OpenSslFailed(env, "EVP_CipherInit_ex2");
  size_t at = 0;
  if (!Update(s.dec, out, &at, sealed + 12, length)) return OpenSslFailed(env, "EVP_CipherUpdate");
  unsigned char tag[16];
  memcpy(tag, sealed + sealedLen - 16, 16);  // OpenSSL takes a non-const pointer
  if (EVP_CIPHER_CTX_ctrl(s.dec.ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) != 1) return OpenSslFailed(env, "EVP_CTRL_GCM_SET_TAG");
  int written = 0;
  // The tag is checked here; on a mismatch the plaintext in out is not to be used.
  if (EVP_CipherFinal_ex(s.dec.ctx, out + at, &written) != 1) return Napi::Number::New(env, -1);
  return Napi::Number::New(env, static_cast<double>(at + static_cast<size_t>(written)));
}

Napi::Value HmacSha256(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned char *key, *data, *out;
  size_t keyLen, dataLen, outLen;
  if (info.Length() < 3 || !Bytes(info[0], &key, &keyLen) || !Bytes(info[1], &data, &dataLen) || !Bytes(info[2], &out, &outLen) ||
      outLen < 32) {
    return Fail(env, "hmacSha256(key: Uint8Array, data: Uint8Array, out: 32 bytes or more)");
  }
  CipherState& s = State();
  if (!s.ok) return OpenSslFailed(env, "no AES-256-GCM or SHA-256");
  if (!s.macSet || s.macKey.size() != keyLen || CRYPTO_memcmp(s.macKey.data(), key, keyLen) != 0) {
    // RFC 2104: a key longer than the block is hashed first; then (key ^ ipad) and (key ^ opad)
    // are each one block into SHA-256, kept as the starting states of every HMAC with this key.
    s.macSet = false;
    unsigned char block[64] = {};
    if (keyLen > 64) {
      if (EVP_Digest(key, keyLen, block, nullptr, s.sha256, nullptr) != 1) return OpenSslFailed(env, "EVP_Digest");
    } else {
      memcpy(block, key, keyLen);
    }
    unsigned char pad[64];
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x36;
    if (EVP_DigestInit_ex2(s.inner, s.sha256, nullptr) != 1 || EVP_DigestUpdate(s.inner, pad, 64) != 1) {
      return OpenSslFailed(env, "EVP_DigestInit_ex2");
    }
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x5c;
    if (EVP_DigestInit_ex2(s.outer, s.sha256, nullptr) != 1 || EVP_DigestUpdate(s.outer, pad, 64) != 1) {
      return OpenSslFailed(env, "EVP_DigestInit_ex2");
    }
    s.macKey.assign(key, key + keyLen);
    s.macSet = true;
  }
  unsigned char inner[32];
  unsigned int n = 0;
  if (EVP_MD_CTX_copy_ex(s.work, s.inner) != 1 || EVP_DigestUpdate(s.work, data, dataLen) != 1 ||
      EVP_DigestFinal_ex(s.work, inner, &n) != 1 || EVP_MD_CTX_copy_ex(s.work, s.outer) != 1 ||
      EVP_DigestUpdate(s.work, inner, 32) != 1 || EVP_DigestFinal_ex(s.work, out, &n) != 1) {
    return OpenSslFailed(env, "SHA-256");
  }
  return env.Undefined();
}
