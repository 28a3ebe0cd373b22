"""`train_and_evaluate_population(configs, workdirs)`: K runs of one rule and one architecture, differing by seed,
trained as one `core.population.Population`, each writing the ordinary workdir of its single run.

Each member's workdir holds what `experiment.train_and_evaluate` writes for its config (config.json, metrics.jsonl,
summary.json, checkpoint.npz, tb/), through the same `records.RunFolder`, so the tables, the figures and --resume
read it as a single run's; its numbers (metrics but the timings, checkpoint arrays) are the single run's with its
seed, bit for bit where the population's are (tests/test_population_run.py). The schedule is the single run's
(`schedule.train_epochs`): `epochs_fb` feedback-only passes, then per epoch a training pass, `extra_fb_epochs`
feedback-only passes, evaluation of the validation and test sets, then per member its checkpoint, metrics line and
summary.

Data. A member loads its data as its single run does (`data.dataset_options`: the validation split depends on the
seed); the members' training sets sit once on the device (one copy per distinct set: identical sets, e.g. with
--no_val_set, share one) and each pass reads member k's rows in its single run's order (`passes.pass_permutation`
of its seed and pass index), through `Population.loop` (many batches per compiled call, `--steps_per_call`) or
`Population.train_step` (one batch, e.g. the last, smaller one). Evaluation runs per member (`passes.evaluate`).

Faults. A member that goes non-finite stops alone (the population leaves its last good state): its summary.json says
"diverged: ..." as its single run's would, its last good checkpoint is kept, the others go on. A pruned member
(--prune_early) stops being recorded. SIGINT/SIGTERM stop every member after the current call with status
"interrupted". --resume continues each member from its checkpoint: a member whose run has ended (its checkpoint at
--epochs, or its summary diverged or pruned) is left as it is; a member whose checkpoint is ahead of the others (a
kill between two members' checkpoints) sits out the stages it has done (trained with the others, then restored), so
the resumed members equal an uninterrupted population's.

Not supported (refused in one line by `check_supported`): angle logging, augmentation, multi-worker strategies.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tp_keras.core import loop
from tp_keras.core.health import HEALTH_KEYS, first_problem_stacked
from tp_keras.core.population import Population
from tp_keras.core.optimizers import set_learning_rates
from tp_keras.run import faults, memory, precision
from tp_keras.run.config import Config, ConfigError
from tp_keras.run.data import Dataset, dataset_fingerprint, dataset_options, load_dataset
from tp_keras.run.experiment import check_splits
from tp_keras.run.factories import build_model, build_trainer
from tp_keras.run.passes import evaluate, pass_permutation
from tp_keras.run.records import RunFolder, RunSummary
from tp_keras.run.schedule import PRUNE_ACCURACY, forward_learning_rates

ENDED = ("diverged", "pruned")  # summary statuses after which --resume leaves a member as it is


def member_configs(config: Config, seeds) -> list[Config]:
    """One config per seed, every other setting `config`'s."""
    return [dataclasses.replace(config, seed=int(s)) for s in seeds]


def member_workdirs(seeds, *, run_name: str, workdir: str | None = None) -> list[str]:
    """Each member's workdir: runs/<run_name>_seed<S> (a single run's default), or <workdir>/seed_<S> (a folder of
    seed folders, as the tables and figures read a sweep's)."""
    if workdir is None:
        return [os.path.join("runs", f"{run_name}_seed{s}") for s in seeds]
    return [os.path.join(workdir, f"seed_{s}") for s in seeds]


def check_supported(config: Config) -> None:
    """Refuses (ConfigError, one line naming the flag) a setting a population does not train."""
    if config.log_angles:
        raise ConfigError("log_angles", "angle logging runs in single runs only; drop --log_angles or train one "
                                        "seed at a time")
    if config.augment != "none":
        raise ConfigError("augment", "a population reads its members' rows of one stored training set, without "
                                     "augmentation; drop --augment or train one seed at a time")


class _MemberOrder:
    """A member's shuffling, as a single run's `passes.Batches` draws it: pass `passes` reads its training rows in
    `pass_permutation(seed, passes, rows)`, offset to where its rows start in the shared training set. `passes`
    is what its checkpoint records and --resume restores."""

    def __init__(self, seed: int, rows: int, offset: int):
        self.seed, self.rows, self.offset, self.passes = seed, rows, offset, 0

    def next_pass(self) -> np.ndarray:
        order = pass_permutation(self.seed, self.passes, self.rows) + self.offset
        self.passes += 1
        return order


def _shared_training_set(datasets: list[Dataset]):
    """The members' training sets as one (x, y) on the device, one copy per distinct set, and each member's offset
    into it."""
    distinct, offsets, start = [], [], 0
    for dataset in datasets:
        for kept, offset in distinct:
            if np.array_equal(kept.x, dataset.train.x) and np.array_equal(kept.y, dataset.train.y):
                offsets.append(offset)
                break
        else:
            distinct.append((dataset.train, start))
            offsets.append(start)
            start += len(dataset.train.x)
    x = tf.constant(np.concatenate([s.x for s, _ in distinct]) if len(distinct) > 1 else distinct[0][0].x)
    y = tf.constant(np.concatenate([s.y for s, _ in distinct]) if len(distinct) > 1 else distinct[0][0].y)
    return x, y, offsets, len(distinct)


class _NoStop:
    """A member folder's stop check while the population records its members one after the other: the population
    honours a stop request once every member has recorded the epoch."""

    def check(self) -> None:
        pass


@dataclasses.dataclass
class _Member:
    config: Config
    folder: RunFolder
    dataset: Dataset = None
    trainer: object = None
    order: _MemberOrder = None
    resumed_epoch: int | None = None
    status: str | None = None  # set when its run ends (diverged, pruned, finished)

    @property
    def seed(self) -> int:
        return self.config.seed


def train_and_evaluate_population(configs: list[Config], workdirs: list[str], datasets: list[Dataset] | None = None,
                                  *, resume: bool = False, overwrite: bool = False,
                                  seeds_flag: str = "seeds") -> list[RunSummary]:
    """Trains the members `configs` (one rule, one architecture, differing by seed) as one population, member k
    writing `workdirs[k]` as its single run would (`experiment.train_and_evaluate`: same files, same refusals of a
    workdir holding a run unless `resume` or `overwrite`, same --resume). `datasets`: optional pre-loaded data, one
    per member. Returns the members' summaries (also in their summary.json). A population that would not fit in
    memory is refused with a ConfigError naming `seeds_flag`. SIGINT or SIGTERM stops every member after the
    current call (status "interrupted", faults.Interrupted raised)."""
    if len(configs) != len(workdirs) or not configs:
        raise ValueError(f"train_and_evaluate_population: {len(configs)} configs for {len(workdirs)} workdirs")
    for config in configs:
        config.validate()
        check_supported(config)
    _check_one_population(configs)
    if len({os.path.abspath(w) for w in workdirs}) < len(workdirs):
        raise ConfigError("workdir", "two members share a workdir; give each seed its own")
    if resume and overwrite:
        raise ConfigError("overwrite", "--resume continues the run in the workdir, --overwrite replaces it; give "
                                       "one of the two")
    faults.kill_spec()
    log = print if configs[0].progress else (lambda *a, **k: None)
    members = [_Member(c, RunFolder(w, c, log, overwrite=overwrite)) for c, w in zip(configs, workdirs)]
    acquired = []
    try:
        for m in members:
            m.folder.acquire()
            acquired.append(m.folder)
        with precision.tensor_float_32(configs[0].tf32):
            if not resume:
                for m in members:
                    m.folder.check_free()
            return _run(members, datasets, resume, log, seeds_flag)
    finally:
        for folder in acquired:
            folder.release()


def _check_one_population(configs: list[Config]) -> None:
    """Members differ by seed only: every other setting the first member's (but the workdir-free ones)."""
    first = dataclasses.asdict(configs[0])
    for config in configs[1:]:
        other = dataclasses.asdict(config)
        for key, value in first.items():
            if key != "seed" and other[key] != value:
                raise ConfigError(key, f"the members of a population differ by seed only; one has {key}={value!r}, "
                                       f"another {other[key]!r}")


def _run(members: list[_Member], datasets, resume: bool, log, seeds_flag: str) -> list[RunSummary]:
    config = members[0].config
    for k, m in enumerate(members):
        m.dataset = datasets[k] if datasets is not None else load_dataset(**dataset_options(m.config))
        check_splits(m.dataset)
        m.folder.data = dataset_fingerprint(m.dataset)
    sizes = {len(m.dataset.train.x) for m in members}
    if len(sizes) > 1:
        raise ValueError(f"train_and_evaluate_population: the members' training sets differ in size {sorted(sizes)}; "
                         "a population steps its members' batches together")
    x, y, offsets, copies = _shared_training_set([m.dataset for m in members])
    first = members[0].dataset
    evals = [len(s.x) for s in (first.val, first.test) if s is not None]
    memory.check_fits(config, data_flag="dataset", members=len(members), train_copies=copies,
                      members_flag=seeds_flag, input_size=int(np.prod(first.train.x.shape[1:])),
                      image_shape=first.image_shape, num_outputs=int(first.num_outputs),
                      num_train=len(first.train.x), num_eval=max(evals, default=0))
    for m, offset in zip(members, offsets):
        keras.utils.set_random_seed(m.seed)  # as the single run, before its model is built
        m.trainer = build_trainer(m.config, build_model(m.config, m.dataset))
        m.order = _MemberOrder(m.seed, len(m.dataset.train.x), offset)
    rows = len(first.train.x)
    for m in members:  # their training rows are in x now: the members' own copies can go
        m.dataset = dataclasses.replace(m.dataset, train=None)
    first = members[0].dataset
    has_val = first.val is not None
    if resume:
        for m in members:
            m.resumed_epoch = m.folder.resume(m.trainer, m.order)
            status = str((_saved_summary(m.folder) or {}).get("status", ""))
            if status.startswith(ENDED) or m.resumed_epoch == config.epochs:
                m.status = status if status.startswith(ENDED) else "finished"
                log(f"[tp_keras] seed {m.seed}: its run has ended ({m.status.split(':')[0]}); left as it is in "
                    f"{m.folder.workdir}")
    training = [m for m in members if m.status is None]
    for m in training:
        m.folder.open(m.trainer, m.order, has_val, 1 if m.resumed_epoch is None else m.resumed_epoch + 1)
        m.folder.stop = _NoStop()
    if not training:
        return [_final_summary(m, has_val) for m in members]
    population = Population([m.trainer for m in training], jit_compile=loop.resolve_jit(config.jit_compile))
    batch_size = config.batch_size
    steps = -(-rows // batch_size)
    full_steps = rows // batch_size
    steps_per_call = loop.resolve_steps(config.steps_per_call, steps)
    log(f"[tp_keras] population of {len(training)} ({config.method} on {config.dataset}, seeds "
        f"{', '.join(str(m.seed) for m in training)}): {rows} train / "
        f"{len(first.val.x) if has_val else 0} val / {len(first.test.x)} test each, {copies} training set(s) on "
        f"the device, {config.precision}, XLA {'on' if population.jit_compile else 'off'}, "
        f"{min(steps_per_call, steps)} batch(es) per compiled call")
    schedule = _Schedule(config, population, training, x, y, batch_size, steps, full_steps, steps_per_call, log)
    stop = faults.StopRequests()
    try:
        with stop:
            schedule.stop = stop
            schedule.run(has_val)
    except KeyboardInterrupt as err:
        name = getattr(err, "signal_name", "SIGINT")
        for m in schedule.recording():
            m.folder.write_summary("interrupted", interrupted_by=name, interrupted_in=schedule.where)
        where = schedule.where
        raise faults.Interrupted(name, f"interrupted by {name} in {where}; continue the population with --resume "
                                       "(each member from its last checkpoint)") from None
    return [_final_summary(m, has_val) for m in members]


def _saved_summary(folder: RunFolder) -> dict | None:
    try:
        with open(folder.summary_path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):  # none, or unreadable: the member is resumed from its checkpoint
        return None
    return saved if isinstance(saved, dict) else None


def _final_summary(m: _Member, has_val: bool) -> RunSummary:
    if m.status is not None and m.status.startswith(ENDED) and m.folder.trainer is None:  # resumed, left as it was
        summary = RunSummary(_saved_summary(m.folder))
        summary.checkpoint_epoch = m.resumed_epoch
        return summary
    m.folder.has_val = has_val
    return m.folder.write_summary(m.status or "finished")


class _Schedule:
    """The single run's schedule (schedule.train_epochs) over the population's members."""

    def __init__(self, config, population, members, x, y, batch_size, steps, full_steps, steps_per_call, log):
        self.config, self.population, self.members = config, population, members
        self.x, self.y = x, y
        self.batch_size, self.steps, self.full_steps, self.steps_per_call = batch_size, steps, full_steps, \
            steps_per_call
        self.log = log
        self.stop = None
        self.where = "the start"

    def recording(self) -> list[_Member]:
        """The members whose runs go on (not diverged, pruned or finished)."""
        return [m for m in self.members if m.status is None]

    # --- the stages ---------------------------------------------------------------------------------------------
    def run(self, has_val: bool) -> None:
        config = self.config
        trains_feedback = self.members[0].trainer.trains_feedback
        start = min(-1 if m.resumed_epoch is None else m.resumed_epoch for m in self.members)
        if start < 0 and trains_feedback and config.epochs_fb > 0:
            self._stage(0, lambda: self._pretraining())
        for epoch in range(max(start, 0) + 1, config.epochs + 1):
            self._stage(epoch, lambda e=epoch: self._epoch(e, has_val))
            if not self.recording():
                break
        self.where = "the final summary"

    def _stage(self, epoch: int, body) -> None:
        """Runs a stage (0: feedback pre-training, else that epoch) with every member; a member whose checkpoint
        has it done already is trained with the others, then restored (it sits the stage out)."""
        ahead = [k for k, m in enumerate(self.members) if m.resumed_epoch is not None and m.resumed_epoch >= epoch]
        saved = {k: (self.population.member_state(k), self.members[k].order.passes) for k in ahead}
        sitting_out = {k: self.members[k].status for k in ahead}
        for k in ahead:
            self.members[k].status = "ahead"  # not recorded in this stage
        body()
        for k, (state, passes) in saved.items():
            self.population.restore_member(k, state)
            self.members[k].order.passes = passes
            self.members[k].status = sitting_out[k]

    def _pretraining(self) -> None:
        self.where = "feedback pre-training"
        t0 = time.perf_counter()
        pre = self._feedback_passes(self.config.epochs_fb, "feedback pre-training pass")
        seconds = time.perf_counter() - t0
        for k, m in self._live():
            row = {"epoch": 0, "rec_loss_first": pre[0][k], "rec_loss_init": pre[-1][k], "fb_seconds": seconds}
            m.folder.record(row)
            self.log(f"[tp_keras] seed {m.seed}: feedback pre-training: {self.config.epochs_fb} passes, rec_loss "
                     f"{pre[0][k]:.4g} -> {pre[-1][k]:.4g}")
        self._after_records()

    def _epoch(self, epoch: int, has_val: bool) -> None:
        config = self.config
        self.where = f"epoch {epoch}"
        rates = forward_learning_rates(config, epoch)
        if config.lr_schedule != "none":
            for m in self.members:
                set_learning_rates(m.trainer.forward_optimizer, rates)
        t0 = time.perf_counter()
        train = self._pass(True, "train", f"epoch {epoch}")
        t1 = time.perf_counter()
        extra = self._feedback_passes(config.extra_fb_epochs, f"extra feedback pass after epoch {epoch}:") \
            if self.members[0].trainer.trains_feedback else []
        t2 = time.perf_counter()
        rows = {}
        for k, m in self._live():
            row = {"epoch": epoch, "train_loss": train[k]["loss"]}
            if config.lr_schedule != "none":
                row.update({f"learning_rate_{i + 1}": r for i, r in enumerate(rates)} if isinstance(rates, tuple)
                           else {"learning_rate": rates})
            if "accuracy" in train[k]:
                row["train_acc"] = train[k]["accuracy"]
            if "rec_loss" in train[k]:
                row["rec_loss"] = train[k]["rec_loss"]
            if extra:
                row["rec_loss_extra"] = float(np.mean([e[k] for e in extra]))
            for name, split in (("val", m.dataset.val), ("test", m.dataset.test)):
                if split is not None:
                    for key, value in evaluate(m.trainer, split, config.batch_size).items():
                        row[f"{name}_{key}"] = value
            rows[k] = row
        t3 = time.perf_counter()
        for k, m in self._live():
            row = rows[k]
            row.update(train_seconds=t1 - t0, fb_seconds=t2 - t1, eval_seconds=t3 - t2, epoch_seconds=t3 - t0)
            m.folder.record(row)
            shown = "acc" if "train_acc" in row else "loss"
            self.log(f"[tp_keras] seed {m.seed}: epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.4f}"
                     + (f" acc {row['train_acc']:.4f}" if "train_acc" in row else "")
                     + (f" | val {shown} {row[f'val_{shown}']:.4f}" if has_val else "")
                     + f" | test {shown} {row[f'test_{shown}']:.4f} | {row['epoch_seconds']:.1f}s")
            if (config.prune_early and epoch >= 6 and "train_acc" in row
                    and row["train_acc"] < PRUNE_ACCURACY.get(config.dataset, -1.0)):
                m.status = f"pruned: train accuracy {row['train_acc']:.3f} after epoch {epoch}"
                self.log(f"[tp_keras] seed {m.seed}: stopping: {m.status}")
                m.folder.write_summary(m.status)
        self._after_records()

    def _after_records(self) -> None:
        self.stop.check()  # a stop request once every member has recorded the stage

    def _live(self):
        """(index, member) of the members recorded in this stage: not ended, not sitting it out."""
        return [(k, m) for k, m in enumerate(self.members) if m.status is None]

    # --- passes -------------------------------------------------------------------------------------------------
    def _feedback_passes(self, count: int, where: str) -> list[list[float]]:
        """`count` feedback-only passes; per pass, each member's mean rec_loss."""
        return [[metrics.get("rec_loss") for metrics in self._pass(False, "fb", f"{where} {i + 1}")]
                for i in range(count)]

    def _pass(self, forward: bool, label: str, where: str) -> list[dict]:
        """One shuffled pass of every member (as passes.run_pass): per member, the unweighted means over its
        batches of its metrics. A member that went non-finite in it ends with status "diverged: ..." (its last
        good checkpoint kept)."""
        population, size = self.population, self.batch_size
        order = tf.constant(np.stack([m.order.next_pass() for m in self.members]).astype(np.int32))
        kill = "train_batch" if forward else "feedback_batch"
        bar = keras.utils.Progbar(self.steps, verbose=1 if sys.stdout.isatty() else 2, unit_name="batch") \
            if self.config.progress else None
        sync_every = loop.progress_interval(self.steps)
        calls = []
        for kind, i, count in loop.plan_pass(self.steps, self.full_steps, self.steps_per_call):
            self.stop.check()
            faults.kill_point(kill)
            if kind == "loop":
                out = population.loop(self.x, self.y, order, i * size, count, size, forward=forward)
            else:
                rows = order[:, i * size:(i + 1) * size]
                step = population.train_step if forward else population.feedback_step
                out = step(tf.gather(self.x, rows), tf.gather(self.y, rows))
                out = {key: value[None] for key, value in out.items()}  # as a loop of one batch: [1, K, ...]
            calls.append(out)
            done = i + count
            if bar is not None and (done // sync_every > i // sync_every or done == self.steps):
                shown = [(f"{label}_{key}", float(np.nanmean(value[-1].numpy()))) for key, value in out.items()
                         if key not in HEALTH_KEYS and key != "alive"]
                bar.update(done, shown)
        stacked = {key: tf.concat([c[key] for c in calls], axis=0) for key in calls[0]}  # [batches, K, ...]
        messages = self.population.diverged(where)
        results = []
        for k, m in enumerate(self.members):
            flags = {key: stacked[key][:, k] for key in HEALTH_KEYS if key in stacked}
            metrics = {key: float(tf.reduce_mean(tf.cast(value[:, k], tf.float64))) for key, value in stacked.items()
                       if key not in HEALTH_KEYS and key != "alive"}
            results.append(metrics)
            if m.status is None and messages[k] is not None:
                problem = first_problem_stacked(where, flags) or messages[k]
                m.status = f"diverged: {problem}"
                folder = m.folder
                self.log(f"[tp_keras] seed {m.seed}: stopping: {m.status}; " + (
                    f"the last good checkpoint (epoch {folder.checkpoint_epoch}) is {folder.checkpoint_path}"
                    if folder.checkpoint_epoch is not None else "no checkpoint was written"))
                folder.write_summary(m.status)
        return results
