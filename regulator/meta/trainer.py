"""What decides a meta-training run (:class:`TrainConfig`, recorded in the model card)
and the state of one run (:class:`Trainer`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from regulator.meta.model import ModelBundle
from regulator.tasks.base import TaskFamily


class TrainConfig(BaseModel):
    """Everything that decides a meta-training run (recorded in the model card)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str = "nanosensor"
    family_config: dict[str, Any] = Field(default_factory=dict)
    profile: str = "loihi"
    algorithm: str = "metasgd"
    scope: Literal["readout", "input", "all"] = "readout"
    hidden: tuple[int, ...] = (64,)
    recurrent: bool = False
    n_steps: int = Field(32, gt=0)
    dt_s: float = Field(1e-3, gt=0, le=0.1)
    tau_syn_inv: float = Field(200.0, gt=0)
    encoder: str = "current"
    encoder_config: dict[str, float] = Field(default_factory=dict)
    normalisation: Literal["standard", "robust", "feature", "none"] = "robust"
    episode_normalisation: bool = False
    k_shots: tuple[int, ...] | None = None
    refine_steps: int = Field(0, ge=0, le=10_000)
    refine_lr: float = Field(0.1, gt=0)
    signed_log: bool = False
    iterations: int = Field(300, ge=0)
    meta_batch: int = Field(8, gt=0)
    k_shot: int = Field(5, gt=0)
    n_query: int = Field(30, gt=0)
    inner_steps: int = Field(5, ge=0)
    deploy_inner_steps: int | None = Field(None, ge=0)
    inner_lr: float = Field(0.5, gt=0)
    input_lr: float = Field(0.05, gt=0)
    outer_lr: float = Field(3e-3, gt=0)
    meta_lr: float | None = Field(None, gt=0)
    pretrain_steps: int = Field(0, ge=0)
    pretrain_groups: int = Field(4, gt=0)
    body_init: Literal["random", "dense"] = "random"
    """``dense``: the first layer converted from a dense ReLU layer trained on the
    source environments (:mod:`regulator.meta.dense_init`) before meta-training."""
    body_init_steps: int = Field(1500, ge=0, le=100_000)
    body_init_scale: float = Field(3.0, gt=0, le=1000)
    body_init_groups: int = Field(32, ge=0, le=10_000)
    body_init_units: int | None = Field(None, gt=0)
    """Hidden neurons converted (default all); meta-training keeps them as converted."""
    body_init_per_group: int = Field(64, gt=0, le=100_000)
    train_body: bool = True
    """False: meta-training learns the readout's prior only; the body stays as built."""
    rehearsal: bool = False
    """Ship the family's labelled source samples (file families: the file's rows) in the
    prior, and give the readout skip synapses from the input lines: adaptation then
    refits the readout on the shots beside them (:mod:`regulator.meta.rehearsal`)."""
    seed: int = 0
    checkpoint_every: int = Field(25, gt=0)


@dataclass
class Trainer:
    """State of one meta-training run: the bundle under training and its optimiser."""

    cfg: TrainConfig
    family: TaskFamily
    bundle: ModelBundle
    optimiser: torch.optim.Optimizer
    rng: np.random.Generator
    iteration: int = 0
    history: list[dict[str, Any]] | None = None
