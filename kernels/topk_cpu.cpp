// Fused top-k SAE encoder for CPU: topk(act(xc @ W_enc + b_enc), k) without ever
// materialising the [N, d_sae] pre-activation matrix.
//
// The GEMM is tiled over row blocks of xc (parallel, one block per thread at a time) and
// column tiles of W_enc. Each (row block, column tile) product goes through MKL into a small
// per-thread buffer that stays in cache; a per-row buffer then keeps the running top-k.
// Most tile entries fall below the row's floor (its k-th best so far), so the scan is
// vectorised compares and the top-k is touched rarely.
//
// The screened variant (encode_screened) runs that GEMM in bfloat16, which oneDNN does ~4x
// faster than float32 on CPUs with AVX512-BF16. A bf16 score is only an estimate, so each
// one carries a rigorous error bound (see ScreenSlack); a latent is recomputed exactly in
// float32 only when its upper bound beats the row's floor. Nothing a float32 scan would keep
// is ever skipped, so the output is the exact path's top-k up to float32 rounding: scores
// come from our dot product instead of MKL's GEMM, so near-ties may order differently.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kChunk = 16;  // columns compared with the row's floor before any top-k work
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// One kept (activation, latent) pair.
struct Entry {
  float v;
  int32_t i;
};

// Order used everywhere: larger value first, then smaller latent index.
inline bool better(const Entry& a, const Entry& b) { return a.v > b.v || (a.v == b.v && a.i < b.i); }

// Running top-k of every row. Each row appends admitted entries to a buffer of 2k slots; a
// full buffer is cut back to its k best (nth_element), and its k-th best becomes the row's
// floor, the value a new entry must beat to be admitted (amortised O(1) per admission; it
// measured as fast as the min-heap it replaced, whose root played the floor's part).
// Latents reach a row in increasing index order, so an entry equal to the floor is never
// better than it.
class TopKRows {
 public:
  TopKRows(int64_t n, int64_t k)
      : k_(k), slots_(n * 2 * k), count_(n, 0), floor_(n, kNegInf) {}

  float floor(int64_t row) const { return floor_[row]; }

  void push(int64_t row, float v, int64_t idx) {
    Entry* slots = slots_.data() + row * 2 * k_;
    slots[count_[row]++] = {v, static_cast<int32_t>(idx)};
    if (count_[row] == 2 * k_) floor_[row] = keep_best(row);
  }

  // Write every row's k best, sorted, into values / indices [N, k].
  void write(at::Tensor& values, at::Tensor& indices) {
    float* vp = values.data_ptr<float>();
    int64_t* ip = indices.data_ptr<int64_t>();
    at::parallel_for(0, static_cast<int64_t>(count_.size()), 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        TORCH_INTERNAL_ASSERT(count_[r] >= k_, "row saw fewer than k latents");
        keep_best(r);
        Entry* slots = slots_.data() + r * 2 * k_;
        std::sort(slots, slots + k_, better);
        for (int64_t t = 0; t < k_; ++t) {
          vp[r * k_ + t] = slots[t].v;
          ip[r * k_ + t] = slots[t].i;
        }
      }
    });
  }

 private:
  // Move the row's k best entries to the front, drop the rest, return the k-th best value.
  float keep_best(int64_t row) {
    Entry* slots = slots_.data() + row * 2 * k_;
    std::nth_element(slots, slots + k_ - 1, slots + count_[row], better);
    count_[row] = k_;
    return slots[k_ - 1].v;
  }

  int64_t k_;
  std::vector<Entry> slots_;  // [N, 2k]
  std::vector<int64_t> count_;
  std::vector<float> floor_;
};

// ReLU, or SAELens JumpReLU relu(pre) * (pre > thr).
template <bool kJump>
inline float activate(float pre, const float* thr, int64_t j) {
  float a = pre > 0.f ? pre : 0.f;
  if constexpr (kJump) a = pre > thr[j] ? a : 0.f;
  return a;
}

// Push one row of an exact tile (GEMM output, bias not yet added) through the row's top-k.
template <bool kJump>
void scan_row(const float* pre, const float* bias, const float* thr, int64_t col0, int64_t w,
              int64_t row, TopKRows& top) {
  for (int64_t j0 = 0; j0 < w; j0 += kChunk) {
    const int64_t len = std::min(kChunk, w - j0);
    const float floor = top.floor(row);
    float act[kChunk];
    int hit = 0;  // an OR reduction vectorises without -ffast-math; a float max would not
#pragma omp simd reduction(| : hit)
    for (int64_t t = 0; t < len; ++t) {
      act[t] = activate<kJump>(pre[j0 + t] + bias[j0 + t], thr, j0 + t);
      hit |= act[t] > floor;
    }
    if (!hit) continue;
    for (int64_t t = 0; t < len; ++t)
      if (act[t] > top.floor(row)) top.push(row, act[t], col0 + j0 + t);
  }
}

template <bool kJump>
void encode_tiles(const at::Tensor& xc, const at::Tensor& W_enc, const float* bias,
                  const float* thr, int64_t tile_rows, int64_t tile_cols, TopKRows& top) {
  const int64_t n = xc.size(0), m = W_enc.size(1);
  const int64_t n_blocks = (n + tile_rows - 1) / tile_rows;
  const int n_threads = static_cast<int>(std::min<int64_t>(at::get_num_threads(), n_blocks));
  // One [tile_rows * tile_cols] scratch buffer per thread: the only large allocation.
  at::Tensor scratch = at::empty({n_threads, tile_rows * tile_cols}, xc.options());
  // Each thread takes whole row blocks (dynamically: no barrier, robust to a busy core) and
  // sweeps every column tile of W_enc for them; MKL runs single-threaded inside.
  // OpenMP workers do not inherit the caller's thread-local state (inference mode above all: writing
  // into `scratch`, an inference tensor when the caller is in inference mode, aborts outside it).
  const at::ThreadLocalState caller_state;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
  for (int64_t b = 0; b < n_blocks; ++b) {
    at::ThreadLocalStateGuard caller(caller_state);
    at::NoGradGuard no_grad;
    at::Tensor buf = scratch[omp_get_thread_num()];
    const int64_t r0 = b * tile_rows, rows = std::min(tile_rows, n - r0);
    const at::Tensor x_block = xc.narrow(0, r0, rows);  // [rows, d_in]
    for (int64_t c0 = 0; c0 < m; c0 += tile_cols) {
      const int64_t w = std::min(tile_cols, m - c0);
      at::Tensor tile = buf.narrow(0, 0, rows * w).view({rows, w});  // [rows, w]
      at::mm_out(tile, x_block, W_enc.narrow(1, c0, w));  // W tile: [d_in, w], row stride d_sae
      const float* tp = tile.data_ptr<float>();
      for (int64_t r = 0; r < rows; ++r)
        scan_row<kJump>(tp + r * w, bias + c0, kJump ? thr + c0 : nullptr, c0, w, r0 + r, top);
    }
  }
}

// Upper bound on |bf16 estimate + b - float32 score| for one (row, latent) pair, where the
// estimate is bf16(xc) @ bf16(W_enc) accumulated in float32 and stored as bf16:
//   per_norm * |xc_row| * |w_col| + per_estimate * |est| + per_bias * |b| + absolute.
// per_norm: both inputs rounded to bf16 (relative 2^-8 each, so 2u + u^2 per product, and
// sum |x_i w_i| <= |x| |w| by Cauchy-Schwarz), plus float32 accumulation in any order in
// the GEMM (up to 2 roundings per term, as in dot-product instructions) and in our exact
// recompute. per_estimate: the bf16 output rounding, plus the float32 additions that form the
// bound, which per_bias also covers. absolute: subnormals flushed to zero by bf16 dot
// instructions. The float32 score is the kernel's own dot product, so the result is the
// exact path's top-k up to float32 rounding (near-ties may order differently).
struct ScreenSlack {
  float per_norm, per_estimate, per_bias, absolute;

  explicit ScreenSlack(int64_t d_in) {
    const double u = std::ldexp(1.0, -8), u32 = std::ldexp(1.0, -24);
    const double gamma = 3.0 * static_cast<double>(d_in) * u32;
    per_norm = static_cast<float>((2 * u + u * u + (1 + u) * (1 + u) * gamma) * 1.01);
    per_estimate = static_cast<float>((u / (1 - u) + 8 * u32) * 1.01);
    per_bias = static_cast<float>(8 * u32 * 1.01);
    absolute = std::ldexp(1.0f, -100);
  }
};

// Euclidean norm of every row of xc, in double, rounded up so the bound stays an upper bound.
std::vector<float> row_norms(const at::Tensor& xc) {
  const int64_t n = xc.size(0), d = xc.size(1);
  const float* xp = xc.data_ptr<float>();
  std::vector<float> out(n);
  at::parallel_for(0, n, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      double acc = 0;
      for (int64_t p = 0; p < d; ++p) acc += double(xp[r * d + p]) * xp[r * d + p];
      out[r] = static_cast<float>(std::sqrt(acc) * (1 + 1e-6));
    }
  });
  return out;
}

// Euclidean norm of every column of W_enc (any strides), as row_norms.
std::vector<float> column_norms(const at::Tensor& W) {
  const int64_t d = W.size(0), m = W.size(1), s0 = W.stride(0), s1 = W.stride(1);
  const float* wp = W.data_ptr<float>();
  std::vector<float> out(m);
  at::parallel_for(0, m, 1024, [&](int64_t c0, int64_t c1) {
    std::vector<double> acc(c1 - c0, 0.0);
    for (int64_t p = 0; p < d; ++p)
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += double(wp[p * s0 + c * s1]) * wp[p * s0 + c * s1];
    for (int64_t c = c0; c < c1; ++c) out[c] = static_cast<float>(std::sqrt(acc[c - c0]) * (1 + 1e-6));
  });
  return out;
}

// Whether no float32 partial sum of any score can overflow: every partial sum of x . w is
// at most |x| |w| (Cauchy-Schwarz). Then bf16 estimates and both float32 paths stay finite;
// otherwise (or with inf / NaN inputs) only the exact path's semantics are defined.
bool scores_cannot_overflow(const std::vector<float>& x_norm, const std::vector<float>& w_norm) {
  auto largest = [](const std::vector<float>& norms) {  // NaN if any norm is NaN
    double out = 0;
    for (float a : norms) out = std::isnan(a) ? a : std::max(out, static_cast<double>(a));
    return out;
  };
  return largest(x_norm) * largest(w_norm) <= std::numeric_limits<float>::max() / 4.0;
}

// float32 dot product of two contiguous d-vectors: the exact recompute of one score.
inline float dot(const float* a, const float* b, int64_t d) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t p = 0; p < d; ++p) acc += a[p] * b[p];
  return acc;
}

// One column tile of W_enc in the two layouts the screen needs: bf16 [d_in, w] for the GEMM
// and float32 [w, d_in] (transposed) for exact recomputes that read a latent contiguously.
struct ColumnTile {
  at::BFloat16* bf16;
  float* exact;
  int64_t c0, w;
};

// Fill `tile` from W_enc; called inside a parallel region, rows of W split between threads.
// Rows go in blocks of kFillRows so the transposed writes fill whole cache lines.
void fill_tile(const float* wp, int64_t s0, int64_t s1, int64_t d, ColumnTile& tile) {
  constexpr int64_t kFillRows = 16;
#pragma omp for schedule(static)
  for (int64_t p0 = 0; p0 < d; p0 += kFillRows) {
    const int64_t p1 = std::min(d, p0 + kFillRows);
    for (int64_t c = 0; c < tile.w; ++c) {
      for (int64_t p = p0; p < p1; ++p) {
        const float v = wp[p * s0 + (tile.c0 + c) * s1];
        tile.bf16[p * tile.w + c] = at::BFloat16(v);
        tile.exact[c * d + p] = v;
      }
    }
  }
}

// bf16 -> float32 is exact: the bf16 bits are the float's top half. Written on the raw bits
// so the screening loop vectorises (c10::BFloat16's conversion does not).
inline float bf16_bits_to_float(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &wide, sizeof(out));
  return out;
}

// Screen one row's bf16 estimates for a tile; recompute and push the ones that could enter.
template <bool kJump>
void screen_row(const uint16_t* est, const float* x_row, const ColumnTile& tile, int64_t d,
                const float* bias, const float* thr, const float* col_norm, float row_slack,
                float row_offset, const ScreenSlack& slack, int64_t row, TopKRows& top) {
  for (int64_t j0 = 0; j0 < tile.w; j0 += kChunk) {
    const int64_t len = std::min(kChunk, tile.w - j0);
    const float floor = top.floor(row);
    float upper[kChunk];
    int hit = 0;
#pragma omp simd reduction(| : hit)
    for (int64_t t = 0; t < len; ++t) {
      const float e = bf16_bits_to_float(est[j0 + t]), b = bias[j0 + t];
      upper[t] = e + b + row_slack * col_norm[j0 + t] + row_offset +
                 slack.per_estimate * std::fabs(e) + slack.per_bias * std::fabs(b);
      hit |= !(upper[t] <= floor);  // a NaN bound is recomputed too (defensive: see encode)
    }
    if (!hit) continue;
    for (int64_t t = 0; t < len; ++t) {
      if (upper[t] <= top.floor(row)) continue;
      const int64_t j = j0 + t;
      const float a = activate<kJump>(dot(x_row, tile.exact + j * d, d) + bias[j], thr, j);
      if (a > top.floor(row)) top.push(row, a, tile.c0 + j);
    }
  }
}

// Screened encoder: column tiles outside (prepared once, shared), each thread's fixed row
// range inside, so a tile's exact float32 copy is in cache for every recompute against it.
// Until a row has seen 2k latents its floor is -inf and every latent would be recomputed, so
// those first tiles get an exact float32 GEMM instead of the screen.
template <bool kJump>
void encode_screened(const at::Tensor& xc, const at::Tensor& W_enc, const float* bias,
                     const float* thr, const std::vector<float>& x_norm,
                     const std::vector<float>& w_norm, int64_t tile_rows, int64_t tile_cols,
                     int64_t k, TopKRows& top) {
  const int64_t n = xc.size(0), d = xc.size(1), m = W_enc.size(1);
  const int64_t tw = std::min(tile_cols, m);
  const int n_threads = static_cast<int>(std::max<int64_t>(1, at::get_num_threads()));
  const ScreenSlack slack(d);
  const at::Tensor xb = xc.to(at::kBFloat16);  // [N, d_in]
  auto bf16_opts = xc.options().dtype(at::kBFloat16);
  // Two tile buffers: threads fill tile t+1 while a slower thread may still read tile t.
  at::Tensor tiles_bf16 = at::empty({2, d * tw}, bf16_opts);
  at::Tensor tiles_exact = at::empty({2, tw * d}, xc.options());
  at::Tensor est_scratch = at::empty({n_threads, tile_rows * tw}, bf16_opts);
  at::Tensor pre_scratch = at::empty({n_threads, tile_rows * tw}, xc.options());
  const float* xp = xc.data_ptr<float>();
  const float* wp = W_enc.data_ptr<float>();
  const at::ThreadLocalState caller_state;  // see encode_tiles
#pragma omp parallel num_threads(n_threads)
  {
    at::ThreadLocalStateGuard caller(caller_state);
    at::NoGradGuard no_grad;
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t my_begin = n * tid / nt, my_end = n * (tid + 1) / nt;
    for (int64_t c0 = 0, t = 0; c0 < m; c0 += tw, ++t) {
      ColumnTile tile{tiles_bf16[t % 2].data_ptr<at::BFloat16>(),
                      tiles_exact[t % 2].data_ptr<float>(), c0, std::min(tw, m - c0)};
      fill_tile(wp, W_enc.stride(0), W_enc.stride(1), d, tile);  // ends in a barrier
      const at::Tensor w_bf16 = tiles_bf16[t % 2].narrow(0, 0, d * tile.w).view({d, tile.w});
      const at::Tensor w_exact = tiles_exact[t % 2].narrow(0, 0, tile.w * d).view({tile.w, d}).t();
      for (int64_t r0 = my_begin; r0 < my_end; r0 += tile_rows) {
        const int64_t rows = std::min(tile_rows, my_end - r0);
        if (c0 < 2 * k) {
          at::Tensor pre = pre_scratch[tid].narrow(0, 0, rows * tile.w).view({rows, tile.w});
          at::mm_out(pre, xc.narrow(0, r0, rows), w_exact);
          const float* pp = pre.data_ptr<float>();
          for (int64_t r = 0; r < rows; ++r)
            scan_row<kJump>(pp + r * tile.w, bias + c0, kJump ? thr + c0 : nullptr, c0, tile.w,
                            r0 + r, top);
          continue;
        }
        at::Tensor est = est_scratch[tid].narrow(0, 0, rows * tile.w).view({rows, tile.w});
        at::mm_out(est, xb.narrow(0, r0, rows), w_bf16);
        const auto* ep = reinterpret_cast<const uint16_t*>(est.data_ptr<at::BFloat16>());
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t row = r0 + r;
          // absolute * (1 + |x| + |w|) is split between the two row terms.
          const float row_slack = slack.per_norm * x_norm[row] + slack.absolute;
          const float row_offset = slack.absolute * (1 + x_norm[row]);
          screen_row<kJump>(ep + r * tile.w, xp + row * d, tile, d, bias + c0,
                            kJump ? thr + c0 : nullptr, w_norm.data() + c0, row_slack,
                            row_offset, slack, row, top);
        }
      }
    }
  }
}

// Dispatch one activation (ReLU, or JumpReLU when thr is given) to the screened or exact path.
template <bool kJump>
void encode(const at::Tensor& xc, const at::Tensor& W_enc, const float* bias, const float* thr,
            bool screen, int64_t tile_rows, int64_t tile_cols, int64_t k, TopKRows& top) {
  if (screen) {
    const std::vector<float> x_norm = row_norms(xc), w_norm = column_norms(W_enc);
    if (scores_cannot_overflow(x_norm, w_norm)) {
      encode_screened<kJump>(xc, W_enc, bias, thr, x_norm, w_norm, tile_rows, tile_cols, k, top);
      return;
    }
  }
  encode_tiles<kJump>(xc, W_enc, bias, thr, tile_rows, tile_cols, top);
}

}  // namespace

// xc = x - b_dec, already centred: [N, d_in] float32. Returns {values [N, k], indices [N, k]}.
// screen: estimate scores with a bf16 GEMM and recompute only the candidates (same result).
std::vector<at::Tensor> topk_encode(const at::Tensor& xc, const at::Tensor& W_enc,
                                    const at::Tensor& b_enc,
                                    const c10::optional<at::Tensor>& threshold, int64_t k,
                                    int64_t tile_rows, int64_t tile_cols, bool screen) {
  TORCH_CHECK(xc.dim() == 2 && W_enc.dim() == 2 && b_enc.dim() == 1, "bad ranks");
  TORCH_CHECK(xc.size(1) == W_enc.size(0) && b_enc.size(0) == W_enc.size(1), "bad shapes");
  TORCH_CHECK(xc.scalar_type() == at::kFloat && W_enc.scalar_type() == at::kFloat &&
                  b_enc.scalar_type() == at::kFloat, "float32 only");
  TORCH_CHECK(k >= 1 && k <= W_enc.size(1), "need 1 <= k <= d_sae");
  TORCH_CHECK(W_enc.size(1) <= std::numeric_limits<int32_t>::max(), "d_sae must fit in int32");
  TORCH_CHECK(tile_rows >= 1 && tile_cols >= 1, "tiles must be positive");
  const at::Tensor x = xc.contiguous();
  const at::Tensor bias = b_enc.contiguous();
  at::Tensor values = at::empty({x.size(0), k}, x.options());
  at::Tensor indices = at::empty({x.size(0), k}, x.options().dtype(at::kLong));
  if (x.size(0) == 0) return {values, indices};
  TopKRows top(x.size(0), k);
  if (threshold.has_value()) {
    const at::Tensor thr = threshold->to(at::kFloat).contiguous();
    TORCH_CHECK(thr.dim() == 1 && thr.size(0) == W_enc.size(1), "threshold must be [d_sae]");
    encode<true>(x, W_enc, bias.data_ptr<float>(), thr.data_ptr<float>(), screen, tile_rows,
                 tile_cols, k, top);
  } else {
    encode<false>(x, W_enc, bias.data_ptr<float>(), nullptr, screen, tile_rows, tile_cols, k, top);
  }
  top.write(values, indices);
  return {values, indices};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("topk_encode", &topk_encode, "Fused tiled GEMM + per-row top-k (ReLU / JumpReLU), optionally bf16-screened");
}
