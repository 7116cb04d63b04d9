// The one-pass divergence kernel's per-chunk update on CPU, as an XLA FFI custom call.
//
// Why: XLA:CPU runs the update (max, exp, the S×J pair products of kernels/divergence.py's
// `_block_onepass`) as separate loops over the [S,Pb,C] chunk, and its broadcast-and-reduce for the
// pair products runs far below the matmul rate (docs/performance.md has the figures). Here each
// position's S rows are copied once into a cache-resident scratch, and max, exp, sums and all S·J
// dot products run on it with explicit 16-wide vectors (GCC/Clang vector extensions, lowered to
// whatever the -march baseline native.py picks offers: AVX2, SSE, NEON).
//
// Opt-in only (form "native"): it is compiled at run time. Every buffer's rank and shape is checked
// here against z's (S, P, C) and ref's K before anything is read; any S works.
//
// Math (as `_block_onepass`; axes S seeds, P positions of the block, C chunk width, K references,
// J = S + K): for each position p and seed i, over the chunk's valid columns [lo, hi):
//   m'_i = max(m_i, max z_i)      a_i = e^{m_i − m'_i}      e_i = e^{z_i − m'_i}
//   c'_i = m'_i on the first chunk, else c_i                 s'_i = a_i s_i + Σ e_i
//   X'_ij = a_i X_ij + Σ e_i (z_j − c'_j)  (j < S),          X'_i,S+k = a_i X_i,S+k + Σ e_i r_k
// Columns outside [lo, hi) (ids an earlier chunk covered, ids ≥ V_r) are never read.
//
// Buffers: z [S,P,C], ref [K,C], win int32 [3] = (lo, hi, first), m, c, s [S,P], X [S,J,P] ->
// m', c', s', X' (aliased to the inputs by the caller; every value is read before it is written).
// Positions are split over XLA's intra-op thread pool; the caller works too and returns once every
// position is done (helpers that start late find no work).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kW = 16;                    // vector width in floats
typedef float vf __attribute__((vector_size(4 * kW)));
typedef int32_t vi __attribute__((vector_size(4 * kW)));
constexpr float kPad = -1e30f;                // like the XLA form's additive mask: e^{kPad − m} = 0

inline vf splat(float x) { return vf{} + x; }
inline vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline float hsum(vf v) { float t = 0.f; for (int l = 0; l < kW; ++l) t += v[l]; return t; }
inline float hmax(vf v) { float t = v[0]; for (int l = 1; l < kW; ++l) t = std::max(t, v[l]); return t; }

// e^x for x ≤ 0 (Cephes expf: range reduction by ln 2 in two parts, degree-6 polynomial, ≤ 2 ulp);
// 0 below −87.3, where e^x leaves the normal floats.
inline vf vexp(vf x) {
  const vf lo = splat(-87.3f);
  vf xc = x < lo ? lo : x;
  vf n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest integer
  vf r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf y = splat(1.9875691500e-4f);
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  vi bits = (__builtin_convertvector(n, vi) + 127) << 23;  // 2^n
  vf res = y * (vf)bits;
  return x < lo ? splat(0.f) : res;
}

struct Args {
  int64_t S, K, P, C, lo, L, Lp;  // L = hi − lo valid columns, Lp = L rounded up to kW
  bool first;
  const float *z, *ref, *m, *c, *s, *X;
  float *mo, *co, *so, *Xo;
};

// One position: rows of `scratch` are z_0..z_{S−1} (then z − c'), e_0..e_{S−1}, r_0..r_{K−1}, then
// a [S] and mn [S].
void Position(const Args& A, int64_t p, float* scratch) {
  const int64_t S = A.S, J = A.S + A.K, P = A.P, Lp = A.Lp;
  float* zc = scratch;
  float* e = scratch + S * Lp;
  float* a = scratch + (2 * S + A.K) * Lp;
  float* mn = a + S;
  for (int64_t i = 0; i < S; ++i) {
    float* row = zc + i * Lp;
    std::memcpy(row, A.z + (i * P + p) * A.C + A.lo, A.L * sizeof(float));
    std::fill(row + A.L, row + Lp, kPad);
    vf mx = splat(kPad);
    for (int64_t l = 0; l < Lp; l += kW) { vf v = load(row + l); mx = v > mx ? v : mx; }
    const int64_t ip = i * P + p;
    mn[i] = std::max(A.m[ip], hmax(mx));
    a[i] = std::exp(A.m[ip] - mn[i]);
    const float ci = A.first ? mn[i] : A.c[ip];
    vf sum = splat(0.f);
    for (int64_t l = 0; l < Lp; l += kW) {
      vf v = load(row + l);
      vf ev = vexp(v - mn[i]);
      store(e + i * Lp + l, ev);
      store(row + l, v - ci);  // the padding becomes kPad − c: finite, and its e is 0
      sum += ev;
    }
    A.so[ip] = a[i] * A.s[ip] + hsum(sum);
    A.mo[ip] = mn[i];
    A.co[ip] = ci;
  }
  const float* ref_rows = scratch + 2 * S * Lp;
  for (int64_t i = 0; i < S; ++i) {
    const float* ei = e + i * Lp;
    for (int64_t j0 = 0; j0 < J; j0 += 4) {  // four columns j per sweep over e_i
      const int64_t nj = std::min<int64_t>(4, J - j0);
      const float* row[4];
      for (int64_t t = 0; t < 4; ++t) {
        const int64_t j = j0 + std::min(t, nj - 1);
        row[t] = j < S ? zc + j * Lp : ref_rows + (j - S) * Lp;
      }
      vf acc0 = splat(0.f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
      for (int64_t l = 0; l < Lp; l += kW) {
        vf ev = load(ei + l);
        acc0 += ev * load(row[0] + l);
        acc1 += ev * load(row[1] + l);
        acc2 += ev * load(row[2] + l);
        acc3 += ev * load(row[3] + l);
      }
      const float sums[4] = {hsum(acc0), hsum(acc1), hsum(acc2), hsum(acc3)};
      for (int64_t t = 0; t < nj; ++t) {
        const int64_t x = (i * J + j0 + t) * P + p;
        A.Xo[x] = a[i] * A.X[x] + sums[t];
      }
    }
  }
}

// Positions [p0, p1) with this worker's own scratch (the K reference rows copied in once).
void Range(const Args& A, int64_t p0, int64_t p1) {
  std::vector<float> scratch((2 * A.S + A.K) * A.Lp + 2 * A.S, 0.f);
  float* ref_rows = scratch.data() + 2 * A.S * A.Lp;
  for (int64_t k = 0; k < A.K; ++k) std::memcpy(ref_rows + k * A.Lp, A.ref + k * A.C + A.lo, A.L * sizeof(float));
  for (int64_t p = p0; p < p1; ++p) Position(A, p, scratch.data());
}

struct Work {  // shared by the caller and the helper tasks; outlives the call if a helper starts late
  Args args;
  int64_t items, grain;
  std::atomic<int64_t> next{0}, done{0};
  void Run() {
    for (int64_t it; (it = next.fetch_add(1)) < items; done.fetch_add(1)) {
      Range(args, it * grain, std::min(args.P, (it + 1) * grain));
    }
  }
};

using F2 = ffi::Buffer<ffi::F32, 2>;  // aliases: the binding macro below splits its arguments at commas
using F3 = ffi::Buffer<ffi::F32, 3>;
using I1 = ffi::Buffer<ffi::S32, 1>;

ffi::Error ChunkUpdate(ffi::ThreadPool pool, F3 z, F2 ref, I1 win, F2 m, F2 c, F2 s, F3 X,
                       ffi::Result<F2> mo, ffi::Result<F2> co, ffi::Result<F2> so, ffi::Result<F3> Xo) {
  const auto zd = z.dimensions();
  const int64_t S = zd[0], P = zd[1], C = zd[2], K = ref.dimensions()[0];
  auto is = [](auto dims, std::initializer_list<int64_t> want) {
    return dims.size() == want.size() && std::equal(want.begin(), want.end(), dims.begin());
  };
  if (S < 1 || C < 1 || !is(ref.dimensions(), {K, C}) || !is(win.dimensions(), {3})) {
    return ffi::Error::InvalidArgument("seedkl onepass chunk: need z [S,P,C] with S, C >= 1, ref [K,C], win [3]");
  }
  for (auto d : {m.dimensions(), c.dimensions(), s.dimensions(), mo->dimensions(), co->dimensions(),
                 so->dimensions()}) {
    if (!is(d, {S, P})) return ffi::Error::InvalidArgument("seedkl onepass chunk: m, c, s must be [S,P] like z");
  }
  if (!is(X.dimensions(), {S, S + K, P}) || !is(Xo->dimensions(), {S, S + K, P})) {
    return ffi::Error::InvalidArgument("seedkl onepass chunk: X must be [S,S+K,P]");
  }
  const int32_t* w = win.typed_data();
  const int64_t lo = w[0], hi = w[1];
  if (!(0 <= lo && lo < hi && hi <= C)) return ffi::Error::InvalidArgument("seedkl onepass chunk: bad window");
  auto work = std::make_shared<Work>();
  const int64_t L = hi - lo;
  work->args = Args{S, K, P, C, lo, L, (L + kW - 1) / kW * kW, w[2] != 0,
                    z.typed_data(), ref.typed_data(), m.typed_data(), c.typed_data(), s.typed_data(),
                    X.typed_data(), mo->typed_data(), co->typed_data(), so->typed_data(), Xo->typed_data()};
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  work->grain = std::max<int64_t>(1, P / (4 * threads));
  work->items = (P + work->grain - 1) / work->grain;
  for (int64_t t = 1; t < std::min(threads, work->items); ++t) pool.Schedule([work] { work->Run(); });
  work->Run();
  while (work->done.load() < work->items) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeedklOnepassChunk, ChunkUpdate,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F3>()  // z
                                  .Arg<F2>()  // ref
                                  .Arg<I1>()  // win
                                  .Arg<F2>()  // m
                                  .Arg<F2>()  // c
                                  .Arg<F2>()  // s
                                  .Arg<F3>()  // X
                                  .Ret<F2>()
                                  .Ret<F2>()
                                  .Ret<F2>()
                                  .Ret<F3>());
