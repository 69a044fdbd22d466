"""torchrun data parallelism on CPU (gloo): 2 processes give the loss curve and weights of 1 process."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

STAGE = textwrap.dedent('''
    import sys, torch
    from minimagic import distributed
    from minimagic.train import Stage, TrainConfig, train

    class Regression(Stage):
        """y = x_0 + x_1 from the run's generator: no other randomness, so 1 and 2 processes must agree."""
        name = "regression"
        def __init__(self):
            torch.manual_seed(0)
            self.model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        def batch(self, batch_size, generator):
            x = torch.randn(batch_size, 8, generator=generator)
            return {"x": x, "y": x[:, :2].sum(1, keepdim=True)}
        def loss(self, model, batch, generator):
            return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
        def preview(self, model, path, generator):
            pass

    if __name__ == "__main__":
        cfg = TrainConfig(steps=20, batch_size=8, lr=1e-2, warmup=1, ema_decay=0.9, log_every=1, preview_every=1000,
                          device="cpu")
        model = train(Regression(), cfg, sys.argv[1])
        if distributed.is_main():
            torch.save(model.state_dict(), sys.argv[1] + "/final.pt")
        distributed.teardown()
''')


def losses(run_dir: Path) -> list[float]:
    with open(run_dir / "log.csv", newline="") as file:
        return [float(row["loss"]) for row in csv.DictReader(file)]


def launch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    launch([sys.executable, str(script), str(tmp_path / "one")], tmp_path)
    launch(torchrun(str(script), str(tmp_path / "two")), tmp_path)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 20
    assert sum(one[-5:]) < 0.5 * sum(one[:5])  # it trains
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-4, atol=1e-6)
    final_one, final_two = torch.load(tmp_path / "one" / "final.pt"), torch.load(tmp_path / "two" / "final.pt")
    for name, value in final_one.items():
        torch.testing.assert_close(final_two[name], value, rtol=1e-4, atol=1e-6)


def test_torchrun_cli_trains_a_stage_and_saves_once(tmp_path):
    out = tmp_path / "vae"
    result = launch(torchrun("-m", "minimagic", "train", "vae", "--preset", "tiny", "--steps", "2", "--batch-size",
                             "4", "--device", "cpu", "--run-dir", str(tmp_path / "run"), "--out", str(out)), tmp_path)
    assert result.stdout.count("saved vae checkpoint") == 1
    meta = (out / "config.json").read_text()
    assert "torchrun --nproc_per_node 2 -m minimagic train vae" in meta


def test_batch_must_split_evenly_over_the_processes(tmp_path):
    result = subprocess.run(torchrun("-m", "minimagic", "train", "vae", "--preset", "tiny", "--steps", "1",
                                     "--batch-size", "3", "--device", "cpu", "--run-dir", str(tmp_path / "run")),
                            cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert "batch_size 3 must be divisible by the 2 torchrun processes" in result.stderr


NOISY_STAGE = textwrap.dedent('''
    import json, sys, torch
    from minimagic import distributed
    from minimagic.diffusion import DiffusionConfig, GaussianDiffusion
    from minimagic.stages.latent_diffusion import LatentDiffusionStage
    from minimagic.train import TrainConfig, train

    class Denoiser(torch.nn.Module):
        """eps_theta(x_t, t, context): a 1x1 conv that records the timesteps it is given."""
        def __init__(self):
            super().__init__()
            self.conv, self.seen = torch.nn.Conv2d(2, 2, 1), []
        def forward(self, x_t, t, context):
            self.seen.append(t.tolist())
            return self.conv(x_t) + context.mean()

    class Noisy(LatentDiffusionStage):
        """The t2i/t2v loss (t and eps drawn by the diffusion loss) on latents drawn from the run's generator."""
        name = "noisy"
        def __init__(self):
            torch.manual_seed(0)
            self.model, self.diffusion = Denoiser(), GaussianDiffusion(DiffusionConfig())
        def batch(self, batch_size, generator):
            x0 = torch.randn(batch_size, 2, 4, 4, generator=generator)
            return {"x0": x0, "context": torch.zeros(batch_size, 1, 1)}
        def preview(self, model, path, generator):
            pass

    if __name__ == "__main__":
        stage = Noisy()
        model = train(stage, TrainConfig(steps=4, batch_size=8, lr=1e-2, warmup=1, log_every=1, device="cpu"),
                      sys.argv[1])
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        with open(f"{sys.argv[1]}/t_rank{rank}.json", "w") as file:
            json.dump(stage.model.seen, file)
        if distributed.is_main():
            torch.save(model.state_dict(), sys.argv[1] + "/final.pt")
        distributed.teardown()
''')


def test_every_rank_draws_its_own_timesteps_and_noise_and_the_run_is_reproducible(tmp_path):
    script = tmp_path / "noisy.py"
    script.write_text(NOISY_STAGE)
    for name in ("first", "second"):
        launch(torchrun(str(script), str(tmp_path / name)), tmp_path)
    ranks = [json.loads((tmp_path / "first" / f"t_rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4 and all(len(t) == 4 for t in ranks[0])  # 4 steps, 4 clips a rank
    assert all(a != b for a, b in zip(*ranks, strict=True)), "both ranks drew the same timesteps"
    for r in (0, 1):  # the same run again draws the same numbers on every rank
        name = f"t_rank{r}.json"
        assert (tmp_path / "second" / name).read_text() == (tmp_path / "first" / name).read_text()
    assert losses(tmp_path / "first") == losses(tmp_path / "second")
    first, second = (torch.load(tmp_path / name / "final.pt") for name in ("first", "second"))
    assert all(torch.equal(first[k], second[k]) for k in first)


LOSS_NOISE = textwrap.dedent('''
    import torch, torch.distributed as dist
    from minimagic import distributed

    dist.init_process_group("gloo")
    run = torch.Generator().manual_seed(0)
    noise = torch.randn(3, generator=distributed.loss_generator(run, step=1))
    batch = torch.randn(3, generator=run)  # the run's generator was left alone: the same batch on every rank
    gathered = [torch.zeros(6) for _ in range(2)]
    dist.all_gather(gathered, torch.cat([noise, batch]))
    if dist.get_rank() == 0:
        assert not torch.equal(gathered[0][:3], gathered[1][:3]), "loss noise must differ between ranks"
        assert torch.equal(gathered[0][3:], gathered[1][3:]), "batches must agree"
        assert torch.equal(batch, torch.randn(3, generator=torch.Generator().manual_seed(0)))
        print("ok")
    dist.destroy_process_group()
''')


def test_ranks_draw_independent_loss_noise_and_the_same_batches(tmp_path):
    script = tmp_path / "noise.py"
    script.write_text(LOSS_NOISE)
    assert "ok" in launch(torchrun(str(script)), tmp_path).stdout


def test_without_torchrun_nothing_is_distributed(monkeypatch):
    from minimagic import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    device, rank, world_size = distributed.setup(torch.device("cpu"), batch_size=3)
    assert (device.type, rank, world_size) == ("cpu", 0, 1) and distributed.is_main()
    batch = {"x": torch.arange(6)}
    assert distributed.shard(batch) is batch
    generator = torch.Generator()
    assert distributed.loss_generator(generator, step=3) is generator  # one process: the run's own generator
