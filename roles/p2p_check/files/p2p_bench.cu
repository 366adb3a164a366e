// rigkeeper p2p_bench: bandwidth and latency between two GPUs, peer access off and on, one way
// and both ways, with a check that the copied data arrived intact; or the copy bandwidth of one
// GPU's own memory and of its PCIe link to the host. Prints one JSON document on stdout; progress
// ("stage: <name>") goes to stderr as it happens, so a run killed by a timeout still says where it
// stopped.
//
// The method follows NVIDIA's cuda-samples p2pBandwidthLatencyTest
// (Samples/5_Domain_Specific/p2pBandwidthLatencyTest): cudaMemcpyPeerAsync timed with CUDA events,
// first with peer access disabled (the driver stages the copy through host memory), then enabled
// with cudaDeviceEnablePeerAccess, unidirectional and bidirectional, and latency from small copies.
// This file is rigkeeper's own code, written for roles/p2p_check; nothing of the sample is reused.
// It adds what the sample does not do: a data check (IOMMU trouble shows as zeroed or corrupt peer
// copies: tinygrad/open-gpu-kernel-modules#18, pytorch/pytorch#84803), the text of the error when
// peer access is refused (cudaErrorPeerAccessUnsupported, "peer access is not supported between
// these two devices"), and machine-readable output.
//
//   p2p_bench --version
//   p2p_bench --list
//   p2p_bench --pair A B [--size-mib N] [--iters N] [--latency-iters N]
//   p2p_bench --device A [--size-mib N] [--iters N]
//
// Exit status: 0 with a result (also when peer access is not supported: that is a result), 2 on a
// CUDA error (the JSON's "error" names the call and CUDA's own text), 64 on bad arguments.
// Builds with nvcc from CUDA 11.8 to 13.x: only cudaDeviceProp fields that CUDA 13 kept are read.

#include <cuda_runtime.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

const char *kProgram = "rigkeeper-p2p-bench";
const int kSchema = 1;

// ---- JSON output ------------------------------------------------------------------------------

std::string fmt(const char *f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return std::string(buf);
}

std::string quote(const char *s) {
  std::string out = "\"";
  for (; s && *s; ++s) {
    unsigned char c = static_cast<unsigned char>(*s);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += fmt("\\u%04x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string num(double v) { return v < 0 ? std::string("null") : fmt("%.3f", v); }

// ---- Errors -----------------------------------------------------------------------------------

std::string g_devices_json = "[]";
std::string g_cuda_json = "null";

[[noreturn]] void die_cuda(const char *call, cudaError_t err) {
  printf("{\"program\": %s, \"schema\": %d, \"cuda\": %s, \"devices\": %s, \"error\": {\"call\": %s, "
         "\"code\": %d, \"name\": %s, \"message\": %s}}\n",
         quote(kProgram).c_str(), kSchema, g_cuda_json.c_str(), g_devices_json.c_str(), quote(call).c_str(),
         static_cast<int>(err), quote(cudaGetErrorName(err)).c_str(),
         quote(cudaGetErrorString(err)).c_str());
  fflush(stdout);
  exit(2);
}

#define CK(call)                             \
  do {                                       \
    cudaError_t err_ = (call);               \
    if (err_ != cudaSuccess) die_cuda(#call, err_); \
  } while (0)

void stage(const char *name) {
  fprintf(stderr, "stage: %s\n", name);
  fflush(stderr);
}

// ---- Kernels: a pattern to copy and a check on the far side -----------------------------------

__global__ void fill_pattern(uint32_t *p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    p[i] = seed ^ static_cast<uint32_t>(i * 2654435761u);
  }
}

__global__ void count_mismatches(const uint32_t *p, size_t n, uint32_t seed, unsigned long long *bad) {
  unsigned long long local = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    if (p[i] != (seed ^ static_cast<uint32_t>(i * 2654435761u))) ++local;
  }
  if (local) atomicAdd(bad, local);
}

// ---- Devices ----------------------------------------------------------------------------------

std::string devices_json(int count) {
  std::string out = "[";
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, d));
    if (d) out += ", ";
    out += fmt("{\"index\": %d, \"name\": %s, \"bus_id\": \"%04x:%02x:%02x.0\", \"memory_mib\": %llu, "
               "\"compute_capability\": \"%d.%d\", \"multiprocessors\": %d}",
               d, quote(p.name).c_str(), p.pciDomainID, p.pciBusID, p.pciDeviceID,
               static_cast<unsigned long long>(p.totalGlobalMem >> 20), p.major, p.minor,
               p.multiProcessorCount);
  }
  return out + "]";
}

struct Buffers {
  void *src = nullptr;  // on device a
  void *dst = nullptr;  // on device b
  void *back = nullptr; // on device a (the b -> a direction lands here)
  void *src_b = nullptr; // on device b
};

struct Options {
  int mode = 0;  // 1 pair, 2 device, 3 list, 4 version
  int a = -1, b = -1;
  size_t bytes = 64ull << 20;
  int iters = 10;
  int latency_iters = 100;
};

// ---- Measurements -----------------------------------------------------------------------------

// GB/s (1e9 bytes) of `iters` copies of `bytes` from (src on sdev) to (dst on ddev), on a stream of sdev.
double uni(void *dst, int ddev, const void *src, int sdev, size_t bytes, int iters) {
  CK(cudaSetDevice(sdev));
  cudaStream_t s;
  cudaEvent_t t0, t1;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CK(cudaEventCreate(&t0));
  CK(cudaEventCreate(&t1));
  CK(cudaMemcpyPeerAsync(dst, ddev, src, sdev, bytes, s));  // warm-up
  CK(cudaEventRecord(t0, s));
  for (int i = 0; i < iters; ++i) CK(cudaMemcpyPeerAsync(dst, ddev, src, sdev, bytes, s));
  CK(cudaEventRecord(t1, s));
  CK(cudaEventSynchronize(t1));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, t0, t1));
  CK(cudaEventDestroy(t0));
  CK(cudaEventDestroy(t1));
  CK(cudaStreamDestroy(s));
  return ms > 0 ? static_cast<double>(bytes) * iters / (ms / 1e3) / 1e9 : -1;
}

// GB/s of both directions at once, bytes of both directions counted.
double bidi(const Options &o, const Buffers &buf) {
  cudaStream_t sa, sb;
  cudaEvent_t t0, t1, done_b;
  CK(cudaSetDevice(o.b));
  CK(cudaStreamCreateWithFlags(&sb, cudaStreamNonBlocking));
  CK(cudaEventCreateWithFlags(&done_b, cudaEventDisableTiming));
  CK(cudaSetDevice(o.a));
  CK(cudaStreamCreateWithFlags(&sa, cudaStreamNonBlocking));
  CK(cudaEventCreate(&t0));
  CK(cudaEventCreate(&t1));
  CK(cudaMemcpyPeerAsync(buf.dst, o.b, buf.src, o.a, o.bytes, sa));  // warm-up
  CK(cudaMemcpyPeerAsync(buf.back, o.a, buf.src_b, o.b, o.bytes, sb));
  CK(cudaStreamSynchronize(sb));
  CK(cudaEventRecord(t0, sa));
  CK(cudaStreamWaitEvent(sb, t0, 0));
  for (int i = 0; i < o.iters; ++i) {
    CK(cudaMemcpyPeerAsync(buf.dst, o.b, buf.src, o.a, o.bytes, sa));
    CK(cudaMemcpyPeerAsync(buf.back, o.a, buf.src_b, o.b, o.bytes, sb));
  }
  CK(cudaEventRecord(done_b, sb));
  CK(cudaStreamWaitEvent(sa, done_b, 0));
  CK(cudaEventRecord(t1, sa));
  CK(cudaEventSynchronize(t1));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, t0, t1));
  CK(cudaEventDestroy(t0));
  CK(cudaEventDestroy(t1));
  CK(cudaEventDestroy(done_b));
  CK(cudaStreamDestroy(sa));
  CK(cudaSetDevice(o.b));
  CK(cudaStreamDestroy(sb));
  return ms > 0 ? 2.0 * o.bytes * o.iters / (ms / 1e3) / 1e9 : -1;
}

// Microseconds per small (4-byte) copy, back to back.
double latency(void *dst, int ddev, const void *src, int sdev, int iters) {
  CK(cudaSetDevice(sdev));
  cudaStream_t s;
  cudaEvent_t t0, t1;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CK(cudaEventCreate(&t0));
  CK(cudaEventCreate(&t1));
  CK(cudaMemcpyPeerAsync(dst, ddev, src, sdev, 4, s));
  CK(cudaEventRecord(t0, s));
  for (int i = 0; i < iters; ++i) CK(cudaMemcpyPeerAsync(dst, ddev, src, sdev, 4, s));
  CK(cudaEventRecord(t1, s));
  CK(cudaEventSynchronize(t1));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, t0, t1));
  CK(cudaEventDestroy(t0));
  CK(cudaEventDestroy(t1));
  CK(cudaStreamDestroy(s));
  return ms > 0 ? ms * 1e3 / iters : -1;
}

// Words that did not arrive as sent: a pattern written on sdev, copied to ddev, checked there.
unsigned long long verify(void *dst, int ddev, void *src, int sdev, size_t bytes, uint32_t seed) {
  size_t n = bytes / sizeof(uint32_t);
  CK(cudaSetDevice(ddev));
  CK(cudaMemset(dst, 0, bytes));
  CK(cudaDeviceSynchronize());
  CK(cudaSetDevice(sdev));
  fill_pattern<<<256, 256>>>(static_cast<uint32_t *>(src), n, seed);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  CK(cudaMemcpyPeer(dst, ddev, src, sdev, bytes));
  CK(cudaSetDevice(ddev));
  unsigned long long *bad_d = nullptr, bad = 0;
  CK(cudaMalloc(&bad_d, sizeof bad));
  CK(cudaMemset(bad_d, 0, sizeof bad));
  count_mismatches<<<256, 256>>>(static_cast<const uint32_t *>(dst), n, seed, bad_d);
  CK(cudaGetLastError());
  CK(cudaMemcpy(&bad, bad_d, sizeof bad, cudaMemcpyDeviceToHost));
  CK(cudaFree(bad_d));
  return bad;
}

std::string measure(const Options &o, const Buffers &buf, const char *label) {
  std::string name = std::string(label) + "_uni";
  stage(name.c_str());
  double ab = uni(buf.dst, o.b, buf.src, o.a, o.bytes, o.iters);
  double ba = uni(buf.back, o.a, buf.src_b, o.b, o.bytes, o.iters);
  name = std::string(label) + "_bi";
  stage(name.c_str());
  double bi = bidi(o, buf);
  name = std::string(label) + "_latency";
  stage(name.c_str());
  double lab = latency(buf.dst, o.b, buf.src, o.a, o.latency_iters);
  double lba = latency(buf.back, o.a, buf.src_b, o.b, o.latency_iters);
  name = std::string(label) + "_verify";
  stage(name.c_str());
  unsigned long long vab = verify(buf.dst, o.b, buf.src, o.a, o.bytes, 0x52494721u);
  unsigned long long vba = verify(buf.back, o.a, buf.src_b, o.b, o.bytes, 0x4b454550u);
  return fmt("{\"uni_gbps\": {\"a_to_b\": %s, \"b_to_a\": %s}, \"bi_gbps\": %s, "
             "\"latency_us\": {\"a_to_b\": %s, \"b_to_a\": %s}, "
             "\"mismatched_words\": {\"a_to_b\": %llu, \"b_to_a\": %llu}}",
             num(ab).c_str(), num(ba).c_str(), num(bi).c_str(), num(lab).c_str(), num(lba).c_str(),
             vab, vba);
}

// Enable peer access from `dev` to `peer`; returns "" or CUDA's text for the refusal.
std::string enable_peer(int dev, int peer) {
  CK(cudaSetDevice(dev));
  cudaError_t err = cudaDeviceEnablePeerAccess(peer, 0);
  if (err == cudaSuccess || err == cudaErrorPeerAccessAlreadyEnabled) {
    cudaGetLastError();  // clear a sticky "already enabled"
    return "";
  }
  cudaGetLastError();
  return cudaGetErrorString(err);
}

int run_pair(const Options &o, int count) {
  if (o.a < 0 || o.b < 0 || o.a >= count || o.b >= count || o.a == o.b) {
    printf("{\"program\": %s, \"schema\": %d, \"devices\": %s, \"error\": {\"call\": \"arguments\", "
           "\"code\": -1, \"name\": \"badDevice\", \"message\": \"--pair needs two different devices "
           "below %d\"}}\n", quote(kProgram).c_str(), kSchema, g_devices_json.c_str(), count);
    return 64;
  }
  int ab = 0, ba = 0;
  CK(cudaDeviceCanAccessPeer(&ab, o.a, o.b));
  CK(cudaDeviceCanAccessPeer(&ba, o.b, o.a));
  Buffers buf;
  stage("allocate");
  CK(cudaSetDevice(o.a));
  CK(cudaMalloc(&buf.src, o.bytes));
  CK(cudaMalloc(&buf.back, o.bytes));
  CK(cudaSetDevice(o.b));
  CK(cudaMalloc(&buf.dst, o.bytes));
  CK(cudaMalloc(&buf.src_b, o.bytes));
  std::string off = measure(o, buf, "p2p_off");
  stage("enable_peer");
  std::string err_ab = enable_peer(o.a, o.b);
  std::string err_ba = enable_peer(o.b, o.a);
  std::string on = "null";
  if (ab && ba && err_ab.empty() && err_ba.empty()) {
    on = measure(o, buf, "p2p_on");
    CK(cudaSetDevice(o.a));
    CK(cudaDeviceDisablePeerAccess(o.b));
    CK(cudaSetDevice(o.b));
    CK(cudaDeviceDisablePeerAccess(o.a));
  }
  CK(cudaSetDevice(o.a));
  CK(cudaFree(buf.src));
  CK(cudaFree(buf.back));
  CK(cudaSetDevice(o.b));
  CK(cudaFree(buf.dst));
  CK(cudaFree(buf.src_b));
  auto or_null = [](const std::string &s) { return s.empty() ? std::string("null") : quote(s.c_str()); };
  printf("{\"program\": %s, \"schema\": %d, \"mode\": \"pair\", \"cuda\": %s, \"devices\": %s, \"size_bytes\": %zu, "
         "\"iterations\": %d, \"pair\": {\"a\": %d, \"b\": %d, "
         "\"can_access_peer\": {\"a_to_b\": %s, \"b_to_a\": %s}, "
         "\"peer_enable_error\": {\"a_to_b\": %s, \"b_to_a\": %s}, \"p2p_off\": %s, \"p2p_on\": %s}, "
         "\"error\": null}\n",
         quote(kProgram).c_str(), kSchema, g_cuda_json.c_str(), g_devices_json.c_str(), o.bytes, o.iters, o.a, o.b,
         ab ? "true" : "false", ba ? "true" : "false", or_null(err_ab).c_str(), or_null(err_ba).c_str(),
         off.c_str(), on.c_str());
  return 0;
}

int run_device(const Options &o, int count) {
  if (o.a < 0 || o.a >= count) {
    printf("{\"program\": %s, \"schema\": %d, \"devices\": %s, \"error\": {\"call\": \"arguments\", "
           "\"code\": -1, \"name\": \"badDevice\", \"message\": \"--device needs a device below %d\"}}\n",
           quote(kProgram).c_str(), kSchema, g_devices_json.c_str(), count);
    return 64;
  }
  CK(cudaSetDevice(o.a));
  void *x = nullptr, *y = nullptr, *host = nullptr;
  stage("allocate");
  CK(cudaMalloc(&x, o.bytes));
  CK(cudaMalloc(&y, o.bytes));
  CK(cudaMallocHost(&host, o.bytes));
  cudaStream_t s;
  cudaEvent_t t0, t1;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CK(cudaEventCreate(&t0));
  CK(cudaEventCreate(&t1));
  double gbps[3] = {-1, -1, -1};
  const cudaMemcpyKind kinds[3] = {cudaMemcpyDeviceToDevice, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost};
  const char *names[3] = {"d2d", "h2d", "d2h"};
  for (int k = 0; k < 3; ++k) {
    stage(names[k]);
    void *dst = k == 2 ? host : y;
    const void *src = k == 1 ? host : x;
    CK(cudaMemcpyAsync(dst, src, o.bytes, kinds[k], s));  // warm-up
    CK(cudaEventRecord(t0, s));
    for (int i = 0; i < o.iters; ++i) CK(cudaMemcpyAsync(dst, src, o.bytes, kinds[k], s));
    CK(cudaEventRecord(t1, s));
    CK(cudaEventSynchronize(t1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, t0, t1));
    if (ms > 0) gbps[k] = static_cast<double>(o.bytes) * o.iters / (ms / 1e3) / 1e9;
  }
  stage("verify");
  unsigned long long bad = verify(y, o.a, x, o.a, o.bytes, 0x52494721u);
  CK(cudaEventDestroy(t0));
  CK(cudaEventDestroy(t1));
  CK(cudaStreamDestroy(s));
  CK(cudaFree(x));
  CK(cudaFree(y));
  CK(cudaFreeHost(host));
  // A device-to-device copy reads and writes every byte: its memory traffic is twice the bytes copied.
  printf("{\"program\": %s, \"schema\": %d, \"mode\": \"device\", \"cuda\": %s, \"devices\": %s, \"size_bytes\": %zu, "
         "\"iterations\": %d, \"local\": {\"device\": %d, \"d2d_copy_gbps\": %s, \"d2d_memory_gbps\": %s, "
         "\"h2d_gbps\": %s, \"d2h_gbps\": %s, \"mismatched_words\": %llu}, \"error\": null}\n",
         quote(kProgram).c_str(), kSchema, g_cuda_json.c_str(), g_devices_json.c_str(), o.bytes, o.iters, o.a,
         num(gbps[0]).c_str(), num(gbps[0] < 0 ? -1 : 2 * gbps[0]).c_str(), num(gbps[1]).c_str(),
         num(gbps[2]).c_str(), bad);
  return 0;
}

bool parse(int argc, char **argv, Options *o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&](long *v) {
      if (i + 1 >= argc) return false;
      char *end = nullptr;
      *v = strtol(argv[++i], &end, 10);
      return end && *end == '\0';
    };
    long v = 0, w = 0;
    if (a == "--version") {
      o->mode = 4;
    } else if (a == "--list") {
      o->mode = 3;
    } else if (a == "--pair") {
      if (!next(&v) || !next(&w)) return false;
      o->mode = 1;
      o->a = static_cast<int>(v);
      o->b = static_cast<int>(w);
    } else if (a == "--device") {
      if (!next(&v)) return false;
      o->mode = 2;
      o->a = static_cast<int>(v);
    } else if (a == "--size-mib") {
      if (!next(&v) || v < 1 || v > 4096) return false;
      o->bytes = static_cast<size_t>(v) << 20;
    } else if (a == "--iters") {
      if (!next(&v) || v < 1 || v > 10000) return false;
      o->iters = static_cast<int>(v);
    } else if (a == "--latency-iters") {
      if (!next(&v) || v < 1 || v > 100000) return false;
      o->latency_iters = static_cast<int>(v);
    } else {
      return false;
    }
  }
  return o->mode != 0;
}

}  // namespace

int main(int argc, char **argv) {
  Options o;
  if (!parse(argc, argv, &o)) {
    fprintf(stderr, "usage: %s --version | --list | --pair A B | --device A "
                    "[--size-mib N] [--iters N] [--latency-iters N]\n", argv[0]);
    return 64;
  }
  if (o.mode == 4) {
    printf("{\"program\": %s, \"schema\": %d, \"cuda_runtime_built\": %d}\n", quote(kProgram).c_str(),
           kSchema, CUDART_VERSION);
    return 0;
  }
  int runtime = 0, driver = 0, count = 0;
  CK(cudaRuntimeGetVersion(&runtime));
  CK(cudaDriverGetVersion(&driver));
  g_cuda_json = fmt("{\"runtime\": %d, \"driver\": %d}", runtime, driver);
  stage("devices");
  CK(cudaGetDeviceCount(&count));
  g_devices_json = devices_json(count);
  fprintf(stderr, "cuda: runtime %d driver %d devices %d\n", runtime, driver, count);
  if (o.mode == 3) {
    printf("{\"program\": %s, \"schema\": %d, \"mode\": \"list\", \"cuda\": %s, \"devices\": %s, "
           "\"error\": null}\n", quote(kProgram).c_str(), kSchema, g_cuda_json.c_str(), g_devices_json.c_str());
    return 0;
  }
  return o.mode == 1 ? run_pair(o, count) : run_device(o, count);
}
