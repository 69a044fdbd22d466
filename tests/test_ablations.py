"""bench/ablations.py on tiny settings: every variant's numbers land in the JSON and the table, runs resume."""

import json

import pytest


@pytest.fixture(scope="module")
def ablations(load_script):
    return load_script("bench/ablations.py")


def test_two_variants_two_seeds_write_json_markdown_and_plot(ablations, tmp_path, capsys):
    out, results = tmp_path / "runs", tmp_path / "results"
    argv = ["--variants", "full", "scratch", "--seeds", "0", "1", "--steps", "2", "--eval-every", "1",
            "--num-videos", "2", "--batch-size", "2", "--ddim-steps", "2", "--num-clips", "8", "--preset", "tiny",
            "--out-dir", str(out), "--results-dir", str(results)]
    merged = ablations.main(argv)
    runs = json.loads((results / "ablations.json").read_text())["runs"]
    assert runs == merged["runs"] and [(r["variant"], r["seed"]) for r in runs] == [
        ("real", 0), ("real", 1), ("full", 0), ("full", 1), ("scratch", 0), ("scratch", 1)]
    real, runs = runs[:2], runs[2:]
    assert all(r["points"][0]["fvd_md_direction_accuracy"] == 1.0 for r in real)  # held-out real clips
    for run in runs:
        assert run["done"] and [p["step"] for p in run["points"]] == [0, 1, 2]
        for point in run["points"]:
            assert point["videos"] == 2 and point["fvd_md"] >= 0
            assert all(0 <= point[k] <= 1 for k in ablations.METRICS if k != "fvd_md")
    full, scratch = runs[0]["points"], runs[2]["points"]
    assert full[0]["fvd_md"] != scratch[0]["fvd_md"]  # pretrained 2D weights vs random ones
    table = (results / "ablations.md").read_text()
    assert table.index("| real | 0, 1 | 0 |") < table.index("| full | 0, 1 | 2 |")
    assert "| full | 0, 1 | 2 |" in table and "| scratch | 0, 1 | 2 |" in table and " ± " in table
    assert (results / "ablations.png").stat().st_size > 0
    assert (out / "full-seed0" / "checkpoint" / "config.json").is_file()
    capsys.readouterr()

    ablations.main(argv)  # everything is done: skipped, the report is the same
    assert capsys.readouterr().out.count("done already, skipped") == 4
    assert json.loads((results / "ablations.json").read_text())["runs"] == real + runs
    ablations.main(["--report", "--out-dir", str(out), "--results-dir", str(results)])
    assert json.loads((results / "ablations.json").read_text())["runs"] == real + runs


def test_a_run_killed_after_saving_a_point_scores_it_on_resume(ablations, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["--variants", "full", "--seeds", "0", "--steps", "2", "--eval-every", "2", "--num-videos", "2",
            "--batch-size", "2", "--ddim-steps", "2", "--num-clips", "8", "--out-dir", str(out),
            "--results-dir", str(tmp_path / "results")]
    first = ablations.main(argv)["runs"][1]  # after the "real" row
    path = out / "full-seed0" / "results.json"
    killed = {**first, "points": first["points"][:1], "done": False}  # step 2 saved, never scored
    path.write_text(json.dumps(killed))
    capsys.readouterr()
    again = ablations.main(argv)["runs"][1]
    assert [p["step"] for p in again["points"]] == [0, 2] and again["done"]
    # the same weights (stored in float16), prompts and noise: the same scores
    assert again["points"][1]["fvd_md"] == pytest.approx(first["points"][1]["fvd_md"], rel=1e-3)
    assert again["points"][1]["digit_accuracy"] == first["points"][1]["digit_accuracy"]
    assert capsys.readouterr().out.count("full seed 0 step") == 1  # only the missing point was scored
