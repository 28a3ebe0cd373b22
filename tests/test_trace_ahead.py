"""Tracing ahead on a thread (tp_keras/run/trace_ahead.py): the thread makes exactly the traces a run needs, in
the run's order, so the run traces nothing more and its results are bit-identical to a run without it. (The
every-method check is tests/test_loop.py's, whose one-batch-per-call side runs without the thread.)"""
import pytest

from test_loop import TINY, _assert_identical, _run
from tp_keras.run import trace_ahead


def test_batch_sizes_in_order_of_first_appearance():
    assert trace_ahead.batch_sizes(77, 16) == [16, 13]
    assert trace_ahead.batch_sizes(64, 16) == [16]
    assert trace_ahead.batch_sizes(9, 16) == [9]
    assert trace_ahead.batch_sizes(0, 16) == []


def test_a_failing_job_ends_the_thread_quietly_and_later_jobs_do_not_run():
    done = []

    def fail():
        raise RuntimeError("traced badly")

    ahead = trace_ahead.TraceAhead([lambda: done.append(1), fail, lambda: done.append(2)]).start()
    ahead.join()
    assert done == [1]


def _tracing_counts(trainer, loops):
    steps = {"train": trainer.train_step, "feedback": trainer.feedback_step, "eval": trainer.eval_step}
    steps.update({f"{name}_loop": lp._loop for name, lp in loops.items()})
    return {name: fn.experimental_get_tracing_count() for name, fn in steps.items()}


@pytest.mark.slow
@pytest.mark.parametrize("steps_per_call, feedback_passes", [(1, 1), (3, 1), (1, 0)])
def test_the_run_traces_nothing_the_thread_did_not(mnist_dir, tmp_path, steps_per_call, feedback_passes):
    from tp_keras.run import experiment, factories, passes
    from tp_keras.run.config import Config
    from tp_keras.run.data import load_dataset
    config = Config.paper("ddtp_linear", data_dir=mnist_dir, epochs=2, epochs_fb=feedback_passes,
                          extra_fb_epochs=feedback_passes, steps_per_call=steps_per_call, **TINY).validate()
    dataset = load_dataset(config.dataset, mnist_dir, seed=config.seed, validation_size=config.validation_size)
    trainer = factories.build_trainer(config, factories.build_model(config, dataset))
    batches = passes.Batches(dataset.train, config.batch_size, config.seed)
    multi = passes.MultiSteps(config, trainer, batches, lambda *a: None)
    loops = {name: kw["multi_step"] for name, kw in (("train", multi.train), ("feedback", multi.feedback)) if kw}
    assert bool(loops) == (steps_per_call > 1)

    trace_ahead.for_run(config, trainer, batches, dataset, multi, None).start().join()
    ahead = _tracing_counts(trainer, loops)
    # 77 training rows in batches of 16 (full and last), 23 validation and 40 test rows (full and two last sizes:
    # reduce_retracing's relaxed trace serves the second); a loop per step when it runs many batches per call.
    # Without feedback-only passes the feedback-only step is never called, and the thread leaves it untraced.
    assert ahead == {"train": 2, "feedback": 2 if feedback_passes else 0, "eval": 2,
                     **{f"{name}_loop": 1 for name in loops}}

    # The run's own loops are new objects: only the steps' traces carry over, and the run makes none of those.
    summary = experiment.train_and_evaluate(config, str(tmp_path), dataset=dataset, trainer=trainer)
    assert summary["status"] == "finished"
    after = _tracing_counts(trainer, {})
    assert after == {k: v for k, v in ahead.items() if not k.endswith("_loop")}

    # Resumed from its last epoch's checkpoint, a run trains nothing more: no thread, no trace.
    resumed_at_the_end = trace_ahead.for_run(config, trainer, batches, dataset, multi, config.epochs)
    assert resumed_at_the_end._jobs == [] and not resumed_at_the_end.start()._thread.is_alive()
    assert trace_ahead.for_run(config, trainer, batches, dataset, multi, config.epochs - 1)._jobs


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dtpdrl", "ddtp_control"])
def test_float64_runs_are_bit_identical_with_and_without_the_thread(mnist_dir, tmp_path, monkeypatch, method):
    with_thread = _run(mnist_dir, tmp_path / "with", method, 1, precision="float64")
    monkeypatch.setattr(trace_ahead, "ENABLED", False)
    without = _run(mnist_dir, tmp_path / "without", method, 1, precision="float64")
    _assert_identical(with_thread, without)
