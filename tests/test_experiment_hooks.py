"""train_and_evaluate's per-epoch hook (what a hyper-parameter search prunes with)."""
import json

import pytest

from tp_keras.run.config import Config

TINY = dict(num_hidden=2, size_hidden=8, batch_size=16, validation_size=20, progress=False)


@pytest.mark.slow
def test_on_epoch_end_sees_every_epoch_and_can_stop_the_run(mnist_dir, tmp_path):
    from tp_keras.run.experiment import train_and_evaluate
    config = Config.paper("ddtp_linear", data_dir=mnist_dir, epochs=4, epochs_fb=1, extra_fb_epochs=0, **TINY)
    seen = []

    def hook(row):
        seen.append(row["epoch"])
        return "pruned: stopped by the hook" if row["epoch"] == 2 else None

    summary = train_and_evaluate(config, str(tmp_path), on_epoch_end=hook)
    assert seen == [1, 2]  # training epochs only (not the pre-training row), none after the stop
    assert summary["status"] == "pruned: stopped by the hook"
    assert summary["epochs_run"] == 2
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == summary["status"]
