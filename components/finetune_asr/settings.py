"""finetune_asr's settings (one typed record) and its recipe presets.

A recipe is a NeMo-native YAML in conf/: the `model.train_ds`, `model.optim` and `trainer` sections NeMo
trains with, plus `deploy.att_context_size` (the lookahead the recipe evaluates and serves at). A knob left at
None keeps the recipe's value; a knob that is set overrides it, and the override is recorded in the run's
params (`FinetuneSettings.overrides`). Choosing `nemotron35` therefore trains with NVIDIA's optimiser
(AdamW, lr 0.1 as a Noam multiplier: peak ~3.1e-4), batching (batch_duration), precision (bf16-mixed) and
evaluates at [56,3], without the user touching lr.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from components.common.languages import parse_langs
from components.common.settings import SettingsError, knob, knobs, parse_att_context_size

CONF_DIR = Path(__file__).resolve().parent / "conf"
RECIPES = {
    "tiny-demo": CONF_DIR / "tiny_demo_finetune.yaml",
    "nemotron35": CONF_DIR / "nemotron35_finetune.yaml",
}
SCHEDULERS = {"noam": "NoamAnnealing", "cosine": "CosineAnnealing"}
FREEZE_CHOICES = ("none", "encoder", "all_but_prompt_decoder")
PROMPT_MODES = ("langID", "unified", "auto")


@dataclass
class FinetuneSettings:
    """What the fine-tune trains on and how. None = the recipe's value."""

    recipe: str = knob(
        "tiny-demo",
        "Recipe preset: tiny-demo (CPU demo) | nemotron35 (NVIDIA's: AdamW+Noam, bf16, batch_duration, "
        "[56,3]) | a path to your own recipe YAML",
    )
    target_langs: str = knob("bg-BG", "Languages to adapt to, comma-separated prompt keys (e.g. bg-BG,ro-RO)")
    replay_langs: str = knob(
        "el-GR,es-ES", "Languages to keep (mixed into training against forgetting; gated)"
    )
    replay_per_lang: int = knob(150, "Replay utterances per replay language (when replay_ratio is empty)")
    replay_ratio: float | None = knob(
        None, "Replay share of the training mix, 0-0.9; empty uses replay_per_lang"
    )
    replay_distill: float = knob(
        1.0, "Weight of the KL to the base model's RNNT lattice on replay rows (0 = off)"
    )
    max_steps: int = knob(300, "Training budget in optimizer steps")
    lr: float | None = knob(None, "Learning rate (Noam: a multiplier); empty keeps the recipe's")
    scheduler: str | None = knob(None, "noam | cosine; empty keeps the recipe's", choices=tuple(SCHEDULERS))
    warmup_steps: int | None = knob(None, "Warm-up steps; empty keeps the recipe's")
    batch_size: int | None = knob(None, "Utterances per batch per GPU; empty keeps the recipe's batching")
    batch_duration: float | None = knob(None, "Seconds of audio per batch (lhotse dynamic batching)")
    precision: str | None = knob(None, "Lightning precision, e.g. bf16-mixed or 32; empty keeps the recipe's")
    prompt_mode: str | None = knob(
        None,
        "langID | unified (half the rows get `auto`) | auto; empty keeps the recipe's",
        choices=PROMPT_MODES,
    )
    freeze: str | None = knob(
        None,
        "none | encoder | all_but_prompt_decoder; empty keeps the recipe's (tiny-demo: encoder, nemotron35: none)",
        choices=FREEZE_CHOICES,
    )
    train_att_context_size: str | None = knob(
        None, "Train at one lookahead, e.g. [56,1]; empty trains every lookahead (the recipe)"
    )
    max_unk_rate: float = knob(0.001, "Stop before training if a language's <unk> share is above this")
    text_maps: str = knob("", "Spelling maps for characters the base tokenizer lacks, e.g. el_final_sigma")
    seed: int = knob(0, "Seed of the data split, replay sampling and training")
    checkpoint_every: int = knob(100, "Checkpoint every N steps (a retried or re-run fine-tune resumes)")

    def __post_init__(self) -> None:
        if not parse_langs(self.target_langs):
            raise SettingsError("target_langs: at least one language is required")
        if self.replay_per_lang < 0:
            raise SettingsError(f"replay_per_lang: must be >= 0, got {self.replay_per_lang}")
        if self.replay_ratio is not None and not 0.0 <= self.replay_ratio < 1.0:
            raise SettingsError(f"replay_ratio: must be in [0, 1), got {self.replay_ratio}")
        if not self.replay_distill >= 0:
            raise SettingsError(f"replay_distill: must be >= 0, got {self.replay_distill}")
        if self.max_steps <= 0:
            raise SettingsError(f"max_steps: must be > 0, got {self.max_steps}")
        if self.batch_size is not None and self.batch_duration is not None:
            raise SettingsError("batch_size and batch_duration: give one of them, not both")
        for name in ("lr", "batch_size", "batch_duration"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise SettingsError(f"{name}: must be > 0 (empty keeps the recipe's), got {value}")
        for k in knobs(type(self)):
            value = getattr(self, k.name)
            if k.choices and value is not None and value not in k.choices:
                raise SettingsError(f"{k.name}: must be one of {list(k.choices)}, got {value!r}")
        parse_att_context_size(self.train_att_context_size)
        recipe_path(self.recipe)

    @property
    def targets(self) -> list[str]:
        return parse_langs(self.target_langs)

    @property
    def replays(self) -> list[str]:
        return [lang for lang in parse_langs(self.replay_langs) if lang not in self.targets]

    def overrides(self) -> dict:
        """The knobs set away from their defaults: what this run changed on top of its recipe."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != (f.default if f.default is not dataclasses.MISSING else None)
        }


def recipe_path(recipe: str) -> Path:
    """A preset name or a YAML path -> the recipe file; an unknown one names the presets."""
    if recipe in RECIPES:
        return RECIPES[recipe]
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    raise SettingsError(f"recipe: {recipe!r} is neither a preset {sorted(RECIPES)} nor an existing YAML file")


@dataclass
class Recipe:
    """A recipe file's sections, with a run's overrides applied (what NeMo trains with)."""

    path: Path
    train_ds: dict
    optim: dict
    trainer: dict
    deploy_att_context_size: list[int] | None
    freeze: str = "none"  # the recipe's top-level `freeze:` (FREEZE_CHOICES), or the run's


def load_recipe(recipe: str | os.PathLike) -> Recipe:
    """(train_ds, optim, trainer, deploy lookahead) of a recipe, interpolations resolved, `???` as None."""
    from omegaconf import OmegaConf

    path = recipe_path(str(recipe))
    cfg = OmegaConf.load(path)
    for key in ("model.train_ds", "model.optim", "trainer"):
        if OmegaConf.select(cfg, key) is None:
            raise SettingsError(f"{path}: missing section '{key}'")

    def section(key: str) -> dict:
        out = OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True, throw_on_missing=False)
        return {k: (None if v == "???" else v) for k, v in out.items()}

    deploy = OmegaConf.select(cfg, "deploy.att_context_size")
    freeze = OmegaConf.select(cfg, "freeze", default="none")
    if freeze not in FREEZE_CHOICES:
        raise SettingsError(f"{path}: freeze must be one of {list(FREEZE_CHOICES)}, got {freeze!r}")
    return Recipe(
        path,
        section("model.train_ds"),
        section("model.optim"),
        section("trainer"),
        parse_att_context_size(list(deploy)) if deploy is not None else None,
        freeze,
    )


def apply(settings: FinetuneSettings) -> Recipe:
    """The recipe of `settings` with its explicit knobs applied (nothing model-specific yet)."""
    r = load_recipe(settings.recipe)
    ds, optim, trainer = dict(r.train_ds), copy.deepcopy(r.optim), dict(r.trainer)
    if settings.batch_size is not None:
        ds["batch_size"] = settings.batch_size
        ds.pop("batch_duration", None)
    elif settings.batch_duration is not None:
        ds["batch_duration"] = settings.batch_duration
        ds["batch_size"] = None
    if settings.prompt_mode is not None:
        ds["default_prompt_mode"] = settings.prompt_mode
    sched = optim.setdefault("sched", {})
    if settings.scheduler is not None:
        sched["name"] = SCHEDULERS[settings.scheduler]
    if settings.lr is not None:
        optim["lr"] = settings.lr
    if settings.warmup_steps is not None:
        sched["warmup_steps"] = settings.warmup_steps
    if sched.get("name") == "NoamAnnealing":
        sched.setdefault("d_model", 1024)
    else:
        sched.pop("d_model", None)
    sched.pop("max_steps", None)  # NeMo derives it from trainer.max_steps
    if settings.precision is not None:
        trainer["precision"] = settings.precision
    freeze = settings.freeze if settings.freeze is not None else r.freeze
    return Recipe(r.path, ds, optim, trainer, r.deploy_att_context_size, freeze)


def peak_lr(optim: dict) -> float:
    """The learning rate at the top of the schedule: Noam's lr is a multiplier (lr * d^-0.5 * warmup^-0.5)."""
    sched = optim.get("sched") or {}
    if sched.get("name") == "NoamAnnealing":
        warmup = max(1, int(sched.get("warmup_steps") or 1))
        return float(optim["lr"]) * float(sched["d_model"]) ** -0.5 * warmup**-0.5
    return float(optim["lr"])
