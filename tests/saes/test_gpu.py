"""The same dictionaries on CUDA (Triton kernel path); skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

import saes
from saes import registry
from saes.training import TrainConfig, Trainer
from workbench.metrics import fvu

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("name", registry.names(fit="gradient"))
def test_cuda_encode_matches_cpu(name, tmp_path):
    cpu = saes.create(name, d_in=64, d_sae=512, hook_point="blocks.0.hook_resid_post")
    with torch.no_grad():
        cpu.b_enc.normal_(0, 0.3)
    x = torch.randn(300, 64)
    gpu = saes.create(name, d_in=64, d_sae=512).to("cuda")
    gpu.load_state_dict(cpu.state_dict())
    assert torch.allclose(gpu.encode_dense(x.cuda()).cpu(), cpu.encode_dense(x), atol=1e-4)
    assert torch.allclose(gpu(x.cuda())[0].cpu(), cpu(x)[0], atol=1e-4)
    gpu.save(tmp_path)
    assert torch.allclose(saes.Dictionary.load(tmp_path).encode_dense(x), cpu.encode_dense(x), atol=1e-4)


def test_topk_trains_on_cuda_and_resumes(sparse_data, tmp_path):
    batches = [b.cuda() for b in sparse_data.batches(300, batch_size=256)]
    cfg = TrainConfig(total_steps=300, lr=4e-3, warmup_steps=20, dead_after_tokens=20_000,
                      checkpoint_dir=str(tmp_path), checkpoint_every=100, progress_bar=False)
    sae = saes.create("topk", d_in=32, d_sae=256, k=4).to("cuda")
    Trainer(sae, cfg).fit(batches)
    held_out = sparse_data.batches(1, batch_size=2048, seed=99)[0].cuda()
    with torch.no_grad():
        assert fvu(held_out, sae(held_out)[0]).item() < 0.2
    resumed = saes.create("topk", d_in=32, d_sae=256, k=4).to("cuda")
    trainer = Trainer(resumed, cfg)
    trainer.load_checkpoint(tmp_path / "step_000000300")
    assert trainer.state.step == 300 and torch.equal(resumed.W_dec, sae.W_dec)
