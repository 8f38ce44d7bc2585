"""Run by tests/test_xla.py and benchmarks/bench_xla.py with a Python that has torch_xla
(``PETALNET_XLA_PYTHON``), as ``python tests/xla_run.py CONFIG_JSON OUT_JSON``: one ``petalnet.engine.train``
of the TrainConfig fields in CONFIG_JSON, instrumented from outside the engine: after every training
step and every validation, XLA's compile count and its ``aten::`` counters (operations that fell back to
the CPU) are recorded, without a host sync of their own, with the wall and process CPU clocks. OUT_JSON
gets those and the summary.

Two keys of CONFIG_JSON are not TrainConfig's: ``resume`` (a run folder: continue it, as
``petalnet train --resume`` does) and ``kill`` (``[signal name, n]``: this process sends itself the
signal after its n-th training step, the event a test interrupts at; SIGKILL ends it there, SIGTERM
is the Ctrl-C path, which saves the position inside the epoch).
"""
import json
import os
import signal
import sys
import time


def main(config_path: str, out_path: str) -> None:
    from petalnet import engine, pace
    from petalnet.config import TrainConfig
    with open(config_path) as fh:
        fields = json.load(fh)
    resume, kill = fields.pop("resume", None), fields.pop("kill", None)
    cfg = TrainConfig(**fields)
    xla = cfg.accelerator == "tpu"
    if xla:
        import torch_xla.debug.metrics as met

        def probe() -> dict:
            data = met.metric_data("CompileTime")
            return {"compiles": data[0] if data else 0, "compile_seconds": data[1] / 1e9 if data else 0.0,
                    "fallbacks": {n: met.counter_value(n) for n in met.counter_names() if n.startswith("aten::")}}
    else:
        def probe() -> dict:
            return {}
    steps, validations = [], []
    after_step, validate = pace.Pace.after_step, engine.validate

    def recorded_step(self, step):
        steps.append({"step": step, "t": time.perf_counter(), "cpu": time.process_time(), **probe()})
        if kill and len(steps) == kill[1]:
            os.kill(os.getpid(), getattr(signal, kill[0]))
        return after_step(self, step)

    def recorded_validate(*args, **kwargs):
        row = validate(*args, **kwargs)
        validations.append(probe())
        return row

    pace.Pace.after_step, engine.validate = recorded_step, recorded_validate
    try:
        summary = engine.train(cfg, resume=resume)
    except engine.Stop as e:
        summary = {"stopped": str(e)}
    with open(out_path, "w") as fh:
        json.dump({"steps": steps, "validations": validations, "summary": summary}, fh, default=str)


if __name__ == "__main__":
    main(*sys.argv[1:3])
