"""Stands in for tp_keras.search.runs in worker processes (`--runner=fake_runner`): trains nothing, imports no
TensorFlow, but writes what a run writes (metrics.jsonl, summary.json, a checkpoint, launch.log), resumes from its
checkpoint, calls the per-epoch hook, and fails, diverges, hangs or dies on request (environment variables).

Validation accuracy after epoch e: 0.9 - |log10(lr) + 4| / 10 + e / 100 (best at lr = 1e-4); train accuracy
0.3 + lr * 1000 (below the early-stop threshold for lr < 1e-4).
"""
import json
import math
import os
import signal
import sys
import time

LOG = "launch.log"


def prepare(args):
    if os.environ.get("FAKE_PREPARE_FAIL"):
        from tp_keras.run.data import DataError
        raise DataError(os.environ["FAKE_PREPARE_FAIL"])


def _flags(args):
    return dict(a[2:].split("=", 1) if "=" in a else (a[2:], "true") for a in args)


def run_training(args, workdir, on_epoch_end=None):
    flags = _flags(args)
    seed, epochs, lr = int(flags.get("seed", 42)), int(flags.get("epochs", 2)), float(flags.get("lr", 1e-4))
    os.makedirs(workdir, exist_ok=True)
    log = open(os.path.join(workdir, LOG), "a")
    print(f"=== fake run {' '.join(args)}", file=log, flush=True)
    with open(os.environ["FAKE_CALLS"], "a") as f:
        f.write(json.dumps({"workdir": os.path.basename(workdir), "args": args, "pid": os.getpid()}) + "\n")
    checkpoint = os.path.join(workdir, "checkpoint.json")
    rows = []
    if os.path.exists(checkpoint):
        with open(checkpoint) as f:
            rows = json.load(f)["rows"]
        print(f"resuming from {checkpoint}: epoch {len(rows)} done", file=log, flush=True)
    status = "finished"
    try:
        if str(seed) in os.environ.get("FAKE_FAIL", "").split(","):
            raise RuntimeError(f"boom in seed {seed}")
        for epoch in range(len(rows) + 1, epochs + 1):
            time.sleep(float(os.environ.get("FAKE_EPOCH_SECONDS", "0")))
            val = 0.9 - abs(math.log10(lr) + 4) / 10 + epoch / 100
            row = {"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.3 + lr * 1000, "val_acc": val,
                   "test_acc": val - 0.01 + seed / 1000, "epoch_seconds": 1.0}
            rows.append(row)
            with open(checkpoint, "w") as f:
                json.dump({"rows": rows}, f)
            _write(workdir, rows, "running")
            if on_epoch_end is not None:
                stop = on_epoch_end(row)
                if stop:
                    status = stop
                    break
            if str(seed) in os.environ.get("FAKE_DIVERGE", "").split(","):
                status = f"diverged: non-finite the loss in epoch {epoch}, batch 0"
                break
            if os.environ.get("FAKE_KILL_AFTER") == str(epoch):
                os.kill(os.getpid(), signal.SIGKILL)
            if os.environ.get("FAKE_HANG_AFTER") == str(epoch):
                time.sleep(600)
    except KeyboardInterrupt:
        _write(workdir, rows, "interrupted")
        raise
    finally:
        log.close()
    return _write(workdir, rows, status)


def _write(workdir, rows, status):
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    summary = {"status": status, "epochs_run": len(rows)}
    if rows:
        best = max(range(len(rows)), key=lambda i: (rows[i]["val_acc"], -i))
        summary.update(acc_val_best=rows[best]["val_acc"], epoch_best_acc=best + 1,
                       error_test_val_best=1 - rows[best]["test_acc"], acc_test_last=rows[-1]["test_acc"],
                       loss_train_last=rows[-1]["train_loss"], loss_train_best=min(r["train_loss"] for r in rows),
                       total_seconds=float(len(rows)))
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f)
    return summary


if __name__ == "__main__":
    sys.exit("a module for tests, not a program")
