"""The arithmetic of a recipe's whole ``ninlab fit``, and the least time it could take on this machine.

A throughput benchmark cannot measure time to accuracy (that takes whole fits, per host), but it can say whether a
host could meet a time target at all: the recipe's FLOPs (every training epoch at its progressive-resizing size,
every validation pass, the sanity check and the closing test, with flip averaging where the recipe evaluates so)
divided by the fastest yardstick measured in the same run is the time the fit would take if every FLOP ran at that
rate (``floor_s`` of ``ninlab bench``). A host whose floor is near or above a recipe's time target cannot meet it
with that recipe unless the whole fit runs at the yardstick's speed; docs/benchmarks.md gives the floors per host.
The training FLOPs at B's measured rate (``training_s_at_b_rate``) say roughly how long the training epochs take, B
being timed at the recipe's full image size only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ninlab.bench.rates import forward_flops_per_image, training_flops_per_image
from ninlab.bench.rounds import output_discarded
from ninlab.bench.training import BenchConfig, recipe_cli, scratch_dir
from ninlab.data.device_batches import train_image_size

__all__ = ["RecipeWork", "floor", "recipe_work"]


@dataclass(frozen=True)
class RecipeWork:
    """What a recipe's whole fit computes: images per split, training sizes per epoch and FLOPs."""

    recipe: str
    epochs: int
    train_images: int
    """Training images per epoch."""
    val_images: int
    """Validation images per validation pass (0 without a validation split)."""
    val_passes: int
    """Whole validation passes: one per ``check_val_every_n_epoch`` epochs."""
    sanity_val_images: int
    """Validation images of Lightning's sanity check before training (``num_sanity_val_steps`` batches)."""
    test_images: int
    views: int
    """Forward passes per evaluated image: 2 where the recipe averages each image with its mirror (``tta_flip``)."""
    train_sizes: list[list[int]]
    """(height, width) of the training images in each epoch."""
    train_flops: float
    evaluation_flops: float

    @property
    def total_flops(self) -> float:
        """Training plus evaluation FLOPs of the whole fit."""
        return self.train_flops + self.evaluation_flops

    def as_dict(self) -> dict:
        """The fields and the total, JSON-ready."""
        return {**asdict(self), "total_flops": self.total_flops}


def floor(work: RecipeWork, rates: dict[str, float], precision: str | None) -> tuple[str, float]:
    """The fastest of the measured yardsticks ``rates`` (FLOP/s by name: ``sgemm``, ``conv3x3``, ``bf16_gemm``) that
    a fit in ``precision`` can use (the bf16 matrix multiply only under ``bf16-mixed``), and the seconds the recipe's
    whole fit would take at it."""
    usable = {name: rate for name, rate in rates.items() if name != "bf16_gemm" or precision == "bf16-mixed"}
    fastest = max(usable, key=usable.get)
    return fastest, work.total_flops / usable[fastest]


def _images_per_pass(images: int, batch_size: int, limit: int | float) -> int:
    """Images one pass over a split of ``images`` sees under Lightning's ``limit_*_batches`` (batches if an int, a
    fraction of the batches if a float)."""
    batches = -(-images // batch_size)
    allowed = limit if isinstance(limit, int) else int(limit * batches)
    return min(images, allowed * batch_size)


def recipe_work(config: BenchConfig, quiet: bool = True, fit_args: Sequence[str] = ()) -> RecipeWork:
    """Count the FLOPs of ``ninlab fit -c RECIPE [fit_args]`` on its data, as a user would run it (:func:`recipe_cli`).

    Every split is set up (the data are read from ``config.root`` or the cache) to count its images, as many as the
    trainer's ``limit_*_batches`` let through; the network's FLOPs per image are counted by
    ``torch.utils.flop_counter`` at each epoch's training size and, forward only, at the evaluation size. Lightning's
    sanity check counts as ``num_sanity_val_steps`` batches of validation.
    """
    with scratch_dir() as workdir, output_discarded(quiet):
        cli = recipe_cli(config, workdir, [], whole_recipe=True, extra_args=fit_args)
        data, trainer, model = cli.datamodule, cli.trainer, cli.model
        data.setup("fit")
        data.setup("test")
        limits = trainer.limit_train_batches, trainer.limit_val_batches, trainer.limit_test_batches
        train_images, val_images, test_images = (
            _images_per_pass(data.num_images(split), data.batch_size, limit)
            for split, limit in zip(("train", "val", "test"), limits, strict=True)
        )
        channels, height, width = data.input_size
        smallest = model.net.min_input_size
        sizes = [train_image_size(data.train_scales, epoch, (height, width), smallest) or (height, width)
                 for epoch in range(trainer.max_epochs)]  # fmt: skip
        per_size = {size: training_flops_per_image(model.net, (channels, *size)) for size in set(sizes)}
        forward = forward_flops_per_image(model.net, (channels, height, width))
    views = 2 if model.hparams.tta_flip else 1
    sanity = min(trainer.num_sanity_val_steps * data.batch_size, val_images)
    val_passes = trainer.max_epochs // trainer.check_val_every_n_epoch if val_images else 0
    evaluated = val_passes * val_images + sanity + test_images
    return RecipeWork(
        recipe=config.recipe,
        epochs=trainer.max_epochs,
        train_images=train_images,
        val_images=val_images,
        val_passes=val_passes,
        sanity_val_images=sanity,
        test_images=test_images,
        views=views,
        train_sizes=[list(size) for size in sizes],
        train_flops=train_images * sum(per_size[size] for size in sizes),
        evaluation_flops=evaluated * views * forward,
    )
