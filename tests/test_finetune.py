import json
import numpy as np
import pytest
import torch

from medxfer.cli import main
from medxfer.data import read_chestxray14
from medxfer.finetune import finetune
from medxfer.head import BottleneckNet
from medxfer.model_io import TrainedModel
from medxfer.pipeline import features_for_model
from medxfer.settings import FinetuneSettings

pytestmark = pytest.mark.slow  # fine-tuning (and a DDP step on two processes)


def test_one_finetuning_step_changes_only_the_opened_blocks(make_cxr14, sample_table, tmp_path):
    ds = read_chestxray14(make_cxr14(sample_table["image_id"][:40].tolist()))
    from medxfer.backbones import create_backbone
    before = create_backbone("tiny_random_test").state_dict()
    model = finetune(ds, settings=FinetuneSettings(backbone="tiny_random_test", unfreeze=1,
                                                   max_steps=1, batch_size=8, device="cpu"),
                     progress=False)
    after = model.backbone_state
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("trunk.2.") for k in changed)  # the last block only
    assert model.metrics["steps"] == 1
    model.save(tmp_path / "m")
    back = TrainedModel.load(tmp_path / "m")
    assert back.backbone["finetuned_sha256"] == model.backbone["finetuned_sha256"]
    # new images go through the fine-tuned backbone, and the features are accepted
    fs = features_for_model(back, ds, cache=tmp_path / "feats", progress=False, num_workers=0)
    assert fs.manifest["backbone"]["finetuned_sha256"] == model.backbone["finetuned_sha256"]
    np.testing.assert_allclose(back.predict_proba(fs.X), model.predict_proba(fs.X))


def test_features_of_the_base_backbone_are_refused_by_a_finetuned_model(make_cxr14, sample_table, tmp_path, capsys):
    root = make_cxr14(sample_table["image_id"][:30].tolist())
    assert main(["-q", "finetune", str(root), "--backbone", "tiny_random_test", "--out", str(tmp_path / "m"),
                 "--max-steps", "2", "--device", "cpu"]) == 0
    main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(tmp_path / "f")])
    capsys.readouterr()
    assert main(["-q", "evaluate", str(tmp_path / "m"), str(tmp_path / "f"), "--out", str(tmp_path / "e")]) == 2
    assert "finetuned_sha256" in capsys.readouterr().err
    # its own training images: refused, then allowed with the report saying so first
    assert main(["-q", "evaluate", str(tmp_path / "m"), str(root), "--out", str(tmp_path / "e2"),
                 "--n-boot", "20"]) == 2
    assert "belong to patients the model was trained on" in capsys.readouterr().err
    assert main(["-q", "evaluate", str(tmp_path / "m"), str(root), "--out", str(tmp_path / "e2"),
                 "--n-boot", "20", "--allow-training-patients"]) == 0


def test_a_ddp_step_on_two_cpu_processes_equals_the_one_process_step(make_cxr14, sample_table, tmp_path):
    """torchrun with 2 processes (Gloo): each takes half of every global batch and
    DistributedDataParallel averages the gradients; after one optimizer step the weights
    equal the one-process step on the same global batch (up to floating-point order)."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    root = make_cxr14(sample_table["image_id"][:40].tolist())
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    args = ["-m", "medxfer", "-q", "finetune", str(root), "--backbone", "tiny_random_test",
            "--max-steps", "1", "--batch-size", "8", "--no-augment", "--device", "cpu"]
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node=2", *args, "--out", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    for name in ("model.safetensors", "backbone.safetensors"):
        a, b = load_file(str(tmp_path / "one" / name)), load_file(str(tmp_path / "two" / name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{name}:{k}")
    for run in ("one", "two"):  # one optimizer step was taken in each
        meta = json.loads((tmp_path / run / "model.json").read_text())
        assert meta["selection_metrics"]["steps"] == 1


def test_finetuning_through_the_image_cache_trains_the_same_weights(make_cxr14, sample_table, tmp_path):
    """`--image-cache` (and decoding workers) change where pixels come from, not the pixels:
    the weights after two steps are those of a run that decodes every image itself, and the
    cache is filled for later epochs and runs. The run reports its training images/s."""
    ds = read_chestxray14(make_cxr14(sample_table["image_id"][:24].tolist()))
    base = dict(backbone="tiny_random_test", max_steps=2, batch_size=8, device="cpu")
    plain = finetune(ds, settings=FinetuneSettings(**base), progress=False)
    cached = finetune(ds, settings=FinetuneSettings(**base, image_cache=str(tmp_path / "ic"), workers=1),
                      progress=False)
    assert len(list((tmp_path / "ic").rglob("*.npy"))) == len(ds)
    for k, v in plain.backbone_state.items():
        assert torch.equal(v, cached.backbone_state[k]), k
    assert plain.metrics["train_images_per_s"] > 0


def test_finetune_validates_on_the_network_device(monkeypatch, make_cxr14, sample_table):
    """Validation batches are scored by the network where it lives (fake CUDA check: the
    device the code resolves is recorded and must be the one every forward pass ran on)."""
    from medxfer.data import read_chestxray14
    from medxfer.finetune import finetune

    ds = read_chestxray14(make_cxr14(sample_table["image_id"][:30].tolist()))
    seen = []
    original = BottleneckNet.forward

    def spy(self, x):
        seen.append((x.device, self.head.weight.device))
        return original(self, x)
    monkeypatch.setattr(BottleneckNet, "forward", spy)
    model = finetune(ds, settings=FinetuneSettings(backbone="tiny_random_test", max_steps=2,
                                                   batch_size=8, device="auto"), progress=False)
    assert seen and all(a == b for a, b in seen)
    assert model.config["finetune"]["device"] == "cpu"
