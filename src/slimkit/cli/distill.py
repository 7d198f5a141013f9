"""``slimkit distill``: train a student from a teacher and compare the two."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from slimkit.cli.common import check_out, emit, out, parse_pairs, progress, staged_out
from slimkit.cli.shared import Run, command
from slimkit.core.errors import InvalidConfigError

if TYPE_CHECKING:
    from torch import nn

    from slimkit.distillation.methods import Combined

DISTILL = (
    "weights", "trust_pickle", "device", "threads", "metric", "lower_is_better", "option",
    "overwrite", "as_json", "quiet",
)  # fmt: skip
"""The shared options `distill` takes (``--weights`` are the teacher's, for a factory-built teacher)."""

SHRINK_KEYS = frozenset({"depth", "width", "spacing"})
"""What ``--shrink`` accepts (the keyword arguments of `slimkit.distillation.shrink`)."""


def with_layer_hints(name: str, student: nn.Module, options: dict[str, object]) -> Combined:
    """Loss ``name`` plus `layer_hints` for a depth-shrunk student; its options leave ``options``."""
    from slimkit.distillation.methods import CONFIGS, Combined
    from slimkit.distillation.students import layer_hints

    config = CONFIGS.lookup(name)
    own = {key: options.pop(key) for key in list(options) if key in config.model_fields}
    return Combined(**{CONFIGS.name_of(config): config.build(**own), "hint": layer_hints(student)})


@command("distill", DISTILL)
def distill_cmd(
    teacher: Annotated[str, typer.Option("--teacher", help="Teacher model spec (example:NAME, hf:DIR, ...).")],
    data: Annotated[str, typer.Option("--data", help="Data spec: example:NAME, pkg.mod:fn, file.npz (x, y).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder the distilled student is saved to.")],
    student: Annotated[str | None, typer.Option("--student", help="Student model spec.")] = None,
    shrink: Annotated[
        str | None,
        typer.Option(
            "--shrink",
            help="Build the student from the teacher: depth=0.5[,spacing=stride] and/or width=0.5.",
        ),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the training split.")] = 1,
    method: Annotated[
        str | None,
        typer.Option("--method", help="kd, hint, attention, embedding (default: kd, embedding for fidelity data)."),
    ] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="KD temperature.")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help="KD weight of the teacher term.")] = None,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 1e-3,
    options: Annotated[
        str | None, typer.Option("--options", help="More method/trainer options: key=value,key=value (same as -o).")
    ] = None,
    *,
    run: Run,
) -> None:
    """Distill TEACHER into a student and print a before/after comparison.

    The best epoch is chosen on the data's calibration split; the table reports the test
    split. An existing --out is refused unless --overwrite.

    Examples:

        slimkit distill --teacher example:minilm --shrink depth=0.5 --data example:sentences --epochs 3 --out out/

        slimkit distill --teacher example:digits-cnn --student mypkg.nets:small --data example:digits --out out/
    """
    import slimkit as sk
    from slimkit.core.specs import load_model
    from slimkit.distillation import distill
    from slimkit.distillation import shrink as shrink_model
    from slimkit.report import comparison_table

    if (student is None) == (shrink is None):
        raise InvalidConfigError("give exactly one of --student MODEL or --shrink depth=0.5")
    check_out(out_dir, run.overwrite, teacher, student)
    chosen = run.chosen_metric()
    splits = sk.load_data(data)
    teacher_model = load_model(teacher, weights=run.weights, trust_pickle=run.trust_pickle)
    shape: dict[str, object] = {}
    if student is not None:
        student_model = load_model(student, trust_pickle=run.trust_pickle)
    else:
        shape = parse_pairs(shrink, "--shrink")
        if unknown := sorted(set(shape) - SHRINK_KEYS):
            raise InvalidConfigError(f"--shrink takes {', '.join(sorted(SHRINK_KEYS))}; unknown: {', '.join(unknown)}")
        student_model = shrink_model(teacher_model, **shape)  # type: ignore[arg-type]
    extra = run.options(parse_pairs(options, "--options"))
    extra.update({k: v for k, v in (("temperature", temperature), ("alpha", alpha)) if v is not None})
    name = method or ("kd" if splits.metric == "accuracy" else "embedding")
    loss = with_layer_hints(name, student_model, extra) if method is None and "depth" in shape else name
    trained = distill(
        student_model,
        teacher_model,
        loss,
        data=splits.train,
        epochs=epochs,
        eval_data=splits.calibration,
        lr=lr,
        quiet=run.silent,
        device=run.device,
        **extra,
    )
    with staged_out(out_dir, run.overwrite) as stage:
        sk.save(trained, stage)
    judge = chosen or splits.metric
    reference = teacher_model if splits.metric == "fidelity" else None
    threads = run.threads
    with progress(f"profiling teacher and student ({threads} thread{'s' if threads > 1 else ''})", run.silent):
        before, after = (
            sk.profile(m, data=splits.test, metric=judge, reference=reference, batch_sizes=(1,), threads=threads)
            for m in (teacher_model, trained)
        )
    before.name, after.name = teacher, f"student ({out_dir})"
    emit(sk.compare(before, after), run.as_json, comparison_table)
    if not run.silent:
        out.print(f"saved the student to {out_dir}")
