"""Issue 17, deliverable 2: ``--budget DURATION``. The duration's grammar, the planner as pure logic on
a fake clock, and whole runs whose every step "costs" a fixed number of fake seconds (no test here
depends on how fast this machine is)."""
import json
import math

import pytest
import torch

import petalnet
from petalnet.budget import RESERVE_SECONDS, BudgetPlanner, NoBudget, make_planner, steps_to_measure
from petalnet.cli import main
from petalnet.config import TrainConfig
from petalnet.data.synthetic import synthetic_data
from petalnet.durations import parse_duration
from petalnet.engine import train
from petalnet.errors import OptionError
from petalnet.optim import lr_schedule

TINY = dict(model="resnet10t", pretrained=False, batch_size=16, precision="32", workers=0, quiet=True)
MIN_LR = 1e-5


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_data(64, seed=0, root=str(tmp_path_factory.mktemp("syn")))   # 480 train, 120 val


# --- (1) the duration ---

@pytest.mark.parametrize("text, seconds", [("90s", 90), ("5m", 300), ("20m", 1200), ("1h", 3600), ("1h30m", 5400),
                                           ("1.5h", 5400), (" 2M ", 120), ("1h0m30s", 3630), ("0.5s", 0.5),
                                           (45, 45), (7.5, 7.5)])
def test_durations_read(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "20", "soon", "5x", "m", "-5m", "0s", "0h0m", "30m1h", "1h-30m", "1e3s",
                                  "5 m", "9" * 400 + "h", True, None, 0, -3, math.inf, math.nan])
def test_bad_durations_are_one_option_error_naming_the_flag(text):
    with pytest.raises(OptionError, match=r"^--budget "):
        parse_duration(text)
    if text is not None:   # None: no budget
        with pytest.raises(OptionError, match=r"^--budget "):
            TrainConfig(budget=text).check()


@pytest.mark.parametrize("value, words", [("soon", "--budget soon: not a duration"),
                                          ("20", "--budget 20: not a duration"),
                                          ("0m", "--budget 0m: must be more than 0 seconds")])
def test_bad_budget_on_the_command_line_is_exit_2_one_line_no_run_folder(synthetic, tmp_path, capsys, value, words):
    out = tmp_path / "run"
    assert main(["train", "--data", synthetic, "--out", str(out), "--budget", value, *"--model resnet10t".split()]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"petalnet: error: {words}") and "Traceback" not in err, err
    assert not out.exists()


def test_bad_budget_in_the_python_api_leaves_no_folder(synthetic, tmp_path):
    with pytest.raises(OptionError, match="--budget 20 minutes: not a duration"):
        petalnet.train(synthetic, tmp_path / "run", recipe="linear", budget="20 minutes", **TINY)
    assert not (tmp_path / "run").exists()


# --- (2) the planner, on a fake clock ---

class Clock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def schedule_of(epochs: int):
    return lr_schedule(TrainConfig(epochs=epochs, lr=1e-3, warmup_epochs=0.5, min_lr=MIN_LR), 1)


def planner(clock, seconds=1000.0, steps=100, spent=100.0, lines=None, saved=None):
    """A planner whose run started at 0 and reaches its first epoch at ``spent``: 100 steps of 20 images
    an epoch, 200 validation images (estimated at a third of a training image's cost each), 5 s kept
    for the end."""
    p = BudgetPlanner(seconds, clock=clock, reserve=5.0)
    p.start_run(schedule_of, saved)
    p.set_sizes(steps, val_images=200, views=1, batch_images=20, write_bytes=0,
                say=(lines.append if lines is not None else lambda line: None))
    clock.now = spent
    return p


def epoch(p, clock, index, step_seconds, val_seconds):
    """One epoch as the engine drives it (``step_seconds``: a number, or a function of the step); the
    step the safety net ended it at, or None."""
    p.begin_epoch(index, 0)
    stopped = None
    for step in range(1, p.steps + 1):
        clock.now += step_seconds(step) if callable(step_seconds) else step_seconds
        if p.after_step(step):
            stopped = step
            break
    clock.now += val_seconds
    p.end_epoch(index + 1, ended_early=stopped is not None)
    return stopped


def test_plans_from_the_steps_measured_after_the_first(tmp_path):
    clock, lines = Clock(), []
    p = planner(clock, lines=lines)
    assert p.epochs == 100 and steps_to_measure(100) == 5   # the cap until planned; 5 % of an epoch
    p.begin_epoch(0, 0)
    for step in range(1, 7):
        clock.now += 5.0 if step == 1 else 1.0   # a slow first step (warm-up) is not counted
        p.after_step(step)
    # at 110 s: this epoch's 94 steps + 3.3 s validation (200 images x 1 s / 20 / 3), then 103.3 s epochs in
    # the 1000 - 5 (reserve) - 110 - 97.3 s left: 7 more, and 64.3 s, which hold 61 steps and a validation:
    # a 9th epoch of 61 steps, the LR's cosine ending at its 61st
    assert (p.first, p.epochs, p.schedule.epochs, p.last_steps) == (9, 9, 9, 61)
    assert p.schedule.end == pytest.approx(8.61) and p.schedule(8.61) == pytest.approx(MIN_LR) and p.schedule(8.5) > p.schedule(8.61)
    assert p.step_s == pytest.approx(1.0) and p.val_s == pytest.approx(200 / 20 / 3)
    assert p.planned_s == pytest.approx(110 + 94 + 10 / 3 + 7 * (100 + 10 / 3) + 61 + 10 / 3 + 5) == 1000
    assert lines == ["budget 16m40s: 9 epochs planned, the last 61 of its 100 steps (1m40s/epoch + 3.3s validation "
                     "estimated, measured over 5 steps after the first; 1m40s spent before training)"]


def test_shortens_when_epochs_slow_down_never_adds_epochs_and_the_lr_ends_at_min_lr():
    clock, lines = Clock(), []
    p = planner(clock, lines=lines)
    assert epoch(p, clock, 0, 1.0, 3.0) is None and p.epochs == 9            # planned at 106 s; 103 s epochs
    assert epoch(p, clock, 1, 1.0, 3.0) is None and p.epochs == 9 and clock.now == 306
    before = p.schedule
    assert epoch(p, clock, 2, 1.5, 3.0) is None                               # 153 s an epoch from now
    # at 459 s: the 536 s left hold 3 epochs of 153 s and 77 s: 49 steps of 1.5 s and a validation
    assert (p.epochs, p.last_steps, p.replans) == (7, 49, [[3, 7]])
    assert lines[-1] == "budget 16m40s: epochs take 2m33s now: plan shortened to 7 epochs, the last 49 of its 100 " \
                        "steps (9m01s left)"
    after = p.schedule
    assert after(3) == pytest.approx(before(3)) and after(2.5) == pytest.approx(before(2.5))   # goes on from there
    assert after(6.49) == pytest.approx(MIN_LR) and after(6.4) > after(6.49)   # and ends at the new end
    assert epoch(p, clock, 3, 0.5, 3.0) is None                                # faster again: no more epochs,
    assert (p.epochs, p.last_steps, p.replans) == (7, None, [[3, 7], [4, 7]])  # the partial last one made whole
    assert lines[-1] == "budget 16m40s: epochs take 53s now: the last epoch lengthened to a whole one (8m08s left)"
    assert p.schedule(7) == pytest.approx(MIN_LR) and p.schedule(6.5) > p.schedule(7)
    assert epoch(p, clock, 4, 1.0, 3.0) is None and epoch(p, clock, 5, 1.0, 3.0) is None
    assert epoch(p, clock, 6, 1.0, 3.0) is None and p.epochs == 7
    assert clock.now + p.reserve <= 1000 and p.summary()["budget_cut"] is None
    assert p.summary()["planned_epochs"] == 9 and p.summary()["used_seconds"] == clock.now


def test_a_partial_last_epoch_ends_at_its_planned_step_not_as_a_cut():
    clock = Clock()
    p = planner(clock)
    for i in range(8):
        assert epoch(p, clock, i, 1.0, 3.0) is None
    assert (p.epochs, p.last_steps) == (9, 65)
    assert epoch(p, clock, 8, 1.0, 3.0) == 65 and p.summary()["budget_cut"] is None
    assert 1000 - 5 - 3 <= clock.now + p.reserve <= 1000   # ends within one step and a validation of the budget


def test_ends_after_the_epoch_when_another_does_not_fit():
    clock, lines = Clock(), []
    p = planner(clock, seconds=290, lines=lines)
    # planned at 106 s for 1 s steps: epoch 1 and 78 steps of a second; the rest of epoch 1 takes 1.5 s a
    # step: at its end (250 s) the 35 s left hold 21 steps and a validation, under a quarter of an epoch
    assert epoch(p, clock, 0, lambda step: 1.0 if step <= 6 else 1.5, 3.0) is None
    assert (p.first, p.first_last, p.epochs, p.last_steps) == (2, 78, 1, None)
    assert p.replans == [[1, 1]] and clock.now == 250
    assert lines[-1] == "budget 4m50s: no time for another epoch (2m30s each): ending after epoch 1"
    assert p.schedule(1) == pytest.approx(schedule_of(2).replanned(0, 2, 1.78)(1))   # the LR it ended at, for lr.png


def test_a_partial_last_epoch_is_planned_only_from_a_quarter_of_an_epoch():
    for seconds, part in ((1000 - 64.3 + 3.4 + 24, None), (1000 - 64.3 + 3.4 + 25, 25)):
        clock = Clock()
        p = planner(clock, seconds=seconds)   # as in the first test: 7 more whole epochs, then what is left
        p.begin_epoch(0, 0)
        for step in range(1, 7):
            clock.now += 5.0 if step == 1 else 1.0
            p.after_step(step)
        assert (p.epochs, p.last_steps) == ((8, None) if part is None else (9, part))
    p = BudgetPlanner(1000, clock=Clock(), reserve=5.0)   # several processes agree every 10 steps: 60 of 61
    p.start_run(schedule_of)
    p.set_sizes(100, val_images=200, views=1, batch_images=20, margin=10)
    p.clock.now = 100
    p.begin_epoch(0, 0)
    for step in range(1, 7):
        p.clock.now += 5.0 if step == 1 else 1.0
        p.after_step(step)
    assert (p.epochs, p.last_steps) == (9, 60)


def test_not_even_one_epoch_trains_what_fits_then_validates():
    clock, lines = Clock(), []
    p = planner(clock, seconds=160, lines=lines)                              # 55 s left after 100 s
    p.begin_epoch(0, 0)
    stopped = None
    for step in range(1, 101):
        clock.now += 1.0
        if p.after_step(step):
            stopped = step
            break
    assert p.epochs == 1 and lines[0].startswith("budget 2m40s: not even one epoch fits (1m40s/epoch")
    assert "training what fits of epoch 1" in lines[0]
    # stops when one more step, the validation (3.3 s) and the reserve (5 s) would pass 160 s
    assert stopped == 51 and clock.now + 1 + 10 / 3 + 5 > 160 >= clock.now + 10 / 3 + 5
    clock.now += 3.0
    p.end_epoch(1, ended_early=True)
    assert p.summary()["budget_cut"] == {"epoch": 1, "step": 51, "steps": 100} and p.epochs == 1
    assert p.summary()["planned_seconds"] == 160 and "ended at step 51/100" in lines[-1]


def test_a_resumed_plan_continues_with_the_same_schedule():
    clock = Clock()
    p = planner(clock)
    for i, cost in enumerate((1.0, 1.0, 1.5)):
        epoch(p, clock, i, cost, 3.0)
    saved = json.loads(json.dumps(p.saved()))   # what last.pt holds, as plain values
    q = BudgetPlanner(1000, clock=Clock(clock.now), reserve=5.0)
    q.start_run(schedule_of, saved, spent=clock.now)
    assert (q.first, q.epochs, q.replans, q.step_s) == (p.first, p.epochs, p.replans, p.step_s)
    assert (q.first_last, q.last_steps) == (p.first_last, p.last_steps) == (65, 49)
    assert q.schedule == p.schedule and q.deadline == pytest.approx(p.deadline)
    old = {k: v for k, v in saved.items() if k not in ("lr_end", "lr_knots", "last_steps", "planned_last_steps")}
    r = BudgetPlanner(1000, clock=Clock(clock.now), reserve=5.0)   # a plan saved before partial epochs
    r.start_run(schedule_of, {**old, "replans": [[3, 6]], "epochs": 6})
    assert r.schedule == schedule_of(p.first).replanned(3, 6) and r.last_steps is None


def test_without_a_budget_the_summary_has_the_same_keys():
    p = make_planner(None, 7)
    assert isinstance(p, NoBudget) and p.epochs == 7
    p.start_run(schedule_of)
    assert p.schedule.epochs == 7 and not p.after_step(1) and p.record() is None
    b = make_planner("20m", 7)
    assert b.seconds == 1200 and b.label == "20m" and set(p.summary()) == set(b.summary())
    assert all(v is None for v in p.summary().values())


# --- (3) whole runs, each step costing fixed fake seconds ---

class Costs:
    """The fake clock of a run: each training step costs ``step`` seconds, each validation ``val``;
    ``slower``: {epoch (1-based): step seconds from that epoch on}."""

    def __init__(self, step: float, val: float, slower: dict):
        self.clock, self.step, self.val, self.slower = Clock(), step, val, slower

    def install(self, monkeypatch):
        after_step, begin, end = BudgetPlanner.after_step, BudgetPlanner.begin_epoch, BudgetPlanner.end_epoch

        def begin_epoch(planner, epoch, step):
            self.step = self.slower.get(epoch + 1, self.step)
            return begin(planner, epoch, step)

        def step(planner, i):
            self.clock.now += self.step
            return after_step(planner, i)

        def end_epoch(planner, done, ended_early):
            self.clock.now += self.val
            return end(planner, done, ended_early)

        monkeypatch.setattr(BudgetPlanner, "clock", staticmethod(self.clock))
        monkeypatch.setattr(BudgetPlanner, "begin_epoch", begin_epoch)
        monkeypatch.setattr(BudgetPlanner, "after_step", step)
        monkeypatch.setattr(BudgetPlanner, "end_epoch", end_epoch)


def test_run_plans_its_epochs_records_them_and_replans_shorter_on_a_slowdown(synthetic, tmp_path, monkeypatch,
                                                                              capsys):
    # 30 steps of 2 s an epoch and 5 s of validation (as estimated: 120 images x 2 s / 16 / 3): planned after
    # 4 steps (8 s): 52 + 5 s left of epoch 1, then 65 s epochs in 360 - 8 (reserve) - 8 s: 4 more, and 22 s:
    # 10 steps of a sixth and its validation. From epoch 3 steps cost 3 s: at its end (225 s) 127 s are left,
    # one 95 s epoch and 27 s of a fifth: shortened to 5 epochs, the last 9 steps long, its LR ending there.
    Costs(2.0, 5.0, {3: 3.0}).install(monkeypatch)
    run = tmp_path / "run"
    summary = train(TrainConfig(data=synthetic, out=str(run), epochs=1, budget="6m", **TINY))
    out = capsys.readouterr().out
    assert "budget 6m: 6 epochs planned, the last 10 of its 30 steps (1m00s/epoch + 5.0s validation estimated, " \
           "measured over 3 steps" in out
    assert "budget 6m: epochs take 1m35s now: plan shortened to 5 epochs, the last 9 of its 30 steps (2m15s left)" in out
    assert "epoch 5/5:" in out and "epoch 6/" not in out and "to finish in time" not in out
    assert summary["epochs"] == 5 and summary["planned_epochs"] == 6 and summary["replans"] == [[3, 5]]
    assert summary["budget_seconds"] == 360 and summary["used_seconds"] == 5 * 5 + 60 + 60 + 90 + 90 + 27 == 360 - 8
    assert summary["planned_seconds"] == pytest.approx(8 + 57 + 4 * 65 + 20 + 5 + RESERVE_SECONDS, abs=1)   # + writes
    assert summary["budget_cut"] is None and summary["stopped_at"] is None
    config = json.loads((run / "config.json").read_text())
    plan = config["resolved"]["budget"]
    assert config["budget"] == "6m" and config["epochs"] == 1   # the options as given
    assert (plan["seconds"], plan["planned_epochs"], plan["epochs"], plan["replans"]) == (360, 6, 5, [[3, 5]])
    assert (plan["planned_last_steps"], plan["last_steps"], plan["lr_end"]) == (10, 9, pytest.approx(4.3))
    assert plan["epoch_seconds"] == pytest.approx(95) and plan["step_seconds"] == pytest.approx(3)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5] and history[-1]["lr"] == pytest.approx(MIN_LR)
    assert history[3]["lr"] > 2 * MIN_LR   # the cosine ends inside epoch 5, not at epoch 4's end
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    assert best["epoch"] == summary["best_epoch"]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert last["budget"]["epochs"] == 5 and last["epoch"] == 5 and last["step"] == 0
    written = json.loads((run / "summary.json").read_text())
    assert {k: written[k] for k in ("planned_epochs", "replans", "budget_seconds")} == \
        {"planned_epochs": 6, "replans": [[3, 5]], "budget_seconds": 360}


def test_api_budget_safety_net_ends_a_slow_epoch_as_a_finished_one(synthetic, tmp_path, monkeypatch, capsys):
    # 3 epochs planned in 3m (as above: 8 s, then 57 s of epoch 1, in 107 s one 65 s epoch and 18 steps of a
    # third); epoch 2's steps cost 8 s, 4x epoch 1's: after step 8 (129 s) one more step, 4x the validation
    # (5 s) and 3x the reserve (8 s) would pass 180 s.
    Costs(2.0, 5.0, {2: 8.0}).install(monkeypatch)
    run = petalnet.train(synthetic, tmp_path / "run", recipe="linear", budget="3m", **TINY)
    out = capsys.readouterr().out
    assert "budget 3m: 3 epochs planned, the last 18 of its 30 steps" in out
    assert "budget 3m: epoch 2 ended at step 8/30 to finish in time" in out
    s = run.summary
    assert (s["planned_epochs"], s["epochs"], s["replans"], s["stopped_at"]) == (3, 2, [[2, 2]], None)
    assert s["budget_cut"] == {"epoch": 2, "step": 8, "steps": 30} and s["used_seconds"] == 129 + 5 <= 180
    assert run.config["budget"] == "3m" and run.config["resolved"]["budget"]["seconds"] == 180
    assert len(run.history) == 2 and (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert (last["epoch"], last["step"], last["accumulators"]) == (2, 0, None)   # finished, not a resumable stop


def test_a_run_stopped_inside_an_epoch_resumes_its_plan(synthetic, tmp_path, monkeypatch, capsys):
    """--max-steps (as a signal) stops inside epoch 2: last.pt holds the position and the plan; the
    resumed run follows that plan and its LR schedule instead of planning again."""
    Costs(2.0, 5.0, {}).install(monkeypatch)   # as above: 6 epochs planned in 6m, the last 10 steps long
    run = tmp_path / "run"
    first = train(TrainConfig(data=synthetic, out=str(run), budget="6m", max_steps=40, **TINY))
    assert first["stopped_at"] == {"epoch": 2, "step": 10} and first["planned_epochs"] == 6
    assert "6 epochs planned, the last 10 of its 30 steps" in capsys.readouterr().out
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert last["step"] == 10 and last["budget"]["planned_epochs"] == 6 and last["budget"]["epochs"] == 6
    second = train(TrainConfig(quiet=True), resume=str(run))   # 40 more steps: to step 20 of epoch 3
    assert "planned" not in capsys.readouterr().out
    assert second["stopped_at"] == {"epoch": 3, "step": 20} and second["planned_epochs"] == 6
    # the run's: peak 1e-3, warm-up min(1, 6/3) epochs, the cosine ending at step 10 of epoch 6
    six = lr_schedule(TrainConfig(epochs=6), 1).replanned(0, 6, 5 + 10 / 30)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["lr"] for h in history] == [pytest.approx(six(e)) for e in (1, 2)]
