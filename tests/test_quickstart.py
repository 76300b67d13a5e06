"""``advbench quickstart`` end to end at a tiny size: every listed defense trains (fine-tuned from the
standard run), is attacked and reported; a second call reuses the finished runs."""

from __future__ import annotations

from advbench import runs
from advbench.api.quickstart import QUICKSTART, run_quickstart


def test_quickstart_trains_attacks_and_reports_every_defense(tmp_path):
    out = tmp_path / "qs"
    text = run_quickstart(out=out, epochs=1, n_train=256, n_eval=40, quiet=True)
    names = [d for d, _ in QUICKSTART]
    assert {"standard", "pgd-at", "trades", "p-sat", "soar", "grad-reg-fd"} <= set(names)
    for defense in names:
        run = out / defense
        assert runs.read_json(run / "summary.json")["status"] == "completed"
        result = runs.read_json(run / "attacks" / "pgd-lite.json")
        assert result["n_eval"] == result["clean"]["n"] == len(result["clean"]["correct"]) == 40
        config = runs.read_json(run / "config.json")
        if defense != "standard":  # fine-tuned from the standard run's best checkpoint
            assert config["config"]["init_from"] == str(out / "standard")
        assert f"| {defense}" in text
    soar = runs.read_json(out / "soar" / "config.json")["config"]
    assert (soar["optimizer"], soar["lr"]) == ("sgd", 0.001)
    before = {d: (out / d / "checkpoints" / "last.pt").stat().st_mtime_ns for d in names}
    again = run_quickstart(out=out, epochs=1, n_train=256, n_eval=40, quiet=True)
    assert {d: (out / d / "checkpoints" / "last.pt").stat().st_mtime_ns for d in names} == before
    assert again.split("\nruns:")[0] == text.split("\nruns:")[0]
