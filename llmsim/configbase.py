"""Base class for every typed config section.

Sections are pydantic models that reject unknown keys, so a typo in a YAML file is an error that names
the field instead of a silently ignored setting. No float field accepts NaN or infinity (YAML's ``.nan``,
``.inf``): every quantity in a config is a real, finite number, and an infinite rate or duration would only
turn into an overflow or a hang deep inside the run.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)
