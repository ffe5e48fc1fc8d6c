// Fused top-k SAE encoder for CPU: topk(act(xc @ W_enc + b_enc), k) without ever
// materialising the [N, d_sae] pre-activation matrix.
//
// The GEMM is tiled over row blocks of xc (parallel, one block per thread at a time) and
// column tiles of W_enc. Each (row block, column tile) product goes through MKL into a small
// per-thread buffer that stays in cache; a per-row min-heap then keeps the running top-k.
// Most tile entries fall below the heap's root, so the scan is vectorised compares and
// the heap is touched rarely.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <vector>

namespace {

constexpr int64_t kChunk = 16;  // columns compared with the heap root before any heap work
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Order used everywhere: larger value first, then smaller latent index.
inline bool better(float va, int64_t ia, float vb, int64_t ib) {
  return va > vb || (va == vb && ia < ib);
}

// Min-heap (root = worst kept entry) over one output row's k (value, index) slots.
struct RowHeap {
  float* v;    // [k]
  int64_t* i;  // [k]
  int64_t k;

  void replace_root(float val, int64_t idx) {
    int64_t pos = 0;
    while (true) {
      int64_t c = 2 * pos + 1;
      if (c >= k) break;
      if (c + 1 < k && better(v[c], i[c], v[c + 1], i[c + 1])) c += 1;
      if (!better(val, idx, v[c], i[c])) break;
      v[pos] = v[c];
      i[pos] = i[c];
      pos = c;
    }
    v[pos] = val;
    i[pos] = idx;
  }
};

// ReLU, or SAELens JumpReLU relu(pre) * (pre > thr).
template <bool kJump>
inline float activate(float pre, const float* thr, int64_t j) {
  float a = pre > 0.f ? pre : 0.f;
  if constexpr (kJump) a = pre > thr[j] ? a : 0.f;
  return a;
}

// Push one tile row (raw GEMM output, bias not yet added) through the row's heap.
// Columns arrive in increasing index order, so a strict '>' keeps the earliest of ties.
template <bool kJump>
void scan_row(const float* pre, const float* bias, const float* thr, int64_t col0,
              int64_t w, RowHeap& heap) {
  float root = heap.v[0];
  float act[kChunk];
  int64_t j = 0;
  for (; j + kChunk <= w; j += kChunk) {
    int hit = 0;  // an OR reduction vectorises without -ffast-math; a float max would not
#pragma omp simd reduction(| : hit)
    for (int64_t t = 0; t < kChunk; ++t) {
      act[t] = activate<kJump>(pre[j + t] + bias[j + t], thr, j + t);
      hit |= act[t] > root;
    }
    if (!hit) continue;
    for (int64_t t = 0; t < kChunk; ++t) {
      if (act[t] > root) {
        heap.replace_root(act[t], col0 + j + t);
        root = heap.v[0];
      }
    }
  }
  for (; j < w; ++j) {
    float a = activate<kJump>(pre[j] + bias[j], thr, j);
    if (a > root) {
      heap.replace_root(a, col0 + j);
      root = heap.v[0];
    }
  }
}

// Sort every row's heap into descending order, in place.
void sort_rows(at::Tensor& values, at::Tensor& indices) {
  const int64_t n = values.size(0), k = values.size(1);
  float* vp = values.data_ptr<float>();
  int64_t* ip = indices.data_ptr<int64_t>();
  at::parallel_for(0, n, 64, [&](int64_t r0, int64_t r1) {
    std::vector<int64_t> order(k);
    std::vector<float> v(k);
    std::vector<int64_t> ix(k);
    for (int64_t r = r0; r < r1; ++r) {
      float* rv = vp + r * k;
      int64_t* ri = ip + r * k;
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return better(rv[a], ri[a], rv[b], ri[b]);
      });
      for (int64_t t = 0; t < k; ++t) { v[t] = rv[order[t]]; ix[t] = ri[order[t]]; }
      std::copy(v.begin(), v.end(), rv);
      std::copy(ix.begin(), ix.end(), ri);
    }
  });
}

template <bool kJump>
void encode_tiles(const at::Tensor& xc, const at::Tensor& W_enc, const float* bias,
                  const float* thr, int64_t tile_rows, int64_t tile_cols,
                  at::Tensor& values, at::Tensor& indices) {
  const int64_t n = xc.size(0), m = W_enc.size(1), k = values.size(1);
  const int64_t n_blocks = (n + tile_rows - 1) / tile_rows;
  const int n_threads = static_cast<int>(std::min<int64_t>(at::get_num_threads(), n_blocks));
  // One [tile_rows * tile_cols] scratch buffer per thread: the only large allocation.
  at::Tensor scratch = at::empty({n_threads, tile_rows * tile_cols}, xc.options());
  float* vp = values.data_ptr<float>();
  int64_t* ip = indices.data_ptr<int64_t>();
  // Each thread takes whole row blocks (dynamically: no barrier, robust to a busy core) and
  // sweeps every column tile of W_enc for them; MKL runs single-threaded inside.
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
  for (int64_t b = 0; b < n_blocks; ++b) {
    at::NoGradGuard no_grad;
    at::Tensor buf = scratch[omp_get_thread_num()];
    const int64_t r0 = b * tile_rows, rows = std::min(tile_rows, n - r0);
    const at::Tensor x_block = xc.narrow(0, r0, rows);  // [rows, d_in]
    for (int64_t c0 = 0; c0 < m; c0 += tile_cols) {
      const int64_t w = std::min(tile_cols, m - c0);
      at::Tensor tile = buf.narrow(0, 0, rows * w).view({rows, w});  // [rows, w]
      at::mm_out(tile, x_block, W_enc.narrow(1, c0, w));  // W tile: [d_in, w], row stride d_sae
      const float* tp = tile.data_ptr<float>();
      for (int64_t r = 0; r < rows; ++r) {
        RowHeap heap{vp + (r0 + r) * k, ip + (r0 + r) * k, k};
        scan_row<kJump>(tp + r * w, bias + c0, kJump ? thr + c0 : nullptr, c0, w, heap);
      }
    }
  }
}

}  // namespace

// xc = x - b_dec, already centred: [N, d_in] float32. Returns {values [N, k], indices [N, k]}.
std::vector<at::Tensor> topk_encode(const at::Tensor& xc, const at::Tensor& W_enc,
                                    const at::Tensor& b_enc,
                                    const c10::optional<at::Tensor>& threshold, int64_t k,
                                    int64_t tile_rows, int64_t tile_cols) {
  TORCH_CHECK(xc.dim() == 2 && W_enc.dim() == 2 && b_enc.dim() == 1, "bad ranks");
  TORCH_CHECK(xc.size(1) == W_enc.size(0) && b_enc.size(0) == W_enc.size(1), "bad shapes");
  TORCH_CHECK(xc.scalar_type() == at::kFloat && W_enc.scalar_type() == at::kFloat &&
                  b_enc.scalar_type() == at::kFloat, "float32 only");
  TORCH_CHECK(k >= 1 && k <= W_enc.size(1), "need 1 <= k <= d_sae");
  TORCH_CHECK(tile_rows >= 1 && tile_cols >= 1, "tiles must be positive");
  const at::Tensor x = xc.contiguous();
  const at::Tensor bias = b_enc.contiguous();
  at::Tensor values = at::full({x.size(0), k}, kNegInf, x.options());
  at::Tensor indices = at::full({x.size(0), k}, -1, x.options().dtype(at::kLong));
  if (x.size(0) == 0) return {values, indices};
  if (threshold.has_value()) {
    const at::Tensor thr = threshold->to(at::kFloat).contiguous();
    TORCH_CHECK(thr.dim() == 1 && thr.size(0) == W_enc.size(1), "threshold must be [d_sae]");
    encode_tiles<true>(x, W_enc, bias.data_ptr<float>(), thr.data_ptr<float>(), tile_rows,
                       tile_cols, values, indices);
  } else {
    encode_tiles<false>(x, W_enc, bias.data_ptr<float>(), nullptr, tile_rows, tile_cols,
                        values, indices);
  }
  sort_rows(values, indices);
  return {values, indices};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("topk_encode", &topk_encode, "Fused tiled GEMM + per-row top-k (ReLU / JumpReLU)");
}
