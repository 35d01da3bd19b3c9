"""The claims' plan: durations, counts after sharing and caching, the estimate, --plan and --budget."""

import math

import pytest

from audit.config import parse_duration
from audit.plan import BudgetError, GridCount, Plan, check_budget, count, duration
from audit.plugin import PACKAGE_DIR

pytest_plugins = ["pytester"]


def test_durations_parse_and_print():
    assert parse_duration("2h") == 7200 and parse_duration("90m") == 5400 and parse_duration("1h30m") == 5400
    assert parse_duration("300s") == 300 and parse_duration("45") == 45 and parse_duration("10min") == 600
    for bad in ("", "two hours", "h", "5d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert duration(45) == "45 s" and duration(600) == "10 min" and duration(3 * 3600) == "3.0 h"


class Store:
    def __init__(self, cached=()):
        self.cached = set(cached)

    def has(self, kind, key):
        return key in self.cached


def test_counts_share_controls_skip_cached_work_and_cost_what_is_missing(tmp_path):
    from audit.chat import qwen_context
    from audit.pipeline.calibration import StageCosts
    from audit.pipeline.profiles import get_profile
    from audit.pipeline.runner import ModelRef, subliminal_grid
    from tests.pipeline_support import PROBES

    profile = get_profile("tiny")
    model = ModelRef(str(tmp_path), "h")
    cells = [c for t in ("cat", "dog") for c in subliminal_grid(profile, model, PROBES, "p", t, qwen_context())]
    costs = StageCosts(model_load=1.0, generate_per_prompt=0.5, acceptance=0.5, lora_step={2: 2.0}, full_step=3.0,
                       student_overhead={"lora": 1.0, "full": 1.5}, scoring_pass=4.0, example_tokens=100.0,
                       process_start=0.5)
    part = count(cells, profile, costs, Store(), set())
    # 2 trait datasets + 1 shared control; 2 x 2 trait students + 2 control students; one scoring pass each
    assert part.datasets == 3 and part.students == {"lora-r2": 3, "full": 3} and part.scoring == 6
    steps = math.ceil(profile.data.n_keep / profile.lora.batch_size) * profile.lora.epochs
    assert part.steps == 6 * steps and part.tokens == 6 * steps * profile.lora.batch_size * 100
    generate = 3 * (1.0 + 0.5 * min(profile.data.n_prompts, math.ceil(16 / 0.5)))  # capped by the prompts sent
    train = 3 * (0.5 + 1.0 + steps * 2.0) + 3 * (0.5 + 1.5 + steps * 3.0)
    assert part.seconds == pytest.approx(generate + train + 6 * (1.0 + 4.0))
    warm = count(cells, profile, costs, Store({c.scores_key for c in cells} | {c.student_key for c in cells}
                                                  | {c.dataset.key for c in cells}), set())
    assert (warm.datasets, warm.scoring, sum(warm.students.values()), warm.seconds, warm.cached) == (0, 0, 0, 0.0, 15)
    plan = Plan({"rank grid": part}, workers=2, costs=costs)
    assert plan.seconds == pytest.approx(part.seconds / 2)
    assert "timed with HF" not in plan.lines()[-1]
    assert "timed with HF, run with vllm" in Plan({"rank grid": part}, 2, costs, engine="vllm").lines()[-1]
    check_budget(plan, plan.seconds + 1, profile, lambda p: plan)
    with pytest.raises(BudgetError, match=r"the rank grid needs ~\d+ (s|min) here, above --budget"):
        check_budget(plan, 1.0, profile, lambda p: plan)
    assert "3 teacher datasets, 6 students (lora-r2 3, full 3)" in GridCount.describe(part)
    twice = GridCount()
    twice.add(part)
    twice.add(part)
    assert (twice.datasets, twice.students, twice.seconds) == (6, {"lora-r2": 6, "full": 6}, 2 * part.seconds)


@pytest.mark.slow
@pytest.mark.tiny_model
def test_plan_prints_the_grid_and_its_estimate_and_runs_nothing(pytester):
    from audit.cache import ArtifactStore

    def trained_with_seeds_7_or_8():
        manifests = (ArtifactStore().root / "student").glob("*/manifest.json")
        return [m for m in manifests if "/t7/" in m.read_text() or "/t8/" in m.read_text()]

    result = pytester.runpytest_subprocess(str(PACKAGE_DIR / "checks"), "--profile", "tiny", "--engine", "hf",
                                           "--seeds", "7,8", "--plan", "--report-dir", str(pytester.path / "out"),
                                           "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["subaudit plan: rank grid: * teacher datasets, * students (lora-r2 *, full *), * "
                                 "optimiser steps, * training tokens, * scoring passes; * artefacts cached; ~* here",
                                 "subaudit plan: context grid (if a rank transmits): *",
                                 "subaudit plan: estimate from stage costs timed here *"])
    assert "passed" not in result.stdout.str().split("subaudit plan")[-1] and not (pytester.path / "out").exists()
    assert not trained_with_seeds_7_or_8()  # nothing was trained
    refused = pytester.runpytest_subprocess(str(PACKAGE_DIR / "checks"), "--profile", "tiny", "--engine", "hf",
                                            "--seeds", "7,8", "--budget", "1s", "-p", "no:cacheprovider")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["ERROR: the rank grid needs ~* here, above --budget 1 s; *"])


def test_calibration_times_every_stage_on_the_model_here(tmp_path):
    import torch

    from audit.chat import qwen_context
    from audit.pipeline.calibration import calibrate
    from audit.pipeline.profiles import get_profile
    from audit.pipeline.runner import ModelRef
    from tests.engine_support import build_random_qwen
    from tests.pipeline_support import PROBES

    torch.set_num_threads(1)
    model = ModelRef(str(build_random_qwen(tmp_path / "m")), "random-qwen")
    costs = calibrate(model, get_profile("tiny"), PROBES, qwen_context(), False, tmp_path / "store")
    assert costs.model_load > 0 and costs.generate_per_prompt > 0 and costs.scoring_pass > 0 and costs.process_start > 0
    assert set(costs.lora_step) == {2} and costs.lora_step[2] > 0 and costs.full_step > 0
    assert costs.student_overhead["lora"] > 0 and costs.student_overhead["full"] > 0
    assert costs.example_tokens > 40  # a rendered chat prompt with its number completion, not a (prompt, completion) pair
    assert 0.05 <= costs.acceptance <= 1
    again = calibrate(model, get_profile("tiny"), PROBES, qwen_context(), False, tmp_path / "store")
    assert again == costs  # measured once, then read from the store


def test_calibration_trains_its_few_steps_whatever_the_profiles_epochs(tmp_path, monkeypatch):
    from dataclasses import replace

    import audit.pipeline.students as students
    from audit.chat import qwen_context
    from audit.pipeline.calibration import TIMED_STEPS, measure
    from audit.pipeline.profiles import get_profile
    from audit.pipeline.runner import ModelRef
    from tests.engine_support import build_random_qwen
    from tests.pipeline_support import PROBES

    steps, real_train = [], students.train_student

    def counting_train(*args, **kwargs):
        summary = real_train(*args, **kwargs)
        steps.append(summary.steps)
        return summary

    monkeypatch.setattr(students, "train_student", counting_train)
    tiny = get_profile("tiny")
    six_epochs = replace(tiny, lora=replace(tiny.lora, epochs=6), full=replace(tiny.full, epochs=6))
    measure(ModelRef(str(build_random_qwen(tmp_path / "m")), "random-qwen"), six_epochs, PROBES, qwen_context(), False)
    assert steps == [TIMED_STEPS + 1] * 2  # the LoRA r2 and the full-FT student
