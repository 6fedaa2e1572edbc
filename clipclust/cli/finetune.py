"""`clipclust finetune`: parse options, call clipclust.commands.finetune.finetune, show progress, print a summary.

The shared flags are declared here; each fine-tuning method's own options (clipclust.methods.finetuning)
become flags under a heading of their own (clipclust.cli.options, as for cluster's methods), so a method's
new option needs no edit here.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import typer

from clipclust.errors import InputError
from clipclust.methods.finetuning import finetune_methods
from clipclust.models.clip import DEFAULT_MODEL
from clipclust.core.templates import parse_classes
from clipclust.cli import common
from clipclust.cli.options import Section, SectionedCommand, flag_spellings, given_options

HELP = f"""Fine-tune CLIP on the workspace's images without labels: \
{" or ".join(f"{m.title} ({m.summary})" for m in finetune_methods().values())}.

Zero-shot pseudo-labels come from the base model (a template ensemble); labels stored with the items are
never read.  Image descriptions and group descriptions are read from the workspace (made by
'clipclust describe', or imported with 'describe --from'); --texts class trains without them.  DIR gets
an open_clip model folder that 'embed --model DIR' loads, the class prototypes that 'evaluate --zero-shot'
then uses, and a checkpoint every epoch; --resume continues an interrupted run.  Defaults are the paper's:
AdamW (weight decay 0.2, none on gains, biases and logit scale), lr 1e-7, batch 512, cosine schedule,
min(2000 steps, 50 epochs), AMP on GPU.

Example:  clipclust finetune --classes-file classes.txt --domain flower --lr 1e-6 --out tuned/
"""

# Library option names whose flag is not simply --option-name ("from_file": describe's, named in hints).
FLAGS = {"templates": "--template", "from_file": "--from"}


def register(app: typer.Typer) -> None:
    app.command("finetune", help=HELP, cls=SectionedCommand.of(sections))(finetune_command)


def sections() -> list[Section]:
    """One heading per fine-tuning method, in registry order, with the options it declares."""
    return [Section(m.name, m.name, f"{m.title}: {m.summary}", m.options) for m in finetune_methods().values()]


def finetune_command(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the tuned model, prototypes and checkpoints."),
    method: str = typer.Option("latteclip", "--method", help=f"{' or '.join(finetune_methods())}."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Class names, comma-separated."),
    classes_file: Optional[Path] = typer.Option(None, "--classes-file", help="Class names, one per line."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Base open_clip model: ARCH/PRETRAINED, "
                                        "hf-hub:ORG/NAME or a folder.",
                                        show_default=f"the image sets' model, else {DEFAULT_MODEL}"),
    domain: Optional[str] = typer.Option(None, "--domain", help="What the images show (flower, food, ...): 'a photo of a <>, a type of DOMAIN.'"),
    class_template: Optional[str] = typer.Option(None, "--class-template", help="Class description with '<>' (default 'a photo of a <>.')."),
    template: List[str] = typer.Option([], "--template", help="Zero-shot ensemble template with '<>' (repeatable; default: 8 OpenCLIP ones)."),
    split: Optional[str] = typer.Option(None, "--split", help="Train only on items of this split."),
    epochs: int = typer.Option(50, "--epochs", min=1, help="Epochs (training stops at --epochs or --steps, whichever first)."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Optimisation steps at most."),
    lr: float = typer.Option(1e-7, "--lr", help="Peak learning rate (the paper: 1e-7, 1e-6 for large sets)."),
    batch_size: int = typer.Option(512, "--batch-size", "-b", min=2, help="Images per step."),
    warmup: Optional[int] = typer.Option(None, "--warmup", min=0, help="Linear warm-up steps (default: a tenth of the steps)."),
    weight_decay: float = typer.Option(0.2, "--weight-decay", min=0.0, help="AdamW weight decay on weight matrices."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Random crop, colour jitter and grayscale."),
    seed: int = typer.Option(0, "--seed", help="Seed of shuffling and augmentation."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    precision: str = typer.Option("auto", "--precision", help="auto (AMP fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=0, help="Image loading processes (0 = in the main one).",
                                          show_default="auto: the CPU cores minus one, at most 4"),
    save_every: Optional[int] = typer.Option(None, "--save-every", min=1, help="Also a checkpoint every N steps (besides every epoch)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run whose checkpoint is in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    from clipclust.commands.finetune import FinetuneOptions, finetune  # torch: loaded only when fine-tuning

    with common.errors({**FLAGS, **flag_spellings(ctx)}):
        names = parse_classes(classes, str(classes_file) if classes_file else None)
        if names is None:
            raise InputError("finetune needs the class names: --classes a,b,c or --classes-file FILE")
        options = FinetuneOptions(
            method=method, classes=names, model=model, domain=domain, class_template=class_template,
            templates=template or None, split=split, epochs=epochs, steps=steps, lr=lr, batch_size=batch_size,
            warmup=warmup, weight_decay=weight_decay, augment=augment, seed=seed, device=device, precision=precision,
            workers=workers, save_every=save_every, options=given_options(ctx),
        )
        reporter = common.RichReporter(quiet=common.STATE.quiet)
        try:
            with _progress(reporter) as on_step:
                summary = finetune(common.workspace(), out, options, resume=resume, reporter=reporter, on_step=on_step,
                                   on_epoch=None if common.STATE.quiet else functools.partial(_epoch_line, out))
        except KeyboardInterrupt:
            from clipclust.models.checkpoint import has_checkpoint

            if has_checkpoint(out):
                raise common.fail(f"interrupted; the last checkpoint is in {out}: add --resume to continue", 130) from None
            raise common.fail("interrupted before the first checkpoint; run the same command again", 130) from None
    if common.want_json(json_out):
        common.emit_json({"cache": common.STATE.cache, **summary.to_dict()})
        return
    if summary.start_step >= summary.total_steps and not summary.model_loaded:
        typer.echo(f"{out}: already fine-tuned ({summary.step} of {summary.total_steps} steps); nothing to do")
        return
    resumed = f", resumed at step {summary.start_step}" if summary.start_step else ""
    loss, agreement = (summary.history[-1].loss, summary.history[-1].agreement) if summary.history else (float("nan"),) * 2
    texts_used = "; ".join(f"{k}: {v}" for k, v in summary.texts.items()) or "class descriptions only"
    typer.echo(f"{summary.method} on {summary.n_items} items: {summary.epochs} epochs, {summary.step} steps{resumed} "
               f"in {summary.seconds:.1f}s; last epoch loss {loss:.3f}, pseudo-label agreement {agreement:.2f} "
               f"({texts_used}) -> {out}")
    typer.echo(f"next: clipclust embed IMAGES --model {out} && clipclust evaluate --zero-shot")


def _epoch_line(out: Path, stats: Any) -> None:
    common.stderr().print(f"epoch {stats.epoch}: step {stats.step}, loss {stats.loss:.4f}, pseudo-label agreement "
                          f"{stats.agreement:.2f}, {stats.images_per_second:,.1f} images/s; checkpoint -> {out}",
                          markup=False, highlight=False)


@contextlib.contextmanager
def _progress(reporter: common.RichReporter) -> Iterator[Callable[[Any], None] | None]:
    """A training bar whose text shows the epoch, loss, pseudo-label agreement and images per second."""
    if reporter.quiet or not reporter.console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=reporter.console, transient=True) as progress:
        task = progress.add_task("training", total=None)

        def on_step(s: Any) -> None:
            progress.update(task, total=s.total_steps, completed=s.step,
                            description=f"epoch {s.epoch}/{s.epochs} loss {s.loss:.3f} agree {s.agreement:.2f} "
                                        f"{s.images_per_second:,.0f} img/s")

        yield on_step
