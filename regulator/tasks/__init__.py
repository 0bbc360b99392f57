"""Task families (environments), shift schedules, data sources, file formats and
input normalisation.

Samples are float32 ``[n, C, L]``; see :mod:`regulator.tasks.base` for the contract.
"""

from regulator.tasks.base import (
    Environment,
    Episode,
    TaskFamily,
    family_names,
    interpolate,
    make_family,
    register_family,
)
from regulator.tasks.normalisation import Normaliser
from regulator.tasks.schedules import Schedule, Stream, StreamSample, make_schedule
from regulator.tasks.sources import (
    FeedbackChannel,
    Source,
    SourceSample,
    make_source,
)

__all__ = [
    "Environment",
    "Episode",
    "FeedbackChannel",
    "Normaliser",
    "Schedule",
    "Source",
    "SourceSample",
    "Stream",
    "StreamSample",
    "TaskFamily",
    "family_names",
    "interpolate",
    "make_family",
    "make_schedule",
    "make_source",
    "register_family",
]
