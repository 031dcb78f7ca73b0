"""The loop: an interrupted and resumed run ends where an uninterrupted one does."""

import pytest
import torch
from safetensors.torch import load_file

from rpnet.engine.trainer import LoopSettings, train
from rpnet.layout import CHECKPOINT as CHECKPOINT_NAME, LOG as LOG_NAME, TRACE as TRACE_DIR, WEIGHTS as WEIGHTS_NAME
from rpnet.errors import RpnetError
from rpnet.io import read_jsonl

EPOCHS, STEPS = 3, 4


def data(epoch: int, skip: int):
    gen = torch.Generator().manual_seed(100 + epoch)
    xs = torch.randn(STEPS, 4, 3, generator=gen)
    for x in xs[skip:]:
        yield {"x": x, "id": ["a"] * 4}


def setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Dropout(0.5), torch.nn.Linear(5, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, opt


def step_fn(model):
    return lambda b: {"loss": model(b["x"]).pow(2).mean()}


def run(tmp, interrupt_at=None, resume=False, seed=0):
    model, opt = setup(seed)
    calls = {"n": 0}

    def step(b):
        calls["n"] += 1
        if interrupt_at is not None and calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        return step_fn(model)(b)

    settings = LoopSettings(epochs=EPOCHS, steps_per_epoch=STEPS, log_every=1, show_progress=False)
    return train(model, opt, data, step, settings, tmp, device=torch.device("cpu"), resume=resume)


def test_same_seed_same_weights(tmp_path):
    a = load_file(str(run(tmp_path / "a")))
    b = load_file(str(run(tmp_path / "b")))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_interrupt_then_resume_matches_uninterrupted(tmp_path):
    full = load_file(str(run(tmp_path / "full")))
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", interrupt_at=7)  # in epoch 1, after 6 finished steps
    assert (tmp_path / "cut" / CHECKPOINT_NAME).exists()
    assert not (tmp_path / "cut" / WEIGHTS_NAME).exists()
    resumed = load_file(str(run(tmp_path / "cut", resume=True, seed=123)))  # seed irrelevant: state restored
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], rtol=0, atol=1e-6)
    steps = [r["step"] for r in read_jsonl(tmp_path / "cut" / LOG_NAME)]
    assert steps == list(range(1, EPOCHS * STEPS + 1))  # no step logged twice or skipped


class Killed(RuntimeError):
    """A crash that saves nothing (kill -9 saves nothing either)."""


def test_a_crashed_run_s_steps_after_its_checkpoint_leave_the_log_on_resume(tmp_path):
    model, opt = setup()
    calls = {"n": 0}

    def dying(b):
        calls["n"] += 1
        if calls["n"] == 7:
            raise Killed
        return step_fn(model)(b)

    settings = LoopSettings(epochs=EPOCHS, steps_per_epoch=STEPS, log_every=1, show_progress=False, trace=True)
    with pytest.raises(Killed):
        train(model, opt, data, dying, settings, tmp_path, device=torch.device("cpu"))
    # steps 1-6 logged; the checkpoint is epoch 0's (step 4): steps 5 and 6 will be run again
    assert [r["step"] for r in read_jsonl(tmp_path / LOG_NAME)] == [1, 2, 3, 4, 5, 6]
    model, opt = setup()
    train(model, opt, data, step_fn(model), settings, tmp_path, device=torch.device("cpu"), resume=True)
    for log in (tmp_path / LOG_NAME, tmp_path / TRACE_DIR / "rank0.jsonl"):
        assert [r["step"] for r in read_jsonl(log)] == list(range(1, EPOCHS * STEPS + 1))  # 5, 6 once each


def test_a_fresh_run_in_a_used_folder_starts_an_empty_log(tmp_path):
    run(tmp_path)
    run(tmp_path)  # not resumed: from step 0 again
    assert [r["step"] for r in read_jsonl(tmp_path / LOG_NAME)] == list(range(1, EPOCHS * STEPS + 1))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"])
def test_an_unreadable_checkpoint_is_named_with_what_to_do(tmp_path, content):
    (tmp_path / CHECKPOINT_NAME).write_bytes(content)
    with pytest.raises(RpnetError, match=f"{CHECKPOINT_NAME} is not a readable checkpoint.*delete it"):
        run(tmp_path, resume=True)


def test_a_step_limit_mid_epoch_is_checkpointed_at_its_place(tmp_path):
    model, opt = setup()
    settings = LoopSettings(epochs=EPOCHS, steps_per_epoch=STEPS, log_every=1, show_progress=False, max_steps=6)
    train(model, opt, data, step_fn(model), settings, tmp_path, device=torch.device("cpu"))
    # 6 steps = epoch 0 (4 batches) and 2 batches of epoch 1, which is not finished
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert (state["progress"]["epoch"], state["progress"]["batch"], state["progress"]["step"]) == (1, 2, 6)
    # resumed without the limit, training goes on with epoch 1's third batch
    settings = LoopSettings(epochs=EPOCHS, steps_per_epoch=STEPS, log_every=1, show_progress=False)
    train(model, opt, data, step_fn(model), settings, tmp_path, device=torch.device("cpu"), resume=True)
    log = read_jsonl(tmp_path / LOG_NAME)
    assert [r["step"] for r in log] == list(range(1, EPOCHS * STEPS + 1))
    assert [r["epoch"] for r in log] == [0] * 4 + [1] * 4 + [2] * 4


def test_log_has_loss_lr_and_speed(tmp_path):
    run(tmp_path)
    rec = read_jsonl(tmp_path / LOG_NAME)[-1]
    assert {"epoch", "step", "lr", "images_per_s", "loss"} <= set(rec)
    assert rec["step"] == EPOCHS * STEPS and rec["lr"] < 0.1 * (1 / STEPS)  # poly decayed to the end


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    model, opt = setup()
    settings = LoopSettings(epochs=1, steps_per_epoch=STEPS, show_progress=False)
    with pytest.raises(RpnetError, match="the loss became nan at step .*lower the learning rate"):
        train(model, opt, data, lambda b: {"loss": torch.tensor(float("nan"))}, settings, tmp_path,
              device=torch.device("cpu"))


def test_trace_records_each_steps_images_and_weights(tmp_path):
    model, opt = setup()
    settings = LoopSettings(epochs=1, steps_per_epoch=STEPS, show_progress=False, trace=True, global_batch=4)
    train(model, opt, data, step_fn(model), settings, tmp_path, device=torch.device("cpu"))
    trace = read_jsonl(tmp_path / TRACE_DIR / "rank0.jsonl")
    assert [r["step"] for r in trace] == [1, 2, 3, 4] and {r["rank"] for r in trace} == {0}
    assert all(r["ids"] == ["a"] * 4 for r in trace)
    assert len({r["weights"] for r in trace}) == STEPS  # a new digest after every optimiser step
    assert "world_size" not in read_jsonl(tmp_path / LOG_NAME)[-1]  # one process: nothing to state


def test_tensorboard_writes_the_log_s_scalars_or_says_what_to_install(tmp_path):
    model, opt = setup()
    settings = LoopSettings(epochs=1, steps_per_epoch=STEPS, log_every=1, show_progress=False, tensorboard=True)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(RpnetError, match="pip install tensorboard"):
            train(model, opt, data, step_fn(model), settings, tmp_path, device=torch.device("cpu"))
        return
    train(model, opt, data, step_fn(model), settings, tmp_path, device=torch.device("cpu"))
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_an_epoch_end_callback_s_figures_are_logged_at_the_epoch_s_last_step(tmp_path):
    model, opt = setup()
    settings = LoopSettings(epochs=2, steps_per_epoch=STEPS, log_every=STEPS, show_progress=False)
    seen = []

    def check(progress):
        seen.append((progress.epoch, progress.step, model.training))
        model.eval()
        return {"val": 10.0 * progress.epoch}

    train(model, opt, data, step_fn(model), settings, tmp_path, device=torch.device("cpu"), on_epoch_end=check)
    assert seen == [(1, 4, True), (2, 8, True)]  # after each epoch, the model still training when called
    log = read_jsonl(tmp_path / LOG_NAME)
    assert [(r["step"], r.get("val")) for r in log] == [(4, None), (4, 10.0), (8, None), (8, 20.0)]


def test_a_ctrl_c_during_the_epoch_end_work_leaves_the_epoch_unended_and_the_resume_does_it_again(tmp_path):
    def validating(interrupt_in_epoch=None):
        model, opt = setup()

        def check(progress):
            if progress.epoch == interrupt_in_epoch:
                raise KeyboardInterrupt  # Ctrl-C while epoch 1's validation runs
            return {"val": 10.0 * progress.epoch}
        settings = LoopSettings(epochs=2, steps_per_epoch=STEPS, log_every=STEPS, show_progress=False)
        return model, opt, settings, check

    model, opt, settings, check = validating()
    full = load_file(str(train(model, opt, data, step_fn(model), settings, tmp_path / "full",
                               device=torch.device("cpu"), on_epoch_end=check)))
    model, opt, settings, check = validating(interrupt_in_epoch=1)
    with pytest.raises(KeyboardInterrupt):
        train(model, opt, data, step_fn(model), settings, tmp_path / "cut", device=torch.device("cpu"),
              on_epoch_end=check)
    assert torch.load(tmp_path / "cut" / CHECKPOINT_NAME, weights_only=True)["progress"]["epoch"] == 0
    model, opt, settings, check = validating()
    resumed = load_file(str(train(model, opt, data, step_fn(model), settings, tmp_path / "cut",
                                  device=torch.device("cpu"), resume=True, on_epoch_end=check)))
    assert [r.get("val") for r in read_jsonl(tmp_path / "cut" / LOG_NAME) if "val" in r] == [10.0, 20.0]
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=1e-6)
